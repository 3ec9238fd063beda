"""A file with entries below it (issue 19, item 7): lookups of the file and of every path below it
raise CorruptionError naming both keys, whatever order the lookups come in (memo misses and
hits), wherever the keys fall in the catalog's leaves, and nothing else changes.

The catalog is written through the engine (raw records, as only a hostile archive has them);
a reference model says what each lookup must give: a key holding a record raises when it is a
file with a key below it or has a file above it; a path holding nothing but with keys below it
(an implicit directory) raises when a file is above it; anything else answers as usual.
"""
from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cartridge
from cartridge._handle import engine
from cartridge.create import open_engine
from cartridge.errors import CorruptionError, NotFoundError
from cartridge.format import KEY_INLINE, KIND_DIR, KIND_FILE, STORE_EMPTY
from cartridge.records import Record

FILE, DIR = KIND_FILE, KIND_DIR


def build(path: str, entries: dict[bytes, int]) -> None:
    """An archive whose catalog holds exactly `entries` (key -> kind), empty files and dirs."""
    with cartridge.open(path, "x", sync="off"):
        pass
    eng = open_engine(path, "a", sync="off", cache_size=1 << 20, timeout=None)
    try:
        eng.begin()
        for key in sorted(entries):
            mode = 0o100644 if entries[key] == FILE else 0o040755
            eng.put(key, Record(entries[key], STORE_EMPTY, mode, 0, 0, 0, 0))
        eng.commit()
    finally:
        eng.close()


def _ancestors(key: bytes) -> list[bytes]:
    parts = key.split(b"/")[1:]
    return [b"/" + b"/".join(parts[:i]) for i in range(1, len(parts))]


def expected(entries: dict[bytes, int], key: bytes) -> str:
    """'damage', 'file', 'dir' or 'absent' for a lookup of `key` (stat/exists)."""
    above_file = any(entries.get(a) == FILE for a in _ancestors(key))
    below = any(k.startswith(key + b"/") for k in entries)
    if key in entries:
        if above_file or (entries[key] == FILE and below):
            return "damage"
        return "file" if entries[key] == FILE else "dir"
    if below:
        return "damage" if above_file else "dir"
    return "absent"


def check_lookups(c, entries: dict[bytes, int], keys: list[bytes]) -> None:
    for key in keys:
        path = key.decode()
        want = expected(entries, key)
        if want == "damage":
            for call in (c.stat, c.exists, c.isfile, c.isdir, c.read):
                with pytest.raises(CorruptionError, match="a file with entries below it") as e:
                    call(path)
                m = re.fullmatch(r"catalog holds a file with entries below it: '(.*)' and '(.*)'",
                                 str(e.value))
                assert m, str(e.value)
                top, below = (g.encode() for g in m.groups())
                assert entries.get(top) == FILE and top in (key, *_ancestors(key)), (path, m[0])
                assert below.startswith(top + b"/") and below in entries, (path, m[0])
        elif want == "absent":
            assert not c.exists(path) and not c.isfile(path), path
            with pytest.raises(NotFoundError):
                c.stat(path)
        else:
            info = c.stat(path)
            assert info.is_file == (want == "file") and c.exists(path), path
            assert c.isfile(path) == (want == "file") and c.isdir(path) == (want == "dir")
            if want == "file":
                assert c.read(path) == b""


def test_neighbours_between_a_file_and_its_slash_are_not_children(tmp_path):
    """'/a!x', '/a-x', '/a.x' sort between '/a' and '/a/...' ('!', '-', '.' < '/'); '/a0' after."""
    entries = {b"/a": FILE, b"/a!x": FILE, b"/a-x": FILE, b"/a.x": DIR, b"/a.x/in": FILE,
               b"/a0": DIR, b"/a0/y": DIR, b"/b": DIR, b"/b/c": FILE}
    build(str(tmp_path / "n.cart"), entries)
    with cartridge.open(tmp_path / "n.cart") as c:
        check_lookups(c, entries, [*entries, b"/a/x", b"/a.x/in/deeper", b"/z"])
        assert c.verify().ok


