"""Pages on disk: the file header, the two root slots, checked page I/O, growth, syncing and
the page cache (docs/FORMAT.md §2-§3, §8)."""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import xxhash

from ._core.arc import ARCCache
from ._core.checksum import page_ok, seal_page, xxh3_64
from ._core.readpath import checked_chunk
from .errors import CorruptionError, NotACartridgeError, UnsupportedVersionError
from .format import (
    FILE_HEADER,
    FILE_HEADER_CSUM_SPAN,
    MAGIC,
    META_PREFIX,
    PAGE_SIZE,
    ROOT_SLOT,
    ROOT_SLOT_CSUM_SPAN,
    SEAL_EXTENT,
    SEAL_HEAD,
    SEAL_MAX_EXTENTS,
    SEAL_MAX_PAGES,
    SEAL_START_BITS,
    SLOT_MAGIC,
    SLOT_MAGIC_SEALED,
    SLOT_OFFSETS,
    VERSION_MAJOR,
    VERSION_MINOR,
)

SYNC_MODES = ("full", "normal", "off")
# sync="normal" (docs/FORMAT.md §8): commits are sealed and not synced; a barrier (fdatasync)
# comes at the first commit that makes SYNC_EVERY_COMMITS since the last one, or that returns
# SYNC_EVERY_NS or more after it, at close() and at commit(); sooner when what was written since
# the last barrier no longer fits one seal (§2.3).
SYNC_EVERY_COMMITS = 64
SYNC_EVERY_NS = 100_000_000      # 100 ms
STAGE_LIMIT = 8 << 20       # staged bytes that trigger an early write-out
MAX_GENERATION = 1 << 48    # generations stay far below this (and below the lock-offset range)
WRITEV_MAX = 512           # buffers per pwritev call (IOV_MAX is 1024 on Linux)
_ZERO_PAGE = memoryview(bytes(PAGE_SIZE))


@dataclass
class Root:
    """One committed state of the archive, as stored in a root slot."""

    generation: int = 0
    page_count: int = 0
    catalog_root: int = 0
    catalog_count: int = 0
    catalog_height: int = 0
    allocmap_height: int = 0
    allocmap_root: int = 0
    allocmap_count: int = 0
    file_count: int = 0
    dir_count: int = 0
    total_bytes: int = 0
    commit_time_ns: int = 0
    pending_pages: int = 0

    # A sealed root (docs/FORMAT.md §2.3): the page extents its commit wrote, as
    # ((start, count), ...), and the xxh3 of those pages; () for a root written after a barrier.
    seal: tuple = ()
    seal_checksum: int = 0

    def pack(self) -> bytes:
        if self.seal:
            magic = SLOT_MAGIC_SEALED
            reserved = SEAL_HEAD.pack(len(self.seal), 0, self.seal_checksum) + b"".join(
                SEAL_EXTENT.pack(start | count << SEAL_START_BITS) for start, count in self.seal)
        else:
            magic, reserved = SLOT_MAGIC, b""
        body = ROOT_SLOT.pack(
            magic, self.generation, self.page_count, self.catalog_root, self.catalog_count,
            self.catalog_height, self.allocmap_height, self.allocmap_root, self.allocmap_count,
            self.file_count, self.dir_count, self.total_bytes, self.commit_time_ns,
            self.pending_pages, reserved, 0,
        )
        return body[:ROOT_SLOT_CSUM_SPAN] + xxh3_64(body[:ROOT_SLOT_CSUM_SPAN]).to_bytes(8, "little")

    @classmethod
    def unpack(cls, raw: bytes) -> Root | None:
        """The root in a slot, or None when the slot is empty, torn or damaged."""
        if len(raw) < ROOT_SLOT.size:
            return None
        vals = ROOT_SLOT.unpack(raw[:ROOT_SLOT.size])
        magic = vals[0]
        if magic not in (SLOT_MAGIC, SLOT_MAGIC_SEALED) or vals[-1] != xxh3_64(
                raw[:ROOT_SLOT_CSUM_SPAN]):
            return None
        if not 1 <= vals[1] < MAX_GENERATION:   # no archive commits 2^48 times: not a real root
            return None
        root = cls(*vals[1:-2])
        if magic == SLOT_MAGIC_SEALED:
            seal = unpack_seal(vals[-2], root.page_count)
            if seal is None:
                return None
            root.seal, root.seal_checksum = seal
        return root

    def copy(self) -> Root:
        dup = Root.__new__(Root)
        dup.__dict__.update(self.__dict__)
        return dup


