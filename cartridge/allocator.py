"""Page allocation policy over the bitmap kernel (docs/FORMAT.md §6).

Two bitmaps cover every page of the file: `used` (1 = taken) and `pending` (1 = freed by a
commit but still reachable from an older root or a reader, so not reusable yet; pending pages
are also marked used). Metadata pages and small files allocate first-fit from the low end;
files of 256 KiB and more take contiguous runs (next-fit from the last large allocation), and
when free space is too fragmented they take several runs of whole 64 KiB chunks before the file
grows. A bitmap coalesces free space by construction: freeing a run next to free pages simply
makes one longer run of zero bits.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ._core.batch import alloc_entry
from ._core.bitmap import Bitmap
from .format import ALLOC_CHUNK_BITS, ALLOC_CHUNK_BYTES, ALLOC_FEATURES, CHUNK_PAGES

LARGE_FILE_PAGES = 64            # 256 KiB: from here on, content takes contiguous extents
GROW_MIN_PAGES = 16              # a new archive file starts at 64 KiB
GROW_MAX_STEP = 16384            # grow by doubling, at most 64 MiB at a time
SEQ_RUN = 16

Run = tuple[int, int]


class Allocator:
    """Hands out page runs, tracks what the open transaction allocated and freed."""

    def __init__(self, n_pages: int, grow: Callable[[int], None]) -> None:
        self.used = Bitmap(n_pages)
        self.pending = Bitmap(n_pages)
        self.fresh = Bitmap(n_pages)         # allocated by the open transaction (not persisted)
        self._grow_file = grow
        self.txn_allocated: list[Run] = []
        self.txn_freed: list[Run] = []       # committed pages freed by the open transaction
        self.hold_frees = False              # True while read streams may still use fresh pages
        self.pending_count = 0               # pages marked pending (kept for the root slot)
        self.detached: dict[object, list[Run]] = {}   # pages of open write streams, by stream
        self.releasing: list[Run] = []       # pending pages the open transaction saves as free
        self._extra_dirty: set[int] = set()
        self._large_hint = 0
        # Snapshots (docs/FORMAT.md §12). `held`: pages only snapshots reach (taken in memory,
        # saved as used 0 / pending 1). `reach`: one bool per page, True when some snapshot
        # reaches it (None: no snapshot); a committed page freed while reach says True becomes
        # held instead of pending. The open transaction's changes to both are undone by
        # rollback(): `_held_log` records ("h"|"u", start, count), `_reach_saved` the reach
        # array before its first change.
        self.held = Bitmap(n_pages)
        self.held_count = 0
        self.reach: np.ndarray | None = None
        self.features = 0                    # allocation-map entry 0 feature flags
        self._held_log: list[tuple[str, int, int]] = []
        self._reach_saved: tuple | None = None
        self._shrunk: list[tuple] = []       # bitmaps before a shrink() in this transaction
        # Sequential placement (sync="normal", set by the engine): pages for metadata and small
        # files go one after another from a cursor inside a free run of SEQ_RUN pages or more,
        # so that the commits between two syncs write few runs, in ascending order, and fit
        # one seal (docs/FORMAT.md §6, §8); first-fit when no such run is free.
        self.sequential = False
        self._seq_next = 1
        self._seq_end = 0

    # -- state ------------------------------------------------------------------------------
    @property
    def n_pages(self) -> int:
        return self.used.n_bits

    def load_chunk(self, index: int, value: bytes) -> None:
        """Restore one persisted allocation-map entry (used bits, then pending bits; a page
        saved as used 0 / pending 1 is held by snapshots, FORMAT §12.3)."""
        used = value[:ALLOC_CHUNK_BYTES]
        pending = value[ALLOC_CHUNK_BYTES:2 * ALLOC_CHUNK_BYTES]
        u = np.frombuffer(used, np.uint8)
        p = np.frombuffer(pending, np.uint8)
        held = p & ~u
        if held.any():
            self.held.load_chunk(index, held.tobytes())
            self.held_count += int(np.unpackbits(held).sum())
            used = (u | p).tobytes()
            pending = (u & p).tobytes()
        self.used.load_chunk(index, used)
        self.pending.load_chunk(index, pending)

    def _saved_free(self) -> list[list[Run]]:
        """Runs marked used in memory but saved as free: pages of open write streams and the
        pages release_in_commit() hands back."""
        out = list(self.detached.values())
        if self.releasing:
            out.append(self.releasing)
        return out

    def chunk_value(self, index: int) -> bytes:
        """Persisted form of one map entry. Pages held by open write streams are not reachable
        from any root, so they are saved as free: a crash never leaks them; so are the pages
        being released by this commit (release_in_commit)."""
        trailer = ALLOC_FEATURES.pack(self.features) if index == 0 and self.features else b""
        if not self.detached and not self.releasing and not self.held_count:
            return alloc_entry(self.used, self.pending, index) + trailer
        used = self.used.chunk_bytes(index)
        lo = index * ALLOC_CHUNK_BITS
        hi = lo + ALLOC_CHUNK_BITS
        bits = None
        for runs in self._saved_free():
            for start, count in runs:
                a, b = max(start, lo), min(start + count, hi)
                if a < b:
                    if bits is None:
                        bits = np.unpackbits(np.frombuffer(used, np.uint8), bitorder="little")
                    bits[a - lo:b - lo] = 0
        if bits is not None:
            used = np.packbits(bits, bitorder="little").tobytes()
        pending = self.pending.chunk_bytes(index)
        if self.held_count:
            held = np.frombuffer(self.held.chunk_bytes(index), np.uint8)
            if held.any():
                used = (np.frombuffer(used, np.uint8) & ~held).tobytes()
                pending = (np.frombuffer(pending, np.uint8) | held).tobytes()
        return used + pending + trailer

    def persisted_in_use(self, start: int, count: int) -> bool:
        """Whether pages start.. are all used in the map as the next commit saves it (used and
        not held by an open write stream, whose pages are saved as free; chunk_value)."""
        if not self.used.is_range_used(start, count):
            return False
        end = start + count
        for runs in self._saved_free():
            for s, n in runs:
                if s < end and start < s + n:
                    return False
        return True

    def dirty_chunks(self) -> set[int]:
        """Allocation-map entries changed since the last clear_dirty()."""
        out = set(self.used.dirty_chunks())
        out.update(self.pending.dirty_chunks())
        out |= self._extra_dirty
        return out

    def clear_dirty(self) -> None:
        self.used.clear_dirty()
        self.pending.clear_dirty()
        self._extra_dirty.clear()

    def touch(self, start: int, count: int) -> None:
        """The allocation-map nodes covering pages [start, start+count) are copied (rewritten)
        by the next commit even if no bit in them changed."""
        self._touch(start, count)

    def _touch(self, start: int, count: int) -> None:
        for c in range(start // ALLOC_CHUNK_BITS, (start + count - 1) // ALLOC_CHUNK_BITS + 1):
            self._extra_dirty.add(c)

    # -- pages of open write streams --------------------------------------------------------
    def alloc_detached(self, owner: object, n_pages: int, tail_pages: int) -> list[Run]:
        """Content runs for a write stream: outside every transaction until attach()."""
        mark = len(self.txn_allocated)
        runs = self.alloc_content(n_pages, tail_pages)
        for start, count in self.txn_allocated[mark:]:
            self.fresh.clear_range(start, count)
        del self.txn_allocated[mark:]
        self.detached.setdefault(owner, []).extend(runs)
        return runs

    def attach(self, owner: object, chunk_runs: list[Run]) -> None:
        """The stream publishes: its pages in `chunk_runs` join the open transaction, the rest
        of what it allocated (rewritten or abandoned chunks) is free again."""
        for run in self.detached.pop(owner, []):
            self.used.clear_range(*run)
            self._touch(*run)
        for run in chunk_runs:
            self.used.set_range(*run)
            self.fresh.set_range(*run)
            self.txn_allocated.append(run)

    def abandon(self, owner: object) -> None:
        """The stream was discarded: its pages are free again."""
        self.attach(owner, [])

    def pending_runs(self) -> list[Run]:
        """Maximal runs of pending pages (on reopen they all wait for one more commit)."""
        return set_runs(self.pending)

    # -- growth -----------------------------------------------------------------------------
    def _grow(self, need: int) -> None:
        """Grow the file (doubling, capped step) so that `need` more pages exist at its end."""
        cur = self.used.n_bits
        new = max(cur + need, min(cur * 2, cur + GROW_MAX_STEP), GROW_MIN_PAGES)
        self._grow_file(new)
        for bm in (self.used, self.pending, self.fresh, self.held):
            bm.grow(new)

    def _tail_free(self) -> int:
        """Free pages at the very end of the file (they extend a run after growth)."""
        n = self.used.n_bits
        words = np.asarray(self.used.words)
        nz = np.flatnonzero(words)
        if len(nz) == 0:
            return n
        last_used = int(nz[-1]) * 64 + int(words[nz[-1]]).bit_length() - 1
        return n - last_used - 1

    # -- allocation -------------------------------------------------------------------------
    def _take(self, start: int, count: int) -> None:
        self.used.set_range(start, count)
        self.fresh.set_range(start, count)
        self.txn_allocated.append((start, count))

    def _seq_find(self, count: int) -> int:
        """Sequential placement: the start of `count` free pages at the cursor, or of a free
        run of at least SEQ_RUN pages after it (else from the start), or -1."""
        used = self.used
        c = self._seq_next
        if c + count <= min(self._seq_end, used.n_bits) and used.is_range_free(c, count):
            return c
        want = max(SEQ_RUN, count)
        s = used.find_run(want, c if c < used.n_bits else 1)
        if s <= 0:
            return -1
        self._seq_end = s + want
        return s

    def alloc_page(self) -> int:
        """One page for metadata, first-fit from the low end (or sequential placement)."""
        p = self._seq_find(1) if self.sequential else -1
        if p >= 0:
            self._seq_next = p + 1
        else:
            p = self.used.find_free(1)
        if p < 0:
            self._grow(1)
            p = self.used.find_free(1)
        self._take(p, 1)
        return p

    def move_page(self, old: int) -> int:
        """Copy-on-write of one page: a fresh page (as alloc_page()) for the new copy, and page
        `old` freed (as free(old, 1)), in one call."""
        used = self.used
        p = self._seq_find(1) if self.sequential else -1
        if p >= 0:
            self._seq_next = p + 1
        else:
            p = used.find_free(1)
        if p < 0:
            self._grow(1)
            p = used.find_free(1)
        used.set_range(p, 1)
        self.fresh.set_range(p, 1)
        self.txn_allocated.append((p, 1))
        if self.fresh.get(old) and not self.hold_frees:
            used.clear_range(old, 1)
            self.fresh.clear_range(old, 1)
        elif self.reach is not None and old < len(self.reach) and self.reach[old]:
            self._hold(old, 1)
        else:
            self.pending.set_range(old, 1)
            self.pending_count += 1
            self.txn_freed.append((old, 1))
        return p

    def alloc_run(self, count: int) -> int:
        """`count` contiguous pages, growing the file if no run is free."""
        large = count >= LARGE_FILE_PAGES
        if self.sequential and not large:
            start = self._seq_find(count)
            if start >= 0:
                self._seq_next = start + count
                self._take(start, count)
                return start
        start = self.used.find_run(count, self._large_hint if large else 1)
        if start < 0:
            self._grow(count - self._tail_free())
            start = self.used.find_run(count, self._large_hint if large else 1)
        self._take(start, count)
        if large:
            self._large_hint = start + count
        return start

    def alloc_content(self, n_pages: int, tail_pages: int) -> list[Run]:
        """Runs for a file's content: `n_pages` in all, every run but the last a whole number of
        chunks, the last ending with the `tail_pages`-page partial chunk (0 = no partial chunk).

        One contiguous run when there is one; otherwise (large files) the largest free runs cut
        to whole chunks, then the file grows for the rest.
        """
        start = self.used.find_run(n_pages, self._large_hint if n_pages >= LARGE_FILE_PAGES else 1)
        if start >= 0 or n_pages < LARGE_FILE_PAGES:
            if start < 0:
                start = self.alloc_run(n_pages)
            else:
                self._take(start, n_pages)
                if n_pages >= LARGE_FILE_PAGES:
                    self._large_hint = start + n_pages
            return [(start, n_pages)]
        runs: list[Run] = []
        full_pages = n_pages - tail_pages
        got = 0
        # the largest holes first; each must hold at least one whole chunk
        for s, length in self.used.largest_runs(self.used.n_bits, full_pages // CHUNK_PAGES + 1):
            take = min(length - length % CHUNK_PAGES, full_pages - got)
            if take <= 0:
                continue
            self._take(s, take)
            runs.append((s, take))
            got += take
            if got >= full_pages:
                break
        rest = n_pages - got
        if rest:
            runs.append((self.alloc_run(rest), rest))
        return runs

    # -- freeing ----------------------------------------------------------------------------
    def free(self, start: int, count: int) -> None:
        """Give back a run: pages born in this transaction are free at once, committed pages
        become pending (reusable after the next commits, once nothing can reach them)."""
        if count <= 0:
            return
        fresh = self.fresh.is_range_used(start, count)
        if fresh and not self.hold_frees:
            self.used.clear_range(start, count)
            self.fresh.clear_range(start, count)
            return
        if not fresh and not self.fresh.is_range_free(start, count):
            for p in range(start, start + count):   # mixed run: rare, page by page
                self.free(p, 1)
            return
        # committed pages (or fresh ones a read stream may still be reading): pending, or
        # held where a snapshot still reaches them
        if self.reach is not None and not fresh:
            seg = self.reach[start:start + count]
            if seg.any():
                for s, n, in_snap in _bool_runs(seg, start, count):
                    if in_snap:
                        self._hold(s, n)
                    else:
                        self._pend(s, n)
                return
        self._pend(start, count)

    def _pend(self, start: int, count: int) -> None:
        self.pending.set_range(start, count)
        self.pending_count += count
        self.txn_freed.append((start, count))

    # -- snapshots (docs/FORMAT.md §12) -----------------------------------------------------
    def _hold(self, start: int, count: int) -> None:
        """A committed page the live state no longer reaches but a snapshot does."""
        self.held.set_range(start, count)
        self.held_count += count
        self._touch(start, count)
        self._held_log.append(("h", start, count))

    def _unhold(self, start: int, count: int) -> None:
        self.held.clear_range(start, count)
        self.held_count -= count
        self._touch(start, count)
        self._held_log.append(("u", start, count))

    def set_reach(self, reach: np.ndarray | None) -> None:
        """Which pages snapshots reach, from now on (rollback() restores the previous one)."""
        if self._reach_saved is None:
            self._reach_saved = (self.reach,)
        self.reach = reach

    def live_pages(self) -> np.ndarray:
        """One bool per page: reachable from the live state (used, not pending, not held, not
        held by an open write stream)."""
        n = self.n_pages
        words = (np.asarray(self.used.words) & ~np.asarray(self.pending.words)
                 & ~np.asarray(self.held.words))
        out = np.unpackbits(words.view(np.uint8), bitorder="little")[:n].view(bool)
        for runs in self.detached.values():
            for s, c in runs:
                out[s:s + c] = False
        return out

    def revive(self, runs: list[Run]) -> None:
        """Pages the live state reaches again (a restore): held pages among them stop being
        held. (Every page a snapshot reaches is live or held, FORMAT §12.3.)"""
        if not self.held_count:
            return
        for start, count in runs:
            if self.held.is_range_free(start, count):
                continue
            for s, n, is_held in _bool_runs(_range_bits(self.held, start, count), start, count):
                if is_held:
                    self._unhold(s, n)

    def drop_held(self, keep: np.ndarray | None) -> int:
        """Held pages no snapshot in `keep` (a reach array; None: none) reaches any more become
        pending, freed by the commit of the open transaction. Returns how many. Costs one scan
        of the held bitmap's words (page_count / 64 words) plus work per held page: no pass
        over one byte per page (docs/FORMAT.md §12.3)."""
        if not self.held_count:
            return 0
        pages = _set_pages(self.held)
        if keep is not None and len(pages):
            inside = pages < len(keep)
            reached = np.zeros(len(pages), dtype=bool)
            reached[inside] = keep[pages[inside]]
            pages = pages[~reached]
        total = 0
        for s, n in _index_runs(pages):
            self._unhold(s, n)
            self._pend(s, n)
            total += n
        return total

    def shrink(self, n_pages: int) -> None:
        """Cover only pages 0..n_pages-1 (all pages past it are free): compaction gives the
        file's free tail back. rollback() restores the old size."""
        if n_pages >= self.n_pages:
            return
        self._held_log.append(("s", 0, 0))
        self._shrunk.append((self.used, self.pending, self.fresh, self.held))
        n_chunks = -(-n_pages // ALLOC_CHUNK_BITS)
        maps = []
        for bm in (self.used, self.pending, self.fresh, self.held):
            new = Bitmap(n_pages)
            for c in range(n_chunks):
                new.load_chunk(c, bm.chunk_bytes(c))
            new.clear_dirty()
            maps.append(new)
        self.used, self.pending, self.fresh, self.held = maps
        self._extra_dirty = {c for c in self._extra_dirty if c < n_chunks}
        self._extra_dirty.add(n_chunks - 1)
        if self.reach is not None and len(self.reach) > n_pages:
            self.set_reach(self.reach[:n_pages].copy())
        self._large_hint = min(self._large_hint, n_pages)

    def set_features(self, flags: int) -> None:
        if flags != self.features:
            self._held_log.append(("f", self.features, 0))
            self.features = flags
            self._touch(0, 1)

    def release(self, runs: list[Run]) -> None:
        """Pages no root and no reader can reach any more: free for reuse."""
        for start, count in runs:
            self.used.clear_range(start, count)
            self.pending.clear_range(start, count)
            self.pending_count -= count

    def release_in_commit(self, runs: list[Run]) -> None:
        """Pending pages that the open transaction's commit saves as free, but that stay taken
        in memory until it has committed: the root it replaces may still reach them, so the
        commit itself must not write into them (docs/FORMAT.md §8, step 7)."""
        for start, count in runs:
            self.pending.clear_range(start, count)
            self.pending_count -= count
            self._touch(start, count)
        self.releasing.extend(runs)

    # -- transaction boundaries -------------------------------------------------------------
    def end_transaction(self) -> list[Run]:
        """The transaction committed: its pages are now committed pages. Returns its frees."""
        for start, count in self.txn_allocated:
            self.fresh.clear_range(start, count)
        for start, count in self.releasing:
            self.used.clear_range(start, count)
        self.releasing = []
        self._held_log = []
        self._reach_saved = None
        self._shrunk = []
        freed = self.txn_freed
        self.txn_allocated = []
        self.txn_freed = []
        return freed

    def rollback(self) -> None:
        """Undo every allocation and free of the open transaction."""
        for start, count in self.txn_allocated:
            for p0, n0 in _runs_of(self.fresh, start, count):
                self.used.clear_range(p0, n0)
                self.fresh.clear_range(p0, n0)
        for start, count in self.txn_freed:
            self.pending.clear_range(start, count)
            self.pending_count -= count
        for start, count in self.releasing:
            self.pending.set_range(start, count)
            self.pending_count += count
        for op, start, count in reversed(self._held_log):
            if op == "h":
                self.held.clear_range(start, count)
                self.held_count -= count
            elif op == "u":
                self.held.set_range(start, count)
                self.held_count += count
            elif op == "s":
                self.used, self.pending, self.fresh, self.held = self._shrunk.pop()
            else:
                self.features = start
        self._held_log = []
        if self._reach_saved is not None:
            self.reach = self._reach_saved[0]
            self._reach_saved = None
        self.txn_allocated = []
        self.txn_freed = []
        self.releasing = []

    # -- statistics -------------------------------------------------------------------------
    def stats(self) -> dict:
        runs = self.used.free_runs()
        free = sum(n for _, n in runs)
        largest = max((n for _, n in runs), default=0)
        return {
            "pages": self.used.n_bits,
            "used_pages": self.used.count_used(),
            "pending_pages": self.pending.count_used(),
            "held_pages": self.held_count,
            "free_pages": free,
            "free_runs": len(runs),
            "largest_free_run": largest,
            "fragmentation": 0.0 if free == 0 else round(1.0 - largest / free, 4),
        }


def _bits(bm: Bitmap) -> np.ndarray:
    """A bitmap as one uint8 0/1 per page (a copy)."""
    return np.unpackbits(np.asarray(bm.words).view(np.uint8), bitorder="little")


def _range_bits(bm: Bitmap, start: int, count: int) -> np.ndarray:
    """Bits start..start+count-1 of a bitmap as bools."""
    w0 = start // 64
    words = np.asarray(bm.words)[w0:(start + count + 63) // 64]
    bits = np.unpackbits(words.view(np.uint8), bitorder="little")
    return bits[start - w0 * 64:start - w0 * 64 + count].astype(bool)


def _set_pages(bm: Bitmap) -> np.ndarray:
    """The numbers of the set bits of a bitmap, in order (int64), found through its nonzero
    words: page_count / 64 words scanned, then work per set bit."""
    words = np.asarray(bm.words)
    nz = np.flatnonzero(words)
    if not len(nz):
        return np.zeros(0, dtype=np.int64)
    bits = np.unpackbits(words[nz].view(np.uint8), bitorder="little").reshape(len(nz), 64)
    row, col = np.nonzero(bits)
    pages = nz[row].astype(np.int64) * 64 + col
    return pages[pages < bm.n_bits]


def _index_runs(pages: np.ndarray) -> list[Run]:
    """Maximal runs of consecutive numbers in a sorted int array, as (start, count)."""
    if not len(pages):
        return []
    cuts = np.flatnonzero(np.diff(pages) != 1) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [len(pages)]))
    return [(int(pages[a]), int(b - a)) for a, b in zip(starts, ends)]


def _bool_runs(seg: np.ndarray, start: int, count: int) -> list[tuple[int, int, bool]]:
    """[start, start+count) cut into runs by `seg` (pages past its end count as False)."""
    flags = np.zeros(count, dtype=bool)
    flags[:len(seg)] = seg[:count]
    cuts = np.flatnonzero(np.diff(flags.astype(np.int8))) + 1
    bounds = [0, *cuts.tolist(), count]
    return [(start + a, b - a, bool(flags[a])) for a, b in zip(bounds, bounds[1:])]


def _runs_of(bm: Bitmap, start: int, count: int) -> list[Run]:
    """Sub-runs of [start, start+count) whose bits are set in `bm`."""
    if bm.is_range_used(start, count):
        return [(start, count)]
    out = []
    for p in range(start, start + count):
        if bm.get(p):
            out.append((p, 1))
    return out


def set_runs(bm: Bitmap) -> list[Run]:
    """Maximal runs of set bits, in order."""
    return _index_runs(_set_pages(bm))
