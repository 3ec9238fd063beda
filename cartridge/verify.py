"""verify(): an fsck over the committed state, read straight from disk (not the page cache).

Checks both root slots (and the newest one's seal), every B+tree page (checksum,
self-reference, ordering inside the node and against its parent's separators, equal leaf
depth), every catalog key (a normalised path; no file with entries below it), every record,
every chunk map, that
each reachable page has exactly one owner and is marked used (and not pending) in the persisted
allocation map, that no used page is unowned, and (deep=True) every content checksum.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import paths as P
from ._core.bitmap import Bitmap
from ._core.btree import Node, NodeFormatError
from ._core.checksum import page_ok, xxh3_64
from .content import chunk_len, combine
from .errors import CartridgeError, InvalidPathError
from .format import (
    ALLOC_CHUNK_BITS,
    ALLOC_CHUNK_BYTES,
    ALLOC_FEATURES,
    ALLOC_KEY,
    FEATURE_PACKS,
    KIND_FILE,
    PACK_PREFIX,
    PAGE_SIZE,
    ROOT_SLOT,
    SLOT_OFFSETS,
    SNAPSHOT_PREFIX,
    STORE_CHUNKS,
    STORE_PACKED,
    STORE_XMAP,
    SYSTEM_PREFIX,
    TREE_ALLOCMAP,
    TREE_CATALOG,
)
from .pager import Root, parse_page0, slot_damaged
from .records import decode
from .terminal import safe


@dataclass
class VerifyReport:
    """Result of verify(): ok is True when no problem was found."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    pages_checked: int = 0
    files_checked: int = 0
    bytes_checked: int = 0
    warnings: list[str] = field(default_factory=list)
    snapshot_pages: int = 0          # pages only snapshots reach (held, FORMAT §12)

    def __bool__(self) -> bool:
        return self.ok


class _DiskStore:
    """Loads nodes straight from the file for one tree, recording overflow pages it meets."""

    def __init__(self, pager, tree_id: int):
        self.pager = pager
        self.tree_id = tree_id
        self.overflow: list[int] = []

    def load(self, pno: int) -> Node:
        page = self.pager.read_page(pno)
        if not page_ok(page):
            raise CartridgeError(f"page {pno}: B-tree node checksum mismatch")
        try:
            return Node.decode(page, pno, self.tree_id, self)
        except NodeFormatError as e:
            raise CartridgeError(str(e)) from None

    def read_overflow(self, pno: int, length: int) -> bytes:
        self.overflow.append(pno)
        data = self.pager.read_meta(pno, b"OVFL")
        return data[40:40 + length]


