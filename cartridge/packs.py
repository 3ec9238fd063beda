"""Packs: small files share pages (docs/FORMAT.md §14, version 1.4).

A pack is a run of 1..16 consecutive pages written once, in one commit, holding the content of
several files back to back; a packed file's record points at (pack page, byte offset) and its
checksum covers exactly its bytes. Packs are never changed in place (shadow paging): replacing
or deleting a packed file leaves its bytes dead in the pack. The pack table - one system entry
per pack, `00 "pack/" u64 BE page` - counts each pack's live files, live bytes and dead bytes;
a pack whose last file goes is freed like any page (by the commit that removes it), and
compaction rewrites packs whose live fraction fell below LIVE_MIN (cartridge/compactor.py).

The table is loaded lazily (one range scan of the system namespace) and changed in memory
during a transaction; the commit writes the entries that changed (before_commit) and frees
the packs left empty. A rollback rebuilds the engine's trees and with them a fresh table.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from ._core.checksum import xxh3_64
from .errors import CorruptionError
from .format import (
    DEFAULT_MODE_FILE,
    FEATURE_PACKS,
    KIND_FILE,
    PACK_ENTRY,
    PACK_MAX_PAGES,
    PACK_PREFIX,
    PACK_REF,
    PAGE_SIZE,
    STORE_INLINE,
)
from .records import Record, decode

PACK_BYTES = PACK_MAX_PAGES * PAGE_SIZE      # 64 KiB: the largest pack
# Files larger than the inline limit and at most PACK_MAX bytes are packed by write_many and
# by write() inside a transaction
# (measured in perf/pack_bench.py); 0 turns packing off. Tails of larger files are
# not packed: a file over PACK_MAX wastes under 4 KiB / 16 KiB = 25% in its last page at worst,
# and a tail in a pack would make every append rewrite it (docs/FORMAT.md §14.4).
PACK_MAX = 16384
# compaction rewrites a pack whose live bytes fell below this fraction of the bytes written to
# it (live + dead), once it holds at least a page of dead bytes
LIVE_MIN = 0.5
_KEY = struct.Struct(">Q")


def pack_key(page: int) -> bytes:
    return PACK_PREFIX + _KEY.pack(page)


@dataclass
class Pack:
    """One pack-table entry: pages (1..16), live files, live bytes, dead bytes."""

    pages: int
    files: int
    live: int
    dead: int


def parse_entry(key: bytes, rec: Record, where: str) -> tuple[int, Pack]:
    """(pack page, Pack) of a pack-table entry; CorruptionError when malformed."""
    if (len(key) != len(PACK_PREFIX) + 8 or rec.kind != KIND_FILE
            or rec.storage != STORE_INLINE or rec.size != PACK_ENTRY.size):
        raise CorruptionError(f"{where}: malformed pack-table entry")
    (page,) = _KEY.unpack_from(key, len(PACK_PREFIX))
    pages, files, live, dead = PACK_ENTRY.unpack(rec.payload)
    # a pack is written densely and never changes, so its pages are exactly the pages its
    # bytes (live + dead) need: an entry claiming more would free other data's pages
    if (not 1 <= page < 1 << 48 or not 1 <= pages <= PACK_MAX_PAGES or files < 1
            or live < files or -(-(live + dead) // PAGE_SIZE) != pages):
        raise CorruptionError(f"{where}: pack-table entry out of range (page {page}, "
                              f"{pages} pages, {files} files, {live} live, {dead} dead bytes)")
    return page, Pack(pages, files, live, dead)


def ref(rec: Record) -> tuple[int, int]:
    """(pack page, byte offset) of a packed file's record."""
    page, offset, _ = PACK_REF.unpack(rec.payload)
    return page, offset


def read_table(catalog, name: str) -> dict[int, Pack]:
    """Every entry of a catalog's pack table."""
    out: dict[int, Pack] = {}
    start = PACK_PREFIX
    end = 0                         # the page after the previous pack (keys are in page order)
    while True:
        batch = catalog.items_from(start, 256, PACK_PREFIX)
        for k, v in batch:
            where = f"{name}:<system pack entry>"
            page, pack = parse_entry(k, decode(v, where), where)
            if page < end:
                raise CorruptionError(f"{where}: pack {page} overlaps the pack before it")
            end = page + pack.pages
            out[page] = pack
        if len(batch) < 256:
            return out
        start = batch[-1][0] + b"\x00"


