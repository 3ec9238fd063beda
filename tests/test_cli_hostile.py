"""The command line against hostile input (issue 19, items 6, 8 and 10).

Names and values from an archive reach the terminal escaped (a name cannot draw a fake `OK`
line); every command, enumerated from the parser itself, meets bad encodings, missing files,
directories, files that are not archives, truncated and hostile archives and bad arguments
with one line on stderr and a documented exit code, never a traceback; options are accepted
anywhere among a command's arguments.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import unicodedata

import pytest
from hostile import check_run, run
from hostile import put_raw_keys as _put_raw_keys

import cartridge
from cartridge import cli
from cartridge.cli import build_parser

# Names only a crafted archive holds: the public API refuses control characters in paths.
RAW_NAMES = [
    b"/evil\x1b[2K\rOK (deep: 9 pages, 9 files, 9 bytes checked)\x1b[8m",
    b"/d/nl\nproblem: none",
    b"/d/bell\x07\x1b]0;title\x07",
    b"/c1\xc2\x9b31mred",
]
# Names the normaliser accepts that still spoof what a terminal shows.
SPOOFY_NAMES = ["/rtl\u202egnp.exe", "/zw\u200bspace/f.txt", "/iso\u2066x\u2069", "/caf\u00e9.txt"]
SPOOF_SID = "\x1b[2Jspoof\u202e"


# -- building the hostile inputs -------------------------------------------------------------------
def _spoof_archive(path: str) -> None:
    """A valid archive: spoofy names, a database with hostile values, a policy with a hostile Sid."""
    with cartridge.open(path, "x") as c:
        for name in SPOOFY_NAMES:
            c.write(name, b"spoof")
        c.write("/ok.txt", b"fine\n")
        conn = c.sqlite("/app.db")
        conn.execute('CREATE TABLE t("col\x1b[2J" TEXT, v)')
        conn.execute("INSERT INTO t VALUES('x\x1b]0;pwned\x07', 'ok\u202erev')")
        conn.execute("CREATE TABLE bad(v TEXT)")
        conn.execute("INSERT INTO bad VALUES(CAST(X'41ff1b5b326a' AS TEXT))")
        conn.close()
        c.set_policy("web", {"Version": "2012-10-17", "Statement": [
            {"Sid": SPOOF_SID, "Effect": "Allow", "Action": "cart:*", "Resource": "/*"}]})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("hostile")
    spoof = str(d / "spoof.cart")
    _spoof_archive(spoof)
    raw = str(d / "raw.cart")
    _spoof_archive(raw)
    _put_raw_keys(raw, RAW_NAMES)
    badkey = str(d / "badkey.cart")
    _spoof_archive(badkey)
    _put_raw_keys(badkey, [b"/bad\xff\xfename"])
    with open(spoof, "rb") as f:
        img = f.read()
    truncated = str(d / "truncated.cart")
    with open(truncated, "wb") as f:
        f.write(img[:len(img) // 2])
    text = str(d / "text.txt")
    with open(text, "w") as f:
        f.write("just text\n" * 100)
    empty = str(d / "empty.cart")
    open(empty, "wb").close()
    latin1 = str(d / "policy-latin1.json")
    with open(latin1, "wb") as f:
        f.write('{"Version": "2012-10-17", "Statement": [], "Sid": "caf\u00e9"}'.encode("latin-1"))
    policy = str(d / "policy.json")
    with open(policy, "w") as f:
        f.write('{"Version": "2012-10-17", "Statement": [{"Sid": "\\u001b[31m", "Effect": "Deny", '
                '"Action": "cart:*", "Resource": "/rtl\u202e*"}]}')
    badjson = str(d / "bad.json")
    with open(badjson, "w") as f:
        f.write('{"Version": "2012-10-17", "Statement": [{"Effect": "Mayb\x1b[31me"}]}')
    srcdir = d / "src"
    (srcdir / "sub").mkdir(parents=True)
    (srcdir / "sub" / "a.txt").write_bytes(b"a")
    fifo = str(d / "fifo")
    os.mkfifo(fifo)
    return {"spoof": spoof, "raw": raw, "badkey": badkey, "truncated": truncated, "text": text,
            "empty": empty, "latin1": latin1, "policy": policy, "badjson": badjson, "dir": str(d),
            "fifo": fifo,
            "srcdir": str(srcdir), "missing": str(d / "missing.cart"),
            "undecodable": str(d / "x\udcff.cart"), "control": str(d / "a\x1b[31m.cart")}


# -- item 6: names reach the terminal escaped ------------------------------------------------------
def test_safe_escapes_what_a_terminal_acts_on():
    assert cli._safe("plain /a/b.txt") == "plain /a/b.txt"
    assert cli._safe("caf\u00e9 \u65e5\u672c") == "caf\u00e9 \u65e5\u672c"     # readable
    assert cli._safe("a\x1b[31mb\rc\nd\te\x07") == "a\\x1b[31mb\\rc\\nd\\te\\x07"
    assert cli._safe("rtl\u202egnp \u200b \u2066 \x9b \udcff \U000e0041") == \
        "rtl\\u202egnp \\u200b \\u2066 \\x9b \\udcff \\U000e0041"
    assert cli._safe("a\\x1b") == "a\\\\x1b"                 # a literal backslash: doubled
    assert cli._safe_message("already 'a\\x1b'") == "already 'a\\x1b'"    # idempotent
    assert cli._safe_message("a\x1b[31m\u202e") == "a\\x1b[31m\\u202e"


def test_safe_is_unambiguous():
    """A name holding a control character and one spelling its escape literally never show
    alike (as `ls -b`: a backslash shows doubled); the printable text of both stays readable."""
    pairs = [("a\x1b", "a\\x1b"), ("rtl\u202e", "rtl\\u202e"), ("n\nl", "n\\nl"),
             ("x\\", "x\\\\"), ("bad\udcff", "bad\\udcff")]
    shown = [cli._safe(t) for pair in pairs for t in pair]
    assert len(set(shown)) == len(shown), shown
    for text in [t for pair in pairs for t in pair]:
        assert cli._safe(text).isprintable()
        # one way back: the shown text decodes to the original (unicode_escape of the ASCII)
        assert cli._safe(text).encode("ascii", "backslashreplace").decode("unicode_escape") \
            .encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass") == text


def test_verify_cannot_be_spoofed(inputs, tmp_path):
    rc, out, err = check_run(["verify", inputs["raw"]])
    text = out.decode()
    assert rc == 1 and "FAILED" in text, text
    assert not any(line.startswith("OK") for line in text.splitlines()), text
    assert "\\x1b[2K\\rOK (deep" in text and "/d/nl\\nproblem: none" in text, text
    assert "\\x9b31mred" in text, text
    assert "\x1b" not in text and "\r" not in text


def test_listing_commands_escape_spoofy_names(inputs, tmp_path):
    path = inputs["spoof"]
    for argv in (["ls", path], ["ls", path, "-lR"], ["ls", path, "/zw\u200bspace", "-l"]):
        rc, out, _ = check_run(argv)
        assert rc == 0
    _, out, _ = check_run(["ls", path])
    names = out.decode().splitlines()
    assert "rtl\\u202egnp.exe" in names and "zw\\u200bspace/" in names and "caf\u00e9.txt" in names
    _, out, _ = check_run(["stat", path, "/rtl\u202egnp.exe"])
    assert "path:     /rtl\\u202egnp.exe" in out.decode()
    _, out, _ = check_run(["stat", path, "/rtl\u202egnp.exe", "--json"])
    assert '"/rtl\\u202egnp.exe"' in out.decode()                            # json.dumps escapes
    rc, out, _ = check_run(["get", path, "/", "--to", str(tmp_path / "out\u202e")])
    assert rc == 0 and "into " in out.decode() and "out\\u202e" in out.decode()
    assert (tmp_path / "out\u202e" / "rtl\u202egnp.exe").read_bytes() == b"spoof"
    rc, out, err = check_run(["cat", path, "/iso\u2066nope"])
    assert rc == 1 and "\\u2066" in err


def test_errors_embedding_raw_names_are_escaped(inputs):
    for argv in (["ls", inputs["raw"], "-R"], ["get", inputs["raw"], "/", "--to", inputs["dir"]]):
        rc, _, err = check_run(argv)
        assert rc == 1 and "impossible name: '" in err and "\\x" in err, err


def test_sql_output_is_escaped(inputs):
    rc, out, _ = check_run(["sql", inputs["spoof"], "/app.db", "SELECT * FROM t"])
    text = out.decode()
    assert rc == 0 and "col\\x1b[2J" in text and "x\\x1b]0;pwned\\x07" in text, text
    assert "ok\\u202erev" in text
    rc, out, _ = check_run(["sql", inputs["spoof"], "/app.db", "SELECT * FROM t", "--json"])
    assert rc == 0 and "\\u001b" in out.decode()


def test_policy_output_is_escaped(inputs):
    rc, out, _ = check_run(["policy", "check", inputs["spoof"], "--principal", "ann",
                            "--action", "cart:GetObject", "--resource", "/ok.txt"])
    assert rc == 0 and "\\x1b[2Jspoof\\u202e" in out.decode()
    rc, out, _ = check_run(["policy", "get", inputs["spoof"], "web"])
    assert rc == 0 and "\\u001b[2Jspoof" in out.decode()


# -- item 8: one line, a documented exit code, never a traceback -----------------------------------
def test_sql_text_not_utf8_is_one_line(inputs):
    for extra in ([], ["--json"]):
        rc, _, err = check_run(["sql", inputs["spoof"], "/app.db", "SELECT * FROM bad", *extra])
        assert rc == 1 and "not valid UTF-8" in err, err


def test_policy_set_not_utf8_is_one_line(inputs, tmp_path):
    path = str(tmp_path / "p.cart")
    shutil.copy(inputs["spoof"], path)
    rc, _, err = check_run(["policy", "set", path, "p", inputs["latin1"]])
    assert rc == 1 and "not UTF-8" in err and "offset 54" in err, err
    rc, _, err = check_run(["policy", "set", path, "p", "-"], stdin=b'{"Version": "\xff"}')
    assert rc == 1 and "standard input: not UTF-8" in err, err
    rc, out, _ = check_run(["policy", "set", path, "p", "-"], stdin=b'{"Version": "2012-10-17", '
                           b'"Statement": [{"Effect": "Allow", "Action": "cart:*", "Resource": "*"}]}')
    assert rc == 0 and out == b"stored policy p\n"


def test_unexpected_exception_is_one_line_with_a_hint(monkeypatch, tmp_path):
    def boom(args):
        raise RuntimeError("bug\x1b[31m here")
    monkeypatch.setattr(cli, "cmd_info", boom)
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "x"):
        pass
    rc, _, err = run(["info", path])
    assert rc == 1 and err.count("\n") == 1, err
    assert err.startswith("cartridge: internal error: RuntimeError: bug\\x1b[31m here;"), err
    assert "CARTRIDGE_DEBUG=1" in err
    monkeypatch.setenv("CARTRIDGE_DEBUG", "1")
    with pytest.raises(RuntimeError):
        run(["info", path])


def test_help_documents_exit_codes():
    rc, out, _ = run(["--help"])
    text = " ".join(out.decode().split())
    assert rc == 0
    for code in ("0 success", "1 an error", "2 a usage error", "3 denied", "130 interrupted"):
        assert code in text, text


def _commands(parser: argparse.ArgumentParser, prefix: tuple = ()):
    """(command words, its parser) for every runnable command, found in the parser itself."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, prefix + (name,))
            return
    yield prefix, parser


