"""The error paths of the newer commands (snapshot, compact, freeze, export, import, engram
ls|cat|verify|info, keygen, audit ls|verify|prove|checkpoint), each against a bad archive path,
a missing file, a corrupt archive, bad arguments and, where it applies, a refused change (a
frozen archive, an untrusted signature): the documented exit code (docs/GUIDE.md, "Exit
status": 1 an error, 2 a usage error), one line on stderr naming the cause, never a
traceback, and with --json nothing on stdout but a document that parses.

Most cases run main() in-process (tests/hostile.py's check_run, which also asserts the
one-line and escaping contract); a representative set runs through a real process.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from hostile import check_run

import cartridge

pytest.importorskip("lz4", reason="the engram extra (lz4) is not installed")
pytest.importorskip("zstandard", reason="the engram extra (zstandard) is not installed")
pytest.importorskip("cryptography", reason="the engram extra (cryptography) is not installed")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in sys.path if p]))
ENV.pop("CARTRIDGE_PROGRESS", None)


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> dict[str, str]:
    """The inputs: a good archive (files, a snapshot, an audit log), a frozen one, a corrupt
    one (its catalog page overwritten), one cut short, a text file, a directory, a missing
    path; good, cut and garbage Engram files; a signing key, an unrelated key, an AES key."""
    from cartridge import engram

    d = tmp_path_factory.mktemp("errs")
    good = str(d / "good.cart")
    with cartridge.open(good, "x") as c:
        c.write("/docs/a.txt", b"alpha" * 100)
        c.write("/docs/b.bin", bytes(range(256)) * 40)
        c.snapshot("s1")
        c.write("/later.txt", b"later")
    frozen = str(d / "frozen.cart")
    shutil.copy(good, frozen)
    with cartridge.open(frozen, "a") as c:
        c.freeze()
    with open(good, "rb") as f:
        img = f.read()
    cut = str(d / "cut.cart")
    with open(cut, "wb") as f:
        f.write(img[:len(img) // 3])
    corrupt = str(d / "corrupt.cart")
    data = bytearray(img)
    for pno in range(1, len(data) // 4096):         # every page past the header: garbage
        data[pno * 4096 + 100:pno * 4096 + 200] = b"\xa5" * 100
    with open(corrupt, "wb") as f:
        f.write(bytes(data))
    text = str(d / "text.txt")
    with open(text, "w") as f:
        f.write("not an archive\n" * 50)
    key = str(d / "sign.key")
    with open(key, "w") as f:
        f.write("42" * 32)
    other = str(d / "other.key")
    with open(other, "w") as f:
        f.write("17" * 32)
    other_pub = engram.crypto.public_hex(engram.crypto.load_private_key(other))
    aes = str(d / "aes.key")
    with open(aes, "wb") as f:
        f.write(b"\x42" * 32)
    eng = str(d / "good.eng")
    with cartridge.open(good) as c:
        c.export_engram(eng, signing_key=engram.crypto.load_private_key(key))
    with open(eng, "rb") as f:
        raw = f.read()
    cut_eng = str(d / "cut.eng")
    with open(cut_eng, "wb") as f:
        f.write(raw[:len(raw) // 2])
    bad_eng = str(d / "garbage.eng")
    with open(bad_eng, "wb") as f:
        f.write(b"\x89ENG\r\n\x1a\n" + b"\xff" * 300)
    return {"dir": str(d), "good": good, "frozen": frozen, "cut": cut, "corrupt": corrupt,
            "text": text, "missing": str(d / "missing.cart"), "key": key, "other": other,
            "other_pub": other_pub, "aes": aes, "eng": eng, "cut_eng": cut_eng,
            "bad_eng": bad_eng}


def _copy(w: dict, name: str, tmp_path) -> str:
    """A private copy of input `name` (the command may change it)."""
    target = str(tmp_path / os.path.basename(w[name]))
    shutil.copy(w[name], target)
    return target


# (command words, arguments after ARCHIVE, whether it writes, whether it takes --json)
ARCHIVE_COMMANDS = [
    (["snapshot", "create"], ["s2"], True, True),
    (["snapshot", "ls"], [], False, True),
    (["snapshot", "rm"], ["s1"], True, True),
    (["snapshot", "restore"], ["s1"], True, True),
    (["compact"], [], True, True),
    (["freeze"], [], True, True),
    (["audit", "ls"], [], False, True),
    (["audit", "verify"], [], False, True),
    (["audit", "prove"], ["0"], False, False),
    (["audit", "checkpoint"], ["--key", "{key}"], True, True),
    (["export"], ["{out}"], False, True),
]


def _fill(args: list[str], w: dict, tmp_path) -> list[str]:
    return [a.format(key=w["key"], out=str(tmp_path / "out.eng")) for a in args]


def _expect(argv: list[str], rc: int, cause: str | tuple[str, ...]) -> str:
    """Run argv in-process: exit code rc, and for an error one stderr line holding a cause."""
    got, out, err = check_run(argv)
    assert got == rc, (argv, got, err, out[:300])
    causes = (cause,) if isinstance(cause, str) else cause
    assert any(c.lower() in err.lower() for c in causes), (argv, err)
    if "--json" in argv and rc in (1, 2):
        assert out == b"", (argv, out)          # an error prints no document
    return err


@pytest.mark.parametrize("words,rest,writes,has_json", ARCHIVE_COMMANDS,
                         ids=[" ".join(c[0]) for c in ARCHIVE_COMMANDS])
def test_archive_commands_bad_archives(w, tmp_path, words, rest, writes, has_json):
    """Missing, a directory, not an archive, cut short, corrupt: exit 1, the cause named."""
    rest = _fill(rest, w, tmp_path)
    json_flag = ["--json"] if has_json else []
    cases = [
        ("missing", ("missing.cart: no such archive", "missing.cart: no such file or directory")),
        ("dir", "is a directory, not an archive file"),
        ("text", "text.txt: not a cartridge archive"),
        ("cut", "cut.cart: file is truncated"),
        ("corrupt", "corrupt.cart: checksum mismatch in B-tree page"),
    ]
    for name, causes in cases:
        archive = _copy(w, name, tmp_path) if name in ("text", "cut", "corrupt") else w[name]
        _expect([*words, archive, *rest, *json_flag], 1, causes)
    assert not os.path.exists(w["missing"])          # a writer never creates it


def test_archive_commands_refused_on_a_frozen_archive(w, tmp_path):
    """A frozen archive refuses every change (ReadOnlyError, exit 1); readers still work."""
    for words, rest, writes, has_json in ARCHIVE_COMMANDS:
        argv = [*words, _copy(w, "frozen", tmp_path), *_fill(rest, w, tmp_path)]
        argv += ["--json"] if has_json else []
        if writes:
            _expect(argv, 1, "frozen")
        else:
            rc, out, err = check_run(argv)          # (check_run parses a --json document)
            assert rc == 0, (argv, err)
    _expect(["import", w["eng"], _copy(w, "frozen", tmp_path)], 1, "frozen")


def test_usage_errors_exit_2(w, tmp_path):
    """Bad values and combinations are usage errors: exit 2, the usage line, then the cause
    naming the argument."""
    good = w["good"]
    out = str(tmp_path / "o.eng")
    cases = [
        (["snapshot", "create", good, ""], "argument NAME"),
        (["snapshot", "create", good, "x" * 300], "argument NAME"),
        (["snapshot", "rm", good, "bad\x1b[31mname"], "argument NAME"),
        (["snapshot", "restore", good], "required: NAME"),
        (["snapshot", "ls"], "required: ARCHIVE"),
        (["snapshot", "bogus", good], "invalid choice"),
        (["compact", good, "--max-pages", "0"], "argument --max-pages: must be at least 1"),
        (["compact", good, "--max-pages", "-5"], "argument --max-pages"),
        (["compact", good, "--max-pages", "x"], "argument --max-pages: must be a whole number"),
        (["freeze", good, "--bogus"], "unrecognized arguments"),
        (["audit", "ls", good, "--since", "garbage"], "argument --since"),
        (["audit", good, "--until", "2026-13-01"], "argument --until"),
        (["audit", good, "--since", "nan"], "argument --since: must be a finite time"),
        (["audit", good, "--follow", "-1"], "argument --follow"),
        (["audit", good, "--result", "bogus"], "argument --result"),
        (["audit", "verify", good, "--head", "bad"], "argument --head"),
        (["audit", "verify", good, "--head", "1:zz"], "argument --head"),
        (["audit", "verify", good, "--head", "-1:" + "00" * 32], "argument --head"),
        (["audit", "prove", good, "-1"], "argument SEQ"),
        (["audit", "prove", good, "x"], "argument SEQ"),
        (["audit", "prove", good, "0", "--size", "-5"], "argument --size"),
        (["audit", "checkpoint", good], "required: --key"),
        (["export", good, out, "--freeze", "--snapshot", "s1"], "--freeze"),
        (["export", good, out, "--freeze", "--no-verify"], "--no-verify"),
        (["export", good, out, "--compression", "brotli"], "argument --compression"),
        (["export", good, out, "--snapshot", ""], "argument --snapshot"),
        (["export", good], "required: OUT.eng"),
        (["import", w["eng"]], "required: ARCHIVE"),
        (["engram", "ls"], "required: FILE.eng"),
        (["engram", "cat", w["eng"]], "required: NAME"),
        (["engram", "frob", w["eng"]], "invalid choice"),
        (["keygen"], "required: PRIVFILE"),
        (["tree", good, "-L", "-1"], "argument -L"),
        (["du", good, "-d", "-1"], "argument -d/--max-depth"),
        (["policy", "check", good, "--principal", "a", "--action", "cart:GetObjekt",
          "--resource", "/"], "did you mean 'cart:GetObject'"),
        (["policy", "check", good, "--principal", "a", "--action", "cart:GetObject",
          "--resource", "/", "--tag", "novalue"], "argument --tag"),
    ]
    for argv, cause in cases:
        rc, out_, err = check_run(argv)
        assert rc == 2, (argv, rc, err)
        assert err.startswith("usage: cartridge "), (argv, err)
        assert cause in err.splitlines()[-1], (argv, err)
    assert not os.path.exists(out)
    with cartridge.open(good) as c:                  # nothing was changed
        assert [s.name for s in c.snapshots()] == ["s1"] and not c.info()["frozen"]


def test_command_specific_errors(w, tmp_path):
    """What each command refuses after its arguments parse: exit 1, the cause named."""
    good = _copy(w, "good", tmp_path)
    out = str(tmp_path / "o.eng")
    cases = [
        (["snapshot", "create", good, "s1", "--json"], "already exists"),
        (["snapshot", "rm", good, "nope", "--json"], "no snapshot named"),
        (["snapshot", "restore", good, "nope", "--json"], "no snapshot named"),
        (["audit", "prove", good, "99999"], "no record 99999"),
        (["audit", "prove", good, "0", "--size", "99999"], "the log has only"),
        (["audit", "verify", good, "--checkpoint-key", w["text"], "--json"], w["text"]),
        (["audit", "verify", good, "--checkpoint-key", w["missing"]], "No such file"),
        (["audit", "checkpoint", good, "--key", w["missing"], "--json"], "No such file"),
        (["audit", "checkpoint", good, "--key", w["text"]], w["text"]),
        (["export", good, out, "--snapshot", "nope", "--json"], "no snapshot named"),
        (["export", good, out, "--sign", w["missing"]], "No such file"),
        (["export", good, out, "--sign", w["text"]], w["text"]),
        (["export", good, out, "--encrypt", w["text"]], "32 raw bytes or 64 hex digits"),
        (["export", good, out, "--include", "/nothing/here"], ("no file", "nothing", "no files")),
        (["export", good, w["dir"], "--json"], ("directory", "Is a directory")),
        (["export", good, str(tmp_path / "nodir" / "x.eng")], "no such local directory"),
        (["import", w["missing"], str(tmp_path / "n1.cart")], "No such file"),
        (["import", w["text"], str(tmp_path / "n2.cart")], ("not an Engram", "Engram")),
        (["import", w["cut_eng"], str(tmp_path / "n3.cart")], ("truncated", "corrupt", "damaged",
                                                                "Engram")),
        (["import", w["eng"], str(tmp_path / "n4.cart"), "--verify-key", w["other_pub"]],
         ("signature", "trusted")),
        (["import", w["eng"], str(tmp_path / "n5.cart"), "--verify-key", "zz" * 32],
         ("zz", "key")),
        (["import", w["eng"], w["text"]], ("not a cartridge", "magic")),
        (["engram", "ls", w["missing"], "--json"], "No such file"),
        (["engram", "ls", w["bad_eng"], "--json"], ("Engram", "corrupt", "damaged")),
        (["engram", "info", w["text"], "--json"], ("not an Engram", "Engram")),
        (["engram", "info", w["cut_eng"]], ("truncated", "corrupt", "damaged", "Engram")),
        (["engram", "cat", w["eng"], "no/such/member"], ("no/such/member", "no such")),
        (["engram", "cat", w["dir"], "x"], ("directory", "Is a directory")),
        (["engram", "verify", w["missing"], "--json"], "No such file"),
        (["engram", "verify", w["eng"], "--public-key", "nothex"], "nothex"),
        (["engram", "ls", w["eng"], "--key", w["text"]], "32 raw bytes or 64 hex digits"),
        (["keygen", w["key"]], "exists (use --force"),
        (["keygen", str(tmp_path / "nodir" / "k.key")], "No such file"),
        (["keygen", w["dir"]], ("exists", "directory")),
    ]
    for argv, cause in cases:
        _expect(argv, 1, cause)
    for name in ("n1", "n2", "n3", "n4", "n5"):          # a refused import creates nothing
        assert not os.path.exists(tmp_path / f"{name}.cart"), name
    assert not os.path.exists(out)
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []     # no temp left


def test_verification_failures_report_on_stdout(w, tmp_path):
    """audit verify and engram verify finding problems exit 1 with their report on stdout
    (a --json document with ok false), nothing on stderr."""
    with cartridge.open(w["good"]) as c:
        size = len(c.audit)
    rc, out, err = check_run(["audit", "verify", w["good"], "--head", f"{size}:{'00' * 32}",
                              "--json"])
    doc = json.loads(out)
    assert rc == 1 and err == "" and doc["ok"] is False and doc["problems"], (rc, err, doc)
    rc, out, err = check_run(["audit", "verify", w["good"], "--checkpoint-key", w["key"]])
    assert rc == 1 and err == "" and "no checkpoint is stored" in out.decode(), (rc, out)
    rc, out, err = check_run(["engram", "verify", w["eng"], "--public-key", w["other_pub"],
                              "--json"])
    doc = json.loads(out)
    assert rc == 1 and err == "" and doc["ok"] is False, (rc, err, doc)
    damaged = str(tmp_path / "damaged.eng")
    with open(w["eng"], "rb") as f:
        raw = bytearray(f.read())
    raw[len(raw) // 3] ^= 0xFF                         # inside a member's compressed bytes
    with open(damaged, "wb") as f:
        f.write(bytes(raw))
    rc, out, err = check_run(["engram", "verify", damaged, "--json"])
    assert rc == 1, (rc, out, err)
    if err:                                            # the file could not even be read
        assert err.startswith("cartridge: error: ") and out == b""
    else:
        assert json.loads(out)["ok"] is False


# -- through a real process: a representative set ----------------------------------------------
def test_real_processes(w, tmp_path):
    """The console entry point, as a shell runs it: exit codes, one line, no traceback, and
    --json documents that parse (for success and for problems found)."""
    good = _copy(w, "good", tmp_path)
    cases = [
        (["compact", good, "--max-pages", "0"], 2),
        (["audit", good, "--since", "garbage"], 2),
        (["audit", "verify", good, "--head", "bad"], 2),
        (["snapshot", "ls", w["corrupt"], "--json"], 1),
        (["freeze", _copy(w, "frozen", tmp_path), "--json"], 1),
        (["export", w["cut"], str(tmp_path / "x.eng"), "--json"], 1),
        (["import", w["cut_eng"], str(tmp_path / "y.cart")], 1),
        (["engram", "info", w["text"], "--json"], 1),
        (["audit", "prove", good, "99999"], 1),
    ]
    for argv, code in cases:
        r = subprocess.run([sys.executable, "-m", "cartridge", *argv], capture_output=True,
                           env=ENV, timeout=120)
        assert r.returncode == code, (argv, r)
        assert b"Traceback" not in r.stderr + r.stdout, (argv, r)
        lines = r.stderr.decode().splitlines()
        if code == 1:
            assert len(lines) == 1 and lines[0].startswith("cartridge: error: "), (argv, r)
            assert r.stdout == b"", (argv, r)
        else:
            assert lines[0].startswith("usage: ") and ": error: argument " in lines[-1], (argv, r)
    r = subprocess.run([sys.executable, "-m", "cartridge", "snapshot", "ls", good, "--json"],
                       capture_output=True, env=ENV, timeout=120)
    assert r.returncode == 0 and [s["name"] for s in json.loads(r.stdout)] == ["s1"]
    assert not os.path.exists(tmp_path / "x.eng") and not os.path.exists(tmp_path / "y.cart")
