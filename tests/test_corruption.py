"""Corruption handling: flip, zero or randomise bytes at every structurally interesting offset
(header fields, root slots, B-tree node headers/keys/pointers/free space, allocation-map pages,
chunk-map pages, overflow pages, content pages: every page of each kind) and at random offsets,
and truncate the file. Every case opens the copy, then runs listdir (every directory), scan,
read (every file) and verify independently: each gives correct data (the newest commit, or the
one before it when a damaged root slot sends open to the other slot) or a CorruptionError-family
error - never wrong bytes, another exception type, a hang or a crash. Damage that changes bytes
a checksum covers (header, root slots, metadata pages, content within its length) must never
pass verify(). A sample of cases is also opened with "a" and takes a commit."""
from __future__ import annotations

import os
import random
import warnings
from dataclasses import dataclass

import pytest

import cartridge
from cartridge import format as F
from cartridge._core.btree import Node
from cartridge._handle import engine
from cartridge.content import chunk_len

pytestmark = pytest.mark.timeout(600)

ALLOWED = (cartridge.CorruptionError, cartridge.NotACartridgeError, cartridge.UnsupportedVersionError)


@dataclass
class Archive:
    """A damage-free archive with every kind of page, and what a reader must see in it."""

    path: str
    img: bytes
    states: dict            # generation -> (files {path: bytes}, listings {dir: [names]})
    pages: dict             # kind -> page numbers
    covered: list           # (start, end) byte ranges every byte of which a checksum covers
    page_count: int

    @property
    def all_files(self) -> set:
        return {p for files, _ in self.states.values() for p in files}

    @property
    def all_dirs(self) -> set:
        return {d for _, listings in self.states.values() for d in listings}

    def is_covered(self, offset: int, old: bytes, new: bytes) -> bool:
        """Whether writing `new` over `old` at `offset` changes a checksum-covered byte."""
        changed = [offset + i for i in range(len(new)) if new[i] != old[i]]
        return any(lo <= b < hi for b in changed for lo, hi in self.covered)


def _state(c) -> tuple[dict, dict]:
    files = {i.path: c.read(i.path) for i in c.scan("/")}
    return files, {d: sorted(dirs + names) for d, dirs, names in c.walk("/")}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Archive:
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
        states = {engine(c).root.generation: _state(c)}
        c.write("/last", b"the newest commit")
        states[engine(c).root.generation] = _state(c)
        eng = engine(c)
        pages = {"node": [], "overflow": [], "allocmap": [], "xmap": [], "content": []}
        covered = [(0, F.FILE_HEADER.size)] + [(o, o + F.ROOT_SLOT.size) for o in F.SLOT_OFFSETS]
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
                for i, start in enumerate(eng.content.chunk_map(rec, "")[:, 0]):
                    pages["content"].append(int(start))
                    base = int(start) * F.PAGE_SIZE
                    covered.append((base, base + chunk_len(rec.size, i)))   # deep verify checks
        for kind in ("node", "allocmap", "overflow", "xmap"):
            covered += [(p * F.PAGE_SIZE, (p + 1) * F.PAGE_SIZE) for p in pages[kind]]
        page_count = eng.root.page_count
    assert all(pages.values()), pages
    return Archive(path, open(path, "rb").read(), states, pages, sorted(covered), page_count)


class Outcome(Exception):
    """A check that found wrong behaviour (not an allowed error)."""


