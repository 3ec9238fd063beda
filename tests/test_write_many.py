"""Cartridge.write_many: the batched write path behaves like write() per file, in one atomic
commit, and every crash during its commit leaves all of the batch or none of it."""
from __future__ import annotations

import random

import numpy as np
import pytest
from test_btree import MemStore, check
from test_crash_basic import Recording, check_cuts, contents, models_for, state_of

import cartridge
from cartridge import content as content_mod
from cartridge._core.btree import BTree
from cartridge._handle import engine
from cartridge.errors import (
    AccessDeniedError,
    InvalidPathError,
    PathIsDirectoryError,
    PathNotDirectoryError,
    ReadOnlyError,
    TransactionAbortedError,
)

SIZES = [0, 1, 100, 900, 1000, 1024, 4096, 4097, 10_000, 65_536, 65_537, 200_000]


def batch(rng: random.Random, n: int, prefix: str = "/m") -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        size = rng.choice(SIZES)
        out.append((f"{prefix}/d{rng.randrange(7)}/f{i:04d}", rng.randbytes(size)))
    return out


CART_OPTIONS = {"sync": "off",     # the shared `cart` fixture (conftest.py), without fsyncs,
                "audit": "off"}    # and without the audit log, whose pages grow with every commit


def test_same_result_as_write_per_file(tmp_path):
    """Every storage kind (empty, inline, one chunk, many chunks, a long key) in random order:
    the archive holds what write() per file would leave, and passes verify()."""
    rng = random.Random(1)
    items = batch(rng, 300)
    items.append(("/long/" + "/".join(["k" * 200] * 4), b"long key " * 200))
    items.append(("top", b"top level, relative path"))
    rng.shuffle(items)
    with cartridge.open(tmp_path / "a.cart", "w") as a, cartridge.open(tmp_path / "b.cart", "w") as b:
        with b.transaction():
            for p, d in items:
                b.write(p, d)
        assert a.write_many(items) == len(items)
        assert state_of(a) == state_of(b)
        for p, _ in items:
            sa, sb = a.stat(p), b.stat(p)
            assert (sa.size, sa.mode, sa.checksum) == (sb.size, sb.mode, sb.checksum)
        for k in ("files", "directories", "total_bytes"):
            assert a.info()[k] == b.info()[k]
        # write_many packs small files (FORMAT §14): one pack-table entry per pack
        assert a.info()["packs"] > 0
        assert a.info()["catalog_entries"] - a.info()["packs"] == \
            b.info()["catalog_entries"] - b.info()["packs"]
        assert a.verify().ok
    assert contents(str(tmp_path / "a.cart")) == contents(str(tmp_path / "b.cart"))


def test_buffer_types_and_small_runs(tmp_path, monkeypatch):
    """bytes, bytearray, memoryview and numpy data; runs of a few pages, so small files are
    packed across many runs (each file starts on a page boundary)."""
    monkeypatch.setattr(content_mod, "BATCH_RUN_PAGES", 3)
    rng = random.Random(2)
    want = {}
    items = []
    for i in range(60):
        raw = rng.randbytes(rng.choice([1000, 3000, 4096, 5000, 9000, 20_000]))
        kind = i % 4
        data = (raw, bytearray(raw), memoryview(raw), np.frombuffer(raw, np.uint8))[kind]
        if kind == 3 and len(raw) % 4 == 0:
            data = np.frombuffer(raw, np.uint32)          # itemsize 4: counted in bytes
        items.append((f"/r/{i}", data))
        want[f"/r/{i}"] = raw
    with cartridge.open(tmp_path / "a.cart", "w") as c:
        assert c.write_many(iter(items)) == 60
        assert {p: c.read(p) for p in want} == want
        assert c.verify().ok


def test_replacing_keeps_mode_and_ctime_and_frees_old_pages(cart):
    cart.write("/x/a", b"a" * 5000)
    cart.write("/x/b", b"b" * 300_000)
    before = cart.stat("/x/a")
    cart.write_many([("/x/a", b"A" * 7000), ("/x/b", b"B" * 10), ("/x/c", b"")])
    after = cart.stat("/x/a")
    assert after.ctime == before.ctime and after.mode == before.mode
    assert after.mtime >= before.mtime
    assert cart.read("/x/a") == b"A" * 7000 and cart.read("/x/b") == b"B" * 10
    assert cart.read("/x/c") == b""
    s = cart.info()
    assert (s["files"], s["total_bytes"]) == (3, 7010)
    live = set()
    for _ in range(30):          # the same batch again and again: no page leaks
        cart.write_many([("/x/a", b"A" * 7000), ("/x/b", b"B" * 70_000)])
        s = cart.info()
        live.add(s["used_pages"] - s["pending_pages"])
    assert len(live) == 1
    assert cart.verify().ok