@dataclass
class FileHeader:
    version_major: int
    version_minor: int
    page_size: int
    archive_id: bytes
    created_ns: int

    def pack(self) -> bytes:
        body = FILE_HEADER.pack(MAGIC, self.version_major, self.version_minor, self.page_size,
                                self.archive_id, self.created_ns, 0, b"", 0)
        return body[:FILE_HEADER_CSUM_SPAN] + xxh3_64(body[:FILE_HEADER_CSUM_SPAN]).to_bytes(8, "little")

    @classmethod
    def new(cls) -> FileHeader:
        return cls(VERSION_MAJOR, VERSION_MINOR, PAGE_SIZE, uuid.uuid4().bytes, time.time_ns())


def parse_page0(page0: bytes, name: str) -> tuple[FileHeader, list[Root | None]]:
    """Validate the file header and decode both root slots (None for a bad slot)."""
    if len(page0) < FILE_HEADER.size or page0[:8] != MAGIC:
        raise NotACartridgeError(f"{name}: not a cartridge archive (bad magic or too short)")
    magic, major, minor, page_size, aid, created, _flags, _res, csum = FILE_HEADER.unpack(
        page0[:FILE_HEADER.size])
    if csum != xxh3_64(page0[:FILE_HEADER_CSUM_SPAN]):
        raise CorruptionError(f"{name}: file header checksum mismatch (page 0, bytes 0-63)")
    if major != VERSION_MAJOR:
        raise UnsupportedVersionError(
            f"{name}: format version {major}.{minor}; this build reads {VERSION_MAJOR}.x")
    if page_size != PAGE_SIZE:
        raise UnsupportedVersionError(f"{name}: page size {page_size} (this build uses {PAGE_SIZE})")
    if len(page0) < SLOT_OFFSETS[1] + ROOT_SLOT.size:
        raise NotACartridgeError(f"{name}: cut short before its root slots")
    roots = [Root.unpack(page0[o:o + ROOT_SLOT.size]) for o in SLOT_OFFSETS]
    return FileHeader(major, minor, page_size, aid, created), roots


def unpack_seal(reserved: bytes, page_count: int) -> tuple[tuple, int] | None:
    """The extents and checksum of a sealed slot, or None when they are malformed (1 to
    SEAL_MAX_EXTENTS ascending, non-overlapping extents of pages 1.. inside page_count, at most
    SEAL_MAX_PAGES in all)."""
    n, zero, csum = SEAL_HEAD.unpack_from(reserved)
    if not 1 <= n <= SEAL_MAX_EXTENTS or zero:
        return None
    extents = []
    total = 0
    end = 1
    for i in range(n):
        (v,) = SEAL_EXTENT.unpack_from(reserved, SEAL_HEAD.size + i * SEAL_EXTENT.size)
        start, count = v & ((1 << SEAL_START_BITS) - 1), v >> SEAL_START_BITS
        total += count
        if start < end or count < 1 or start + count > page_count:
            return None     # page 0, empty, past page_count, out of order or overlapping
        extents.append((start, count))
        end = start + count
    if total > SEAL_MAX_PAGES or any(reserved[SEAL_HEAD.size + n * SEAL_EXTENT.size:]):
        return None
    return tuple(extents), csum


