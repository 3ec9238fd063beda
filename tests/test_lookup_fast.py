"""Big-catalog lookups (issue 18, item 3): stat()/exists() in C (readpath.lookup_info) against the
general Python path, the memo's side table of ancestors, and the page cache that follows the
catalog. The differential streams run the same operations on two archives, one with the C path
and one with it switched off (lookup_info answering None, so every call goes the general way),
and compare every outcome: values, or the exception's type."""
from __future__ import annotations

import errno
import os
import random

import pytest

import cartridge
from cartridge import archive as A
from cartridge._handle import engine
from cartridge.engine import CACHE_FOLLOW_MAX, CACHE_PER_ENTRY
from cartridge.errors import CorruptionError
from cartridge.format import PAGE_SIZE


def _outcome(fn):
    try:
        return ("ok", fn())
    except Exception as e:
        return ("err", type(e).__name__)


PATHS = ["/a", "/a/b", "/a/b/c.txt", "/a/b/d", "/x/y/z", "/x/y", "/x", "/q.txt", "/a/b/c.txt/e",
         "a/b/c.txt", "/a//b/c.txt", "/a/b/", "/a/./b", "/", "", "/a/b/../b/c.txt", "/nope",
         "/x/y/z/w"]


def _stream(tmp, seed: int, fast: bool, monkeypatch) -> list:
    if not fast:
        monkeypatch.setattr(A, "lookup_info", lambda *a: None)
    try:
        rng = random.Random(seed)
        path = str(tmp / f"s{seed}{int(fast)}.cart")
        trace = []
        with cartridge.open(path, "w", sync="off", cache_size=1 << 16) as c:
            for step in range(300):
                op = rng.randrange(10)
                p = rng.choice(PATHS)
                if op == 0:
                    out = _outcome(lambda p=p: c.write(p, bytes(rng.randrange(3))))
                elif op == 1:
                    out = _outcome(lambda p=p: c.delete(p))
                elif op == 2:
                    out = _outcome(lambda p=p: c.mkdir(p))
                elif op == 3:
                    q = rng.choice(PATHS)
                    out = _outcome(lambda p=p, q=q: c.rename(p, q))
                elif op == 4:
                    out = _outcome(lambda p=p: c.exists(p))
                elif op == 5:
                    out = _outcome(lambda p=p: c.exists(rng.choice([None, 3, b"/a", p])))
                else:
                    def st(p=p):
                        i = c.stat(p)       # (times differ between the two archives)
                        return (i.path, i.size, i.mode, i.mtime > 0, i.checksum)
                    out = _outcome(st)
                trace.append((step, op, p, out))
        return trace
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("seed", range(6))
def test_stat_and_exists_match_the_general_path(tmp_path, seed, monkeypatch):
    fast = _stream(tmp_path, seed, True, monkeypatch)
    ref = _stream(tmp_path, seed, False, monkeypatch)
    assert fast == ref
    assert any(o[3][0] == "ok" and o[1] >= 6 for o in fast)
    assert any(o[3][0] == "err" and o[1] >= 6 for o in fast)


def _many(path, n=3000):
    with cartridge.open(path, "w", sync="off") as c:
        c.write_many((f"/d{i % 7}/s{i % 11}/f{i:05d}", b"x" * (i % 5)) for i in range(n))