def test_duplicates_last_wins(cart):
    n = cart.write_many([("/d/a", b"1"), ("/d/b", b"2"), ("d/a", b"3"), ("/d/./a", b"4")])
    assert n == 2
    assert cart.read("/d/a") == b"4" and cart.read("/d/b") == b"2"
    assert cart.info()["files"] == 2


def test_empty_batch(cart):
    gen = cart.info()["generation"]
    assert cart.write_many([]) == 0
    assert cart.info()["generation"] == gen


@pytest.mark.parametrize("items,error", [
    ([("/ok", b"x"), ("/bad/../..", b"y")], InvalidPathError),
    ([("/ok", b"x"), ("/trailing/", b"y")], InvalidPathError),
    ([("/ok", b"x"), ("/", b"y")], InvalidPathError),
    ([("/ok", b"x"), (b"/bytes-path", b"y")], InvalidPathError),
    ([("/ok", b"x"), ("/s", "a str")], TypeError),
    ([("/ok", b"x"), ("/n", 12)], TypeError),
    ([("/ok", b"x"), ("/too", b"y", b"many")], TypeError),
    ([("/ok", b"x"), "/ab"], TypeError),
    ([("/ok", b"x"), ("/file/below", b"y")], PathNotDirectoryError),    # /file is a file
    ([("/ok", b"x"), ("/file/deeper/still", b"y")], PathNotDirectoryError),
    ([("/ok", b"x"), ("/dir", b"y")], PathIsDirectoryError),            # explicit directory
    ([("/ok", b"x"), ("/implicit", b"y")], PathIsDirectoryError),       # /implicit/f exists
    ([("/ok", b"x"), ("/new/a", b"y"), ("/new/a/b", b"z")], PathNotDirectoryError),
    ([("/new/a/b/c", b"z"), ("/ok", b"x"), ("/new/a", b"y")], PathNotDirectoryError),
])
def test_bad_batches_change_nothing(cart, items, error):
    cart.write("/file", b"f")
    cart.mkdir("/dir")
    cart.write("/implicit/f", b"i")
    before = state_of(cart)
    gen = cart.info()["generation"]
    with pytest.raises(error):
        cart.write_many(items)
    assert state_of(cart) == before and cart.info()["generation"] == gen
    # inside a transaction a refused batch leaves the transaction usable, as write() does
    with cart.transaction():
        cart.write("/t1", b"1")
        with pytest.raises(error):
            cart.write_many(items)
        cart.write("/t2", b"2")
    assert cart.read("/t1") == b"1" and cart.read("/t2") == b"2" and not cart.exists("/ok")


def test_read_only_handle(tmp_path):
    with cartridge.open(tmp_path / "a.cart", "w") as c:
        c.write("/a", b"a")
    with cartridge.open(tmp_path / "a.cart", "r") as r:
        with pytest.raises(ReadOnlyError):
            r.write_many([("/b", b"b")])


def test_joins_the_open_transaction(cart):
    gen = cart.info()["generation"]
    with pytest.raises(RuntimeError):
        with cart.transaction():
            cart.write_many([("/a", b"a"), ("/b", b"b" * 5000)])
            assert cart.read("/b") == b"b" * 5000          # visible inside the transaction
            raise RuntimeError("roll back")
    assert not cart.exists("/a") and not cart.exists("/b")
    assert cart.info()["generation"] == gen
    with cart.transaction():
        cart.write_many([("/a", b"a")])
        cart.write_many([("/a", b"A"), ("/c", b"c" * 3000)])
        cart.delete("/c")
    assert cart.read("/a") == b"A" and not cart.exists("/c")
    assert cart.info()["generation"] == gen + 1


def test_failure_mid_store_rolls_back(cart, monkeypatch):
    """An error while content is being placed (after the checks) leaves the archive as it
    was; inside a transaction it aborts the transaction."""
    cart.write("/keep", b"k" * 5000)
    before = state_of(cart)

    def boom(*a, **k):
        raise OSError("disk on fire")

    monkeypatch.setattr(engine(cart).pager, "write_at", boom)
    with pytest.raises(OSError):
        cart.write_many([("/n/a", b"a" * 3000), ("/n/b", b"b" * 3000)])
    assert state_of(cart) == before
    with pytest.raises(TransactionAbortedError):
        with cart.transaction():
            with pytest.raises(OSError):
                cart.write_many([("/n/a", b"a" * 3000)])
            cart.write("/n/z", b"z")
    monkeypatch.undo()
    assert state_of(cart) == before
    cart.write_many([("/n/a", b"a" * 3000)])
    assert cart.read("/n/a") == b"a" * 3000 and cart.verify().ok


