"""File content on pages: 64 KiB chunks with one xxh3 checksum each, kept by the pointer
(docs/FORMAT.md §5). Small files live inline in their catalog record."""
from __future__ import annotations

import math
import os
import stat as _stat
import struct
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, cast

import numpy as np

from . import packs as _packs
from ._core.batch import chunk_records, inline_records, pack_files, pack_pages, packed_records
from ._core.checksum import chunk_checksums, uninit_bytes, xxh3_64
from .errors import CorruptionError
from .format import (
    CHUNK_ENTRY,
    CHUNK_PAGES,
    CHUNK_SIZE,
    DEFAULT_MODE_FILE,
    KIND_FILE,
    PACK_MAX_PAGES,
    PACK_REF,
    PAGE_SIZE,
    RECORD,
    STORE_CHUNKS,
    STORE_EMPTY,
    STORE_INLINE,
    STORE_PACKED,
    STORE_XMAP,
    TAG_XMAP,
    XMAP_ENTRIES,
    XMAP_HEADER,
    XMAP_REF,
)
from .pager import seal_meta
from .records import Record, max_payload

EMPTY_CHECKSUM = xxh3_64(b"")
CACHE_CHUNK_MAX = CHUNK_SIZE      # whole chunks up to this size go through the page cache
_DIRECT_READ = 4 * CHUNK_SIZE     # larger reads bypass the cache
READINTO_SPAN = 64                # chunks (4 MiB) read in one call, then verified while still in cache
PARALLEL_VERIFY_MIN = 8 << 20     # reads this large check checksums on a second thread
STAGE_MAX_RUN = 1 << 20           # smaller content runs wait in the pager's write-behind buffer
BATCH_RUN_PAGES = 2048            # write_many packs small files onto runs of up to 8 MiB
_MTIME_AT = struct.calcsize(RECORD.format[:7])    # where mtime_ns sits in an encoded record
_I64 = struct.Struct("<q")
_INLINE_MAX = np.array([0] + [max_payload(n) for n in range(1, 4097)], dtype=np.int64)


def byte_view(data) -> memoryview:
    """Any bytes-like object as a flat memoryview of bytes: C-contiguous buffers without a copy,
    others (strided, Fortran-ordered) copied in C order, as bytes(view) would. A non-buffer
    raises TypeError."""
    view = memoryview(data)
    if view.c_contiguous:
        return view.cast("B") if view.format != "B" or view.ndim != 1 else view
    return memoryview(view.tobytes())


def content_checksum(data) -> str:
    """FileInfo.checksum of these bytes, as 16 hex digits: xxh3-64 of the content when it is one
    chunk (64 KiB or less), else xxh3-64 of the little-endian list of the per-chunk checksums."""
    view = memoryview(data).cast("B")
    n = len(view)
    if n <= CHUNK_SIZE:
        value = xxh3_64(view) if n else EMPTY_CHECKSUM
    else:
        sums = np.empty(-(-n // CHUNK_SIZE), dtype="<u8")
        chunk_checksums(view, CHUNK_SIZE, sums)
        value = xxh3_64(sums.view(np.uint8))
    return f"{value:016x}"


def combine(sums: np.ndarray) -> int:
    """File checksum from its chunk checksums (see content_checksum)."""
    if len(sums) == 1:
        return int(sums[0])
    return xxh3_64(np.ascontiguousarray(sums, dtype="<u8").view(np.uint8))


def _bad_chunk(data, expected: np.ndarray) -> int:
    """Index of the first chunk of `data` whose xxh3 differs from `expected`, or -1."""
    sums = np.empty(len(expected), dtype=np.uint64)
    chunk_checksums(data, CHUNK_SIZE, sums)
    bad = np.flatnonzero(sums != expected)
    return int(bad[0]) if len(bad) else -1


_verifier: tuple[int, ThreadPoolExecutor] | None = None


def verifier() -> ThreadPoolExecutor:
    """One background thread that checks large reads while the next span is read (both release
    the GIL); made anew in a forked child, where the parent's thread does not exist."""
    global _verifier
    if _verifier is None or _verifier[0] != os.getpid():
        _verifier = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="cartridge-verify"))
    return _verifier[1]


def chunk_len(size: int, i: int) -> int:
    return min(CHUNK_SIZE, size - i * CHUNK_SIZE)


_MTIME_MIN_NS, _MTIME_MAX_NS = -(1 << 63), (1 << 63) - 1     # the record's i64 mtime_ns


