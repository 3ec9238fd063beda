"""The Engram commands of the CLI: keygen, export, import, engram ls|cat|verify|info."""
from __future__ import annotations

import json
import os
import stat

import pytest

pytest.importorskip("lz4", reason="the engram extra (lz4) is not installed")
pytest.importorskip("zstandard", reason="the engram extra (zstandard) is not installed")
pytest.importorskip("cryptography", reason="the engram extra (cryptography) is not installed")

import cartridge
from cartridge.cli import main


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with cartridge.open("a.cart", "w") as c:
        c.write("/docs/a.txt", b"alpha" * 1000, mode=0o640, mtime=1_650_000_000)
        c.write("/bin/b", bytes(range(256)))
        c.set_policy("p", {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "cart:GetObject", "Resource": "/docs/*"}]})
    return tmp_path


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_keygen_export_verify_import(work, capsys):
    rc, pub, _ = run(capsys, "keygen", "k.key")
    pub = pub.strip()
    assert rc == 0 and len(pub) == 64
    assert stat.S_IMODE(os.stat("k.key").st_mode) == 0o600
    rc, _, err = run(capsys, "keygen", "k.key")
    assert rc == 1 and "exists" in err
    rc, out, _ = run(capsys, "export", "a.cart", "o.eng", "--sign", "k.key", "--signer", "ci",
                     "--json")
    assert rc == 0 and json.loads(out)["signed_by"] == [pub]
    rc, out, _ = run(capsys, "engram", "verify", "o.eng", "--public-key", pub)
    assert rc == 0 and "trusted" in out and out.rstrip().endswith("signed)")
    other = "11" * 32
    rc, out, _ = run(capsys, "engram", "verify", "o.eng", "--public-key", other, "--json")
    assert rc == 1 and json.loads(out)["trusted"] is False
    rc, _, err = run(capsys, "import", "o.eng", "b.cart", "--verify-key", other)
    assert rc == 1 and "not signed by the given key" in err
    rc, out, _ = run(capsys, "import", "o.eng", "b.cart", "--verify-key", pub)
    assert rc == 0 and "2 files" in out and "1 policy into" in out
    with cartridge.open("b.cart") as c:
        assert c.read("/docs/a.txt") == b"alpha" * 1000
        assert c.stat("/docs/a.txt").mode & 0o777 == 0o640
        assert c.stat("/docs/a.txt").mtime == 1_650_000_000
        assert list(c.policies()) == ["p"]


def test_engram_ls_cat_info(work, capsys):
    assert run(capsys, "export", "a.cart", "o.eng", "--compression", "lz4",
               "--include", "/docs")[0] == 0
    rc, out, _ = run(capsys, "engram", "ls", "o.eng")
    assert out.split() == ["docs/a.txt", "cartridge.json", "manifest.json"]
    rc, out, _ = run(capsys, "engram", "ls", "o.eng", "--json")
    rows = json.loads(out)
    assert rows[0]["path"] == "docs/a.txt" and rows[0]["method"] == "lz4"
    assert rows[0]["mtime"] == 1_650_000_000 and rows[0]["framed"] is False
    rc, out, _ = run(capsys, "engram", "ls", "o.eng", "-l")
    assert "lz4" in out
    rc, out, _ = run(capsys, "engram", "info", "o.eng", "--json")
    info = json.loads(out)
    assert info["entries"] == 3 and info["version"] == "1.0" and info["manifest"]["files"] == 2
    rc, out, _ = run(capsys, "engram", "info", "o.eng")
    assert rc == 0 and "entries:" in out


def test_engram_cat_bytes(work, capfdbinary):
    assert main(["export", "a.cart", "o.eng"]) == 0
    capfdbinary.readouterr()
    assert main(["engram", "cat", "o.eng", "bin/b"]) == 0
    assert capfdbinary.readouterr().out == bytes(range(256))


def test_encrypted_export(work, capsys):
    with open("aes.key", "wb") as f:
        f.write(b"\x42" * 32)
    with open("hex.key", "w") as f:
        f.write("42" * 32 + "\n")
    for mode in ("archive", "per-file"):
        assert run(capsys, "export", "a.cart", f"{mode}.eng", "--encrypt", "aes.key",
                   "--encryption", mode)[0] == 0
        rc, out, _ = run(capsys, "engram", "verify", f"{mode}.eng", "--key", "hex.key")
        assert rc == 0
    rc, _, err = run(capsys, "engram", "ls", "archive.eng")
    assert rc == 1 and "key" in err
    rc, out, _ = run(capsys, "engram", "ls", "per-file.eng")   # the listing is plaintext
    assert rc == 0 and "docs/a.txt" in out
    rc, _, err = run(capsys, "import", "per-file.eng", "c.cart")
    assert rc == 1 and "key" in err
    with open("bad.key", "w") as f:
        f.write("short")
    rc, _, err = run(capsys, "export", "a.cart", "x.eng", "--encrypt", "bad.key")
    assert rc == 1 and "32 raw bytes" in err
    assert not os.path.exists("x.eng")


def test_hostile_input_is_one_line_error(work, capsys):
    with open("junk.eng", "wb") as f:
        f.write(b"\x89ENG\r\n\x1a\n" + b"\xff" * 200)
    for cmd in (["engram", "ls", "junk.eng"], ["engram", "verify", "junk.eng"],
                ["import", "junk.eng", "d.cart"]):
        rc, out, err = run(capsys, *cmd)
        assert rc == 1 and err.count("\n") == 1 and "internal error" not in err
    rc, _, err = run(capsys, "export", "missing.cart", "o.eng")
    assert rc == 1
