"""Hostile archives (issue 19, items 7 and 13): hand-crafted archives whose checksums are valid
and whose catalog holds what no writer makes - names that climb out ('/../../x', '/a/../../x',
'/..'), are not normal ('//abs', no leading '/', a trailing '/', '/' itself, a '.' segment),
hold NUL, a newline, ANSI escapes or bytes that are not UTF-8, are over-long (a segment over
255 bytes), a file with entries below it, duplicate and out-of-order keys (inside a leaf, and
a key outside the range its parent's separators give its leaf).

Every name meets every operation, each in its own test: every read API (read, readinto,
read_buffer, open "rb", stat, exists, isfile, isdir, listdir, walk, scan, sqlite,
sqlite_export, export_engram (of the whole archive and of the path), fsspec
get/ls/info/find/cat_file), verify(), and the CLI's get (into a fresh directory), ls, stat,
verify and export. Each
gives an answer or a clear error (a CartridgeError; the CLI: one line, exit 1) and verify
reports a problem, escaped; names listed back are all sane; and nothing is written outside the
target: the whole temporary tree (the target's parent dirs, sibling dirs, the files a climbing
name would reach) is compared before and after, and every file written lies inside the target.

A path over 4096 bytes cannot be crafted: the B+tree itself refuses keys over 4096 bytes
(tests/test_corruption.py covers hostile node pages). The cart:// filesystem is in OPS
(fsspec's `get` into a fresh directory; `ls`, `info`, `find`, `cat_file`): a path that is not
there is fsspec's own FileNotFoundError. Engram export (export_engram, `cartridge export`)
is in OPS and CLI_OPS: it refuses the archive with a clear error, or writes a .eng whose names
are the archive's normalised paths, and nothing else.

The rule for a file with children (see cartridge/namespace.py): every call that meets it
raises CorruptionError naming both keys - the lookups of the file and of every path below it
(read, readinto, read_buffer, open, stat, exists, isfile, isdir, sqlite, sqlite_export), listing
the file or its parent, scan, a change at or below it, `get` of a tree holding it (before
writing anything) - and verify reports it. Edge cases of the lookups (keys sorting between
'/a' and '/a/', leaf edges, long keys, deep ancestors): tests/test_file_with_children.py.
"""
from __future__ import annotations

import os
import shutil

import pytest
from hostile import (
    check_run,
    duplicate_keys,
    file_with_children,
    key_outside_its_leaf,
    out_of_order_keys,
    raw_name_archive,
    snapshot,
    unsafe,
)

import cartridge
from cartridge import paths as P
from cartridge.errors import CartridgeError, CorruptionError, InvalidPathError

RAW = {
    "climb": b"/../../x",
    "inner-climb": b"/a/../../x",
    "dotdot": b"/..",
    "dot": b"/./x",
    "double-slash": b"//abs",
    "relative": b"rel/x",
    "trailing-slash": b"/t/",
    "root": b"/",
    "nul": b"/n\x00ul",
    "newline": b"/d/new\nline",
    "ansi": b"/ansi\x1b[2K\rOK\x1b[31m",
    "not-utf8": b"/bad\xff\xfe",
    "long-segment": b"/" + b"s" * 256,
    "long-inner-segment": b"/d/" + b"s" * 300 + b"/x",
}


def _api_paths(name: bytes) -> list[str]:
    """The paths an API caller could try for a raw key: its text, its parent, the root."""
    text = name.decode("utf-8", "surrogateescape")
    parent = text.rsplit("/", 1)[0] or "/"
    return list(dict.fromkeys([text, parent, "/"]))


CASES = {k: (lambda p, n=v: raw_name_archive(p, n), _api_paths(v)) for k, v in RAW.items()}
CASES["file-with-children"] = (file_with_children, ["/a", "/a/b", "/a/", "/a-x", "/"])
CASES["duplicate-keys"] = (duplicate_keys, ["/dup1", "/dup2", "/"])
CASES["out-of-order-keys"] = (out_of_order_keys, ["/b1", "/z9", "/c1", "/"])
CASES["key-outside-its-leaf"] = (key_outside_its_leaf, ["/f036", "/f!36", "/f037", "/"])


def _sane_path(path: str) -> None:
    assert P.normalize(path) == path and not unsafe(path), path


def _sane_names(d: str, names) -> None:
    for n in names:
        assert n and "/" not in n, (d, n)
        _sane_path(P.join(d, n))


def _read(c, p, out):
    return c.read(p)


def _readinto(c, p, out):
    return c.readinto(p, bytearray(1 << 16))


def _read_buffer(c, p, out):
    return bytes(c.read_buffer(p))