class PackTable:
    """The pack table of one engine state (writers change it inside transactions)."""

    def __init__(self, eng) -> None:
        self.eng = eng
        self._table: dict[int, Pack] | None = None
        self.dirty: set[int] = set()

    @property
    def table(self) -> dict[int, Pack]:
        if self._table is None:
            self._table = read_table(self.eng.catalog, self.eng.name)
        return self._table

    def pages_of(self, page: int, where: str) -> int:
        """The length in pages of the pack at `page` (for a read to check that a packed file
        lies inside its pack): from the table when it is loaded, else one catalog lookup of
        the entry (a reader that reads a few files does not load the whole table).
        CorruptionError when the table holds no such pack."""
        if self._table is not None:
            pack = self._table.get(page)
            if pack is None:
                raise CorruptionError(f"{where}: packed file names pack {page}, which the pack "
                                      f"table does not hold")
            return pack.pages
        key = pack_key(page)
        raw = self.eng.catalog.get(key)
        if raw is None:
            raise CorruptionError(f"{where}: packed file names pack {page}, which the pack "
                                  f"table does not hold")
        entry = f"{self.eng.name}:<system pack entry>"
        return parse_entry(key, decode(raw, entry), entry)[1].pages

    def add(self, page: int, pages: int, files: int, live: int) -> None:
        """A new pack written in this transaction."""
        self.table[page] = Pack(pages, files, live, 0)
        self.dirty.add(page)

    def note_file(self, page: int, size: int) -> None:
        """A file written into the open pack at `page` (cartridge/content.py)."""
        pack = self.table[page]
        pack.files += 1
        pack.live += size
        self.dirty.add(page)

    def trim(self, page: int, pages: int) -> None:
        """The open pack at `page` closed at `pages` pages."""
        self.table[page].pages = pages
        self.dirty.add(page)

    def release(self, rec: Record, where: str) -> None:
        """A packed file's record is gone (replaced, deleted): its bytes are dead."""
        page, _ = ref(rec)
        pack = self.table.get(page)
        if pack is None or pack.files < 1 or pack.live < rec.size:
            raise CorruptionError(f"{where}: packed file names pack {page}, which the pack "
                                  f"table does not hold")
        pack.files -= 1
        pack.live -= rec.size
        pack.dead += rec.size
        self.dirty.add(page)

    def acquire(self, rec: Record, other: dict[int, Pack], where: str) -> bool:
        """A packed file's record comes back (restore from a snapshot whose pack table is
        `other`). Returns True when its pack was not in the table (it is live again: the
        caller revives its pages)."""
        page, _ = ref(rec)
        pack = self.table.get(page)
        new = pack is None
        if pack is None:
            was = other.get(page)
            if was is None:
                raise CorruptionError(f"{where}: packed file names an unknown pack {page}")
            pack = self.table[page] = Pack(was.pages, 0, 0, was.live + was.dead)
        pack.files += 1
        pack.live += rec.size
        pack.dead = max(pack.dead - rec.size, 0)
        self.dirty.add(page)
        return new

    def move(self, old: int, new: int) -> None:
        """A pack copied page for page to `new` (compaction): the copy takes over the entry,
        the old pack goes at commit."""
        pack = self.table[old]
        self.table[new] = Pack(pack.pages, pack.files, pack.live, pack.dead)
        self.table[old] = Pack(pack.pages, 0, 0, pack.live + pack.dead)
        self.dirty.update((old, new))

    def before_commit(self) -> None:
        """Inside the commit: write the entries that changed, free packs left without a live
        file, and keep the PACKS feature flag in step with the table."""
        eng = self.eng
        eng.content.close_pack()
        if not self.dirty:
            return
        table = self.table
        a = eng.allocator
        for page in sorted(self.dirty):
            pack = table[page]
            if pack.files == 0:
                if -(-pack.dead // PAGE_SIZE) != pack.pages or page + pack.pages > a.n_pages:
                    raise CorruptionError(f"{eng.name}: pack {page} claims {pack.pages} pages "
                                          f"for {pack.dead} bytes; not freeing them")
                del table[page]
                eng.delete(pack_key(page))
                a.free(page, pack.pages)
            else:
                payload = PACK_ENTRY.pack(pack.pages, pack.files, pack.live, pack.dead)
                eng.put(pack_key(page), Record(KIND_FILE, STORE_INLINE, DEFAULT_MODE_FILE,
                                               len(payload), 0, 0, xxh3_64(payload), payload))
        self.dirty.clear()
        flags = a.features | FEATURE_PACKS if table else a.features & ~FEATURE_PACKS
        a.set_features(flags)

    def sparse(self, reach=None) -> list[int]:
        """Packs compaction rewrites: live bytes below LIVE_MIN of the bytes written to them,
        at least a page of them dead, and no snapshot reaching them (a rewrite would only add a
        copy while the snapshot holds the old one)."""
        out = []
        for page, p in self.table.items():
            if p.dead >= PAGE_SIZE and p.live < LIVE_MIN * (p.live + p.dead):
                if reach is not None and page < len(reach) and reach[page:page + p.pages].any():
                    continue
                out.append(page)
        return sorted(out)

    def totals(self) -> dict:
        """The figures info() reports."""
        t = self.table
        return {"packs": len(t), "packed_files": sum(p.files for p in t.values()),
                "pack_pages": sum(p.pages for p in t.values()),
                "pack_dead_bytes": sum(p.dead for p in t.values())}
