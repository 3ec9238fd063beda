"""The command line people enjoy (issue 17, item 3): --json documents with their documented
keys, tree, du, ls -l -h, progress bars on a terminal only, examples in every --help, exit
codes and one-line errors through a real process, optional shell completion."""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import pty
import select
import shlex
import subprocess
import sys

import pytest

import cartridge
from cartridge import cli, jsonout, progress
from cartridge.cli import EXAMPLES, build_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in sys.path if p]))
ENV.pop("CARTRIDGE_PROGRESS", None)
BIG = 3 * (1 << 20) + 17

# The keys every --json document has (docs/GUIDE.md, "The command line", lists the same).
ENTRY_KEYS = {"path", "name", "type", "size", "mode", "ctime", "mtime", "checksum"}
JSON_KEYS = {
    "stat": ENTRY_KEYS,
    "verify": {"archive", "ok", "deep", "pages_checked", "files_checked", "bytes_checked",
               "problems", "warnings"},
    "du": {"path", "bytes", "files", "entries"},
    "policy check": {"decision", "allowed", "principal", "action", "resource", "policies_stored",
                     "statements"},
    "info": {"files", "directories", "total_bytes", "file_size", "path", "mode", "sync",
             "reclaimable_bytes", "packs", "packed_files", "pack_pages", "pack_dead_bytes"},
}


def cli_run(*argv: str, env: dict | None = None, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cartridge", *argv], capture_output=True,
                          env=env or ENV, input=stdin, timeout=120)


@pytest.fixture(scope="module")
def arch(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("ux")
    path = str(d / "a.cart")
    with cartridge.open(path, "x") as c:
        c.write("/docs/a.txt", b"hello\n", mode=0o640, mtime=1_700_000_000)
        c.write("/docs/sub/b.bin", b"\x01" * 5000)
        c.write("/docs/sub/deeper/c.txt", b"c" * 3)
        c.write("/big.bin", b"\x07" * BIG)
        c.mkdir("/empty")
        c.set_policy("team", {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "cart:GetObject", "Resource": "/docs/*"}]})
    return path


# -- --json ----------------------------------------------------------------------------------------
def test_json_documents_parse_and_have_their_keys(arch):
    cases = {
        "stat": ["stat", arch, "/docs/a.txt", "--json"],
        "verify": ["verify", arch, "--json"],
        "du": ["du", arch, "/docs", "--json"],
        "policy check": ["policy", "check", arch, "--principal", "ann", "--action",
                         "cart:GetObject", "--resource", "/docs/a.txt", "--json"],
        "info": ["info", arch, "--json"],
    }
    for name, argv in cases.items():
        r = cli_run(*argv)
        assert r.returncode == 0, (argv, r.stderr)
        doc = json.loads(r.stdout)
        assert JSON_KEYS[name] <= set(doc), (name, sorted(doc))
    doc = json.loads(cli_run("stat", arch, "/docs/a.txt", "--json").stdout)
    assert (doc["size"], doc["mode"], doc["mtime"], doc["type"]) == (6, 0o100640, 1.7e9, "file")
    assert doc["checksum"] == cartridge.content_checksum(b"hello\n")
    doc = json.loads(cli_run("verify", arch, "--json").stdout)
    # bytes_checked also counts the stored policy's record (the system namespace)
    assert doc["ok"] is True and doc["problems"] == [] and doc["bytes_checked"] > BIG + 5009
    doc = json.loads(cli_run("policy", "check", arch, "--principal", "ann", "--action",
                             "cart:GetObject", "--resource", "/docs/a.txt", "--json").stdout)
    assert doc["decision"] == "Allow" and doc["allowed"] is True and doc["policies_stored"]


def test_ls_json_lists_entries(arch):
    r = cli_run("ls", arch, "/docs", "--json")
    docs = json.loads(r.stdout)
    assert [d["name"] for d in docs] == ["a.txt", "sub"]
    assert all(set(d) == ENTRY_KEYS for d in docs)
    assert docs[1]["type"] == "directory" and docs[1]["checksum"] is None
    docs = json.loads(cli_run("ls", arch, "/", "-R", "--json").stdout)
    assert [d["path"] for d in docs if d["type"] == "file"] == [
        "/big.bin", "/docs/a.txt", "/docs/sub/b.bin", "/docs/sub/deeper/c.txt"]