def _variants(inputs) -> dict[str, list]:
    """Values to try for each argument destination; the first is the baseline the others vary
    from. A command with a destination missing here fails the test: add hostile values for it."""
    i = inputs
    archives = [i["spoof"], i["raw"], i["badkey"], i["truncated"], i["text"], i["empty"], i["dir"],
                i["missing"], i["undecodable"], i["control"], i["fifo"] + "/below"]
    return {
        "archive": archives,
        "path": ["/ok.txt", "/", "/rtl\u202egnp.exe", "/app.db", "/missing\x1b[31m", "/..", "rel",
                 "/ok.txt/x", "/zw\u200bspace", "/" + "n" * 300],
        "paths": [["/ok.txt"], ["/"], ["/rtl\u202egnp.exe", "/missing"], ["/../x"], ["/ok.txt/"]],
        "src": ["/ok.txt", "/missing", "/", "/rtl\u202egnp.exe", "/a\x00b"],
        "dst": ["/moved", "/zw\u200bspace", "/ok.txt", "/rtl\u202egnp.exe/x", "/.."],
        "sources": [[i["srcdir"]], [i["missing"]], [i["fifo"]], [i["text"], i["srcdir"]],
                    [i["undecodable"]]],
        "to": [None, "/dest/", "/..", "/ok.txt/x"],
        "exclude": [[], ["*.txt"], ["\x1b[31m*", "["], ["*"]],
        "name": ["web", "missing", "bad name\x1b[31m", ""],
        "new-dir": ["/new\u202edir", "/ok.txt", "/", "/..", "/missing\x1b[31m", "/ok.txt/x"],
        "db": ["/app.db", "/ok.txt", "/", "/missing.db", "/rtl\u202egnp.exe", "/a\x1b[31m"],
        "file": [i["policy"], i["latin1"], i["badjson"], i["dir"], i["missing"], "-", i["fifo"] + "/x"],
        "sql": ["SELECT * FROM t", "SELECT * FROM bad", "SELECT x FROM", "INSERT INTO t VALUES(1, 2)",
                'CREATE TABLE "\x1b[31m"(x)', "SELECT 1; SELECT * FROM bad"],
        "principal": ["ann", "\x1b[31m"],
        "action": ["cart:GetObject", "cart:GetObjekt", "nonsense"],
        "resource": ["/ok.txt", "/rtl\u202egnp.exe", "relative"],
        "tag": [None, ["k=v"], ["novalue"]],
        "context": [None, ["cart:SourceIp=10.0.0.1"], ["=x"]],
        "max_pages": [None, "10", "0", "-5", "x", "99999999999999999999"],
        "depth": [None, "0", "2", "-1", "x", "99999999999999999999"],
        # audit
        "since": [None, "0", "2026-01-01T00:00:00", "nan", "1e300", "\x1b[31m"],
        "until": [None, "-1", "inf", "2026-13-01"],
        "result": [None, "denied", "bogus"],
        "follow": [None, "0", "-1", "nan", "x"],
        "checkpoint_key": [None, i["policy"], i["missing"], i["dir"], i["empty"]],
        "head": [None, "1:" + "00" * 32, "x", "1:zz", "-1:" + "00" * 32],
        "seq": ["0", "-1", "99999999999999999999", "x"],
        "size": [None, "0", "-5", "99999999999"],
        "key": [i["policy"], i["missing"], i["dir"], i["empty"], i["text"]],
    }