def plan_runs(pages: dict[int, bytes], pad: bool = False) -> list[tuple[int, list]]:
    """Page runs to write, (start page, buffers) each: neighbours coalesced into one run (up to
    WRITEV_MAX buffers); a partial page is padded with zeros to its end when another buffer
    follows it in the run, or always when `pad` (the rest of that page belongs to the same
    owner)."""
    order = sorted(pages)
    n = len(order)
    runs = []
    i = 0
    while i < n:
        start = order[i]
        bufs: list[bytes | memoryview] = [pages[start]]
        nxt = start + -(-len(bufs[0]) // PAGE_SIZE)
        j = i + 1
        while j < n and order[j] == nxt and len(bufs) < WRITEV_MAX:
            rem = len(bufs[-1]) % PAGE_SIZE
            if rem:
                bufs.append(_ZERO_PAGE[:PAGE_SIZE - rem])
            data = pages[order[j]]
            bufs.append(data)
            nxt = order[j] + -(-len(data) // PAGE_SIZE)
            j += 1
        if pad and len(bufs[-1]) % PAGE_SIZE:
            bufs.append(_ZERO_PAGE[:PAGE_SIZE - len(bufs[-1]) % PAGE_SIZE])
        runs.append((start, bufs))
        i = j
    return runs


def make_seal(runs: list[tuple[int, list]], in_use) -> tuple[tuple, int] | None:
    """The seal of a commit that writes exactly `runs` (sorted, padded to whole pages), or None
    when it cannot be sealed: too many extents or pages, runs that overlap, or a page that is
    not in use after the commit (freed again in the same transaction: a later commit may
    overwrite it while this root is still the newest)."""
    if len(runs) > SEAL_MAX_EXTENTS:
        return None
    extents = []
    total = 0
    end = 0
    for start, bufs in runs:
        count = sum(map(len, bufs)) // PAGE_SIZE
        total += count
        if (total > SEAL_MAX_PAGES or start < end or start + count >= 1 << SEAL_START_BITS
                or not in_use(start, count)):
            return None     # (overlapping runs: a stale staged run under a node's page)
        end = start + count
        extents.append((start, count))
    h = xxhash.xxh3_64()     # only once the commit is known to fit: large commits hash nothing
    for _start, bufs in runs:
        for b in bufs:
            h.update(b)
    return tuple(extents), h.intdigest()


def extend_seal(acc: tuple[tuple, Any, int], runs: list[tuple[int, list]],
                in_use, recheck: bool = True) -> tuple[tuple, Any, int] | None:
    """sync="normal": the cumulative seal after a commit that writes `runs` (sorted, padded to
    whole pages) on top of `acc` (extents, running xxh3, pages: what was written since the
    last barrier), or None when it does not fit one seal: too many extents or pages, a run
    that does not lie after every earlier one (the running hash covers pages in ascending
    order), or a page, earlier or new, that is not in use in the map this commit saves.
    `recheck=False`: the earlier pages are known to be still in use (they were at the last
    commit, and only saving pages as free - write streams, release_in_commit - could change
    that before the next barrier: pages freed since are pending or held, never reused)."""
    extents, h, total = acc
    ext = list(extents)
    if recheck:
        for start, count in ext:
            if not in_use(start, count):
                return None
    end = ext[-1][0] + ext[-1][1] if ext else 1
    for start, bufs in runs:
        count = sum(map(len, bufs)) // PAGE_SIZE
        total += count
        if (total > SEAL_MAX_PAGES or start < end or start + count >= 1 << SEAL_START_BITS
                or not in_use(start, count)):
            return None
        if ext and ext[-1][0] + ext[-1][1] == start:
            ext[-1] = (ext[-1][0], ext[-1][1] + count)
        else:
            ext.append((start, count))
            if len(ext) > SEAL_MAX_EXTENTS:
                return None
        end = start + count
    if runs:
        h = h.copy() if h is not None else xxhash.xxh3_64()
        for _start, bufs in runs:
            for b in bufs:
                h.update(b)
    return tuple(ext), h, total


def slot_damaged(root: Root | None, raw: bytes, best: Root) -> bool:
    """An invalid slot is damaged unless it is the never-written twin of generation 1."""
    return root is None and (any(raw) or best.generation >= 2)



class Pager:
    """Reads and writes whole pages of one archive file; owns the page cache."""

    def __init__(self, fd: int, name: str, *, writable: bool, sync: str, cache_size: int,
                 io: Any = os):
        if sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {SYNC_MODES}, not {sync!r}")
        self.fd = fd
        self.name = name
        self.writable = writable
        self.sync_mode = sync
        self.cache = ARCCache(cache_size)
        # the file layer (cartridge/source.py): the os module itself, a remote page source
        # (read-only, fd -1), or a stand-in with the same functions (cartridge.testing.crash
        # records every write and sync through it)
        self.io = io
        self.file_pages = io.fstat(fd).st_size // PAGE_SIZE
        # Write-behind buffer for pages no committed root references yet (content, overflow
        # and chunk-map pages of the open transaction): written at commit, coalesced.
        self._staged: dict[int, bytes] = {}
        self._staged_pages: set[int] = set()
        self._staged_bytes = 0
        self._staged_lo = 1 << 62
        self._staged_hi = 0
        self.wrote = False       # the file changed since the last root flip (then no seal)
        # Durability bookkeeping (docs/FORMAT.md §8). A *barrier* is a completed fdatasync/fsync:
        # everything written before it is on disk. slot_gen: the generation last written into
        # slot A / B; slot_durable: the same as of the last barrier (a power cut leaves at least
        # these, or newer ones, in the slots). fallback_slot: the slot whose root open falls
        # back to after a power cut (the newest root written before the last barrier, or the
        # root opened); no commit writes it until the next barrier.
        self.slot_gen = [0, 0]
        self.slot_durable = [0, 0]
        self.fallback_slot = 0
        self._last_root_slot: int | None = None   # slot of the last root written, if any
        self.dirty = False         # anything written since the last barrier
        self.unsynced_roots = 0    # roots written since the last barrier
        self.barrier_ns = time.monotonic_ns()
        # sync="normal": the pages written since the last barrier that later roots reach, as
        # the extents of one seal (ascending, merged) and the running xxh3 over them
        self._acc: tuple[tuple, Any, int] = ((), None, 0)     # extents, hasher, pages
        self._acc_next: tuple[tuple, Any, int] | None = None  # the same with the commit being written

    # -- page 0 -----------------------------------------------------------------------------
    def read_page0(self) -> bytes:
        return self.io.pread(self.fd, PAGE_SIZE, 0)

    def read_slots(self) -> bytes:
        """Both root slots and the bytes between them (what readers poll before each
        operation: any change to either slot, not only its generation, is seen)."""
        return self.io.pread(self.fd, SLOT_OFFSETS[1] + ROOT_SLOT.size - SLOT_OFFSETS[0],
                             SLOT_OFFSETS[0])

    def write_root(self, root: Root) -> None:
        """Write `root` into the slot its generation owns (alternating), honouring sync."""
        raw = root.pack()
        slot = root.generation % 2
        off = SLOT_OFFSETS[slot]
        acc, self._acc_next = self._acc_next, None
        try:
            n = self.io.pwrite(self.fd, raw, off)
            if n < len(raw):              # never seen for 256 bytes in one sector, but be exact
                self.write_at(0, raw[n:], flush=False, skip=off + n)
            self.wrote = False
            self.dirty = True
            self.slot_gen[slot] = root.generation
            self._last_root_slot = slot
            self.unsynced_roots += 1
            if acc is not None:
                self._acc = acc
            if self.sync_mode == "full":
                self.io.fdatasync(self.fd)
                self._barrier()
            elif self.sync_mode == "off":
                self._settle_slots()      # "off" promises nothing after a power cut
        except OSError as e:
            self._named(e)
            raise

    # -- durability bookkeeping -------------------------------------------------------------
    def opened(self, roots: list[Root | None], root: Root) -> None:
        """A writer opened `root` (found with `roots` in the slots): take them as the slots'
        state and, unless sync="off", make the file durable before anything is written over it
        (an earlier writer may have left commits the disk does not have yet)."""
        self.slot_gen = [r.generation if r is not None else 0 for r in roots]
        self.fallback_slot = root.generation % 2
        self._last_root_slot = None
        if self.sync_mode == "off":
            self._settle_slots()
        else:
            self.sync_data()

    def _settle_slots(self) -> None:
        self.slot_durable = list(self.slot_gen)
        if self._last_root_slot is not None:
            self.fallback_slot = self._last_root_slot

    def _barrier(self) -> None:
        """An fdatasync/fsync of the file returned: everything written so far is durable."""
        self._settle_slots()
        self.dirty = False
        self.unsynced_roots = 0
        self.barrier_ns = time.monotonic_ns()
        self._acc = ((), None, 0)

    def durable_floor(self) -> int:
        """The oldest generation a slot may hold after a power cut now (every slot holds this
        generation or a newer one): pages freed by commits up to it may be released."""
        return min(self.slot_durable)

    def next_generation(self, g: int) -> int:
        """The generation of the commit after `g`: g + 1, or g + 2 when g + 1's slot holds
        the root open falls back to (sync="normal" between barriers), so that unsynced
        commits never overwrite it (docs/FORMAT.md §2.2)."""
        return g + 2 if (g + 1) % 2 == self.fallback_slot else g + 1

    def sync_due(self) -> bool:
        """sync="normal", after a commit: whether this is the commit that syncs."""
        return self.unsynced_roots > 0 and (
            self.unsynced_roots >= SYNC_EVERY_COMMITS
            or time.monotonic_ns() - self.barrier_ns >= SYNC_EVERY_NS)

    # -- pages ------------------------------------------------------------------------------
    # -- staged writes ----------------------------------------------------------------------
    def stage(self, pno: int, data) -> None:
        """Queue bytes for page `pno` onwards (whole pages, or a final partial page)."""
        if type(data) is memoryview and type(data.obj) is bytes and data.nbytes == len(data.obj):
            data = data.obj            # a view of a whole bytes object: keep it, no copy
        else:
            data = bytes(data)
        n = len(data)
        pages = self._staged_pages
        if n <= PAGE_SIZE:
            end = pno + 1
            if pno in pages:
                self.flush_staged()     # the page was freed and reused: older bytes go first
                pages = self._staged_pages
            pages.add(pno)
        else:
            end = pno + -(-n // PAGE_SIZE)
            if pages and any(p in pages for p in range(pno, end)):
                self.flush_staged()
                pages = self._staged_pages
            pages.update(range(pno, end))
        self._staged[pno] = data
        self._staged_bytes += n
        self._staged_lo = min(self._staged_lo, pno)
        self._staged_hi = max(self._staged_hi, end)
        if self._staged_bytes >= STAGE_LIMIT:
            self.flush_staged()

    def unstage_overlap(self, start: int, count: int) -> None:
        """Write the staged pages first when [start, start+count) overlaps them (before a read
        that goes to the file itself)."""
        if self._staged and start < self._staged_hi and start + count > self._staged_lo:
            self.flush_staged()

    def flush_staged(self, extra: dict[int, bytes] | None = None) -> None:
        """Write every staged run (and `extra` whole pages), neighbours coalesced."""
        pages = self._staged
        if extra:
            pages = dict(pages)
            pages.update(extra)
        if pages:
            self.write_pages(pages)
        self.drop_staged()

    def drop_staged(self) -> None:
        self._staged = {}
        self._staged_pages = set()
        self._staged_bytes = 0
        self._staged_lo = 1 << 62
        self._staged_hi = 0

    def read_page(self, pno: int) -> bytes:
        self.unstage_overlap(pno, 1)
        if pno <= 0 or pno >= self.file_pages:
            self.file_pages = self.io.fstat(self.fd).st_size // PAGE_SIZE
            if pno <= 0 or pno >= self.file_pages:
                raise CorruptionError(f"{self.name}: page {pno} is outside the file "
                                      f"({self.file_pages} pages)")
        data = self.io.pread(self.fd, PAGE_SIZE, pno * PAGE_SIZE)
        if len(data) != PAGE_SIZE:
            raise CorruptionError(f"{self.name}: page {pno} is cut short")
        return data

    def read_meta(self, pno: int, tag: bytes) -> bytes:
        """A metadata page, its checksum, tag and self-reference checked."""
        data = self.read_page(pno)
        if not page_ok(data):
            raise CorruptionError(f"{self.name}: checksum mismatch in metadata page {pno}")
        ptag, _a, _b, self_no, _c = META_PREFIX.unpack_from(data)
        if self_no != pno:
            raise CorruptionError(f"{self.name}: page {pno} claims to be page {self_no}")
        if ptag != tag:
            raise CorruptionError(f"{self.name}: page {pno} is {ptag!r}, expected {tag!r}")
        return data

    def read_checked(self, start: int, length: int, csum: int, where: str,
                     index: int) -> bytes:
        """`length` bytes of content from page `start` (chunk `index` of file `where`), read
        once into the bytes returned; CorruptionError when their xxh3-64 is not `csum`."""
        count = -(-length // PAGE_SIZE)
        if self.io is not os or start <= 0 or start + count > self.file_pages:
            raw = self.read_run(start, count)       # checks the range, stand-in file layers
            data = raw[:length] if length != len(raw) else raw
            if xxh3_64(data) != csum:
                raise CorruptionError(f"{where}: content checksum mismatch in chunk {index} "
                                      f"(pages {start}..{start + count - 1})")
            return data
        self.unstage_overlap(start, count)
        return checked_chunk(self.fd, start, length, csum, self.name, where, index)

    def read_run(self, start: int, count: int) -> bytes:
        """`count` consecutive pages (content)."""
        self.unstage_overlap(start, count)
        if start <= 0 or start + count > self.file_pages:
            self.file_pages = self.io.fstat(self.fd).st_size // PAGE_SIZE
            if start <= 0 or start + count > self.file_pages:
                raise CorruptionError(f"{self.name}: pages {start}..{start + count - 1} are outside "
                                      f"the file ({self.file_pages} pages)")
        data = self.io.pread(self.fd, count * PAGE_SIZE, start * PAGE_SIZE)
        if len(data) != count * PAGE_SIZE:
            raise CorruptionError(f"{self.name}: pages {start}..{start + count - 1} are cut short")
        return data

    def read_into(self, start: int, buf) -> None:
        """Fill `buf` (a writable buffer, page aligned in length or shorter) from page `start`."""
        count = -(-len(buf) // PAGE_SIZE)
        if start <= 0 or start + count > self.file_pages:
            self.file_pages = self.io.fstat(self.fd).st_size // PAGE_SIZE
            if start <= 0 or start + count > self.file_pages:
                raise CorruptionError(f"{self.name}: pages {start}..{start + count - 1} are outside "
                                      f"the file ({self.file_pages} pages)")
        self.unstage_overlap(start, count)
        n = self.io.preadv(self.fd, [buf], start * PAGE_SIZE)
        if n != len(buf):
            raise CorruptionError(f"{self.name}: content at page {start} is cut short")

    def write_at(self, pno: int, data, *, flush: bool = True, skip: int = 0) -> None:
        """Write bytes starting at page `pno` (whole pages, or a final partial page; `skip`
        bytes into it) now. Staged bytes for these pages are older (the pages were freed and
        reused), so they go out first rather than land on top later (flush=False: the caller
        is writing the staged pages themselves)."""
        view = memoryview(data).cast("B")
        self.wrote = True
        if flush:
            self.unstage_overlap(pno, -(-(skip + len(view)) // PAGE_SIZE))
        off = pno * PAGE_SIZE + skip
        try:
            while len(view):
                n = self.io.pwrite(self.fd, view, off)
                view = view[n:]
                off += n
        except OSError as e:
            self._named(e)
            raise

    def write_pages(self, pages: dict[int, bytes]) -> None:
        """Write page runs (each key a start page; a value may span pages), neighbours coalesced
        into one call each (plan_runs)."""
        self.write_runs(plan_runs(pages))

    def write_runs(self, runs: list[tuple[int, list]]) -> None:
        self.wrote = True
        try:
            self._write_runs(runs)
        except OSError as e:
            self._named(e)
            raise

    def _write_runs(self, runs: list[tuple[int, list]]) -> None:
        for start, bufs in runs:
            if len(bufs) == 1:
                data = bufs[0]
                done = self.io.pwrite(self.fd, data, start * PAGE_SIZE)
                if done < len(data):       # a short write (rare): the rest
                    self.write_at(start, memoryview(data)[done:], flush=False, skip=done)
            else:
                done = self.io.pwritev(self.fd, bufs, start * PAGE_SIZE)
                total = sum(map(len, bufs))
                if done < total:           # a short write (rare): the rest, byte-exact
                    self.write_at(start, b"".join(bufs)[done:], flush=False, skip=done)

    def write_commit(self, extra: dict[int, bytes], in_use=None,
                     recheck: bool = True) -> tuple[tuple, int] | None:
        """Steps 3-4 of a commit: write the staged pages and `extra` (sealed B+tree nodes).
        With `in_use` (sync="full" or "normal") a commit that wrote nothing before may skip the
        barrier: its pages are written padded and the seal its root carries is returned
        (docs/FORMAT.md §2.3, §8). "full": the seal of this commit's pages, when they fit one
        (the root's own sync then makes both durable). "normal": the seal of every page written
        since the last barrier that the root keeps in use, this commit's included, when they
        fit one (no sync at all); an empty seal, None, when nothing waits for a barrier.
        Otherwise the pages are written and the barrier follows."""
        self._acc_next = None
        if in_use is not None and not self.wrote:
            pages = dict(self._staged)
            pages.update(extra)
            runs = plan_runs(pages, pad=True)
            if self.sync_mode == "full":
                seal = make_seal(runs, in_use)
                if seal is not None:
                    self.write_runs(runs)
                    self.drop_staged()
                    return seal
            elif self.sync_mode == "normal":
                acc = extend_seal(self._acc, runs, in_use, recheck)
                if acc is not None:
                    if runs:
                        self.write_runs(runs)
                    self.drop_staged()
                    self._acc_next = acc
                    extents, h, _n = acc
                    return (extents, h.intdigest()) if extents else None
        self.flush_staged(extra)
        self.sync_data()
        return None

    def seal_holds(self, root: Root) -> bool:
        """Whether the pages a sealed root's commit wrote are all on disk as written."""
        h = xxhash.xxh3_64()
        for start, count in root.seal:
            data = self.io.pread(self.fd, count * PAGE_SIZE, start * PAGE_SIZE)
            if len(data) != count * PAGE_SIZE:
                return False
            h.update(data)
        return h.intdigest() == root.seal_checksum

    # -- size and durability ----------------------------------------------------------------
    def grow(self, n_pages: int) -> None:
        """Make the file at least `n_pages` long (new pages read as zeros)."""
        if n_pages > self.file_pages:
            try:
                self.io.ftruncate(self.fd, n_pages * PAGE_SIZE)
            except OSError as e:        # e.g. EFBIG under a file-size limit, ENOSPC
                self._named(e)
                raise
            self.file_pages = n_pages
            # no seal for this commit: a lost growth would leave the file shorter than the
            # sealed root's page_count, with every page the seal covers intact
            self.wrote = True

    def shrink(self, n_pages: int) -> None:
        """Cut the file to `n_pages` (compaction, once no root covers the pages past it)."""
        if n_pages < self.file_pages:
            self.io.ftruncate(self.fd, n_pages * PAGE_SIZE)
            self.file_pages = n_pages

    def sync_data(self) -> None:
        """The barrier before a root flip: in "full" and "normal" modes pages reach the disk."""
        if self.sync_mode != "off":
            try:
                self.io.fdatasync(self.fd)
            except OSError as e:
                self._named(e)
                raise
            self._barrier()

    def sync_now(self) -> None:
        try:
            self.io.fsync(self.fd)
        except OSError as e:
            self._named(e)
            raise
        self._barrier()

    def _named(self, e: OSError) -> OSError:
        """`e` (an error writing or syncing the archive file) naming the archive, as an error
        from open() names its file: "a.cart: File too large", not a bare "File too large"."""
        if e.filename is None:
            e.filename = self.name
        return e


def seal_meta(page: bytearray) -> bytes:
    """Fill in a metadata page's checksum (bytes 16..23) and return it as bytes."""
    seal_page(page)
    return bytes(page)