def test_policy_json(arch):
    assert json.loads(cli_run("policy", "ls", arch, "--json").stdout) == [
        {"name": "team", "statements": 1}]
    doc = json.loads(cli_run("policy", "get", arch, "team", "--json").stdout)
    assert doc["Statement"][0]["Resource"] == "/docs/*"
    r = cli_run("policy", "check", arch, "--principal", "ann", "--action", "cart:PutObject",
                "--resource", "/docs/a.txt", "--json")
    assert r.returncode == 3
    doc = json.loads(r.stdout)
    assert doc["decision"] != "Allow" and doc["allowed"] is False


def test_verify_json_reports_problems_with_exit_1(arch, tmp_path):
    bad = tmp_path / "bad.cart"
    with open(arch, "rb") as f:
        data = bytearray(f.read())
    pos = data.index(b"\x07" * 4096) + 4096 * 10    # inside /big.bin's content, not the structure
    data[pos:pos + 8] = b"\x00" * 8
    bad.write_bytes(bytes(data))
    r = cli_run("verify", str(bad), "--json")
    assert r.returncode == 1 and b"Traceback" not in r.stderr, r
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and any("checksum" in p for p in doc["problems"]), doc


def test_emit_json_is_safe_and_strict():
    out = io.StringIO()
    jsonout.emit_json({"name": "a\x1b[31m\u202e", "nan": float("nan"), "b": b"\x01\xff",
                       "t": (1, 2), "o": object}, out=out)
    text = out.getvalue()
    assert text.isascii() and "\x1b" not in text
    doc = json.loads(text)
    assert doc["name"] == "a\x1b[31m\u202e" and doc["nan"] is None and doc["b"] == "01ff"
    assert doc["t"] == [1, 2] and doc["o"].startswith("<class")
    assert "\n" not in jsonout.dumps({"a": [1, 2]}, compact=True)


# -- tree / du / ls -l -h --------------------------------------------------------------------------
def test_tree(arch):
    r = cli_run("tree", arch, env=dict(ENV, PYTHONIOENCODING="ascii"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == [
        "/", "|-- big.bin", "|-- docs/", "|   |-- a.txt", "|   `-- sub/", "|       |-- b.bin",
        "|       `-- deeper/", "|           `-- c.txt", "`-- empty/", "",
        "4 directories, 4 files"]
    r = cli_run("tree", arch, "/docs", "-L", "1", "-s", env=dict(ENV, PYTHONIOENCODING="utf-8"))
    lines = r.stdout.decode().splitlines()
    assert lines[0] == "/docs/" and "\u251c\u2500\u2500 [         6]  a.txt" in lines, lines
    assert lines[-1] == "1 directory, 1 file" and not any("b.bin" in x for x in lines)
    r = cli_run("tree", arch, "/docs", "-L", "-1")                   # a usage error
    assert r.returncode == 2 and r.stderr.endswith(b"argument -L: must be at least 0, not -1\n")


def test_du(arch):
    r = cli_run("du", arch)
    rows = [line.split() for line in r.stdout.decode().splitlines()]
    got = {p: int(n) for n, p in rows}
    assert got == {"/docs/sub/deeper": 3, "/docs/sub": 5003, "/docs": 5009, "/empty": 0,
                   "/": BIG + 5009}
    assert [p for _n, p in rows] == ["/docs/sub/deeper", "/docs/sub", "/docs", "/empty", "/"]
    assert cli_run("du", arch, "-s", "-h").stdout.decode().split() == ["3.0M", "/"]
    assert [line.split()[1] for line in cli_run("du", arch, "-d", "1").stdout.decode()
            .splitlines()] == ["/docs", "/empty", "/"]
    doc = json.loads(cli_run("du", arch, "/docs/sub", "--json").stdout)
    assert (doc["bytes"], doc["files"]) == (5003, 2)
    assert doc["entries"] == [{"path": "/docs/sub/deeper", "bytes": 3, "files": 1},
                              {"path": "/docs/sub", "bytes": 5003, "files": 2}]
    doc = json.loads(cli_run("du", arch, "/docs/a.txt", "--json").stdout)
    assert (doc["bytes"], doc["files"]) == (6, 1)


def test_ls_long_human(arch):
    lines = cli_run("ls", arch, "/", "-lh").stdout.decode().splitlines()
    big = next(x for x in lines if x.endswith("big.bin")).split()
    assert big[0] == "-rw-r--r--" and big[1] == "3.0M"
    lines = cli_run("ls", arch, "/", "-l").stdout.decode().splitlines()
    assert next(x for x in lines if x.endswith("big.bin")).split()[1] == str(BIG)
    assert cli_run("ls", arch, "--help").stdout.startswith(b"usage: cartridge ls")
    assert cli._human_short(1023) == "1023" and cli._human_short(1536) == "1.5K"
    assert cli._human_short(50 << 20) == "50M" and cli._human_short(5 << 40) == "5.0T"


# -- progress --------------------------------------------------------------------------------------
def _on_a_terminal(argv: list[str], env: dict) -> tuple[int, bytes]:
    """Run the CLI with stderr on a pseudo-terminal (stdout a pipe); (exit code, what the
    terminal received)."""
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "cartridge", *argv], stdout=subprocess.PIPE,
                             stderr=slave, env=env)
    finally:
        os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:          # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    p.stdout.read()
    return p.wait(60), seen


