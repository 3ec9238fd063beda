"""Corruption handling: flip, zero or randomise bytes at every structurally interesting offset
(header fields, root slots, B-tree node headers/keys/pointers, allocation-map pages, chunk-map
pages, overflow pages, content pages) and at random offsets, and truncate the file. Every case
must open/read/list/verify with a CorruptionError-family error or with correct data (the newest
commit, or the one before it when a damaged root slot sends open to the other slot) - never
wrong bytes, another exception type, a hang or a crash."""
from __future__ import annotations

import os
import random
import warnings

import pytest
from cartridge._core.btree import Node

import cartridge
from cartridge import format as F

ALLOWED = (cartridge.CorruptionError, cartridge.NotACartridgeError, cartridge.UnsupportedVersionError)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """An archive with every kind of page, plus the contents of its last two commits."""
    d = tmp_path_factory.mktemp("corrupt")
    path = str(d / "base.cart")
    rng = random.Random(5)
    with cartridge.open(path, "w") as c:
        for i in range(60):
            c.write(f"/d{i % 6}/f{i:03d}", rng.randbytes(rng.choice([20, 700, 5000, 70_000])))
        long_dir = "/" + "x" * 200 + "/" + "y" * 200 + "/" + "z" * 200
        c.write(long_dir + "/big", rng.randbytes(30 * 65536))        # overflow key, XMAP pages
        c.mkdir("/empty")
        before = {i.path: c.read(i.path) for i in c.scan("/")}
        c.write("/last", b"the newest commit")
        after = {i.path: c.read(i.path) for i in c.scan("/")}
        eng = c._eng
        pages = {"node": [], "overflow": [], "allocmap": [], "xmap": [], "content": []}
        for tree, kind in ((eng.catalog, "node"), (eng.allocmap, "allocmap")):
            for pno, node in tree.pages():
                pages[kind].append(pno)
                if node.ovf:
                    pages["overflow"].extend(node.ovf)
        for info in c.scan("/"):
            rec = eng.get(info.path.encode())
            if rec.storage == F.STORE_XMAP:
                pages["xmap"].extend(eng.content.xmap_pages(rec))
            if rec.storage in (F.STORE_CHUNKS, F.STORE_XMAP):
                pages["content"].extend(int(s) for s in eng.content.chunk_map(rec, "")[:, 0])
    assert all(pages.values()), pages
    return path, open(path, "rb").read(), before, after, pages