@pytest.mark.parametrize("fill", [0, 1, 40, 200, 400])
def test_the_key_below_in_a_later_leaf(tmp_path, fill):
    """Enough keys between '/a' and '/a/b' (long '/a-...' names) that the key below lies one or
    more leaves after the file: the check leaves the file's leaf and still finds it."""
    entries = {b"/a": FILE, b"/a/b": FILE, b"/z": FILE}
    entries.update({b"/a-" + b"%04d" % i + b"x" * 200: FILE for i in range(fill)})
    build(str(tmp_path / "l.cart"), entries)
    with cartridge.open(tmp_path / "l.cart") as c:
        if fill >= 200:
            leaves = [n for _, n in engine(c).catalog.pages() if n.is_leaf]
            assert len(leaves) > 2       # the keys really span leaves
        for _ in range(2):
            check_lookups(c, entries, [b"/a", b"/a/b", b"/z", *list(entries)[3:5]])
        assert not c.verify().ok


def test_long_keys_on_overflow_pages(tmp_path):
    """Keys longer than the part a cell keeps inline (KEY_INLINE): the file and the key below."""
    long = b"/" + b"n" * 250 + b"/" + b"m" * 250 + b"/" + b"o" * 200
    assert len(long) > KEY_INLINE
    entries = {long: FILE, long + b"/x": FILE, long + b"-y": FILE, b"/n": DIR}
    build(str(tmp_path / "o.cart"), entries)
    with cartridge.open(tmp_path / "o.cart") as c:
        for _ in range(2):
            check_lookups(c, entries, [long, long + b"/x", long + b"-y"])


@pytest.mark.parametrize("order", ["outer-first", "inner-first"])
def test_deep_ancestors_and_directory_records(tmp_path, order):
    """A file /a with /a/b/c below it (/a/b implicit), and with a directory record /a/d holding
    /a/d/e: every path below /a raises, in either lookup order (the memo never vouches for a
    path below a file); a sibling tree is fine."""
    entries = {b"/a": FILE, b"/a/b/c": FILE, b"/a/d": DIR, b"/a/d/e": FILE,
               b"/q": DIR, b"/q/r/s": FILE}
    build(str(tmp_path / "d.cart"), entries)
    keys = [b"/a", b"/a/b", b"/a/b/c", b"/a/d", b"/a/d/e", b"/q", b"/q/r", b"/q/r/s"]
    if order == "inner-first":
        keys.reverse()
    with cartridge.open(tmp_path / "d.cart") as c:
        for _ in range(2):
            check_lookups(c, entries, keys)
        for p in ("/a/b", "/a/d"):
            with pytest.raises(CorruptionError, match="entries below it"):
                c.listdir(p)
            with pytest.raises(CorruptionError, match="entries below it"):
                list(c.scan(p))
        assert c.listdir("/q/r") == ["s"]


_SEG = st.sampled_from(["a", "b", "a-", "a.", "a!", "a0", "ab"])
_KEY = st.lists(_SEG, min_size=1, max_size=4).map(lambda s: ("/" + "/".join(s)).encode())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.dictionaries(_KEY, st.sampled_from([FILE, DIR]), min_size=1, max_size=25),
       probes=st.lists(_KEY, max_size=12), data=st.data())
def test_lookups_match_the_model(tmp_path_factory, entries, probes, data):
    """Random catalogs over names that sort around '/' ('a-', 'a.', 'a!' before it, 'a0' after):
    every lookup, in a random order, twice (memo misses, then hits), gives what the model says,
    on a read-only and on a writable handle."""
    path = str(tmp_path_factory.mktemp("m") / "m.cart")
    build(path, entries)
    keys = list(dict.fromkeys([*entries, *probes]))
    keys = data.draw(st.permutations(keys))
    for mode in ("r", "a"):
        with cartridge.open(path, mode) as c:
            for _ in range(2):
                check_lookups(c, entries, keys)