@pytest.mark.skipif(progress.backend() is None, reason="neither rich nor tqdm is installed")
def test_progress_bar_only_on_a_terminal(arch, tmp_path):
    env = dict(ENV, COLUMNS="100", TERM="xterm")
    rc, seen = _on_a_terminal(["get", arch, "/big.bin", "--to", str(tmp_path / "o1")], env)
    assert rc == 0 and b"get" in seen and b"100%" in seen, seen
    rc, seen = _on_a_terminal(["verify", arch], env)
    assert rc == 0 and b"verify" in seen and b"100%" in seen, seen
    rc, seen = _on_a_terminal(["put", str(tmp_path / "n.cart"), str(tmp_path / "o1")], env)
    assert rc == 0 and b"put" in seen and b"100%" in seen, seen
    for argv in (["get", arch, "/big.bin", "--to", str(tmp_path / "o2"), "--quiet"],
                 ["-q", "verify", arch]):
        rc, seen = _on_a_terminal(argv, env)
        assert rc == 0 and seen == b"", seen
    rc, seen = _on_a_terminal(["verify", arch], dict(env, CARTRIDGE_PROGRESS="0"))
    assert rc == 0 and seen == b""
    r = cli_run("get", arch, "/big.bin", "--to", str(tmp_path / "o3"))     # stderr a pipe
    assert r.returncode == 0 and r.stderr == b""


def _last_frame(seen: bytes, label: bytes) -> bytes:
    """The last frame of the bar labelled `label` the terminal received."""
    frames = [f for f in seen.replace(b"\n", b"\r").split(b"\r") if label in f]
    assert frames, seen
    return frames[-1]


def _holey(path: str) -> str:
    """An archive with about 7 MiB to give back (most of its files deleted)."""
    with cartridge.open(path, "x") as c:
        c.write_many((f"/f{i}", bytes([i]) * 200_000) for i in range(40))
        with c.transaction():
            for i in range(40):
                if i % 4:
                    c.delete(f"/f{i}")
    return path


@pytest.mark.skipif(progress.backend() is None, reason="neither rich nor tqdm is installed")
def test_progress_bars_of_the_space_engram_and_audit_commands(tmp_path):
    """compact, freeze (its vacuum), export, import and audit verify draw a bar on a terminal
    that ends at 100% (compact's total is an estimate: the bar ends at what came back), and
    none with --quiet or when standard error is not a terminal."""
    pytest.importorskip("zstandard", reason="the engram extra is not installed")
    env = dict(ENV, COLUMNS="120", TERM="xterm")
    eng = str(tmp_path / "x.eng")
    runs = [(["compact", _holey(str(tmp_path / "c.cart"))], b"compact"),
            (["audit", "verify", str(tmp_path / "c.cart")], b"audit verify"),
            (["export", str(tmp_path / "c.cart"), eng], b"export"),
            (["import", eng, str(tmp_path / "i.cart")], b"import"),
            (["freeze", _holey(str(tmp_path / "f.cart"))], b"freeze: compact")]
    for argv, label in runs:
        rc, seen = _on_a_terminal(argv, env)
        assert rc == 0, (argv, seen)
        frame = _last_frame(seen, label)
        assert b"100%" in frame, (argv, frame)
    assert os.path.getsize(tmp_path / "c.cart") < (4 << 20)         # of 8 MiB: compact gave back
    with cartridge.open(str(tmp_path / "i.cart")) as c:
        assert len(list(c.scan("/"))) == 10
    with cartridge.open(str(tmp_path / "f.cart")) as c:
        assert c.info()["frozen"]
    quiet = [["compact", _holey(str(tmp_path / "q1.cart")), "--quiet"],
             ["-q", "export", str(tmp_path / "q1.cart"), str(tmp_path / "q.eng")],
             ["import", str(tmp_path / "q.eng"), str(tmp_path / "q2.cart"), "-q"],
             ["freeze", _holey(str(tmp_path / "q3.cart")), "-q"],
             ["audit", "verify", str(tmp_path / "q2.cart"), "-q"]]
    for argv in quiet:
        rc, seen = _on_a_terminal(argv, env)
        assert rc == 0 and seen == b"", (argv, seen)
    for argv in (["compact", _holey(str(tmp_path / "p1.cart"))],          # stderr a pipe
                 ["export", str(tmp_path / "p1.cart"), str(tmp_path / "p.eng")],
                 ["import", str(tmp_path / "p.eng"), str(tmp_path / "p2.cart")]):
        r = cli_run(*argv)
        assert r.returncode == 0 and r.stderr == b"", (argv, r)