def check(path: str, before: dict, after: dict) -> str:
    """Open/list/read/verify a damaged copy; returns what happened."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with cartridge.open(path, "r") as c:
                seen = {}
                for dirpath, _dirs, files in c.walk("/"):
                    for name in files:
                        p = cartridge.normalize_path(dirpath + "/" + name)
                        seen[p] = c.read(p)
                assert seen in (after, before), "read wrong data without an error"
                c.verify()
                return "ok"
    except ALLOWED as e:
        return type(e).__name__


def damage(img: bytes, offset: int, how: str, rng: random.Random) -> bytes:
    """The bytes that replace img[offset:offset+8] (or fewer at the end of the file)."""
    old = img[offset:offset + (1 if how == "flip" else 8)]
    if how == "flip":
        return bytes([old[0] ^ (1 << rng.randrange(8))])
    if how == "zero":
        return bytes(len(old))
    return rng.randbytes(len(old))


def structural_offsets(pages: dict) -> list[int]:
    offs = list(range(0, F.FILE_HEADER.size, 2))                         # every header field
    for slot in F.SLOT_OFFSETS:
        offs += [slot + o for o in range(0, F.ROOT_SLOT.size, 8)]          # every slot field
    for kind, pnos in pages.items():
        for pno in pnos[:6]:
            base = pno * F.PAGE_SIZE
            if kind in ("node", "allocmap"):
                offs += [base + o for o in (0, 4, 6, 8, 16, 24, 26, 32, 40, 42)]   # header, slots
                offs += [base + F.PAGE_SIZE - o for o in (1, 8, 100, 600)]          # cells
            elif kind in ("overflow", "xmap"):
                offs += [base + o for o in (0, 6, 8, 16, 24, 32, 40, 100)]
            else:
                offs += [base, base + 1000, base + 4095]
    return offs


def run_cases(tmp_path, archive, offsets, hows, seed) -> dict:
    """Damage one copy in place, case by case, restoring the bytes after each check."""
    _path, img, before, after, _ = archive
    rng = random.Random(seed)
    target = str(tmp_path / "damaged.cart")
    with open(target, "wb") as f:
        f.write(img)
    outcomes: dict = {}
    fd = os.open(target, os.O_RDWR)
    try:
        for off in offsets:
            for how in hows:
                bad = damage(img, off, how, rng)
                os.pwrite(fd, bad, off)
                r = check(target, before, after)
                os.pwrite(fd, img[off:off + len(bad)], off)
                outcomes[r] = outcomes.get(r, 0) + 1
    finally:
        os.close(fd)
    return outcomes


def test_structural_offsets(tmp_path, archive):
    offsets = structural_offsets(archive[4])
    outcomes = run_cases(tmp_path, archive, offsets, ("flip", "zero", "random"), 1)
    assert sum(outcomes.values()) == 3 * len(offsets) > 600
    assert outcomes.get("CorruptionError", 0) > 100      # damage is noticed, not ignored


def test_truncation_everywhere(tmp_path, archive):
    path, img, before, after, _ = archive
    target = str(tmp_path / "cut.cart")
    rng = random.Random(3)
    cuts = [0, 1, 7, 8, 63, 64, 1100, 2100, 4095, 4096, 8191] + rng.sample(range(len(img)), 40)
    for cut in cuts:
        with open(target, "wb") as f:
            f.write(img[:cut])
        check(target, before, after)


def test_one_damaged_slot_falls_back_and_says_so(tmp_path, archive):
    path, img, before, after, _ = archive
    b = bytearray(img)
    gens = [int.from_bytes(b[o + 8:o + 16], "little") for o in F.SLOT_OFFSETS]
    newest = F.SLOT_OFFSETS[gens.index(max(gens))]
    b[newest + 100] ^= 0xFF
    target = str(tmp_path / "slot.cart")
    with open(target, "wb") as f:
        f.write(b)
    with pytest.warns(RuntimeWarning, match="damaged"):
        c = cartridge.open(target, "r")
    with c:
        assert {i.path: c.read(i.path) for i in c.scan("/")} == before
        assert any("damaged" in p for p in c.verify().problems)


def test_decode_of_hostile_node_pages_never_crashes():
    """Random and mangled node pages go through the structural checks of the kernel."""
    rng = random.Random(9)

    class Store:
        def read_overflow(self, pno, length):
            raise cartridge.CorruptionError("no overflow pages here")

    good = Node.empty(7, True, 1)
    for i in range(20):
        good.insert_raw(i, bytes([4, 0, 1, 0]) + bytes([65 + i]) * 4 + b"v")
    page = bytes(good.seal())
    for _ in range(3000):
        b = bytearray(page if rng.random() < 0.7 else rng.randbytes(4096))
        for _ in range(rng.choice([1, 2, 8])):
            b[rng.randrange(4096)] = rng.randrange(256)
        try:
            node = Node.decode(bytes(b), 7, 1, Store())
            for i in range(node.nkeys):
                node.key(i)
                node.value(i)
        except cartridge.CorruptionError:
            pass


@pytest.mark.slow
def test_random_offsets_thousands(tmp_path, archive):
    img = archive[1]
    rng = random.Random(11)
    offsets = [rng.randrange(len(img)) for _ in range(10_000)]
    outcomes = run_cases(tmp_path, archive, offsets, ("flip", "random"), 12)
    assert sum(outcomes.values()) == 20_000
