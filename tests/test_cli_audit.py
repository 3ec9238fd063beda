"""`cartridge audit ...`: list with filters and --json, --follow sees another process's commits,
verify (exit 1 on tampering, checkpoint keys, a held head), prove (JSON the standalone verifier
accepts), checkpoint with a key file."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import cartridge
from cartridge.audit import verify_inclusion
from cartridge.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def arch(tmp_path):
    p = tmp_path / "a.cart"
    with cartridge.open(p, "x") as c:
        c.write("/a", b"1")
        c.write("/logs/b", b"22")
        c.rename("/a", "/z")
    return p


def test_list_and_filters(arch, capsys):
    code, out, _ = run(capsys, "audit", arch)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 4 and lines[3].split("\t")[3:5] == ["cart:Rename", "/a -> /z"]
    code, out, _ = run(capsys, "audit", arch, "--json", "--path", "/logs")
    recs = json.loads(out)                  # one document: the list of records
    assert [(r["seq"], r["path"], r["size"]) for r in recs] == [(2, "/logs/b", 2)]
    code, out, _ = run(capsys, "--sync", "off", "audit", arch, "--action", "cart:Rename", "--json")
    assert [r["dest"] for r in json.loads(out)] == ["/z"]
    code, out, _ = run(capsys, "audit", arch, "--json", "--follow", "0")   # JSON lines
    assert [json.loads(x)["seq"] for x in out.splitlines()] == [0, 1, 2, 3]
    code, out, _ = run(capsys, "audit", arch, "--since", "2100-01-01T00:00:00")
    assert code == 0 and out == ""
    code, _, err = run(capsys, "audit", arch, "--since", "yesterday")
    assert code == 2 and "--since" in err                 # a usage error
    code, _, err = run(capsys, "audit", arch.parent / "missing.cart")
    assert code == 1
    for bad in ("-1", "nan", "x"):
        code, _, err = run(capsys, "audit", arch, "--follow", bad)
        assert code == 2 and "--follow" in err             # usage errors
    code, _, err = run(capsys, "audit", arch, "--until", "inf")
    assert code == 2


def test_prove_output_verifies_standalone(arch, capsys):
    code, out, _ = run(capsys, "audit", "prove", arch, 2)
    assert code == 0
    d = json.loads(out)
    assert verify_inclusion(bytes.fromhex(d["leaf_hash"]), d["seq"], d["size"],
                            [bytes.fromhex(h) for h in d["proof"]], bytes.fromhex(d["root"]))
    code, out, _ = run(capsys, "audit", "prove", arch, 1, "--size", 2)
    d = json.loads(out)
    assert verify_inclusion(bytes.fromhex(d["leaf_hash"]), 1, 2,
                            [bytes.fromhex(h) for h in d["proof"]], bytes.fromhex(d["root"]))
    code, _, err = run(capsys, "audit", "prove", arch, 99)
    assert code == 1 and "no record" in err


def test_verify_and_checkpoint(arch, tmp_path, capsys):
    pytest.importorskip("cryptography", reason="checkpoints need 'cryptography'")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    k = Ed25519PrivateKey.generate()
    key = tmp_path / "k.pem"
    key.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    pub = tmp_path / "k.pub"
    pub.write_text(k.public_key().public_bytes_raw().hex())
    other = tmp_path / "o.pub"
    other.write_text(Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex())
    code, out, _ = run(capsys, "audit", "checkpoint", arch, "--key", key, "--json")
    assert code == 0 and json.loads(out)["size"] == 4
    code, out, _ = run(capsys, "audit", "verify", arch, "--checkpoint-key", pub)
    assert code == 0 and out.startswith("OK")
    code, out, _ = run(capsys, "audit", "verify", arch, "--checkpoint-key", other)
    assert code == 1 and "signature" in out
    with cartridge.open(arch, "r") as c:
        h = c.audit.head()
    code, out, _ = run(capsys, "audit", "verify", arch, "--head", f"{h.size}:{h.root.hex()}",
                       "--json")
    assert code == 0 and json.loads(out)["ok"]
    code, out, _ = run(capsys, "audit", "verify", arch, "--head", f"{h.size}:{'00' * 32}")
    assert code == 1 and "rewritten" in out
    code, _, err = run(capsys, "audit", "verify", arch, "--head", "x")
    assert code == 2 and "SIZE:ROOT" in err


def test_follow_sees_other_process(arch, capsys):
    writer = subprocess.Popen([sys.executable, "-c", (
        "import cartridge, time, sys\n"
        f"c = cartridge.open({str(arch)!r}, 'a')\n"
        "time.sleep(0.5)\n"
        "c.write('/late', b'x')\n"
        "c.close()\n")])
    try:
        code, out, _ = run(capsys, "audit", arch, "--follow", "4")
    finally:
        writer.wait(30)
    assert code == 0
    assert any("/late" in line for line in out.splitlines())