def test_bar_finish_ends_at_the_count(monkeypatch):
    """Bar.finish(): the total becomes what was counted (an estimate was too high, or
    nothing was to do), so the last frame says 100%."""
    monkeypatch.setenv("CARTRIDGE_PROGRESS", "1")
    for name in ("rich", "tqdm"):
        if importlib.util.find_spec(name) is None:
            continue
        if name == "tqdm":
            monkeypatch.setitem(sys.modules, "rich", None)
        for total, done in ((1000, 600), (1000, 0), (None, 300)):
            out = io.StringIO()
            with progress.bar("est", total, stream=out) as b:
                b.update(done)
                b.finish()
            last = out.getvalue().replace("\n", "\r").split("\r")
            last = [f for f in last if "est" in f][-1]
            if name == "rich" or done:                # tqdm shows no percentage for total 0
                assert "100%" in last, (name, total, done, last)


def test_quiet_drops_the_summary(arch, tmp_path):
    r = cli_run("get", arch, "/docs", "--to", str(tmp_path / "o"), "-q")
    assert r.returncode == 0 and r.stdout == b"" and r.stderr == b""
    assert (tmp_path / "o" / "docs" / "sub" / "deeper" / "c.txt").read_bytes() == b"ccc"


def test_bar_without_a_library_is_a_no_op(monkeypatch):
    monkeypatch.setitem(sys.modules, "rich", None)      # import rich -> ImportError
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setenv("CARTRIDGE_PROGRESS", "1")
    assert progress.enabled() and progress.backend() is None
    with progress.bar("x", 10, stream=io.StringIO()) as b:
        b.update(5)
        b.set_total(None)
    assert not b.shown


@pytest.mark.parametrize("name", ["rich", "tqdm"])
def test_each_backend_draws_and_closes(monkeypatch, name):
    pytest.importorskip(name)
    if name == "tqdm":
        monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setenv("CARTRIDGE_PROGRESS", "1")
    assert progress.backend() == name
    out = io.StringIO()
    with progress.bar("load \x1b[31m", 1000, stream=out) as b:
        assert b.shown
        b.update(400)
        b.update(600)
    b.close()                                 # idempotent
    text = out.getvalue()
    assert "load" in text and "\\x1b[31m" in text, text
    for quiet, env in ((True, "1"), (False, "0")):
        monkeypatch.setenv("CARTRIDGE_PROGRESS", env)
        assert not progress.bar("x", 1, quiet=quiet, stream=out).shown
    monkeypatch.delenv("CARTRIDGE_PROGRESS")
    assert not progress.enabled(stream=io.StringIO())       # not a terminal


def test_verify_progress_callback(arch):
    seen = []
    with cartridge.open(arch) as c:
        report = c.verify(progress=seen.append)
        # the stored policy is checked too: a little more than the files' total_bytes
        assert sum(seen) == report.bytes_checked > c.info()["total_bytes"] == BIG + 5009
        seen.clear()
        with pytest.raises(cartridge.AccessDeniedError):     # a principal's verify is checked
            c.as_principal("ann").verify(progress=seen.append)
        assert seen == []
        with pytest.raises(TypeError):
            c.verify(progress=5)
        seen.clear()
        c.verify(deep=False, progress=seen.append)
        assert seen == []