def check(path: str, arc: Archive, mode: str = "r", covered: bool = False) -> str:
    """Open a damaged copy, then run listdir (every directory), scan, read (every file) and
    verify independently: each must give the right answer for the committed state the handle
    opened, or raise a CorruptionError-family error. Damage to checksum-covered bytes must
    not pass: open or verify raises, or verify() reports a problem. With mode "a", also a
    commit on top. Returns a summary ("ok", or the steps that raised and what)."""
    errors: list[str] = []

    def step(name, fn):
        try:
            fn()
        except ALLOWED as e:
            errors.append(f"{name}:{type(e).__name__}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            c = cartridge.open(path, mode)
        except ALLOWED as e:
            return f"open:{type(e).__name__}"
        with c:
            gen = engine(c).root.generation
            assert gen in arc.states, f"opened generation {gen}, which was never committed"
            files, listings = arc.states[gen]
            for d in sorted(arc.all_dirs):
                def ls(d=d):
                    if d in listings:
                        assert c.listdir(d) == listings[d], f"listdir({d}) is wrong"
                    else:
                        with pytest.raises(cartridge.NotFoundError):
                            c.listdir(d)
                step("listdir", ls)
            step("scan", lambda: _expect(sorted(i.path for i in c.scan("/")) == sorted(files),
                                         "scan lists the wrong files"))
            for p in sorted(arc.all_files):
                def rd(p=p):
                    if p in files:
                        assert c.read(p) == files[p], f"read {p}: wrong bytes without an error"
                    else:
                        with pytest.raises(cartridge.NotFoundError):
                            c.read(p)
                step("read", rd)
            report = None

            def vf():
                nonlocal report
                report = c.verify()
            step("verify", vf)
            if mode == "a":
                step("write", lambda: c.write("/written/after/damage", b"new"))
        if mode == "a" and not any(e.startswith("write") for e in errors):
            def reread():
                with cartridge.open(path, "r") as r:
                    assert r.read("/written/after/damage") == b"new"
                    for p, data in files.items():
                        try:
                            assert r.read(p) == data, f"read {p} after a commit: wrong bytes"
                        except ALLOWED:
                            pass
            step("reopen", reread)
    if covered:
        assert errors and any(e.startswith("verify") for e in errors) or (
            report is not None and not report.ok), "damage under a checksum passed verify()"
    if report is not None and not report.ok:
        errors.append("verify:not-ok")
    return " ".join(sorted(set(errors))) or "ok"


def _expect(cond: bool, msg: str) -> None:
    assert cond, msg


def damage(img: bytes, offset: int, how: str, rng: random.Random) -> bytes:
    """The bytes that replace img[offset:offset+8] (or fewer at the end of the file)."""
    old = img[offset:offset + (1 if how == "flip" else 8)]
    if how == "flip":
        return bytes([old[0] ^ (1 << rng.randrange(8))])
    if how == "zero":
        return bytes(len(old))
    return rng.randbytes(len(old))


def structural_offsets(pages: dict, per_kind: int | None = None) -> list[int]:
    offs = list(range(0, F.FILE_HEADER.size, 2))                         # every header field
    for slot in F.SLOT_OFFSETS:
        offs += [slot + o for o in range(0, F.ROOT_SLOT.size, 8)]          # every slot field
    for kind, pnos in pages.items():
        for n, pno in enumerate(pnos[:per_kind]):
            base = pno * F.PAGE_SIZE
            if kind in ("node", "allocmap"):
                offs += [base + o for o in (0, 4, 6, 8, 16, 24, 26, 32, 40, 42)]   # header, slots
                offs += [base + F.PAGE_SIZE - o for o in (1, 8, 100, 600)]          # cells
                offs += [base + 1500]                                               # free space
            elif kind in ("overflow", "xmap"):
                offs += [base + o for o in (0, 6, 8, 16, 24, 32, 40, 100, 1000, 4095)]
            else:   # content: first, inner and last page of the chunk
                offs += [base, base + 1000] if n % 2 else [base + 4095, base + 9 * F.PAGE_SIZE + 77]
                offs += [base + 15 * F.PAGE_SIZE + 4095] if n % 5 == 0 else []
    return offs


def run_cases(tmp_path, arc: Archive, offsets, hows, seed, writable_every: int = 0) -> dict:
    """Damage one copy in place, case by case, restoring the bytes after each check. Every
    `writable_every`-th case is also opened with "a" (on a fresh copy: it may commit)."""
    img = arc.img
    rng = random.Random(seed)
    target = str(tmp_path / "damaged.cart")
    scratch = str(tmp_path / "writable.cart")
    with open(target, "wb") as f:
        f.write(img)
    outcomes: dict = {}
    n = 0
    fd = os.open(target, os.O_RDWR)
    try:
        for off in offsets:
            for how in hows:
                bad = damage(img, off, how, rng)
                old = img[off:off + len(bad)]
                covered = arc.is_covered(off, old, bad)
                os.pwrite(fd, bad, off)
                r = check(target, arc, covered=covered)
                outcomes[r] = outcomes.get(r, 0) + 1
                if writable_every and n % writable_every == 0:
                    with open(scratch, "wb") as f:
                        f.write(img[:off] + bad + img[off + len(bad):])
                    r = "a: " + check(scratch, arc, "a", covered=covered)
                    outcomes[r] = outcomes.get(r, 0) + 1
                os.pwrite(fd, old, off)
                n += 1
    finally:
        os.close(fd)
    return outcomes


def report(outcomes: dict) -> None:
    print(f"\n{sum(outcomes.values())} cases:")
    for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1]):
        print(f"  {v:6d}  {k}")


def test_structural_offsets(tmp_path, archive):
    offsets = structural_offsets(archive.pages)
    outcomes = run_cases(tmp_path, archive, offsets, ("flip", "zero", "random"), 1, writable_every=9)
    report(outcomes)
    n = 3 * len(offsets)
    assert sum(v for k, v in outcomes.items() if not k.startswith("a: ")) == n > 1000
    noticed = sum(v for k, v in outcomes.items() if "Corruption" in k or "not-ok" in k)
    assert noticed > n // 2                              # damage is noticed, not ignored


def test_truncation_everywhere(tmp_path, archive):
    img = archive.img
    target = str(tmp_path / "cut.cart")
    rng = random.Random(3)
    cuts = [0, 1, 7, 8, 63, 64, 1100, 2100, 4095, 4096, 8191] + rng.sample(range(len(img)), 40)
    for i, cut in enumerate(cuts):
        with open(target, "wb") as f:
            f.write(img[:cut])
        # a file shorter than the pages the root covers never passes as intact
        r = check(target, archive, "a" if i % 5 == 1 else "r",   # ("a" makes an empty file new)
                  covered=cut < archive.page_count * F.PAGE_SIZE)
        if cut < archive.page_count * F.PAGE_SIZE:
            assert r.startswith("open:"), (cut, r)


def test_one_damaged_slot_falls_back_and_says_so(tmp_path, archive):
    img = archive.img
    before = archive.states[min(archive.states)][0]
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
    img = archive.img
    rng = random.Random(11)
    offsets = [rng.randrange(len(img)) for _ in range(10_000)]
    outcomes = run_cases(tmp_path, archive, offsets, ("flip", "random"), 12, writable_every=20)
    report(outcomes)
    assert sum(v for k, v in outcomes.items() if not k.startswith("a: ")) == 20_000