class _Verifier:
    def __init__(self, eng, deep: bool):
        self.eng = eng
        self.deep = deep
        self.pager = eng.pager
        self.problems: list[str] = []
        self.owner: dict[int, str] = {}
        self.files_checked = 0
        self.bytes_checked = 0
        self.system_key_ok: Callable[[bytes], bool] | None = None   # see verify_engine
        self.snapshots: list[tuple[bytes, Root]] = []
        self.snapshot_pages = 0
        self.progress: Callable[[int], object] | None = None       # called with bytes checked
        self.packs: dict = {}            # pack page -> Pack: the live pack table (FORMAT §14)
        self.pack_use: dict[int, list[int]] = {}    # pack page -> [files, bytes] found
        self.packed_seen: set[tuple[int, int, int, int]] = set()   # packed files checked
        self.pack_ranges: dict[int, list] = {}     # pack page -> [(offset, size, where)] live

    def problem(self, msg: str) -> None:
        if len(self.problems) < 1000:
            self.problems.append(msg)

    def own(self, start: int, count: int, what: str) -> None:
        if start <= 0 or start + count > self.pager.file_pages:
            self.problem(f"{what}: pages {start}..{start + count - 1} lie outside the file")
            return
        for p in range(start, start + count):
            prev = self.owner.get(p)
            if prev is not None:
                self.problem(f"page {p} is used twice: by {prev} and by {what}")
            else:
                self.owner[p] = what

    # -- trees ------------------------------------------------------------------------------
    def walk(self, tree_id: int, root: int, height: int, name: str, skip=None):
        """Yield (key, value) of a tree in order while checking its structure. Subtrees whose
        root page is in `skip` (already checked as part of another tree) are not entered."""
        store = _DiskStore(self.pager, tree_id)
        leaf_depths = set()

        def visit(pno, lo, hi, depth):
            if skip is not None and pno in skip:
                return
            if depth > max(height, 1):
                self.problem(f"{name} tree: page {pno} lies deeper than the tree's height {height}")
                return
            try:
                node = store.load(pno)
            except CartridgeError as e:
                self.problem(f"{name} tree: {e}")
                return
            self.own(pno, 1, f"{name} node")
            n = node.nkeys
            keys = [node.key(i) for i in range(n)]
            for k in keys[:1] + keys[-1:]:
                if (lo is not None and k < lo) or (hi is not None and k >= hi):
                    self.problem(f"page {pno}: {name} key {k[:60]!r} outside its parent's range")
            if depth == 1 and n == 0 and skip is None:
                self.problem(f"page {pno}: {name} root node without keys (an empty tree has "
                             "no root; a one-child root collapses)")
            if node.is_leaf:
                leaf_depths.add(depth)
                if depth > 1 and n == 0:
                    self.problem(f"page {pno}: empty non-root {name} leaf")
                for i in range(n):
                    yield keys[i], node.value(i)
                return
            bounds = [lo] + keys + [hi]
            for i in range(n + 1):
                yield from visit(node.child(i), bounds[i], bounds[i + 1], depth + 1)

        if root:
            yield from visit(root, None, None, 1)
        if skip is None and root and leaf_depths and leaf_depths != {height}:
            self.problem(f"{name} tree: leaves at depths {sorted(leaf_depths)}, height says {height}")
        for pno in store.overflow:
            self.own(pno, 1, f"{name} overflow")

    # -- the whole archive ------------------------------------------------------------------
    def run(self):
        eng = self.eng
        page0 = self.pager.read_page0()
        try:
            _hdr, roots = parse_page0(page0, eng.name)
        except CartridgeError as e:
            self.problem(str(e))
            return
        root: Root = eng.saved_root if eng.in_txn else eng.root
        for i, r in enumerate(roots):
            raw = page0[SLOT_OFFSETS[i]:SLOT_OFFSETS[i] + ROOT_SLOT.size]
            if slot_damaged(r, raw, root):
                self.problem(f"root slot {'AB'[i]} (page 0 offset {SLOT_OFFSETS[i]}) is damaged")
        newest = max((r for r in roots if r is not None), key=lambda r: r.generation, default=None)
        if (root.seal and newest is not None and newest.generation == root.generation
                and not self.pager.seal_holds(root)):
            self.problem(f"the pages of the newest commit (generation {root.generation}) do not "
                         f"match the seal in its root slot")
        self.owner[0] = "header"
        size_pages = self.pager.file_pages
        if size_pages < root.page_count and not eng.fixed:
            # (a snapshot's page_count may exceed the file after compaction shrank it: its
            # pages all lie before the end, which own() checks page by page)
            self.problem(f"file holds {size_pages} pages, the root says {root.page_count}")

        # allocation map
        # (a page saved as used 0 / pending 1 is held by snapshots, FORMAT §12.3: taken, not
        # pending, and reachable from no live root)
        used = Bitmap(root.page_count)
        pending = Bitmap(root.page_count)
        held = Bitmap(root.page_count)
        expect = 0
        size = 2 * ALLOC_CHUNK_BYTES
        features = 0
        for key, value in self.walk(TREE_ALLOCMAP, root.allocmap_root, root.allocmap_height,
                                    "allocation-map"):
            idx = ALLOC_KEY.unpack(key)[0] if len(key) == 8 else -1
            if idx == 0 and len(value) == size + ALLOC_FEATURES.size:
                (features,) = ALLOC_FEATURES.unpack_from(value, size)
                value = value[:size]
            if idx != expect or len(value) != size:
                self.problem(f"allocation map entry {idx} out of place or malformed")
            else:
                u = np.frombuffer(value, np.uint8, ALLOC_CHUNK_BYTES)
                pn = np.frombuffer(value, np.uint8, ALLOC_CHUNK_BYTES, ALLOC_CHUNK_BYTES)
                used.load_chunk(idx, (u | pn).tobytes())
                pending.load_chunk(idx, (u & pn).tobytes())
                held.load_chunk(idx, (pn & ~u).tobytes())
            expect += 1
        if expect != -(-root.page_count // ALLOC_CHUNK_BITS):
            self.problem(f"allocation map has {expect} entries for {root.page_count} pages")

        # catalog
        files = dirs = total = 0
        count = 0
        # File keys that are byte prefixes of the key at hand (see Cartridge.scan): a key below
        # the innermost one means a file with children.
        open_files: list[bytes] = []
        for key, value in self.walk(TREE_CATALOG, root.catalog_root, root.catalog_height, "catalog"):
            count += 1
            text = key.decode("utf-8", "surrogateescape")   # bytes not UTF-8: \udcXX, unambiguous
            system = key[:1] == SYSTEM_PREFIX
            where = f"<system {text[1:]!r}>" if system else safe(text)
            while open_files and not key.startswith(open_files[-1]):
                open_files.pop()
            if open_files and key[len(open_files[-1]):len(open_files[-1]) + 1] == b"/":
                self.problem(str(P.file_has_children(open_files[-1], key)))
            if system:
                if not key.startswith(PACK_PREFIX) and (
                        self.system_key_ok is None or not self.system_key_ok(key)):
                    self.problem(f"{where}: unknown system entry in the catalog")
            else:
                try:
                    path = P.from_key(key)
                    if P.normalize(path) != path or path == "/":
                        self.problem(f"{where}: catalog key is not a normalised path")
                except (UnicodeDecodeError, InvalidPathError):
                    self.problem(f"{where}: catalog key is not a valid path")
            try:
                rec = decode(value, where)
            except CartridgeError as e:
                self.problem(str(e))
                continue
            if system:
                if rec.kind != KIND_FILE:
                    self.problem(f"{where}: a system entry must be a file record")
                else:
                    self.check_content(rec, where)
                    if key.startswith(SNAPSHOT_PREFIX):
                        self.snapshot_root(key, rec, where)
                    elif key.startswith(PACK_PREFIX):
                        self.pack_entry(key, rec, where, self.packs)
                continue
            if rec.kind != KIND_FILE:
                dirs += 1
                continue
            open_files.append(key)
            files += 1
            total += rec.size
            self.files_checked += 1
            self.check_content(rec, where)
        if count != root.catalog_count:
            self.problem(f"catalog holds {count} entries, the root says {root.catalog_count}")
        if (files, dirs, total) != (root.file_count, root.dir_count, root.total_bytes):
            self.problem(f"root counts files={root.file_count} dirs={root.dir_count} "
                         f"bytes={root.total_bytes}, found {files}/{dirs}/{total}")

        self.check_pack_table(features)
        self.check_previous(root, roots, used)
        snap_owned = self.check_snapshots(used, pending, held)

        # ownership against the persisted allocation map
        for p, what in self.owner.items():
            if p >= used.n_bits or not used.get(p):
                self.problem(f"page {p} ({what}) is reachable but marked free")
            elif pending.get(p):
                self.problem(f"page {p} ({what}) is reachable but marked pending")
            elif held.get(p):
                self.problem(f"page {p} ({what}) is reachable but marked held by snapshots")
        owned = np.zeros(used.n_bits, dtype=bool)
        if self.owner:
            idx = np.fromiter(self.owner.keys(), dtype=np.int64)
            owned[idx[idx < used.n_bits]] = True
        hbits = np.unpackbits(np.asarray(held.words).view(np.uint8),
                              bitorder="little")[:used.n_bits].astype(bool)
        stray = np.flatnonzero(hbits & ~snap_owned[:used.n_bits])
        if len(stray):
            self.problem(f"{len(stray)} pages are marked held by snapshots but no snapshot "
                         f"reaches them (first: {int(stray[0])})")
        owned |= snap_owned[:used.n_bits]
        bits = np.unpackbits(np.asarray(used.words).view(np.uint8), bitorder="little")[:used.n_bits]
        pbits = np.unpackbits(np.asarray(pending.words).view(np.uint8), bitorder="little")[:used.n_bits]
        leaked = np.flatnonzero(bits.astype(bool) & ~owned & ~pbits.astype(bool))
        if len(leaked):
            self.problem(f"{len(leaked)} pages are marked used but nothing owns them "
                         f"(first: {int(leaked[0])})")

    def pack_entry(self, key: bytes, rec, where: str, table: dict, skip=None) -> None:
        """A pack-table entry (FORMAT §14.2): well formed; its pages are owned by the pack."""
        from .packs import parse_entry
        try:
            page, pack = parse_entry(key, rec, where)
        except CartridgeError as e:
            self.problem(str(e))
            return
        table[page] = pack
        if skip is None or page not in skip:
            self.own(page, pack.pages, f"pack {page}")

    def check_packed(self, rec, where: str, table: dict | None = None,
                     fallback: dict | None = None, deep: bool | None = None) -> None:
        """A packed file (FORMAT §14.1): its pack is in the table and holds its bytes; deep:
        the bytes match the record's checksum. The live catalog's records (table None) are
        counted against the live pack table; a snapshot's or the previous commit's are checked
        against their own table (`table`, then `fallback` for entries in tree pages they share
        with another state) and not counted; a record already checked is not read twice."""
        from .packs import ref
        page, offset = ref(rec)
        live = table is None
        if table is None:
            table = self.packs
        pack = table.get(page)
        if pack is None and fallback is not None:
            pack = fallback.get(page)
        if pack is None:
            self.problem(f"{where}: packed file names pack {page}, which the pack table does "
                         "not hold")
            return
        if offset + rec.size > pack.pages * PAGE_SIZE:
            self.problem(f"{where}: packed file runs past the end of its pack {page}")
            return
        if live:
            use = self.pack_use.setdefault(page, [0, 0])
            use[0] += 1
            use[1] += rec.size
            self.pack_ranges.setdefault(page, []).append((offset, rec.size, where))
        ident = (page, offset, rec.size, rec.checksum)
        if ident in self.packed_seen:
            return
        self.packed_seen.add(ident)
        if self.deep if deep is None else deep:
            first = page + offset // PAGE_SIZE
            lo = offset % PAGE_SIZE
            count = -(-(lo + rec.size) // PAGE_SIZE)
            try:
                data = self.pager.read_run(first, count)[lo:lo + rec.size]
            except CartridgeError as e:
                self.problem(f"{where}: {e}")
                return
            self.bytes_checked += rec.size
            if self.progress is not None:
                self.progress(rec.size)
            if xxh3_64(data) != rec.checksum:
                self.problem(f"{where}: content checksum mismatch in packed file (pack {page}, "
                             f"offset {offset})")

    def check_pack_table(self, features: int) -> None:
        """Every pack's counts match the files that name it; the PACKS flag is set while
        the table is not empty."""
        for page, pack in self.packs.items():
            files, live = self.pack_use.get(page, (0, 0))
            if (files, live) != (pack.files, pack.live):
                self.problem(f"pack {page}: the pack table counts {pack.files} files of "
                             f"{pack.live} bytes, the catalog names {files} of {live}")
        for page, ranges in self.pack_ranges.items():     # live ranges never overlap (§14.1)
            ranges.sort()
            for (o1, n1, w1), (o2, _n2, w2) in zip(ranges, ranges[1:]):
                if o1 + n1 > o2:
                    self.problem(f"{w2}: packed file overlaps {w1} in pack {page}")
        if self.packs and not features & FEATURE_PACKS:
            self.problem("the archive holds packs but allocation-map entry 0 lacks the PACKS "
                         "feature flag")

    def snapshot_root(self, key: bytes, rec, where: str) -> None:
        from . import snapstore  # the record format lives with the snapshot store
        try:
            root, _ = snapstore.parse(self.eng, key, rec)
        except CartridgeError as e:
            self.problem(str(e))
            return
        self.snapshots.append((key, root))

    def check_snapshots(self, used: Bitmap, pending: Bitmap, held: Bitmap) -> np.ndarray:
        """Walk every snapshot's trees and content (what the live state or an earlier snapshot
        already covered is skipped): each page a snapshot reaches must be taken and not
        pending (reused or released pages would break it), and those only snapshots reach
        must be marked held. Returns one bool per page: reached by a snapshot only."""
        n = used.n_bits
        only = np.zeros(n, dtype=bool)
        live, self.owner = self.owner, {}
        seen = dict(live)
        try:
            for key, snap in self.snapshots:
                label = safe(key[len(SNAPSHOT_PREFIX):].decode("utf-8", "replace"))
                self.owner = {}
                table: dict = {}
                for _ in self.walk(TREE_ALLOCMAP, snap.allocmap_root, snap.allocmap_height,
                                   f"snapshot {label!r} allocation-map", skip=seen):
                    pass
                for k, value in self.walk(TREE_CATALOG, snap.catalog_root, snap.catalog_height,
                                          f"snapshot {label!r} catalog", skip=seen):
                    where = f"{safe(k.decode('utf-8', 'replace'))} (snapshot {label!r})"
                    try:
                        rec = decode(value, where)
                    except CartridgeError as e:
                        self.problem(str(e))
                        continue
                    if rec.kind == KIND_FILE and rec.storage in (STORE_CHUNKS, STORE_XMAP):
                        self.check_chunks(rec, where, skip=seen)
                    elif rec.kind == KIND_FILE and rec.storage == STORE_PACKED:
                        self.check_packed(rec, where, table, fallback=self.packs)
                    elif k.startswith(PACK_PREFIX):
                        self.pack_entry(k, rec, where, table, skip=seen)
                for p, what in self.owner.items():
                    if p in seen:
                        continue
                    seen[p] = what
                    if p >= n or not used.get(p):
                        self.problem(f"page {p} ({what}) is reachable but marked free")
                    elif pending.get(p):
                        self.problem(f"page {p} ({what}) is reachable but marked pending")
                    elif not held.get(p):
                        self.problem(f"page {p} ({what}) is reachable only from snapshots but "
                                     "not marked held")
                    else:
                        only[p] = True
        finally:
            self.owner = live
        self.snapshot_pages = int(only.sum())
        return only

    def check_content(self, rec, where: str) -> None:
        """A file record's content: its chunks (owned, and checksummed when deep) or, inline,
        its checksum when deep."""
        if rec.storage == STORE_CHUNKS or rec.storage == STORE_XMAP:
            self.check_chunks(rec, where)
        elif rec.storage == STORE_PACKED:
            self.check_packed(rec, where)
        elif self.deep and rec.size:
            self.bytes_checked += rec.size
            if self.progress is not None:
                self.progress(rec.size)
            if xxh3_64(rec.payload) != rec.checksum:
                self.problem(f"{where}: inline content checksum mismatch")

    def check_previous(self, root: Root, roots: list, used: Bitmap) -> None:
        """The other slot's commit is what open falls back to if the newest slot is damaged:
        walk what it does not share with the newest state and check that none of its pages is
        marked free (free pages may be overwritten, which would break the fallback)."""
        # (the other slot's root: generation - 1, or older after sync="normal" commits, which
        # skip a generation to keep their fallback's slot, FORMAT §2.2)
        prev = next((r for r in roots if r is not None and r.generation < root.generation
                     and r.generation % 2 != root.generation % 2), None)
        if prev is None:
            return
        shared, self.owner = self.owner, {}
        deep, self.deep = self.deep, False
        try:
            for _ in self.walk(TREE_ALLOCMAP, prev.allocmap_root, prev.allocmap_height,
                               "previous allocation-map", skip=shared):
                pass
            table: dict = {}
            for key, value in self.walk(TREE_CATALOG, prev.catalog_root, prev.catalog_height,
                                        "previous catalog", skip=shared):
                where = f"{safe(key.decode('utf-8', 'surrogateescape'))} (previous commit)"
                try:
                    rec = decode(value, where)
                except CartridgeError as e:
                    self.problem(str(e))
                    continue
                if rec.kind == KIND_FILE and rec.storage in (STORE_CHUNKS, STORE_XMAP):
                    self.check_chunks(rec, where, skip=shared)
                elif rec.kind == KIND_FILE and rec.storage == STORE_PACKED:
                    # packs are small and a fallback with damaged files is worth knowing
                    # about: their bytes are checked when deep (chunks are not, above)
                    self.check_packed(rec, where, table, fallback=self.packs, deep=deep)
                elif key.startswith(PACK_PREFIX):
                    self.pack_entry(key, rec, where, table, skip=shared)
            reached = self.owner
        finally:
            self.owner, self.deep = shared, deep
        free = [p for p in reached if p not in shared and (p >= used.n_bits or not used.get(p))]
        if free:
            self.problem(f"{len(free)} pages of the previous commit (generation {prev.generation}, "
                         f"which open falls back to) are marked free (first: {min(free)})")

    def check_chunks(self, rec, where: str, skip=None) -> None:
        content = self.eng.content
        try:
            if rec.storage == STORE_XMAP:
                content.cache.pop(-int.from_bytes(rec.payload[:8], "little"))
                for pno in content.xmap_pages(rec):
                    self.own(pno, 1, f"{where} chunk map")
            cmap = content.chunk_map(rec, where)
        except CartridgeError as e:
            self.problem(str(e))
            return
        for i in range(len(cmap)):
            start = int(cmap[i, 0])
            ln = chunk_len(rec.size, i)
            npages = -(-ln // PAGE_SIZE)
            if start <= 0 or start + npages > self.pager.file_pages:
                self.problem(f"{where}: chunk {i} points outside the file (page {start})")
                continue
            if skip is not None and start in skip:
                continue
            self.own(start, npages, f"{where} chunk {i}")
            if self.deep:
                data = self.pager.read_run(start, npages)[:ln]
                self.bytes_checked += ln
                if self.progress is not None:
                    self.progress(ln)
                if xxh3_64(data) != int(cmap[i, 1]):
                    self.problem(f"{where}: content checksum mismatch in chunk {i} (page {start})")
        if len(cmap) and combine(cmap[:, 1]) != rec.checksum:
            self.problem(f"{where}: file checksum does not match its chunk checksums")


def verify_engine(eng, deep: bool = True,
                  system_key_ok: Callable[[bytes], bool] | None = None,
                  progress: Callable[[int], object] | None = None) -> VerifyReport:
    """Check the engine's committed state. system_key_ok(key) says whether a system-namespace
    catalog key is one the layers above know (the policy store's); None: none is. progress(n)
    is called as each n bytes of content have been checked (deep only)."""
    v = _Verifier(eng, deep)
    v.system_key_ok = system_key_ok
    v.progress = progress
    try:
        v.run()
    except CartridgeError as e:
        v.problem(str(e))
    return VerifyReport(ok=not v.problems, problems=v.problems, pages_checked=len(v.owner),
                        files_checked=v.files_checked, bytes_checked=v.bytes_checked,
                        warnings=list(eng.warnings), snapshot_pages=v.snapshot_pages)
