"""B+tree kernel against a dict model, on an in-memory copy-on-write store."""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cartridge._core.btree import BTree, Node, NodeFormatError
from cartridge.format import KEY_INLINE


class MemStore:
    """Pages in a dict; copy-on-write like the pager, with a 'txn' boundary. A NodeStore
    (cartridge.nodestore) without a cache: every committed node is decoded again."""

    def __init__(self):
        self.pages = {}        # committed page -> bytes
        self.overflow = {}     # page -> bytes
        self.dirty = {}
        self.cache = {}        # stays empty
        self.next = 1
        self.freed = []

    def alloc(self):
        p = self.next
        self.next += 1
        return p

    def load(self, pno):
        n = self.dirty.get(pno)
        if n is not None:
            return n
        return self.load_missing(pno)

    def load_missing(self, pno):
        return Node.decode(self.pages[pno], pno, 1, self)

    def writable(self, node):
        if node.page_no in self.dirty:
            return node
        self.freed.append(node.page_no)
        n = node.copy_to(self.alloc())
        self.dirty[n.page_no] = n
        return n

    def new_node(self, leaf, tree_id):
        n = Node.empty(self.alloc(), leaf, tree_id)
        self.dirty[n.page_no] = n
        return n

    def free_node(self, node):
        self.dirty.pop(node.page_no, None)
        self.freed.append(node.page_no)

    def write_overflow(self, rest):
        p = self.alloc()
        self.overflow[p] = rest
        return p

    def free_overflow(self, pno):
        self.freed.append(pno)

    def read_overflow(self, pno, length):
        data = self.overflow[pno]
        assert len(data) == length
        return data

    def commit(self):
        for pno, n in self.dirty.items():
            self.pages[pno] = n.seal()
        self.dirty.clear()


def check(tree, model):
    items = tree.items_from(b"", 10**9)
    assert items == sorted(model.items())
    assert tree.count == len(model)
    for k, v in model.items():
        assert tree.get(k) == v


def rand_key(rng):
    n = rng.choice([1, 3, 8, 20, 60, 300, 600, 2000, 4096])
    return bytes(rng.choice(b"/abcxyz") for _ in range(n))


@pytest.mark.parametrize("seed", range(6))
def test_random_ops_match_dict(seed):
    rng = random.Random(seed)
    store = MemStore()
    tree = BTree(store)
    model = {}
    for step in range(3000):
        op = rng.random()
        if op < 0.6:
            k = rand_key(rng)
            v = bytes(rng.randrange(256) for _ in range(rng.choice([0, 8, 40, 300])))
            assert tree.put(k, v) == model.get(k)
            model[k] = v
        elif model:
            k = rng.choice(list(model)) if op < 0.95 else rand_key(rng)
            assert tree.delete(k) == model.pop(k, None)
        if step % 97 == 0:
            store.commit()
            check(tree, model)
    store.commit()
    check(tree, model)
    # delete everything: the tree empties completely
    for k in list(model):
        tree.delete(k)
        del model[k]
    assert tree.root == 0 and tree.count == 0


def test_many_small_keys_deep_tree():
    store = MemStore()
    tree = BTree(store)
    model = {}
    for i in range(20000):
        k = b"/dir%03d/file%06d" % (i % 50, i)
        model[k] = i.to_bytes(8, "little")
        tree.put(k, model[k])
    store.commit()
    assert tree.height >= 3
    check(tree, model)
    got = tree.items_from(b"/dir007/", 10**9, b"/dir007/")
    assert [k for k, _ in got] == sorted(k for k in model if k.startswith(b"/dir007/"))


def test_long_keys_sharing_prefix():
    store = MemStore()
    tree = BTree(store)
    base = b"/" + b"p" * 3000
    model = {base + b"/%05d" % i: b"v" for i in range(500)}
    for k, v in model.items():
        tree.put(k, v)
    store.commit()
    check(tree, model)
    assert len(base) > KEY_INLINE


def test_decode_rejects_garbage():
    store = MemStore()
    with pytest.raises(NodeFormatError):
        Node.decode(bytes(4096), 1, 1, store)
    n = Node.empty(5, True, 1)
    page = bytearray(n.seal())
    with pytest.raises(NodeFormatError):
        Node.decode(page, 6, 1, store)  # misdirected
    page[6:8] = (500).to_bytes(2, "little")  # nkeys beyond the page
    with pytest.raises(NodeFormatError):
        Node.decode(page, 5, 1, store)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=40), st.binary(max_size=64)),
                max_size=300))