# Destinations that mean a local path for one command: (command, dest) -> variants key.
LOCAL = {(("demo",), "path"): "demo-path", (("get",), "to"): "local-dir", (("sql",), "path"): "db",
         (("mkdir",), "path"): "new-dir"}


# -- the Engram commands (cli_engram.py): keygen, export, import, engram ls|cat|verify|info -------
def _engram_variants(inputs: dict, tmp_path) -> dict[str, list]:
    """Values for the Engram commands' arguments: good and hostile .eng files (a zip-slip name,
    garbage after the magic, cut short), keys of the wrong size, kind or file type. Files they
    write go to this test's own directory."""
    from cartridge import engram

    d = tmp_path / "eng"
    d.mkdir()
    good = str(d / "good.eng")
    with cartridge.open(inputs["spoof"]) as c:
        c.export_engram(good)
    slip = str(d / "slip.eng")
    with engram.EngramWriter(slip) as w:
        w.add("aa/bb.txt", b"x")
    with open(slip, "r+b") as f:
        raw = f.read().replace(b"aa/bb.txt", b"../b.txt\x1b")
        f.seek(0)
        f.write(raw)
    junk = str(d / "junk.eng")
    with open(junk, "wb") as f:
        f.write(b"\x89ENG\r\n\x1a\n" + b"\xff" * 300)
    cut = str(d / "cut.eng")
    with open(good, "rb") as f, open(cut, "wb") as g:
        g.write(f.read()[:500])
    key = str(d / "sign.key")
    with open(key, "w") as f:
        f.write("42" * 32)
    aes = str(d / "aes.key")
    with open(aes, "wb") as f:
        f.write(b"\x42" * 32)
    pub = engram.crypto.public_hex(engram.crypto.load_private_key(key))
    return {
        "eng-file": [good, slip, junk, cut, inputs["text"], inputs["dir"], inputs["missing"],
                     inputs["fifo"] + "/below", str(d / "ctl\x1b[31m.eng")],
        "eng-out": [str(d / "out.eng"), inputs["dir"], str(d / "no\u202edir" / "x.eng"),
                    inputs["fifo"] + "/below"],
        "eng-keyfile": [str(d / "new.key"), inputs["dir"], str(d / "nodir" / "k.key"), key],
        "eng-name": ["ok.txt", "missing\x1b[31m", "", "../x", "rtl\u202egnp.exe"],
        "sign": [None, key, inputs["text"], inputs["missing"], inputs["dir"], aes],
        "signer": [None, "\x1b[31m\u202e"],
        "compression": ["auto", "zstd", "brotli"],
        "include": [[], ["/ok.txt"], ["/.."], ["\x1b[31m"]],
        "encrypt": [None, aes, inputs["text"], inputs["missing"], key],
        "encryption": ["archive", "per-file"],
        "verify_key": [None, pub, "zz" * 32, inputs["text"], inputs["missing"]],
        "key": [None, aes, inputs["text"], inputs["dir"]],
        "public_key": [[], [pub], ["nothex\x1b"]],
        "snapshot": [None, "missing\x1b[31m", "", "x" * 300],
    }


