"""The read path in C (cartridge._core: pathkeys, record, memo, readpath) against its Python
references: path keys (cartridge.paths' reference normaliser: same results, same errors),
record decode/encode, the adaptive memo, and whole-file reads through it."""
from __future__ import annotations

import os
import pathlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cartridge
from cartridge import paths as P
from cartridge._core import pathkeys, readpath
from cartridge._core import record as R
from cartridge._handle import engine
from cartridge.errors import CorruptionError, InvalidPathError
from cartridge.format import (
    KIND_DIR,
    KIND_FILE,
    RECORD,
    STORE_CHUNKS,
    STORE_EMPTY,
    STORE_INLINE,
    STORE_XMAP,
)
from cartridge.records import Memo, Record, decode, with_chunk_key

PAIRS = [(P.normalize_any, P.ref_normalize_any), (P.normalize, P.ref_normalize),
         (P.normalize_file, P.ref_normalize_file), (P.file_key, P.ref_file_key)]


def _outcome(fn, path):
    try:
        return "ok", fn(path)
    except Exception as e:      # the type and the message must match
        return type(e).__name__, str(e)


def _same(path) -> None:
    for fast, ref in PAIRS:
        assert _outcome(fast, path) == _outcome(ref, path), (fast.__name__, path)
    got = _outcome(P.path_key, path)
    want = _outcome(P.ref_normalize_any, path)
    if want[0] == "ok":
        want = ("ok", (want[1][0], want[1][0].encode(), want[1][1]))
    assert got == want, path


class _Sub(str):
    pass


HOSTILE = [
    "", "/", "//", "///", "/a/", "a/", "a", ".", "..", "/.", "/..", "/./a", "/a/.", "/a/..",
    "/a/../b", "/a//b", "a//b/./c/", "/a/.b", "/a/..b", "/...", "/a\x00b", "/a\x1f", "/a\x7f",
    "/a\x80", "/a\x9f", "/a\xa0", "/a\x85b", "/\u00e9t\u00e9", "/\U0001f600/x", "/a\ud800",
    "/\udfff/b", "/" + "a" * 255, "/" + "a" * 256, "/" + "\u00e9" * 127 + "a", "/" + "\u00e9" * 128,
    "/" + "/".join(["abcdefg"] * 511) + "/ab", "/" + "/".join(["abcdefg"] * 511) + "/abc",
    "/" + "/".join(["abcdefg"] * 600), "x" * 4095, "/" + "x" * 4096, " ", "/ ", "/a b",
    "\\a\\b", "/a/b/", "/a/b//", "/./", "/a\n", "/\u2028",
    b"/a", None, 3, 1.5, ["/a"], ("/a",), _Sub("/a/b"), _Sub("a//b"), _Sub("/a/"),
    pathlib.PurePosixPath("/a/b"), pathlib.PurePosixPath("a/./b"),
]


@pytest.mark.parametrize("path", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_paths_match_the_reference(path):
    _same(path)
    _same(path)      # twice: the second call may come from a memo


ALPHABET = st.sampled_from(list("/./ab.Z-_ ") + ["\x00", "\x1f", "\x7f", "\x80", "\x9f", "\xa0",
                                                 "\u00e9", "\ud800", "\U0001f600", "/"])


@settings(max_examples=2000, deadline=None)
@given(st.text(ALPHABET, max_size=40))
def test_random_paths_match_the_reference(path):
    _same(path)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(st.sampled_from("ab.\u00e9"), min_size=0, max_size=300), max_size=20),
       st.booleans(), st.booleans())
def test_long_segments_and_paths_match_the_reference(segs, lead, trail):
    path = ("/" if lead else "") + "/".join(segs) + ("/" if trail else "")
    _same(path)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=30))
def test_any_text_matches_the_reference(path):
    _same(path)


def test_file_key_memo_gives_the_same_objects_back():
    a = P.file_key("/memo/x")
    assert P.file_key("/memo/x") == ("/memo/x", b"/memo/x")
    assert P.file_key("memo//x") == a
    assert pathkeys.is_normal("/memo/x") and not pathkeys.is_normal("memo/x")
    assert not pathkeys.is_normal(_Sub("/a"))


# -- records ----------------------------------------------------------------------------
def _py_encode(r: Record) -> bytes:
    return RECORD.pack(r.kind, r.storage, 0, r.mode, r.size, r.ctime_ns, r.mtime_ns,
                       r.checksum) + r.payload