def test_into_a_large_existing_archive(tmp_path):
    """New keys interleaved with many existing ones (leaf splits in the middle of the tree,
    replacements next to inserts); a reopened archive holds both."""
    rng = random.Random(5)
    model = {}
    with cartridge.open(tmp_path / "a.cart", "w", sync="off") as c:
        first = [(f"/z/{i:05d}", rng.randbytes(rng.choice([10, 2000]))) for i in range(0, 6000, 2)]
        c.write_many(first)
        model.update(first)
        second = [(f"/z/{i:05d}", rng.randbytes(rng.choice([10, 2000]))) for i in range(0, 6000, 3)]
        c.write_many(second)
        model.update(second)
    with cartridge.open(tmp_path / "a.cart", "r") as c:
        assert {i.path: c.read(i.path) for i in c.scan("/")} == model
        assert c.verify().ok


def test_btree_put_sorted_matches_put():
    rng = random.Random(3)
    store = MemStore()
    tree = BTree(store)
    model = {}
    for _ in range(6):
        keys = sorted({b"/k/%06d" % rng.randrange(20000) + b"x" * rng.choice([0, 0, 600])
                       for _ in range(rng.choice([1, 50, 3000]))})
        values = [rng.randbytes(rng.choice([0, 10, 56, 300])) for _ in keys]
        olds = tree.put_sorted(keys, values)
        assert olds == [model.get(k) for k in keys]
        model.update(zip(keys, values))
        check(tree, model)
        store.commit()
    with pytest.raises(ValueError):
        tree.put_sorted([b"/b", b"/a"], [b"", b""])
    with pytest.raises(ValueError):
        tree.put_sorted([b"/a", b"/a"], [b"", b""])
    check(tree, model)


# -- crash safety of the write_many commit -------------------------------------------------------
@pytest.mark.parametrize("sync", ["full", "normal", "off"])
def test_every_cut_of_a_write_many_commit_is_all_or_nothing(tmp_path, monkeypatch, sync):
    """A write_many replacing files, adding new ones (packed across several runs) and growing
    the file, cut at every write/sync boundary: the archive holds the whole batch or none."""
    monkeypatch.setattr(content_mod, "BATCH_RUN_PAGES", 8)
    rng = random.Random(f"wm:{sync}")
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "w") as c:
        for i in range(30):
            c.write(f"/old/{i}", rng.randbytes(rng.choice([50, 3000, 9000])))
        for i in range(0, 30, 3):
            c.delete(f"/old/{i}")                # freed pages for the batch to reuse
        old = state_of(c)
    c = cartridge.open(path, "a", sync=sync)
    r = Recording(c, old)
    items = batch(rng, 80, "/new") + [(f"/old/{i}", rng.randbytes(2000)) for i in range(1, 30, 3)]
    c.write_many(items)
    r.model.update(items)
    r.done()
    r.rec.detach()
    c.close()
    assert len(r.rec.log) >= 4
    checked = check_cuts(tmp_path, r, sync, models_for(sync, seeds=[1]))
    assert checked >= 2
    print(f"{len(r.rec.log)} I/O operations, {checked} crash images")


def test_principal_needs_put_for_every_item(tmp_path):
    """A principal's write_many checks PutObject with cart:ObjectSize for every item first:
    one denied item (by path or by size) writes nothing."""
    with cartridge.open(tmp_path / "a.cart", "w") as c:
        c.set_policy("w", {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["cart:PutObject", "cart:GetObject"],
             "Resource": "/up/*"},
            {"Effect": "Deny", "Action": "cart:PutObject", "Resource": "/*",
             "Condition": {"NumericGreaterThan": {"cart:ObjectSize": "1000"}}}]})
        alice = c.as_principal("alice")
        assert alice.write_many([("/up/a", b"a"), ("/up/b", b"b" * 1000)]) == 2
        with pytest.raises(AccessDeniedError):
            alice.write_many([("/up/c", b"c"), ("/elsewhere", b"x")])
        with pytest.raises(AccessDeniedError):
            alice.write_many(iter([("/up/d", b"d"), ("/up/big", b"x" * 1001)]))
        assert not c.exists("/up/c") and not c.exists("/up/d")
        assert c.read("/up/b") == b"b" * 1000