for _cmd in (("engram", "ls"), ("engram", "cat"), ("engram", "verify"), ("engram", "info")):
    LOCAL[(_cmd, "file")] = "eng-file"
LOCAL.update({(("engram", "cat"), "name"): "eng-name", (("import",), "src"): "eng-file",
              (("export",), "out"): "eng-out", (("keygen",), "keyfile"): "eng-keyfile"})


def _argv(words, values: dict, flags: list[str]) -> list[str]:
    argv = ["--sync", "off", *words]
    for dest, value in values.items():
        if value is None:
            continue
        if dest.startswith("-"):
            for item in value if isinstance(value, list) else [value]:
                argv += [dest, item]
        elif isinstance(value, list):
            argv += value
        else:
            argv.append(value)
    return argv + flags


def _fresh_archive(value: str, inputs: dict, run_dir) -> str:
    """Where one run finds its ARCHIVE: a copy of a file input (writers change it), a path of
    the same name that does not exist yet (writers create it), or the input itself."""
    if os.path.dirname(value) != inputs["dir"] or value == inputs["dir"]:
        return value
    target = str(run_dir / os.path.basename(value))
    if os.path.isfile(value):
        shutil.copy(value, target)
    return target


def test_every_command_with_hostile_inputs(inputs, tmp_path):
    variants = _variants(inputs)
    existing = str(tmp_path / "existing.txt")
    shutil.copy(inputs["text"], existing)
    variants["demo-path"] = [str(tmp_path / "demo\u202e.cart"), existing, inputs["dir"],
                             inputs["text"] + "/below/x.cart"]
    variants["local-dir"] = [str(tmp_path / "out"), inputs["text"], str(tmp_path / "out\u202e"),
                             inputs["fifo"] + "/below", str(tmp_path / "new\x1b[31m" / "x")]
    variants.update(_engram_variants(inputs, tmp_path))
    stdin = b'{"Version": "2012-10-17", "Statement": [{"Effect": "Deny\xff"}]}'
    seen = set()
    runs = 0
    for words, parser in _commands(build_parser()):
        seen.add(" ".join(words))
        dests, flags = [], []       # (dest, option string or None), store_true options
        for a in parser._actions:
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction)) or a.dest == "sync":
                continue
            if isinstance(a, argparse._StoreTrueAction):
                flags.append(a.option_strings[0])
            else:
                dests.append((a.dest, a.option_strings[-1] if a.option_strings else None))
        keys = [LOCAL.get((words, d), d) for d, _ in dests]
        missing = [k for k in keys if k not in variants]
        assert not missing, f"{' '.join(words)}: add hostile values for {missing}"

        cases = [({}, [])]
        cases += [({k: v}, []) for k in keys for v in variants[k][1:]]
        cases += [({}, [f]) for f in flags]
        cases += [({"archive": inputs["raw"]}, [f]) for f in flags if "archive" in keys]
        for choice, fl in cases:
            run_dir = tmp_path / f"run{runs}"
            run_dir.mkdir()
            values = {}
            for (dest, opt), key in zip(dests, keys):
                value = choice.get(key, variants[key][0])
                if key == "archive":
                    value = _fresh_archive(value, inputs, run_dir)
                values[opt or dest] = value
            check_run(_argv(words, values, fl), stdin=stdin, content_on_stdout=words == ("cat",))
            runs += 1
        # bad arguments: nothing, an unknown option, a bad --sync
        needs_args = any(a.required for a in parser._actions if not a.option_strings)
        for argv in ([*words] if needs_args else [], [*words, "--bogus\x1b[31m"],
                     ["--sync", "never", *words]):
            rc, _, _ = check_run(argv)
            assert rc == 2, argv
    assert {"put", "get", "cat", "ls", "verify", "sql", "policy set", "policy check", "tree",
            "du"} <= seen
    assert runs > 100
    leftovers = set(os.listdir(inputs["dir"])) - {os.path.basename(v) for v in inputs.values()}
    assert not leftovers, leftovers            # every write went to a run's own directory
    assert not os.path.exists(inputs["missing"]) and not os.path.exists(inputs["undecodable"])


