"""The performance work of issue 4 keeps behaviour: in-order B-tree splits, the Cython listing
walk, coalesced commit write-out, the run-time-dispatched xxh3 and in-place large reads."""
import os
import random

import pytest
import xxhash
from test_btree import MemStore, check

import cartridge
from cartridge._core.btree import BTree
from cartridge._core.checksum import chunk_checksums, uninit_bytes, xxh3_64
from cartridge._handle import engine
from cartridge.errors import CorruptionError
from cartridge.format import KIND_DIR, KIND_FILE


def test_in_order_inserts_fill_nodes():
    """Ascending keys split at the right edge leave the left node full: about half the nodes
    of 50/50 splits, and the tree stays a valid B-tree (also after random inserts and deletes)."""
    store = MemStore()
    tree = BTree(store)
    model = {}
    for i in range(20000):
        k = b"/d%04d/f%07d" % (i // 1000, i)
        model[k] = b"v" * 40
        tree.put(k, model[k])
    store.commit()
    leaves = [n for n in store.pages.values() if n[:4] == b"BTLF"]
    per_leaf = len(model) / len(leaves)
    assert per_leaf > 0.85 * (4056 // (2 + 4 + 16 + 40))      # cells of this size per full leaf
    check(tree, model)
    rng = random.Random(1)
    for _ in range(5000):
        k = b"/d%04d/f%07d" % (rng.randrange(30), rng.randrange(30000))
        if k in model and rng.random() < 0.5:
            tree.delete(k)
            del model[k]
        else:
            model[k] = os.urandom(rng.randrange(1, 200))
            tree.put(k, model[k])
    store.commit()
    check(tree, model)


@pytest.mark.parametrize("n", [0, 1, 300, 5000])
def test_children_matches_a_scan(n):
    store = MemStore()
    tree = BTree(store)
    rng = random.Random(n)
    keys = set()
    for i in range(n):
        depth = rng.choice([1, 1, 2, 3])
        parts = [rng.choice(["a", "b", "é", "dir", f"x{i % 37}", "z" * rng.choice([1, 250])])
                 for _ in range(depth)]
        keys.add(("/top/" + "/".join(parts)).encode())
    keys.add(b"/top")          # the directory's own record and a sibling sharing its prefix
    keys.add(b"/top0")
    keys.add(b"/topx/y")
    parents = {k[:i] for k in keys for i in range(1, len(k)) if k[i:i + 1] == b"/"}
    for k in sorted(keys):        # a key with keys below it is a directory (a file cannot be)
        kind = KIND_DIR if k.endswith(b"/b") or k in parents else KIND_FILE
        tree.put(k, bytes([kind]) + b"rest")
    store.commit()
    want = {}
    for k in keys:
        if k.startswith(b"/top/"):
            rest = k[5:].decode()
            name, slash, _ = rest.partition("/")
            want[name] = want.get(name, False) or bool(slash) or k.endswith(b"/b")
    assert tree.children(b"/top/", KIND_DIR) == want


@pytest.mark.parametrize("between", [[], [b"/top/a-x", b"/top/a.b"]])
def test_children_refuses_a_file_with_children(between):
    """A file record with keys below it (issue 19 item 7) is damage, named with both keys."""
    store = MemStore()
    tree = BTree(store)
    for k in sorted([b"/top/a", b"/top/a/b", b"/top/c", *between]):
        tree.put(k, bytes([KIND_FILE]) + b"rest")
    store.commit()
    with pytest.raises(CorruptionError, match="entries below it: '/top/a' and '/top/a/b'"):
        tree.children(b"/top/", KIND_DIR)
    assert tree.children(b"/top/a/", KIND_DIR) == {"b": False}


@pytest.mark.parametrize("bad", [b"\x01x", b".", b"..", b"a\x7f", b"\xc2\x85", b"\xff\xfe",
                                 b"x" * 256])
def test_children_rejects_impossible_names(bad):
    store = MemStore()
    tree = BTree(store)
    tree.put(b"/d/" + bad, bytes([KIND_FILE]))
    tree.put(b"/d/ok", bytes([KIND_FILE]))
    with pytest.raises(cartridge.CorruptionError):
        tree.children(b"/d/", KIND_DIR)


def test_bulk_commit_coalesces_writes(tmp_path):
    """Small files staged in one transaction go out in few write calls, not one per file."""
    calls = []

    class CountingOS:
        def __getattr__(self, name):
            real = getattr(os, name)
            if name not in ("pwrite", "pwritev"):
                return real

            def call(*args):
                calls.append(name)
                return real(*args)
            return call

    data = {f"/s/f{i:04d}": os.urandom(1000 + i) for i in range(500)}
    with cartridge.open(tmp_path / "c.cart", "w", sync="off") as c:
        engine(c).pager.io = CountingOS()
        with c.transaction():
            for p, d in data.items():
                c.write(p, d)
        assert len(calls) < 30, len(calls)
        engine(c).pager.io = os
    with cartridge.open(tmp_path / "c.cart", "r") as c:
        assert c.verify().ok
        assert all(c.read(p) == d for p, d in data.items())


@pytest.mark.parametrize("n", [0, 1, 16, 17, 128, 129, 240, 241, 1000, 4096, 65536, 65537,
                               1 << 20])
def test_xxh3_matches_the_xxhash_package(n):
    data = os.urandom(n)
    assert xxh3_64(data) == xxhash.xxh3_64_intdigest(data)
    if n:
        import numpy as np

        out = np.empty(-(-n // 4096), dtype=np.uint64)
        chunk_checksums(data, 4096, out)
        assert [int(x) for x in out] == [xxhash.xxh3_64_intdigest(data[i:i + 4096])
                                         for i in range(0, n, 4096)]


def test_uninit_bytes_fills_in_place():
    b, view = uninit_bytes(5)
    view[:] = b"hello"
    view.release()
    assert b == b"hello" and isinstance(b, bytes)
    b2, v2 = uninit_bytes(0)
    assert b2 == b"" and len(v2) == 0


def test_large_read_returns_bytes(tmp_path):
    data = os.urandom(5 * 65536 + 123)
    with cartridge.open(tmp_path / "r.cart", "w") as c:
        c.write("/big", data)
        got = c.read("/big")
        assert type(got) is bytes and got == data
        assert c.read("/big", 1000, 300_000) == data[1000:301_000]