def _open_rb(c, p, out):
    with c.open(p, "rb") as f:
        return f.read()


def _listdir(c, p, out):
    names = c.listdir(p)
    _sane_names(P.normalize(p), names)
    return names


def _walk(c, p, out):
    got = list(c.walk(p))
    for d, dirs, files in got:
        _sane_path(d)
        _sane_names(d, dirs + files)
    return got


def _scan(c, p, out):
    got = list(c.scan(p))
    for info in got:
        _sane_path(info.path)
    return got


def _sqlite(c, p, out):
    conn = c.sqlite(p, readonly=True)
    try:
        return list(conn.execute("SELECT name FROM sqlite_master"))
    finally:
        conn.close()


def _sqlite_export(c, p, out):
    os.makedirs(out, exist_ok=True)
    c.sqlite_export(p, os.path.join(out, "export.db"))


def _fsspec_get(c, p, out):
    """fsspec's get of the path into a fresh local directory, through the cart:// filesystem."""
    from cartridge.fsspec import CartridgeFileSystem
    fs = CartridgeFileSystem(fo=c.path, skip_instance_cache=True)
    try:
        os.makedirs(out, exist_ok=True)
        fs.get(p, out + "/", recursive=True)
    except FileNotFoundError as e:      # fsspec's own answer for a path that is not there
        assert not unsafe(str(e)), (p, str(e))
    finally:
        fs.close()


def _fsspec_read(c, p, out):
    """ls, info and cat through the cart:// filesystem."""
    from cartridge.fsspec import CartridgeFileSystem
    fs = CartridgeFileSystem(fo=c.path, skip_instance_cache=True)
    try:
        for call in (lambda: fs.ls(p), lambda: fs.info(p), lambda: fs.find(p),
                     lambda: fs.cat_file(p)):
            try:
                call()
            except CartridgeError as e:
                assert not unsafe(str(e)), (p, str(e))
    finally:
        fs.close()


def _export_engram(c, p, out):
    """The whole archive, then only path p (include=), into .eng files in the target."""
    os.makedirs(out, exist_ok=True)
    try:
        c.export_engram(os.path.join(out, "all.eng"))
    finally:
        c.export_engram(os.path.join(out, "path.eng"), include=p)


OPS = {
    "read": _read, "readinto": _readinto, "read_buffer": _read_buffer, "open_rb": _open_rb,
    "stat": lambda c, p, out: c.stat(p), "exists": lambda c, p, out: c.exists(p),
    "isfile": lambda c, p, out: c.isfile(p), "isdir": lambda c, p, out: c.isdir(p),
    "listdir": _listdir, "walk": _walk, "scan": _scan, "sqlite": _sqlite,
    "sqlite_export": _sqlite_export, "fsspec_get": _fsspec_get, "fsspec_read": _fsspec_read,
    "export_engram": _export_engram,
}
CLI_OPS = ["get-root", "get-path", "ls", "ls-lR", "stat", "verify", "export"]


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("hostile-archives")
    out = {}
    for case, (build, _) in CASES.items():
        out[case] = str(d / f"{case}.cart")
        build(out[case])
    return out


class World:
    """A temporary tree around the target: world/l1/l2/{arch/h.cart, sibling/, out-*}, plus
    files where the climbing names would land (world/l1/x, world/l1/l2/x, world/x)."""

    def __init__(self, tmp_path, archive: str):
        self.top = str(tmp_path / "world")
        self.base = os.path.join(self.top, "l1", "l2")
        os.makedirs(os.path.join(self.base, "arch"))
        os.makedirs(os.path.join(self.base, "sibling"))
        for rel in ("x", "l1/x", "l1/l2/x", "l1/l2/sibling/keep.txt"):
            with open(os.path.join(self.top, rel), "wb") as f:
                f.write(b"precious " + rel.encode())
        self.archive = os.path.join(self.base, "arch", "h.cart")
        shutil.copy(archive, self.archive)
        self.before = snapshot(self.top)

    def target(self, name: str) -> str:
        return os.path.join(self.base, "out-" + name)

    def check(self) -> None:
        """Only targets changed, and everything in them is a plain file or dir inside them."""
        after = snapshot(self.top)
        changed = {k for k in set(self.before) | set(after) if self.before.get(k) != after.get(k)}
        outside = {k for k in changed if not k.startswith("l1/l2/out-")}
        assert not outside, sorted(outside)
        for k in changed:
            assert k in after and after[k][0] in ("file", "dir"), (k, after.get(k))
            target = os.path.realpath(os.path.join(self.top, *k.split("/")[:3]))
            full = os.path.realpath(os.path.join(self.top, k))
            assert os.path.commonpath([full, target]) == target, (k, full)


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("case", list(CASES))
def test_read_api(case, op, archives, tmp_path):
    world = World(tmp_path, archives[case])
    with cartridge.open(world.archive, "r") as c:
        for i, p in enumerate(CASES[case][1]):
            try:
                OPS[op](c, p, world.target(f"{op}{i}"))
            except CartridgeError as e:
                assert not unsafe(str(e)), (p, str(e))
    world.check()