def test_a_real_process_prints_one_line(inputs):
    """The console entry point, in a subprocess: no traceback escapes main()."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    for argv in (["policy", "set", inputs["spoof"], "p", inputs["latin1"]],
                 ["sql", inputs["spoof"], "/app.db", "SELECT * FROM bad"],
                 ["verify", inputs["raw"]]):
        r = subprocess.run([sys.executable, "-m", "cartridge", *argv], capture_output=True, env=env)
        assert r.returncode == 1, r
        assert b"Traceback" not in r.stderr and b"\x1b" not in r.stdout + r.stderr, r
        assert len(r.stderr.splitlines()) == (0 if argv[0] == "verify" else 1), r


# -- item 10: options anywhere ---------------------------------------------------------------------
def test_options_anywhere(inputs, tmp_path):
    path = inputs["spoof"]
    want = run(["ls", "-l", path, "/zw\u200bspace"])
    assert want[0] == 0 and b"f.txt" in want[1]
    for argv in (["ls", path, "-l", "/zw\u200bspace"], ["ls", path, "/zw\u200bspace", "-l"]):
        assert run(argv) == want, argv
    want = run(["ls", "-lR", path])
    for argv in (["ls", path, "-lR"], ["ls", path, "-l", "-R"], ["ls", "-R", path, "/", "-l"]):
        assert run(argv) == want, argv
    for argv in (["stat", path, "--json", "/ok.txt"], ["stat", "--json", path, "/ok.txt"],
                 ["info", path, "--json"], ["verify", path, "--quick"],
                 ["sql", path, "--json", "/app.db", "SELECT v FROM t"],
                 ["policy", "check", "--principal", "a", path, "--action", "cart:List",
                  "--resource", "/"]):
        rc, out, err = run(argv)
        assert rc == 0, (argv, err)
    work = str(tmp_path / "w.cart")
    shutil.copy(path, work)
    assert run(["mkdir", work, "-p", "/x/y"])[0] == 0
    assert run(["rm", work, "/x", "-r"])[0] == 0
    assert run(["put", work, "--to", "/in/", inputs["text"]])[0] == 0
    assert run(["get", work, "--to", str(tmp_path / "o"), "/in"])[0] == 0
    assert (tmp_path / "o" / "in" / "text.txt").read_text().startswith("just text")
    assert run(["rm", work, "--sync", "normal", "/in/text.txt"])[0] == 0
    with cartridge.open(work, "r") as c:
        assert not c.exists("/x") and not c.exists("/in/text.txt")


def test_unicode_category_sanity():
    """The test's notion of unsafe covers the categories a terminal acts on."""
    for c in "\x1b\r\x07\x9b\u202e\u200b\u2066\u2028\udcff":
        assert not c.isprintable(), unicodedata.name(c, hex(ord(c)))