def test_principal_size_is_checked_on_the_bytes_written(tmp_path):
    """A generator that grows a buffer it already yielded cannot slip past cart:ObjectSize:
    what was checked is what is written (a copy taken at yield time)."""
    with cartridge.open(tmp_path / "a.cart", "w") as c:
        c.set_policy("w", {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["cart:PutObject", "cart:GetObject"], "Resource": "/*"},
            {"Effect": "Deny", "Action": "cart:PutObject", "Resource": "/*",
             "Condition": {"NumericGreaterThan": {"cart:ObjectSize": "10"}}}]})
        alice = c.as_principal("alice")

        def grow():
            buf = bytearray(b"x")
            yield "/one", buf
            buf.extend(bytes(100_000))
            yield "/two", b"y"

        assert alice.write_many(grow()) == 2
        assert c.read("/one") == b"x" and c.stat("/one").size == 1


def test_a_reused_buffer_gives_what_write_would(cart):
    """Data is taken when each pair is yielded: one bytearray reused (and resized) between
    pairs gives each file the bytes it held then, as consecutive write() calls would."""
    def reuse():
        buf = bytearray()
        for i in range(5):
            buf[:] = str(i).encode() * (i + 1)
            yield f"/r{i}", buf

    assert cart.write_many(reuse()) == 5
    assert [cart.read(f"/r{i}") for i in range(5)] == [str(i).encode() * (i + 1)
                                                        for i in range(5)]


def test_deep_paths_are_checked_without_recursion(cart):
    """A path thousands of levels deep (valid for write()) is accepted, and a file far up
    its chain of missing directories is still found."""
    deep = "/b" * 2000 + "/f"
    assert cart.write_many([(deep, b"deep")]) == 1
    assert cart.read(deep) == b"deep"
    cart.write("/top", b"file")
    with pytest.raises(PathNotDirectoryError):
        cart.write_many([("/top" + "/c" * 2000 + "/f", b"x")])
    assert not cart.exists("/top/c")


class ShortWrites:
    """A file layer whose writes stop early (as the OS may): pwritev writes only its first
    buffer, pwrite at most 1,000 bytes."""

    def __init__(self, real):
        self.real = real
        self.short = 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def pwrite(self, fd, data, offset):
        view = memoryview(data).cast("B")
        self.short += len(view) > 1000
        return self.real.pwrite(fd, view[:1000], offset)

    def pwritev(self, fd, bufs, offset):
        self.short += 1
        return self.real.pwrite(fd, bufs[0], offset)


def test_short_writes_are_completed(tmp_path):
    """Every write path (write(), write_many(), a commit's coalesced pages) finishes a write
    the OS cut short, so the archive reopens whole."""
    rng = random.Random(9)
    path = tmp_path / "a.cart"
    with cartridge.open(path, "w") as c:
        io = ShortWrites(engine(c).pager.io)
        engine(c).pager.io = io
        items = batch(rng, 120)
        c.write_many(items)
        with c.transaction():
            for i in range(50):
                c.write(f"/t/{i}", rng.randbytes(5000))
        c.write("/big", rng.randbytes(300_000))
        want = state_of(c)
        engine(c).pager.io = io.real
        assert io.short > 3
    assert contents(str(path)) == want


def test_btree_put_sorted_in_order_fills_leaves():
    """An ascending batch into an empty tree, then one after its last key: leaves are left
    full (as put() in key order leaves them) and the tree is valid, long keys included."""
    store = MemStore()
    tree = BTree(store)
    keys = [b"/d%04d/f%07d" % (i // 1000, i) for i in range(20000)]
    keys[5000] = keys[5000] + b"L" * 700          # a long key (overflow page) mid-way
    model = dict.fromkeys(keys, b"v" * 40)
    assert tree.put_sorted(keys, [b"v" * 40] * len(keys)) == [None] * len(keys)
    more = [b"/e%06d" % i + b"M" * (600 if i % 50 == 0 else 0) for i in range(3000)]
    tree.put_sorted(more, [b"w" * 40] * len(more))
    model.update(dict.fromkeys(more, b"w" * 40))
    store.commit()
    check(tree, model)
    leaves = [n for n in store.pages.values() if n[:4] == b"BTLF"]
    assert len(model) / len(leaves) > 0.85 * (4056 // (2 + 4 + 16 + 40))