def test_audit_verify_progress_callback(tmp_path):
    """cart.audit.verify(progress=) is called as records are re-hashed: its sum is the log's
    length (a block of records at a time); a non-callable is a TypeError."""
    path = str(tmp_path / "log.cart")
    with cartridge.open(path, "x") as c:
        for i in range(300):                    # more than one block of records
            c.write(f"/f{i}", b"x")
    with cartridge.open(path) as c:
        seen: list[int] = []
        rep = c.audit.verify(progress=seen.append)
        assert rep.ok and sum(seen) == len(c.audit) == rep.size >= 300 and len(seen) > 1
        with pytest.raises(TypeError):
            c.audit.verify(progress=5)


# -- help, exit codes, no traceback ----------------------------------------------------------------
def _commands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, prefix + (name,))
            return
    yield prefix, parser


def test_every_command_has_examples_that_parse():
    parser = build_parser()
    names = {" ".join(words) for words, _ in _commands(parser)}
    assert names <= set(EXAMPLES), sorted(names - set(EXAMPLES))
    for words, sub in _commands(parser):
        help_text = sub.format_help()
        assert "examples:" in help_text and "cartridge " + " ".join(words) in help_text, words
    for name, examples in EXAMPLES.items():
        for line in examples:
            words = shlex.split(line, comments=True)
            start = words.index("cartridge")                 # after a pipe, or first
            end = words.index("|", start) if "|" in words[start:] else len(words)
            argv = words[start + 1:end]
            args = build_parser().parse_args(argv)       # SystemExit(2) on a bad example
            assert " ".join(argv[:len(name.split())]) == name or name == "" or \
                name == "policy", line
            assert callable(args.func)


def test_errors_are_one_line_with_documented_codes(arch, tmp_path):
    cases = [
        (["ls", str(tmp_path / "missing.cart")], 1),
        (["tree", arch, "/nope"], 1),
        (["du", arch, "/nope", "--json"], 1),
        (["du", arch, "-d", "x"], 2),
        (["stat", arch, "/docs/a.txt/x", "--json"], 1),
        (["verify", str(tmp_path)], 1),
        (["policy", "get", arch, "nobody", "--json"], 1),
        (["ls", arch, "--bogus"], 2),
        (["policy", "check", arch, "--principal", "a", "--action", "cart:PutObject",
          "--resource", "/x"], 3),
    ]
    for argv, code in cases:
        r = cli_run(*argv)
        assert r.returncode == code, (argv, r)
        assert b"Traceback" not in r.stderr + r.stdout, (argv, r)
        if code == 1:
            assert r.stderr.count(b"\n") == 1 and r.stderr.startswith(b"cartridge: error: "), r


def test_shell_completion(tmp_path):
    pytest.importorskip("argcomplete", reason="argcomplete (the cli extra) is not installed")
    out = tmp_path / "candidates"
    env = dict(ENV, _ARGCOMPLETE="1", _ARGCOMPLETE_IFS="\n", COMP_LINE="cartridge ve",
               COMP_POINT=str(len("cartridge ve")), _ARGCOMPLETE_STDOUT_FILENAME=str(out))
    r = subprocess.run([sys.executable, "-m", "cartridge"], env=env, capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r
    assert out.read_text().split() == ["verify"]


def test_main_without_argcomplete_ignores_the_request(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "argcomplete", None)
    monkeypatch.setenv("_ARGCOMPLETE", "1")
    assert main(["--version"]) == 0
    assert "cartridge" in capsys.readouterr().out


def test_deep_tree_has_no_recursion_limit(tmp_path):
    """A path may be about 2000 directories deep (4096 bytes): tree, du and ls -R walk it."""
    path = str(tmp_path / "deep.cart")
    deep = "/d" * 1500 + "/f.txt"
    with cartridge.open(path, "x") as c:
        c.write(deep, b"deep")
        c.write("/top.txt", b"t")
    r = cli_run("tree", path, env=dict(ENV, PYTHONIOENCODING="ascii"))
    assert r.returncode == 0, r.stderr[-500:]
    lines = r.stdout.decode().splitlines()
    assert lines[-1] == "1500 directories, 2 files" and lines[-3] == "`-- top.txt"
    assert lines[-4] == "|   " + "    " * 1499 + "`-- f.txt"
    doc = json.loads(cli_run("du", path, "--json").stdout)
    assert (doc["bytes"], doc["files"], len(doc["entries"])) == (5, 2, 1501)
    r = cli_run("ls", path, "-R")
    assert r.returncode == 0 and r.stdout.decode().splitlines()[-2] == deep