def test_a_literal_escape_and_the_real_character_print_differently(tmp_path):
    """A name spelled with a literal backslash sequence and one holding the character it spells
    (U+202E through the API; ESC only through a crafted key, which listing and verify report as
    damage) show differently in ls, stat and verify."""
    path = str(tmp_path / "lit.cart")
    with cartridge.open(path, "x") as c:
        c.write("/rtl\\u202e", b"literal")
        c.write("/rtl\u202e", b"real")
        c.write("/x\\x1b", b"literal")
    rc, out, _ = check_run(["ls", path])
    assert rc == 0 and out.decode().splitlines() == ["rtl\\\\u202e", "rtl\\u202e", "x\\\\x1b"]
    outs = [check_run(["stat", path, p])[1] for p in ("/rtl\\u202e", "/rtl\u202e", "/x\\x1b")]
    assert b"path:     /rtl\\\\u202e\n" in outs[0] and b"path:     /rtl\\u202e\n" in outs[1]
    assert b"path:     /x\\\\x1b\n" in outs[2]
    _put_raw_keys(path, [b"/x\x1b"])                 # the real ESC: damage, named escaped once
    rc, out, _ = check_run(["verify", path])
    problems = [ln for ln in out.decode().splitlines() if ln.startswith("problem:")]
    assert rc == 1 and problems and all("x\\\\x1b" not in p for p in problems), problems
    assert any("/x\\x1b" in p for p in problems), problems
    rc, _, err = check_run(["ls", path])
    assert rc == 1 and "'x\\x1b'" in err and "x\\\\x1b" not in err, err
    rc, out, _ = check_run(["stat", path, "/x\\x1b"])           # the literal one still reads
    assert rc == 0 and b"path:     /x\\\\x1b\n" in out


def test_export_refusal_names_a_backslash_path_unambiguously(tmp_path):
    """`cartridge export` refusing a name with a backslash (Engram paths hold none) names it
    as a repr: the literal '/x\\x1b' shows as '/x\\\\x1b', never as what looks like ESC."""
    pytest.importorskip("zstandard", reason="the engram extra is not installed")
    path = str(tmp_path / "lit.cart")
    with cartridge.open(path, "x") as c:
        c.write("/x\\x1b", b"literal")
    rc, _, err = check_run(["export", path, str(tmp_path / "out.eng")])
    assert rc == 1 and "'/x\\\\x1b' cannot be stored in an Engram" in err, err
    assert not os.path.exists(tmp_path / "out.eng")