def test_hypothesis_ops(ops):
    store = MemStore()
    tree = BTree(store)
    model = {}
    for is_put, k, v in ops:
        if is_put:
            tree.put(k, v)
            model[k] = v
        else:
            tree.delete(k)
            model.pop(k, None)
    check(tree, model)


def _empty_nodes(t, store) -> list[int]:
    """Pages of nodes left without keys: empty leaves anywhere, and an internal root."""
    out = []

    def visit(p, depth):
        n = store.load(p)
        if n.nkeys == 0 and (n.is_leaf or depth == 1):
            out.append(p)
        if not n.is_leaf:
            for i in range(n.nkeys + 1):
                visit(n.child(i), depth + 1)
    if t.root:
        visit(t.root, 1)
    return out


@pytest.mark.parametrize("seed", range(3))
def test_deletes_never_leave_empty_leaves(seed):
    """Long shared prefixes make separators long, so merges often do not fit; an emptied leaf
    is then unlinked from its parent instead of staying behind (verify() flags empty leaves)."""
    rng = random.Random(seed)
    store = MemStore()
    t = BTree(store)
    model = {}
    for i in range(3000):
        k = (b"p" * rng.choice([0, 300, 500]) + bytes(rng.choice(b"ab") for _ in range(10))
             + i.to_bytes(4, "big"))
        v = b"v" * rng.choice([1, 300])
        t.put(k, v)
        model[k] = v
    keys = list(model)
    rng.shuffle(keys)
    for j, k in enumerate(keys):
        assert t.delete(k) == model.pop(k)
        if j % 100 == 0:
            assert _empty_nodes(t, store) == []
            assert [kv[0] for kv in t.items_from(b"", 10**6, None)] == sorted(model)
    assert t.root == 0 and t.count == 0


def test_btree_requires_the_whole_store_protocol():
    """BTree binds dirty, cache.get and load_missing at construction: a store without them is
    refused at once, not at its first lookup."""
    class Partial(MemStore):
        def __init__(self, drop):
            super().__init__()
            self.drop = drop

        def __getattribute__(self, name):
            if name == object.__getattribute__(self, "drop"):
                raise AttributeError(name)
            return object.__getattribute__(self, name)

    for drop in ("dirty", "cache", "load_missing"):
        with pytest.raises(AttributeError):
            BTree(Partial(drop))
    BTree(MemStore())


def test_node_read_raises_for_a_short_page_and_a_bad_checksum(tmp_path):
    """Node.read signals a page cut short and a checksum mismatch with NodeFormatError (a
    CorruptionError) naming the page; the store prefixes the archive's name."""
    import os

    from cartridge.errors import CorruptionError

    node = Node.empty(1, True, 1)
    node.insert_raw(0, bytes([2, 0, 1, 0]) + b"/ax")
    page = bytes(node.seal())
    path = tmp_path / "pages"
    path.write_bytes(bytes(4096) + page)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert Node.read(fd, 1, 1, None).key(0) == b"/a"
        with pytest.raises(NodeFormatError, match=r"^page 2 is cut short$"):
            Node.read(fd, 2, 1, None)
    finally:
        os.close(fd)
    bad = bytearray(page)
    bad[100] ^= 1
    path.write_bytes(bytes(4096) + bad)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(CorruptionError, match=r"^checksum mismatch in B-tree page 1$"):
            Node.read(fd, 1, 1, None)
    finally:
        os.close(fd)


def test_a_damaged_catalog_node_names_archive_and_page(tmp_path):
    import cartridge
    from cartridge import format as F

    target = tmp_path / "a.cart"
    with cartridge.open(target, "w") as c:
        c.write("/x", b"data")
    img = bytearray(target.read_bytes())
    slots = [F.ROOT_SLOT.unpack_from(img, o) for o in F.SLOT_OFFSETS]
    root = max(slots, key=lambda s: s[1])[3]            # the newest slot's catalog root
    img[root * F.PAGE_SIZE + 200] ^= 0xFF
    target.write_bytes(img)
    with cartridge.open(target, "r") as c:
        with pytest.raises(cartridge.CorruptionError,
                           match=rf": checksum mismatch in B-tree page {root}$"):
            c.read("/x")