def file_meta(mode: object = None, mtime: object = None) -> tuple[int | None, int | None]:
    """Check the metadata a writer may set (write, write_many, write streams): `mode`, the
    permission bits (an int, 0 <= mode <= 0o7777), and `mtime`, seconds since the epoch (an
    int, a finite float or a decimal.Decimal (exact to the nanosecond: what restores a
    recorded mtime_ns exactly) within the record's range). Returns (the stored st_mode, a regular
    file's type bits added, mtime in ns); None where not given. TypeError / ValueError."""
    st_mode = mtime_ns = None
    if mode is not None:
        if type(mode) is bool or not isinstance(mode, int):
            raise TypeError(f"mode must be an int (permission bits), not {type(mode).__name__}")
        if not 0 <= mode <= 0o7777:
            raise ValueError(f"mode must be permission bits, 0 <= mode <= 0o7777, not {mode:#o}")
        st_mode = _stat.S_IFREG | int(mode)
    if mtime is not None:
        if type(mtime) is bool or not isinstance(mtime, (int, float, Decimal)):
            raise TypeError(f"mtime must be seconds as an int or float, not {type(mtime).__name__}")
        if isinstance(mtime, Decimal):
            if not mtime.is_finite():
                raise ValueError(f"mtime must be finite, not {mtime!r}")
            mtime_ns = int((mtime * 1_000_000_000).to_integral_value()) \
                if abs(mtime) < 10**10 else _MTIME_MAX_NS + 1
        elif isinstance(mtime, float):
            if not math.isfinite(mtime):
                raise ValueError(f"mtime must be finite, not {mtime!r}")
            mtime_ns = round(mtime * 1e9) if abs(mtime) < 1e10 else _MTIME_MAX_NS + 1
        else:
            mtime_ns = int(mtime) * 1_000_000_000
        if not _MTIME_MIN_NS <= mtime_ns <= _MTIME_MAX_NS:
            raise ValueError(f"mtime {mtime!r} is outside the range an archive stores "
                             "(about +-292 years from 1970)")
    return st_mode, mtime_ns


def file_record(old: Record | None, storage: int, size: int, checksum: int, payload: bytes,
                now: int | None = None, mode: int | None = None,
                mtime: int | None = None) -> Record:
    """The record of a file's new version: `mode` (a whole st_mode, see file_meta) or else
    `old`'s (the default for a new file); `old`'s ctime kept (now for a new file); `mtime` (ns)
    or else now."""
    if now is None:
        now = time.time_ns()
    if mtime is None:
        mtime = now
    if old is None:
        return Record(KIND_FILE, storage, DEFAULT_MODE_FILE if mode is None else mode, size, now,
                      mtime, checksum, payload)
    return Record(KIND_FILE, storage, old.mode if mode is None else mode, size, old.ctime_ns,
                  mtime, checksum, payload)


def publish_file(eng, key: bytes, old: Record | None, size: int, *, data=None,
                 cmap: np.ndarray | None = None,
                 free_old: Callable[[Record, int], None] | None = None,
                 mode: int | None = None, mtime: int | None = None) -> Record:
    """Make a file's new content its committed record, inside the open transaction: either
    `data` (small: stored inline or as one run by ContentStore.store) or `cmap`, the chunk map
    of chunks already written to pages (streams and SQLite members put them there as they go).
    free_old(old, new storage) gives back what the new version no longer uses. One publisher
    for every writer that builds a file's content over time (cartridge.streams, cartridge.sqlite).
    `mode` and `mtime` as file_record takes them (None: the defaults)."""
    max_inline = max_payload(len(key))
    if cmap is None:
        storage, payload, csum, _ = eng.content.store(data, max_inline)
    else:
        storage, payload = eng.content.store_map(cmap, max_inline)
        csum = combine(cmap[:, 1])
    rec = file_record(old, storage, size, csum, payload, mode=mode, mtime=mtime)
    eng.put(key, rec)
    if old is not None and free_old is not None:
        free_old(old, storage)
    return rec