@pytest.mark.parametrize("fast", [True, False])
def test_corrupt_leaf_raises_on_both_paths(tmp_path, fast, monkeypatch):
    """A damaged catalog leaf: CorruptionError from stat and exists, C path or not."""
    path = str(tmp_path / "a.cart")
    _many(path)
    with cartridge.open(path, "r") as c:
        leaves = [pno for pno, node in engine(c).catalog.pages()
                  if node.is_leaf and b"/d3/" in b"".join(node.cells())]
    assert leaves
    leaf = leaves[len(leaves) // 2]
    with open(path, "r+b") as f:
        f.seek(leaf * PAGE_SIZE + 200)
        f.write(b"\xff" * 16)
    if not fast:
        monkeypatch.setattr(A, "lookup_info", lambda *a: None)
    with cartridge.open(path, "r") as c:
        hits = 0
        for i in range(3000):
            p = f"/d{i % 7}/s{i % 11}/f{i:05d}"
            try:
                c.stat(p)
            except CorruptionError:
                hits += 1
                with pytest.raises(CorruptionError):
                    c.exists(p)
        assert hits > 0


class FailingOS:
    """`os` for the pager whose pread fails with EIO (the catalog read goes through it)."""

    def __getattr__(self, name):
        real = getattr(os, name)
        if name != "pread":
            return real

        def call(*args):
            raise OSError(errno.EIO, "injected failure in pread")
        return call


@pytest.mark.parametrize("fast", [True, False])
def test_io_error_on_a_catalog_read(tmp_path, fast, monkeypatch):
    path = str(tmp_path / "a.cart")
    _many(path)
    if not fast:
        monkeypatch.setattr(A, "lookup_info", lambda *a: None)
    with cartridge.open(path, "a", sync="off", cache_size=0) as c:
        eng = engine(c)
        eng.pager.cache.clear()
        eng.records.clear()
        eng.pager.io = FailingOS()
        with pytest.raises(OSError, match="injected"):
            c.stat("/d1/s1/f00001")
        with pytest.raises(OSError, match="injected"):
            c.exists("/d1/s1/f00001")
        eng.pager.io = os
        assert c.stat("/d1/s1/f00001").size == 1      # the handle goes on working
        assert c.exists("/d1/s1/f00001")


def test_ancestors_survive_the_memo_shrinking(tmp_path):
    """Thousands of lookups that mostly miss shrink the memo; the implicit parents' entries stay
    (no extra catalog walks), and a later change to a parent is still seen."""
    path = str(tmp_path / "a.cart")
    _many(path, 20_000)
    with cartridge.open(path, "a", sync="off") as c:
        eng = engine(c)
        eng.records.limit = eng.records.max_limit = 5000
        rng = random.Random(1)
        for _ in range(30_000):
            i = rng.randrange(20_000)
            assert c.stat(f"/d{i % 7}/s{i % 11}/f{i:05d}").size == i % 5
        c.delete("/d3/s4", recursive=True)
        assert not c.exists("/d3/s4")
        c.write("/d3/s4", b"now a file")
        assert c.stat("/d3/s4").size == 10
        assert not c.exists("/d3/s4/f00025")
        c.delete("/d3/s4")
        c.mkdir("/d3/s4")
        assert c.stat("/d3/s4").checksum is None


def test_cache_follows_the_catalog(tmp_path):
    path = str(tmp_path / "a.cart")
    _many(path, 5000)
    with cartridge.open(path, "a", sync="off") as c:
        root = engine(c).root
        assert root.file_count == 5000
        cap = engine(c).pager.cache.capacity
        assert cap == min(A.DEFAULT_CACHE_SIZE + (5000 + root.dir_count) * CACHE_PER_ENTRY,
                          CACHE_FOLLOW_MAX) > A.DEFAULT_CACHE_SIZE
        c.write_many((f"/more/f{i}", b"") for i in range(2000))
        assert engine(c).pager.cache.capacity > cap          # grown at the commit
    with cartridge.open(path, "a", sync="off", cache_size=1 << 20) as c:
        assert engine(c).pager.cache.capacity == 1 << 20     # an explicit budget is kept
    with cartridge.open(path, "r") as r:
        cap_r = engine(r).pager.cache.capacity
        with cartridge.open(path, "a", sync="off") as w:
            w.write_many((f"/later/f{i}", b"") for i in range(3000))
        r.stat("/later/f1")                     # the reader moves on: its cache grows too
        assert engine(r).pager.cache.capacity > cap_r
    with pytest.raises(ValueError):
        cartridge.open(path, "r", cache_size=-1)