@pytest.mark.parametrize("case", list(CASES))
def test_verify_reports_escaped(case, archives, tmp_path):
    world = World(tmp_path, archives[case])
    with cartridge.open(world.archive, "r") as c:
        report = c.verify()
    assert not report.ok and report.problems, case
    for problem in report.problems:
        assert not unsafe(problem) and "\n" not in problem, problem
    world.check()


@pytest.mark.parametrize("op", CLI_OPS)
@pytest.mark.parametrize("case", list(CASES))
def test_cli(case, op, archives, tmp_path):
    world = World(tmp_path, archives[case])
    arch = world.archive
    first = CASES[case][1][0]
    argv = {"get-root": ["get", arch, "/", "--to", world.target("root")],
            "get-path": ["get", arch, first, "--to", world.target("path")],
            "ls": ["ls", arch], "ls-lR": ["ls", arch, "/", "-lR"],
            "stat": ["stat", arch, first], "verify": ["verify", arch],
            "export": ["export", arch, os.path.join(world.target("export"), "x.eng")]}[op]
    if op == "export":
        os.makedirs(world.target("export"))
    rc, out, err = check_run(["--sync", "off", *argv])
    assert rc in (0, 1), (rc, err)
    if op == "verify":
        assert rc == 1 and b"FAILED" in out, out
    world.check()


# -- item 7: a file with children -----------------------------------------------------------------
BOTH = "catalog holds a file with entries below it: '/a' and '/a/b'"


DIR_CALLS = {"stat", "exists", "isfile", "isdir", "listdir", "walk", "scan"}


def _every_read(c, p, out):
    """Every read call of the API on path p (each a thunk)."""
    def sqlite():
        c.sqlite(p, readonly=True).close()
    return {"read": lambda: c.read(p), "read-range": lambda: c.read(p, 1, 3),
            "readinto": lambda: c.readinto(p, bytearray(8)),
            "read_buffer": lambda: c.read_buffer(p), "open": lambda: c.open(p, "rb").close(),
            "stat": lambda: c.stat(p), "exists": lambda: c.exists(p),
            "isfile": lambda: c.isfile(p), "isdir": lambda: c.isdir(p),
            "listdir": lambda: c.listdir(p), "walk": lambda: list(c.walk(p)),
            "scan": lambda: list(c.scan(p)), "sqlite": sqlite,
            "sqlite_export": lambda: c.sqlite_export(p, out)}


@pytest.mark.parametrize("mode", ["r", "a"])
def test_file_with_children_is_reported_consistently(archives, tmp_path, mode):
    """verify reports it naming both keys; every read call of the file, of the key below it
    and of the directory spelling 'a/' raises CorruptionError naming both (also a second time,
    when the memo could answer); neighbours sorting between them ('/a-x') and elsewhere are
    fine; a path below the file that holds nothing is absent."""
    path = str(tmp_path / "w.cart")
    shutil.copy(archives["file-with-children"], path)
    with cartridge.open(path, mode) as c:
        report = c.verify()
        assert not report.ok and BOTH in report.problems, report.problems
        for _ in range(2):
            for p in ("/a", "/a/b", "/a/"):
                for name, call in _every_read(c, p, str(tmp_path / "out.db")).items():
                    if p == "/a/" and name not in DIR_CALLS:
                        with pytest.raises(InvalidPathError, match="cannot end with '/'"):
                            call()          # a file path cannot end with '/', whatever it holds
                        continue
                    with pytest.raises(CorruptionError) as e:
                        call()
                    assert BOTH in str(e.value), (p, name, str(e.value))
            for call in (lambda: c.listdir("/"), lambda: list(c.walk("/")),
                         lambda: list(c.scan("/"))):
                with pytest.raises(CorruptionError, match="'/a' and '/a/b'"):
                    call()
        assert not os.path.exists(tmp_path / "out.db")
        assert c.stat("/a-x").is_file and c.read("/a-x")[:6] == b"SQLite" and c.isfile("/a-x")
        assert not c.exists("/a/zz") and not c.exists("/a-x/b")
        with pytest.raises(cartridge.NotFoundError):
            c.stat("/a/zz")
        assert c.listdir("/d") == ["inner.txt"]                  # elsewhere all is well
        assert [i.path for i in c.scan("/d/")] == ["/d/inner.txt"]
        if mode == "a":
            for change in (lambda: c.write("/a/c", b"no"), lambda: c.write("/a", b"no"),
                           lambda: c.write("/a/b", b"no"), lambda: c.mkdir("/a/c"),
                           lambda: c.rename("/ok.txt", "/a"), lambda: c.rename("/ok.txt", "/a/c")):
                with pytest.raises(CorruptionError, match="entries below it"):
                    change()
            c.write("/d/new.txt", b"fine")                       # elsewhere all is well
    with cartridge.open(path, "r") as c:
        assert c.verify().problems == report.problems