class ContentStore:
    """Writes, reads, verifies and frees file content for one handle."""

    def __init__(self, pager, allocator, packs=None):
        self.pager = pager
        self.allocator = allocator
        self.cache = pager.cache
        self.packs = packs          # the engine's PackTable (cartridge/packs.py)
        # the pack write() calls of this transaction are filling: [first page, bytes used,
        # its 64 KiB buffer]; staged and trimmed to its pages at commit (close_pack)
        self.open_pack: list | None = None

    # -- writing ----------------------------------------------------------------------------
    def write_chunks(self, data, owner: object = None) -> np.ndarray:
        """Place `data` on fresh pages; returns the (n, 2) uint64 map: start page, checksum.
        With an `owner` (a write stream) the pages stay outside the transaction until attached."""
        view = memoryview(data).cast("B")
        n = len(view)
        n_chunks = -(-n // CHUNK_SIZE)
        tail = n % CHUNK_SIZE
        tail_pages = -(-tail // PAGE_SIZE) if tail else 0
        total_pages = (n_chunks - (1 if tail else 0)) * CHUNK_PAGES + tail_pages
        if owner is None:
            runs = self.allocator.alloc_content(total_pages, tail_pages)
        else:
            runs = self.allocator.alloc_detached(owner, total_pages, tail_pages)
        cmap = np.empty((n_chunks, 2), dtype=np.uint64)
        sums = np.empty(n_chunks, dtype=np.uint64)
        chunk_checksums(view, CHUNK_SIZE, sums)
        cmap[:, 1] = sums
        i = 0
        off = 0
        for start, count in runs:
            run_bytes = min(count * PAGE_SIZE, n - off)
            if run_bytes <= STAGE_MAX_RUN:
                self.pager.stage(start, view[off:off + run_bytes])
            else:
                self.pager.write_at(start, view[off:off + run_bytes])
            p = start
            end = start + count
            while p < end and i < n_chunks:
                cmap[i, 0] = p
                p += CHUNK_PAGES
                i += 1
            off += run_bytes
        return cmap

    def store(self, data, max_inline: int, pack: bool = False
              ) -> tuple[int, bytes, int, np.ndarray | None]:
        """(storage, payload, file checksum, chunk map) for new content. `pack`: a file above
        the inline limit and at most PACK_MAX bytes goes into this transaction's open pack
        (write() inside a transaction; docs/FORMAT.md §14)."""
        n = len(data)
        if n == 0:
            return STORE_EMPTY, b"", EMPTY_CHECKSUM, None
        if n <= max_inline:
            b = bytes(data)
            return STORE_INLINE, b, xxh3_64(b), None
        if pack and n <= min(_packs.PACK_MAX, _packs.PACK_BYTES):
            payload, csum = self.store_in_open_pack(memoryview(data).cast("B"))
            return STORE_PACKED, payload, csum, None
        if n <= CHUNK_SIZE:        # one chunk: the common small-file case, without numpy
            view = memoryview(data).cast("B")
            start = self.allocator.alloc_run(-(-n // PAGE_SIZE))
            csum = xxh3_64(view)
            self.pager.stage(start, view)
            return STORE_CHUNKS, CHUNK_ENTRY.pack(start, csum), csum, None
        cmap = self.write_chunks(data)
        storage, payload = self.store_map(cmap, max_inline)
        return storage, payload, combine(cmap[:, 1]), cmap

    def store_in_open_pack(self, view: memoryview) -> tuple[bytes, int]:
        """Append a file to this transaction's open pack (a new one when it does not fit):
        (PACK_REF payload, checksum). Its bytes stay in memory until the commit stages the
        pack (close_pack); reads meanwhile are served from the buffer (load_packed)."""
        n = len(view)
        op = self.open_pack
        if op is None or op[1] + n > _packs.PACK_BYTES:
            self.close_pack()
            start = self.allocator.alloc_run(PACK_MAX_PAGES)
            op = self.open_pack = [start, 0, bytearray(_packs.PACK_BYTES)]
            self.packs.add(start, PACK_MAX_PAGES, 0, 0)
        start, off, buf = op
        buf[off:off + n] = view
        op[1] = off + n
        csum = xxh3_64(view)
        self.packs.note_file(start, n)
        return PACK_REF.pack(start, off, 0), csum

    def close_pack(self) -> None:
        """Stage the open pack's used pages and give back the rest of its reservation (pages
        allocated in this transaction: free at once)."""
        op = self.open_pack
        if op is None:
            return
        self.open_pack = None
        start, used, buf = op
        pages = -(-used // PAGE_SIZE)
        self.pager.stage(start, bytes(buf[:pages * PAGE_SIZE]))
        self.allocator.free(start + pages, PACK_MAX_PAGES - pages)
        self.packs.trim(start, pages)

    def store_many(self, keys: list[bytes], datas: list, modes: np.ndarray, ctimes: np.ndarray,
                   mtime: int, mtimes: dict[int, int] | None = None
                   ) -> tuple[list[bytes], np.ndarray]:
        """Encoded catalog records for new content of many files (keys[i] gets datas[i], with
        mode modes[i], ctime ctimes[i] and mtime `mtime`, or mtimes[i] where given), and their
        sizes. One-chunk files are packed back to back onto runs of fresh pages (each from a
        page boundary), checksummed and written with one call per run; the rest go through
        store()."""
        values, sizes = self._store_many(keys, datas, modes, ctimes, mtime)
        if mtimes:          # the kernels take one mtime: set the others in the encoded records
            for i, ns in mtimes.items():
                v = values[i]
                values[i] = v[:_MTIME_AT] + _I64.pack(ns) + v[_MTIME_AT + 8:]
        return values, sizes

    def _store_many(self, keys: list[bytes], datas: list, modes: np.ndarray, ctimes: np.ndarray,
                    mtime: int) -> tuple[list, np.ndarray]:
        n = len(keys)
        sizes = np.fromiter(map(len, datas), np.int64, n)
        limits = _INLINE_MAX[np.fromiter(map(len, keys), np.int64, n)]
        packed = (sizes > limits) & (sizes <= min(_packs.PACK_MAX, _packs.PACK_BYTES))
        single = (sizes > limits) & (sizes <= CHUNK_SIZE) & ~packed
        inline = sizes <= limits
        values: list = [None] * n
        which = np.flatnonzero(inline).astype(np.intp)
        if len(which):
            inline_records(datas, which, modes[which].astype(np.uint32), ctimes[which], mtime,
                           KIND_FILE, STORE_INLINE, values)
        for i in np.flatnonzero(sizes > CHUNK_SIZE).tolist():
            storage, payload, csum, _ = self.store(datas[i], int(limits[i]))
            values[i] = Record(KIND_FILE, storage, int(modes[i]), int(sizes[i]), int(ctimes[i]),
                               mtime, csum, payload).encode()
        which = np.flatnonzero(single).astype(np.intp)
        if len(which):
            pages = (sizes[which] + (PAGE_SIZE - 1)) // PAGE_SIZE
            ends = np.cumsum(pages)
            starts = np.empty(len(which), np.uint64)
            sums = np.empty(len(which), np.uint64)
            buf = np.empty(min(int(ends[-1]), BATCH_RUN_PAGES) * PAGE_SIZE, np.uint8)
            lo = 0
            base = 0
            while lo < len(which):
                # the files of this run: as many as fit in BATCH_RUN_PAGES (at least one)
                hi = max(int(np.searchsorted(ends, base + BATCH_RUN_PAGES, "right")), lo + 1)
                count = int(ends[hi - 1]) - base
                start = self.allocator.alloc_run(count)
                if count * PAGE_SIZE > len(buf):
                    buf = np.empty(count * PAGE_SIZE, np.uint8)
                pack_pages(datas, which[lo:hi], buf, sums[lo:hi])
                starts[lo:hi] = start + (ends[lo:hi] - pages[lo:hi] - base).astype(np.uint64)
                # ndarray is a buffer (older numpy stubs lack __buffer__: the cast, not an ignore,
                # type-checks with every numpy version)
                self.pager.write_at(start, memoryview(cast(Any, buf))[:count * PAGE_SIZE])
                base = int(ends[hi - 1])
                lo = hi
            chunk_records(which, sizes[which], starts, sums, modes[which].astype(np.uint32),
                          ctimes[which], mtime, KIND_FILE, STORE_CHUNKS, values)
        which = np.flatnonzero(packed).astype(np.intp)
        if len(which):
            self._store_packed(datas, which, sizes[which], modes, ctimes, mtime, values)
        return values, sizes

    def _store_packed(self, datas: list, which: np.ndarray, sizes: np.ndarray,
                      modes: np.ndarray, ctimes: np.ndarray, mtime: int, values: list) -> None:
        """Records for the files datas[which] (each above the inline limit, at most PACK_MAX
        bytes), placed in packs by place_packed."""
        placed = self.place_packed(datas, which, sizes)
        assert placed is not None            # (no limit given: it always places)
        pack_page, offsets, sums = placed
        packed_records(which, sizes, pack_page, offsets, sums, modes[which].astype(np.uint32),
                       ctimes[which], mtime, KIND_FILE, STORE_PACKED, values)

    def place_packed(self, datas: list, which: np.ndarray, sizes: np.ndarray,
                     limit: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Write datas[which] (sizes[k] bytes each, at most 64 KiB) back to back into new packs
        of up to 64 KiB (docs/FORMAT.md §14), in order: a file that does not fit in the current
        pack starts the next. Packs are laid out one after another on runs of up to
        BATCH_RUN_PAGES pages, each written with one call, and entered in the pack table.
        Every run is allocated before anything is written: with `limit`, a run that would end
        past page `limit` gives every run back and nothing is written (returns None).
        Returns each file's pack page, byte offset in its pack and xxh3-64."""
        n = len(which)
        sizes = np.asarray(sizes, np.int64)
        ends = np.cumsum(sizes)
        offsets = np.empty(n, np.int64)      # byte offset inside its pack
        pack_of = np.empty(n, np.int64)      # index of its pack
        pack_bytes: list[int] = []
        lo = 0
        base = 0                             # bytes of files before file `lo`
        while lo < n:
            hi = max(int(np.searchsorted(ends, base + _packs.PACK_BYTES, "right")), lo + 1)
            offsets[lo:hi] = ends[lo:hi] - sizes[lo:hi] - base
            pack_of[lo:hi] = len(pack_bytes)
            pack_bytes.append(int(ends[hi - 1]) - base)
            base = int(ends[hi - 1])
            lo = hi
        npages = [-(-b // PAGE_SIZE) for b in pack_bytes]
        pack_page = np.empty(len(npages), np.uint64)
        sums = np.empty(n, np.uint64)
        table = self.packs
        runs: list[tuple[int, int, int, int]] = []     # (first pack, end pack, start, pages)
        k = 0
        while k < len(npages):
            # the packs of this run: as many as fit in BATCH_RUN_PAGES pages (at least one)
            j = k
            count = 0
            while j < len(npages) and (j == k or count + npages[j] <= BATCH_RUN_PAGES):
                count += npages[j]
                j += 1
            runs.append((k, j, self.allocator.alloc_run(count), count))
            k = j
        if limit is not None and any(start + count > limit for _, _, start, count in runs):
            for _, _, start, count in runs:
                self.allocator.free(start, count)
            return None
        first = 0                            # first file of the current run
        for k, j, start, count in runs:
            buf = np.zeros(count * PAGE_SIZE, np.uint8)
            last = int(np.searchsorted(pack_of, j, "left"))   # files of packs k..j-1
            rel = np.empty(last - first, np.int64)            # offsets inside the run
            p0 = 0
            for q in range(k, j):
                pack_page[q] = start + p0
                lo_f = int(np.searchsorted(pack_of, q, "left"))
                hi_f = int(np.searchsorted(pack_of, q, "right"))
                rel[lo_f - first:hi_f - first] = offsets[lo_f:hi_f] + p0 * PAGE_SIZE
                table.add(start + p0, npages[q], hi_f - lo_f, int(sizes[lo_f:hi_f].sum()))
                p0 += npages[q]
            pack_files(datas, which[first:last], rel, buf, sums[first:last])
            self.pager.write_at(start, memoryview(cast(Any, buf)))
            first = last
        return pack_page[pack_of], offsets, sums

    def store_map(self, cmap: np.ndarray, max_inline: int) -> tuple[int, bytes]:
        """Keep a chunk map inline when it fits, else on a chain of XMAP pages."""
        raw = np.ascontiguousarray(cmap, dtype="<u8").tobytes()
        if len(raw) <= max_inline:
            return STORE_CHUNKS, raw
        n = len(cmap)
        n_pages = -(-n // XMAP_ENTRIES)
        pages = [self.allocator.alloc_page() for _ in range(n_pages)]
        for k, pno in enumerate(pages):
            lo = k * XMAP_ENTRIES
            part = raw[lo * 16:min(n, lo + XMAP_ENTRIES) * 16]
            page = bytearray(PAGE_SIZE)
            XMAP_HEADER.pack_into(page, 0, TAG_XMAP, 0, len(part) // 16, pno, 0,
                                  pages[k + 1] if k + 1 < n_pages else 0, lo)
            page[XMAP_HEADER.size:XMAP_HEADER.size + len(part)] = part
            self.cache.pop(-pno)
            self.pager.stage(pno, seal_meta(page))
        return STORE_XMAP, XMAP_REF.pack(pages[0], n_pages, 0)

    # -- maps -------------------------------------------------------------------------------
    def check_size(self, rec: Record, where: str) -> None:
        """A file's content lives on the file's pages: a larger size is a damaged record."""
        pager = self.pager
        if rec.size > pager.file_pages * PAGE_SIZE:
            pager.file_pages = pager.io.fstat(pager.fd).st_size // PAGE_SIZE
            if rec.size > pager.file_pages * PAGE_SIZE:
                raise CorruptionError(f"{where}: record claims {rec.size} bytes, more than the "
                                      f"archive holds")

    def chunk_map(self, rec: Record, where: str) -> np.ndarray:
        """The (n, 2) map of a chunked file (cached for XMAP chains)."""
        self.check_size(rec, where)
        if rec.storage == STORE_CHUNKS:
            return np.frombuffer(rec.payload, dtype="<u8").reshape(-1, 2)
        if rec.storage != STORE_XMAP:
            raise ValueError("record has no chunk map")
        first, n_pages, _ = XMAP_REF.unpack(rec.payload)
        cached = self.cache.get(-first)
        if cached is not None and len(cached) == rec.n_chunks:
            return cached
        n = rec.n_chunks
        if n_pages != -(-n // XMAP_ENTRIES):
            raise CorruptionError(f"{where}: chunk map spans {n_pages} pages for {n} chunks")
        parts = []
        pno = first
        got = 0
        for k in range(n_pages):
            if pno == 0:
                raise CorruptionError(f"{where}: chunk map chain ends after {k} of {n_pages} pages")
            page = self.pager.read_meta(pno, TAG_XMAP)
            _tag, _r, count, _self, _c, nxt, first_chunk = XMAP_HEADER.unpack_from(page)
            if first_chunk != got or count == 0 or count > XMAP_ENTRIES or got + count > n:
                raise CorruptionError(f"{where}: chunk map page {pno} is inconsistent")
            parts.append(page[XMAP_HEADER.size:XMAP_HEADER.size + 16 * count])
            got += count
            pno = nxt
        if got != n or pno != 0:
            raise CorruptionError(f"{where}: chunk map holds {got} chunks, the file needs {n}")
        cmap = np.frombuffer(b"".join(parts), dtype="<u8").reshape(-1, 2)
        self.cache.put(-first, cmap, 16 * n + 64)
        return cmap

    def page_runs(self, rec: Record, where: str) -> list[tuple[int, int]]:
        """The content and chunk-map pages of a record, as (start, count) runs (none for a
        directory, an empty or an inline file)."""
        if rec.kind == KIND_FILE and rec.storage == STORE_PACKED:   # the whole pack
            page, _ = _packs.ref(rec)
            pack = self.packs.table.get(page) if self.packs is not None else None
            if pack is None:
                raise CorruptionError(f"{where}: packed file names pack {page}, which the pack "
                                      f"table does not hold")
            return [(page, pack.pages)]
        if rec.kind != KIND_FILE or rec.storage not in (STORE_CHUNKS, STORE_XMAP):
            return []
        cmap = self.chunk_map(rec, where)
        runs = [(int(cmap[i, 0]), -(-chunk_len(rec.size, i) // PAGE_SIZE))
                for i in range(len(cmap))]
        if rec.storage == STORE_XMAP:
            runs.extend((p, 1) for p in self.xmap_pages(rec))
        return runs

    def xmap_pages(self, rec: Record) -> list[int]:
        """Pages of a record's XMAP chain (for freeing and verify)."""
        first, n_pages, _ = XMAP_REF.unpack(rec.payload)
        out = []
        pno = first
        for _ in range(n_pages):
            if pno == 0:
                break
            out.append(pno)
            pno = XMAP_HEADER.unpack_from(self.pager.read_meta(pno, TAG_XMAP))[5]
        return out

    # -- reading ----------------------------------------------------------------------------
    def _chunk(self, cmap: np.ndarray, i: int, size: int, where: str) -> bytes:
        start = int(cmap[i, 0])
        csum = int(cmap[i, 1])
        return self.load_chunk(start, csum, chunk_len(size, i), i, where)

    def load_chunk(self, start: int, csum: int, ln: int, i: int, where: str) -> bytes:
        data = self.cache.get((start << 64) | csum)
        if data is not None:
            return data
        return self._fetch_chunk(start, csum, ln, i, where)

    def load_packed(self, rec: Record, where: str) -> bytes:
        """The content of a packed file (docs/FORMAT.md §14): its bytes read from the pages
        of its pack that hold them, checked against the record's checksum, cached."""
        key = rec.chunk_key
        data = self.cache.get(key)
        if data is not None:
            return data
        page, offset = _packs.ref(rec)
        op = self.open_pack
        if op is not None and op[0] == page:      # written in this transaction, not staged yet
            data = bytes(op[2][offset:offset + rec.size])
            if offset + rec.size > op[1] or xxh3_64(data) != rec.checksum:
                raise CorruptionError(f"{where}: packed file outside its open pack {page}")
            return data
        if self.packs is not None and offset + rec.size > self.packs.pages_of(page, where) * PAGE_SIZE:
            raise CorruptionError(f"{where}: packed file runs past the end of its pack {page}")
        self.check_size(rec, where)
        first = page + offset // PAGE_SIZE
        lo = offset % PAGE_SIZE
        count = -(-(lo + rec.size) // PAGE_SIZE)
        raw = self.pager.read_run(first, count)
        data = raw[lo:lo + rec.size]
        if xxh3_64(data) != rec.checksum:
            raise CorruptionError(f"{where}: content checksum mismatch in packed file "
                                  f"(pack {page}, offset {offset}, pages {first}.."
                                  f"{first + count - 1})")
        self.cache.put(key, data, rec.size)
        return data

    def inline_view(self, rec: Record, where: str) -> Record:
        """A packed file's record as if its content were inline (the bytes read and checked):
        what write streams and SQLite members start from."""
        data = self.load_packed(rec, where)
        return Record(rec.kind, STORE_INLINE, rec.mode, rec.size, rec.ctime_ns, rec.mtime_ns,
                      rec.checksum, data)

    def fetch_single(self, rec: Record, where: str) -> bytes:
        """Content of a one-chunk file that the page cache just missed (read, verified, cached;
        no second cache lookup)."""
        if rec.storage == STORE_PACKED:
            return self.load_packed(rec, where)
        self.check_size(rec, where)
        k = rec.chunk_key
        return self._fetch_chunk(k >> 64, k & 0xFFFFFFFFFFFFFFFF, rec.size, 0, where)

    def _fetch_chunk(self, start: int, csum: int, ln: int, i: int, where: str) -> bytes:
        key = (start << 64) | csum
        data = self.pager.read_checked(start, ln, csum, where, i)
        self.cache.put(key, data, ln)
        return data

    def read(self, rec: Record, offset: int, size: int, where: str) -> bytes:
        """Bytes [offset, offset+size) of a file, clipped at its end; checksums verified."""
        end = rec.size if size < 0 else min(rec.size, offset + size)
        if offset >= end:
            return b""
        if rec.storage == STORE_INLINE:
            if offset == 0 and end == rec.size:
                return rec.payload
            return rec.payload[offset:end]
        if rec.storage == STORE_PACKED:
            data = self.load_packed(rec, where)
            return data if offset == 0 and end == rec.size else data[offset:end]
        self.check_size(rec, where)
        if rec.chunk_key:       # one chunk: no map to decode
            data = self.load_chunk(rec.chunk_key >> 64, rec.chunk_key & 0xFFFFFFFFFFFFFFFF,
                                    rec.size, 0, where)
            return data if offset == 0 and end == rec.size else data[offset:end]
        if end - offset > _DIRECT_READ:     # filled in place: no zeroing, no final copy
            out, view = uninit_bytes(end - offset)
            self.readinto(rec, offset, view, where)
            view.release()
            return out
        cmap = self.chunk_map(rec, where)
        first = offset // CHUNK_SIZE
        last = (end - 1) // CHUNK_SIZE
        if first == last:
            data = self._chunk(cmap, first, rec.size, where)
            lo = offset - first * CHUNK_SIZE
            if lo == 0 and end - offset == len(data):
                return data
            return data[lo:lo + end - offset]
        parts = []
        for i in range(first, last + 1):
            data = self._chunk(cmap, i, rec.size, where)
            lo = max(offset - i * CHUNK_SIZE, 0)
            hi = min(end - i * CHUNK_SIZE, len(data))
            parts.append(data[lo:hi] if (lo, hi) != (0, len(data)) else data)
        return b"".join(parts)

    def readinto(self, rec: Record, offset: int, buf, where: str) -> int:
        """Fill `buf` from `offset` without staging copies for whole chunks; returns bytes read."""
        out = memoryview(buf).cast("B")
        end = min(rec.size, offset + len(out))
        if offset >= end:
            return 0
        n = end - offset
        if rec.storage == STORE_INLINE:
            out[:n] = rec.payload[offset:end]
            return n
        if rec.storage == STORE_PACKED:
            out[:n] = self.load_packed(rec, where)[offset:end]
            return n
        cmap = self.chunk_map(rec, where)
        pending: list[tuple[Any, int]] = []     # (future of the check, the span's first chunk)
        try:
            self._readinto_spans(rec, cmap, offset, end, out, pending, where)
        except BaseException:
            for fut, _ in pending:         # no check may still be reading `buf` after we return
                if not isinstance(fut, int):
                    fut.exception()
            raise
        return n

    def _readinto_spans(self, rec: Record, cmap, offset: int, end: int, out,
                        pending: list[tuple[Any, int]],
                        where: str) -> None:
        n = end - offset
        pos = offset
        while pos < end:
            i = pos // CHUNK_SIZE
            lo = pos - i * CHUNK_SIZE
            ln = chunk_len(rec.size, i)
            if lo != 0 or end - pos < ln:
                data = self._chunk(cmap, i, rec.size, where)
                take = min(ln - lo, end - pos)
                out[pos - offset:pos - offset + take] = data[lo:lo + take]
                pos += take
                continue
            # a run of whole chunks that sit back to back on disk: one read, then verify
            j = i
            while (j + 1 < len(cmap) and j - i < READINTO_SPAN - 1
                   and (j + 1) * CHUNK_SIZE + chunk_len(rec.size, j + 1) <= end
                   and int(cmap[j + 1, 0]) == int(cmap[j, 0]) + CHUNK_PAGES):
                j += 1
            span_end = j * CHUNK_SIZE + chunk_len(rec.size, j)
            dst = out[pos - offset:span_end - offset]
            self.pager.read_into(int(cmap[i, 0]), dst)
            expected = cmap[i:j + 1, 1]
            if n >= PARALLEL_VERIFY_MIN:      # check this span while the next one is read
                pending.append((verifier().submit(_bad_chunk, dst, expected), i))
                if len(pending) > 2:
                    self._raise_bad(*pending[0], cmap, where)
                    pending.pop(0)
            else:
                self._raise_bad(_bad_chunk(dst, expected), i, cmap, where)
            pos = span_end
        while pending:
            self._raise_bad(*pending[0], cmap, where)
            pending.pop(0)

    @staticmethod
    def _raise_bad(bad, first: int, cmap, where: str) -> None:
        """Raise CorruptionError for a span whose check found chunk `first + bad` wrong."""
        if not isinstance(bad, int):
            bad = bad.result()
        if bad >= 0:
            k = first + bad
            raise CorruptionError(f"{where}: content checksum mismatch in chunk {k} "
                                  f"(page {int(cmap[k, 0])})")

    # -- freeing ----------------------------------------------------------------------------
    def free(self, rec: Record, where: str, keep: set[int] | None = None) -> None:
        """Give back a file's content pages and chunk-map pages, except chunks starting at a
        page in `keep` (still used by the file's next version). A packed file's bytes become
        dead in its pack (the pack goes with its last file, at commit: cartridge/packs.py)."""
        if rec.storage == STORE_PACKED:
            self.packs.release(rec, where)
            return
        if rec.storage not in (STORE_CHUNKS, STORE_XMAP):
            return
        if rec.chunk_key:               # one chunk: its start page is in the cache key
            start = rec.chunk_key >> 64
            if keep is None or start not in keep:
                self.allocator.free(start, -(-rec.size // PAGE_SIZE))
            return
        cmap = self.chunk_map(rec, where)
        free = self.allocator.free
        for i in range(len(cmap)):
            start = int(cmap[i, 0])
            if keep is None or start not in keep:
                free(start, -(-chunk_len(rec.size, i) // PAGE_SIZE))
        if rec.storage == STORE_XMAP:
            first = XMAP_REF.unpack(rec.payload)[0]
            for pno in self.xmap_pages(rec):
                free(pno, 1)
            self.cache.pop(-first)