RECORDS = [
    Record(KIND_DIR, STORE_EMPTY, 0o40755, 0, 1, 2, 0),
    Record(KIND_FILE, STORE_EMPTY, 0o100644, 0, -5, 2**63 - 1, 2**64 - 1),
    Record(KIND_FILE, STORE_INLINE, 0o100600, 3, 10, 20, 30, b"abc"),
    Record(KIND_FILE, STORE_CHUNKS, 0o100644, 65536, 1, 2, 3, struct.pack("<QQ", 77, 2**64 - 2)),
    Record(KIND_FILE, STORE_CHUNKS, 0o100644, 65537, 1, 2, 3, bytes(32)),
    Record(KIND_FILE, STORE_XMAP, 0o100644, 10**9, 1, 2, 3, struct.pack("<QII", 5, 1, 0)),
]


@pytest.mark.parametrize("rec", RECORDS, ids=range(len(RECORDS)))
def test_record_round_trip(rec):
    raw = rec.encode()
    assert raw == _py_encode(rec)
    back = decode(raw, "w")
    assert back == with_chunk_key(rec)
    assert decode(bytearray(raw), "w") == back
    if rec.storage == STORE_CHUNKS and rec.size <= 65536:
        start, csum = struct.unpack("<QQ", rec.payload)
        assert back.chunk_key == (start << 64) | csum
    else:
        assert back.chunk_key == 0
    assert back.is_dir == (rec.kind == KIND_DIR)
    assert back.n_chunks == -(-rec.size // 65536)
    assert repr(back).startswith("Record(kind=")


BAD = [
    b"", bytes(39),
    RECORD.pack(3, 0, 0, 0, 0, 0, 0, 0),                         # unknown kind
    RECORD.pack(KIND_DIR, STORE_INLINE, 0, 0, 0, 0, 0, 0),          # directory with content
    RECORD.pack(KIND_DIR, STORE_EMPTY, 0, 0, 1, 0, 0, 0),
    RECORD.pack(KIND_FILE, STORE_EMPTY, 0, 0, 4, 0, 0, 0),
    RECORD.pack(KIND_FILE, STORE_INLINE, 0, 0, 4, 0, 0, 0) + b"abc",
    RECORD.pack(KIND_FILE, STORE_CHUNKS, 0, 0, 0, 0, 0, 0),
    RECORD.pack(KIND_FILE, STORE_CHUNKS, 0, 0, 70000, 0, 0, 0) + bytes(16),
    RECORD.pack(KIND_FILE, STORE_XMAP, 0, 0, 9, 0, 0, 0) + bytes(15),
    RECORD.pack(KIND_FILE, 9, 0, 0, 9, 0, 0, 0),
    RECORD.pack(KIND_FILE, STORE_CHUNKS, 0, 0, 2**64 - 1, 0, 0, 0),   # chunk count overflows
    RECORD.pack(KIND_FILE, STORE_CHUNKS, 0, 0, 2**64 - 65535, 0, 0, 0) + bytes(16),
]


@pytest.mark.parametrize("raw", BAD, ids=range(len(BAD)))
def test_malformed_records_raise_corruption(raw):
    with pytest.raises(CorruptionError, match="^where:"):
        decode(raw, "where")
    with pytest.raises(CorruptionError, match="^arc:/k"):
        decode(raw, lambda: "arc:/k")


def test_record_fields_are_mutable_and_drop_the_stat_info():
    rec = Record(KIND_FILE, STORE_INLINE, 0o100644, 1, 1, 2, 3, b"x")
    rec.info = "cached"
    rec.mtime_ns = 99
    assert rec.info is None and rec.mtime_ns == 99
    rec.info = "cached"
    rec.payload = b"y"
    assert rec.info == "cached"            # content does not show in stat()
    with pytest.raises(struct.error):
        Record(300, 0, 0, 0, 0, 0, 0).encode()
    with pytest.raises(OverflowError):
        rec.size = -1
    assert rec != Record(KIND_FILE, STORE_INLINE, 0o100644, 1, 1, 99, 3, b"x")
    assert rec == Record(KIND_FILE, STORE_INLINE, 0o100644, 1, 1, 99, 3, b"y")


# -- the memo ---------------------------------------------------------------------------
class _Tree:
    def __init__(self, n):
        self.values = {f"/k{i}".encode(): Record(KIND_FILE, STORE_EMPTY, 0, 0, 0, 0, 0).encode()
                       for i in range(n)}

    def get(self, key):
        return self.values.get(key)


def test_memo_shrinks_when_lookups_mostly_miss_and_stays_when_they_hit():
    tree = _Tree(50_000)
    keys = list(tree.values)
    m = Memo(10_000)
    for k in keys[:5000] * 4:         # a working set that fits: hits
        R.get_record(m, tree, k, "t")
    for k in keys[:10_500]:           # overflows once, but most lookups hit
        R.get_record(m, tree, k, "t")
    assert m.limit == 10_000
    for k in keys * 2:                # a uniform spread far larger than the memo
        R.get_record(m, tree, k, "t")
    assert m.limit < 10_000 and len(m) <= m.limit
    assert R.get_record(m, tree, b"/none", "t") is None
    assert R.get_record(m, tree, keys[7], "t") == decode(tree.values[keys[7]], "t")


def test_read_whole_serves_only_whole_known_files(tmp_path):
    with cartridge.open(tmp_path / "a.cart", "w") as c:
        c.write("/in", b"inline")
        c.write("/empty", b"")
        c.write("/chunk", os.urandom(5000))
        c.write("/big", os.urandom(200_000))
        c.mkdir("/d")
        eng = engine(c)
        args = (eng.records, eng.catalog, eng.name, eng.pager.cache)
        assert readpath.read_whole(*args, "/in") == b"inline"
        assert readpath.read_whole(*args, "in") == b"inline"
        assert readpath.read_whole(*args, "/in", 2) is None          # a range: the general path
        assert readpath.read_whole(*args, "/empty") == b""
        assert readpath.read_whole(*args, "/big") is None
        assert readpath.read_whole(*args, "/d") is None
        assert readpath.read_whole(*args, "/none") is None
        eng.pager.cache.clear()
        assert readpath.read_whole(*args, "/chunk") is None          # not cached
        data = c.read("/chunk")
        assert readpath.read_whole(*args, "/chunk") == data
        eng.records.clear()
        assert readpath.read_whole(eng.records, None, eng.name, eng.pager.cache, "/chunk") is None
        with pytest.raises(InvalidPathError):
            readpath.read_whole(*args, "/in/")


# -- the key index of committed nodes ---------------------------------------------------
class _NoOverflow:
    def read_overflow(self, pno, length):
        raise CorruptionError("no overflow pages here")


KEY_BYTES = st.binary(min_size=0, max_size=12).map(lambda b: b"/p" + b)


@settings(max_examples=400, deadline=None)
@given(st.sets(KEY_BYTES, min_size=1, max_size=60), st.lists(st.binary(max_size=14), max_size=30),
       st.binary(max_size=3))
def test_committed_node_search_matches_bisect(keys, probes, stem):
    """A node read back from its page searches through its key index (when it has 8+ cells):
    the answers must equal a plain sorted-list search, for probes inside, between, before and
    after its keys, and sharing or not its keys' common prefix."""
    import bisect

    from cartridge._core.btree import Node, make_cell

    keys = sorted(stem + k for k in keys)
    node = Node.empty(3, True, 1)
    for i, k in enumerate(keys):
        assert node.insert_raw(i, make_cell(k, b"v"))
    back = Node.decode(bytes(node.seal()), 3, 1, _NoOverflow())
    for p in probes + keys + [k + b"\x00" for k in keys] + [k[:-1] for k in keys if k]:
        p = p or b"\x00"
        i, found = back.search(p)
        assert i == bisect.bisect_left(keys, p)
        assert found == (p in keys)
        assert back.child_index(p) == bisect.bisect_right(keys, p)


def test_checked_chunk_raises_when_cut_short_or_on_a_bad_checksum(tmp_path):
    from cartridge._core.checksum import xxh3_64

    data = os.urandom(5000)
    path = tmp_path / "content"
    path.write_bytes(bytes(4096) + data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert readpath.checked_chunk(fd, 1, 5000, xxh3_64(data), "arc") == data
        with pytest.raises(CorruptionError,
                           match=r"^/f: content checksum mismatch in chunk 3 \(pages 1\.\.2\)$"):
            readpath.checked_chunk(fd, 1, 5000, xxh3_64(data) ^ 1, "arc", "/f", 3)
        with pytest.raises(CorruptionError, match=r"^arc: content checksum mismatch in chunk 0 "):
            readpath.checked_chunk(fd, 1, 5000, xxh3_64(data) ^ 1, "arc")
        with pytest.raises(CorruptionError, match=r"^arc: pages 1\.\.2 are cut short$"):
            readpath.checked_chunk(fd, 1, 8000, 0, "arc")
    finally:
        os.close(fd)