@pytest.mark.parametrize("repair", ["delete-file", "delete-below", "rename-file", "rename-below"])
def test_delete_or_rename_of_either_key_repairs(archives, tmp_path, repair):
    """The way out of the damage: delete() or rename() of the file or of the file below it
    (the only changes that take the damage away, atomically); then verify passes and what is
    left reads."""
    path = str(tmp_path / "w.cart")
    shutil.copy(archives["file-with-children"], path)
    with cartridge.open(path, "a") as c:
        {"delete-file": lambda: c.delete("/a"), "delete-below": lambda: c.delete("/a/b"),
         "rename-file": lambda: c.rename("/a", "/a.saved"),
         "rename-below": lambda: c.rename("/a/b", "/b.saved")}[repair]()
        assert c.verify().ok
        for p in {"delete-file": ["/a/b"], "delete-below": ["/a"],
                  "rename-file": ["/a.saved", "/a/b"], "rename-below": ["/a", "/b.saved"]}[repair]:
            assert c.read(p)[:6] == b"SQLite", p
        assert c.isdir("/a") == (repair in ("delete-file", "rename-file"))
    with cartridge.open(path, "r") as c:
        assert c.verify().ok and c.listdir("/")


def test_cli_get_of_a_file_with_children_writes_nothing(archives, tmp_path):
    world = World(tmp_path, archives["file-with-children"])
    for argv in (["get", world.archive, "/", "--to", world.target("root")],
                 ["get", world.archive, "/ok.txt", "/", "--to", world.target("two")],
                 ["ls", world.archive, "-R"], ["ls", world.archive]):
        rc, out, err = check_run(argv)
        assert rc == 1 and "'/a' and '/a/b'" in err, (argv, err)
    for argv in (["ls", world.archive, "/a"], ["ls", world.archive, "/a/b"],
                 ["stat", world.archive, "/a"], ["stat", world.archive, "/a/b"],
                 ["cat", world.archive, "/a"], ["cat", world.archive, "/a/b"],
                 ["get", world.archive, "/a", "--to", world.target("a")],
                 ["get", world.archive, "/a/b", "--to", world.target("ab")]):
        rc, out, err = check_run(argv)
        assert rc == 1 and out == b"" and "'/a' and '/a/b'" in err, (argv, out, err)
    assert not os.path.exists(world.target("a")) and not os.path.exists(world.target("ab"))
    rc, out, _ = check_run(["cat", world.archive, "/a-x"], content_on_stdout=True)
    assert rc == 0 and out[:6] == b"SQLite"                  # its neighbour is fine
    assert not os.path.exists(world.target("root")) and not os.path.exists(world.target("two"))
    world.check()
    rc, out, _ = check_run(["verify", world.archive])
    assert rc == 1 and b"'/a' and '/a/b'" in out


def test_engine_refuses_keys_over_4096_bytes(tmp_path):
    """Why no case has a path over 4096 bytes: the B+tree cannot store its key."""
    from cartridge.create import open_engine
    path = str(tmp_path / "k.cart")
    with cartridge.open(path, "x") as c:
        c.write("/seed", b"x")
    eng = open_engine(path, "a", sync="off", cache_size=1 << 20, timeout=None)
    try:
        eng.begin()
        with pytest.raises(ValueError):
            eng.put(b"/" + b"s/" * 2100, eng.delete(b"/seed"))
    finally:
        eng.close()


def test_verify_names_undecodable_and_literal_keys_apart(tmp_path):
    """verify names a crafted key that is not UTF-8 unambiguously (its bytes), and a real name
    spelled with a backslash, '/bad\\udcff', is no problem and never read alike."""
    path = str(tmp_path / "u.cart")
    raw_name_archive(path, b"/bad\xff")
    with cartridge.open(path, "a") as c:
        c.write("/bad\\udcff", b"a literal name")
    with cartridge.open(path, "r") as c:
        problems = c.verify().problems
    assert any("b'/bad\\xff'" in p for p in problems), problems
    assert not any("udcff" in p for p in problems), problems      # the literal name is fine
    assert all(not unsafe(p) for p in problems)
