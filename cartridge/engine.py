"""The storage engine of one open handle: catalog + allocation map + content over the pager,
transactions, the commit protocol and reader refresh (docs/FORMAT.md §7-§8).

Everything here speaks in catalog keys (UTF-8 path bytes) and Records; path rules, directory
semantics and the public API live in cartridge.py.
"""
from __future__ import annotations

import bisect
import os
import struct
import time
import warnings
from collections import Counter
from collections.abc import Collection, Iterator
from typing import Any

import numpy as np

from . import locking, snapstore
from ._core.btree import BTree
from .allocator import GROW_MIN_PAGES, Allocator
from .content import ContentStore
from .errors import (
    CartridgeError,
    CorruptionError,
    LockedError,
    ReadOnlyError,
    UnsupportedVersionError,
)
from .format import (
    ALLOC_CHUNK_BITS,
    ALLOC_CHUNK_BYTES,
    ALLOC_FEATURES,
    ALLOC_KEY,
    AUDIT_PREFIX,
    FEATURE_PACKS,
    FEATURE_SNAPSHOTS,
    FROZEN_KEY,
    KIND_DIR,
    KIND_FILE,
    KNOWN_FEATURES,
    MAX_TREE_HEIGHT,
    PACK_PREFIX,
    PAGE_SIZE,
    ROOT_SLOT,
    SLOT_OFFSETS,
    SYSTEM_PREFIX,
    TREE_ALLOCMAP,
    TREE_CATALOG,
)
from .nodestore import TreeStore
from .packs import PackTable
from .pager import FileHeader, Pager, Root, parse_page0, slot_damaged
from .records import Memo, Record, decode, get_record, with_chunk_key

SCAN_BATCH = 256
# the generation fields of both slots, in the bytes Pager.read_slots() returns
SLOT_GENERATIONS = struct.Struct(
    f"<8xQ{SLOT_OFFSETS[1] - SLOT_OFFSETS[0] - 16}x8xQ{ROOT_SLOT.size - 16}x")
RELEASE_BATCH = 8           # release freed pages every few commits ...
RELEASE_PAGES = 1024        # ... or as soon as this many wait
SETTLE_PAGES = 256          # at open and close: one more commit saves this many pages released
RECORD_CACHE_MAX = 200_000
# The default page cache follows the catalog (Engine.follow_catalog): this many bytes per file
# or directory (a leaf cell of a short path plus its record is ~60-90 bytes; leaves split by
# random inserts are ~70% full), up to an eighth of the machine's memory and at most 1 GiB.
CACHE_PER_ENTRY = 128


def _follow_max() -> int:
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        ram = 0
    return min(1 << 30, ram // 8) if ram > 0 else 256 << 20


CACHE_FOLLOW_MAX = _follow_max()


def pick_root(roots: list[Root | None], raw_slots: list[bytes], name: str) -> tuple[Root, list[str]]:
    """The newest valid root slot, plus a warning for a damaged one."""
    valid = [r for r in roots if r is not None]
    if not valid:
        raise CorruptionError(f"{name}: both root slots are damaged")
    best = max(valid, key=lambda r: r.generation)
    notes = []
    for i, (r, raw) in enumerate(zip(roots, raw_slots)):
        if slot_damaged(r, raw, best):
            notes.append(f"{name}: root slot {'AB'[i]} is damaged; opened generation "
                         f"{best.generation} from the other slot")
    return best, notes


class Engine:
    """One handle's view of an archive file; a writer when `writable`."""

    def __init__(self, fd: int, name: str, *, writable: bool, sync: str, cache_size: int,
                 lock_timeout: float | None = None, fresh: bool = False,
                 source: Any = None) -> None:
        """`source`: a read-only page source (cartridge/source.py, fd -1) instead of the local
        file `fd`: no locks, no pins, and the state found at open is the handle's for life."""
        if source is not None and (writable or fresh):
            raise ValueError(f"{name}: a remote page source is read-only")
        self.fd = fd
        self.name = name
        self.writable = writable
        self.source = source
        self.pager = Pager(fd, name, writable=writable, sync=sync, cache_size=cache_size,
                           io=os if source is None else source)
        self.dirty: dict = {}
        self.records: Memo = Memo(RECORD_CACHE_MAX)   # key -> Record | None
        self.pins: Counter = Counter()
        self.pending_queue: list[tuple[int, list]] = []
        self.warnings: list[str] = []
        self.in_txn = False
        self._changed = False
        self._pinned_gen: int | None = None
        self.failed: BaseException | None = None   # an I/O error left this handle unusable
        self._ofd_pins: set[int] = set()
        self._unsaved_releases = 0                # pages released since the last commit
        self._slots_seen = b""                    # slot bytes the reader last settled on
        self._seal_checked: tuple | None = None   # the sealed root whose pages were last checked
        self._open_roots: list[Root | None] = [None, None]   # the slots a writer opened with
        self.system_epoch = 0      # bumped whenever internal state (policies) may have changed
        self.rollbacks = 0         # bumped by every rollback of a writable handle's transaction
        self.closed = False        # close() ran: the file is released
        # pre-commit participants (cartridge/_handle.py, add_participant): before_commit(self)
        # inside every commit, before anything is written; after_rollback(self) after every
        # rollback of a writable engine
        self.participants: list = []
        self.fixed = False         # a read-only view of one snapshot: never refreshes
        self.frozen = False        # the archive is frozen (FORMAT §12.6): nothing may change
        self.snap_cache: dict = {}  # snapshot generation -> pages it reaches (snapstore)
        self.cache_base = 0        # > 0: the page cache follows the catalog (follow_catalog)
        self._features_saved = 0   # allocation-map feature flags as last committed
        if writable and not locking.writer_lock(fd, lock_timeout):
            raise LockedError(f"{name}: another handle holds the write lock")
        if fresh:
            self._init_fresh()
        else:
            self._load()

    def follow_catalog(self, base: int) -> None:
        """Let the page cache grow with the catalog: `base` bytes plus CACHE_PER_ENTRY per
        file and directory, at most CACHE_FOLLOW_MAX (checked now, at every commit and when a
        reader moves to a newer state; it never shrinks). A lookup in a catalog larger than the
        cache re-reads (and re-checks) a leaf from the file every few calls."""
        self.cache_base = base
        self.fit_cache()

    def fit_cache(self) -> None:
        if not self.cache_base:
            return
        root = self.root
        want = min(self.cache_base + (root.file_count + root.dir_count) * CACHE_PER_ENTRY,
                   CACHE_FOLLOW_MAX)
        cache = self.pager.cache
        if want > cache.capacity:
            cache.resize(want)

    @property
    def changed(self) -> bool:
        """The open transaction has staged a change (its commit will write something)."""
        return self._changed

    # -- opening ----------------------------------------------------------------------------
    def _init_fresh(self) -> None:
        """State of a brand-new archive, committed once as generation 1."""
        self.header = FileHeader.new()
        self.pager.grow(GROW_MIN_PAGES)
        self.pager.write_at(0, self.header.pack())
        self.root = Root(generation=0)
        self.allocator = Allocator(GROW_MIN_PAGES, self.pager.grow)
        self.allocator.sequential = self.pager.sync_mode == "normal"   # few runs between syncs
        self.allocator.used.set_range(0, 1)       # page 0: header and root slots
        self._build_trees()
        self._saved = self.root.copy()
        self._changed = True
        self.commit()
        if self.pager.sync_mode != "off":
            # generation 1 durable: the root open falls back to until the next sync (FORMAT §8.1)
            self.pager.sync_data()

    def _pick(self) -> tuple[bytes, list[Root | None], Root, list[str]]:
        """Page 0, both slots, the newest valid root and notes on damaged slots (seal unchecked)."""
        for attempt in range(3):
            page0 = self.pager.read_page0()
            self.header, roots = parse_page0(page0, self.name)
            raw = [page0[o:o + ROOT_SLOT.size] for o in SLOT_OFFSETS]
            root, notes = pick_root(roots, raw, self.name)
            if not notes or self.writable:
                break
            time.sleep(0.001 * (attempt + 1))   # a reader may catch a slot mid-write: look again
        return page0, roots, root, notes

    def _read_state(self) -> tuple[Root, list[str]]:
        """Writers (no other process changes the file): the root to open, seal checked."""
        _page0, roots, root, notes = self._pick()
        if root.seal and not self._seal_holds(root):
            root, note = self._before_torn(root, roots)
            notes.append(note)
        self._open_roots = roots
        return root, notes

    def _seal_holds(self, root: Root) -> bool:
        """Whether a sealed root's pages are on disk (checked once per root seen)."""
        key = (root.generation, root.seal_checksum, root.seal)
        if key == self._seal_checked:
            return True
        if not self.pager.seal_holds(root):
            return False
        self._seal_checked = key
        return True

    def _before_torn(self, torn: Root, roots: list[Root | None]) -> tuple[Root, str]:
        """The root to open when the newest one's seal does not hold: the commit was cut off
        before it returned (its pages never all reached the disk), so the one before it."""
        older = [r for r in roots if r is not None and r.generation < torn.generation]
        if not older:
            raise CorruptionError(f"{self.name}: the only root (generation {torn.generation}) is "
                                  f"sealed over pages that do not match its seal")
        prev = max(older, key=lambda r: r.generation)
        if prev.seal and not self.pager.seal_holds(prev):
            raise CorruptionError(f"{self.name}: the pages of both commits (generations "
                                  f"{prev.generation} and {torn.generation}) do not match their "
                                  f"seals")
        return prev, (f"{self.name}: the newest commit (generation {torn.generation}) is "
                      f"incomplete: its pages do not match the seal in root slot "
                      f"{'AB'[torn.generation % 2]} (a crash cut it off before it returned, or "
                      f"its pages were damaged later); opened generation {prev.generation}")

    def _settle_reader(self) -> tuple[Root, list[str]]:
        """Pin the newest committed state, re-reading the slots so that the writer cannot have
        recycled its pages between our read and our pin. A seal is checked only once pinned
        (its pages cannot be recycled then), and a fallback is taken only if page 0 did not
        change meanwhile (no writer moved on: the newest commit really is incomplete)."""
        for _ in range(100):
            page0, roots, root, notes = self._pick()
            self._pin(root.generation)
            _, slots, again, _ = self._pick()
            # the writer releases pages of `root` only once both slots hold newer commits
            # (FORMAT §8 step 7): while one still holds it or an older one, our pin is in time
            if again.generation not in (root.generation, root.generation + 1) and not any(
                    r is not None and r.generation <= root.generation for r in slots):
                continue
            if root.seal and not self._seal_holds(root):
                try:
                    prev, note = self._before_torn(root, roots)
                except CorruptionError:
                    if self.pager.read_page0() != page0:
                        continue
                    raise
                self._pin(prev.generation)
                if self.pager.read_page0() != page0:
                    continue        # a writer committed meanwhile: look again
                root, notes = prev, notes + [note]
            return root, notes
        raise CorruptionError(f"{self.name}: could not settle on a committed state")

    def _load(self) -> None:
        self.root, notes = self._read_state() if self.writable else self._settle_reader()
        for n in notes:
            warnings.warn(n, RuntimeWarning, stacklevel=4)
        self.warnings.extend(notes)
        if max(self.root.catalog_height, self.root.allocmap_height) > MAX_TREE_HEIGHT:
            raise CorruptionError(f"{self.name}: root names an impossible tree height")
        size_pages = self.pager.io.fstat(self.fd).st_size // PAGE_SIZE
        if size_pages < self.root.page_count:
            raise CorruptionError(f"{self.name}: file is truncated: {size_pages} pages, the archive "
                                  f"needs {self.root.page_count}")
        self.allocator = Allocator(self.root.page_count, self.pager.grow) if self.writable else None  # type: ignore[assignment]  # None only read-only: never allocates
        if self.allocator is not None:
            self.allocator.sequential = self.pager.sync_mode == "normal"   # few runs per sync
        self._build_trees()
        if self.writable:
            if self.catalog.get(FROZEN_KEY) is not None:
                raise ReadOnlyError(f"{self.name}: the archive is frozen (permanently read-only)")
            self.pager.opened(self._open_roots, self.root)   # a barrier first (not "off")
            self._load_allocator()
            self._features_saved = self.allocator.features
            if self.allocator.features & FEATURE_SNAPSHOTS:
                snapstore.init_reach(self)
            self.unseal()   # a sealed root is made durable before anything goes on top of it,
            #                 and a torn newer commit we fell back from is replaced
            self.settle_frees()   # what an earlier writer left pending becomes reusable

    def _build_trees(self) -> None:
        r = self.root
        alloc = self.allocator
        self.catalog = BTree(TreeStore(self.pager, alloc, self.dirty, TREE_CATALOG),
                             r.catalog_root, r.catalog_height, r.catalog_count, TREE_CATALOG)
        self.allocmap = BTree(TreeStore(self.pager, alloc, self.dirty, TREE_ALLOCMAP),
                              r.allocmap_root, r.allocmap_height, r.allocmap_count, TREE_ALLOCMAP)
        self.packs = PackTable(self)
        self.content = ContentStore(self.pager, alloc, self.packs)

    def _load_allocator(self) -> None:
        """Rebuild the in-memory bitmaps from the allocation map tree."""
        self.allocator = self._read_allocator(self.allocator)
        a = self.allocator
        pending = a.pending_runs()
        a.pending_count = sum(n for _, n in pending)
        if pending:
            self.pending_queue.append((self.root.generation, pending))

    def _read_allocator(self, a: Allocator | None = None) -> Allocator:
        """The persisted allocation map as bitmaps (a fresh Allocator unless one is given)."""
        if a is None:
            a = Allocator(self.root.page_count, lambda n: None)
        n_chunks = -(-self.root.page_count // ALLOC_CHUNK_BITS)
        seen = 0
        for key, value in self.allocmap.items_from(b"", 1 << 62):
            (idx,) = ALLOC_KEY.unpack(key) if len(key) == 8 else (-1,)
            size = 2 * ALLOC_CHUNK_BYTES
            if idx == 0 and len(value) == size + ALLOC_FEATURES.size:
                (a.features,) = ALLOC_FEATURES.unpack_from(value, size)
                if a.features & ~KNOWN_FEATURES:
                    raise UnsupportedVersionError(
                        f"{self.name}: the archive uses features this build does not know "
                        f"(flags {a.features:#x})")
                value = value[:size]
            if idx != seen or len(value) != size or idx >= n_chunks:
                raise CorruptionError(f"{self.name}: allocation map entry {idx} is out of place")
            a.load_chunk(idx, value)
            seen += 1
        if seen != n_chunks:
            raise CorruptionError(f"{self.name}: allocation map has {seen} of {n_chunks} entries")
        if not a.used.get(0):
            raise CorruptionError(f"{self.name}: allocation map does not reserve page 0")
        return a

    # -- reader side ------------------------------------------------------------------------
    def _pin(self, gen: int) -> None:
        """Read-only handles: pin `gen` and drop pins nothing needs any more."""
        self._pinned_gen = gen
        self.sync_pins()

    def sync_pins(self) -> None:
        """Hold an OFD pin for the handle's current generation and for every generation an open
        read stream of this handle still reads; release the rest. A remote source has no locks:
        nothing to pin."""
        if self.writable or self.source is not None:
            return
        want = set(self.pins)
        if self._pinned_gen is not None:
            want.add(self._pinned_gen)
        for g in want - self._ofd_pins:
            locking.pin(self.fd, g)
        for g in self._ofd_pins - want:
            locking.unpin(self.fd, g)
        self._ofd_pins = want

    def fix_root(self, root: Root) -> None:
        """Read-only handles: stay on `root` (a snapshot's, already pinned while the current
        state is) from now on: pin its generation, drop the other pins, never refresh."""
        assert not self.writable
        self.fixed = True
        self.root = root
        self._pin(root.generation)
        self.system_epoch += 1
        self.records.clear()
        self._build_trees()

    def refresh(self) -> None:
        """Read-only handles: move to the newest committed state if a writer committed. A remote
        handle stays on the state it opened (docs/FSSPEC.md, "Consistency"); a snapshot view
        stays on its snapshot."""
        if self.writable or self.fixed or self.source is not None:
            return
        raw = self.pager.read_slots()
        if raw == self._slots_seen:              # nothing changed since we last looked
            return
        a, b = SLOT_GENERATIONS.unpack(raw)
        g = self.root.generation
        if (a if a > b else b) == g:
            self._slots_seen = raw
            return
        root, notes = self._settle_reader()
        self._slots_seen = raw   # a damaged newer slot is not re-examined until it changes
        for n in notes:
            if n not in self.warnings:
                warnings.warn(n, RuntimeWarning, stacklevel=4)
                self.warnings.append(n)
        if root.generation == self.root.generation:
            return
        self.root = root
        self.system_epoch += 1
        self.pager.cache.clear()
        self.records.clear()
        self._build_trees()
        self.fit_cache()

    # -- records ----------------------------------------------------------------------------
    def get(self, key: bytes) -> Record | None:
        """The record under `key` (None if absent), through the per-path memo."""
        return get_record(self.records, self.catalog, key, self.name)

    def put(self, key: bytes, rec: Record) -> Record | None:
        """Store a record; returns the one it replaced."""
        self._changed = True
        old = self.catalog.put(key, rec.encode())
        self.records[key] = with_chunk_key(rec)
        old_rec = None if old is None else decode(old, self.where(key))
        if key[:1] == SYSTEM_PREFIX:
            if not key.startswith((AUDIT_PREFIX, PACK_PREFIX)):   # no policy state
                self.system_epoch += 1
        else:
            self._count(old_rec, -1)
            self._count(rec, +1)
        return old_rec

    def put_file(self, key: bytes, rec: Record, old: Record | None) -> None:
        """put() of a path key whose current record `old` the caller has just read with get()
        under the handle's lock: the replaced value need not be decoded again."""
        self._changed = True
        self.catalog.put(key, rec.encode())
        self.records[key] = with_chunk_key(rec)
        self._count(old, -1)
        self._count(rec, +1)

    def put_many(self, keys: list[bytes], values: list[bytes], sizes) -> list[Record | None]:
        """Store encoded file records under path keys (strictly ascending; `sizes` their
        content sizes) in one pass over the catalog; returns the records they replaced."""
        self._changed = True
        olds: list[Any] = self.catalog.put_sorted(keys, values)   # encoded, decoded in place below
        records = self.records
        if len(records) * 16 < len(keys):      # few cached: look each up among the keys
            for key in list(records):
                i = bisect.bisect_left(keys, key)
                if i < len(keys) and keys[i] == key:
                    del records[key]
        else:
            pop = records.pop
            for key in keys:
                pop(key, None)
        if any(olds):
            for i, old in enumerate(olds):
                if old is not None:
                    olds[i] = rec = decode(old, self.where(keys[i]))
                    self._count(rec, -1)
        self.root.file_count += len(keys)
        self.root.total_bytes += int(np.sum(sizes))
        return olds

    def delete(self, key: bytes) -> Record | None:
        old = self.catalog.delete(key)
        self.records[key] = None
        if old is None:
            return None
        self._changed = True
        rec = decode(old, self.where(key))
        if key[:1] == SYSTEM_PREFIX:
            if not key.startswith((AUDIT_PREFIX, PACK_PREFIX)):   # no policy state
                self.system_epoch += 1
        else:
            self._count(rec, -1)
        return rec

    def _count(self, rec: Record | None, sign: int) -> None:
        if rec is None:
            return
        if rec.kind == KIND_DIR:
            self.root.dir_count += sign
        elif rec.kind == KIND_FILE:
            self.root.file_count += sign
            self.root.total_bytes += sign * rec.size

    def items(self, start: bytes, prefix: bytes | None = None) -> Iterator[tuple[bytes, Record]]:
        """(key, Record) for keys >= start (and starting with prefix), in order; re-seeks per
        batch so the catalog may change between batches."""
        while True:
            batch = self.catalog.items_from(start, SCAN_BATCH, prefix)
            for k, v in batch:
                yield k, decode(v, self.where(k))
            if len(batch) < SCAN_BATCH:
                return
            start = batch[-1][0] + b"\x00"

    def first_key(self, start: bytes) -> bytes | None:
        return self.catalog.first_key_from(start)

    def where(self, key: bytes) -> str:
        """How errors name the entry under `key`: 'archive:path'."""
        return f"{self.name}:{key.decode('utf-8', 'replace')}"

    # -- transactions -----------------------------------------------------------------------
    def begin(self) -> None:
        self.in_txn = True
        self._saved = self.root.copy()
        self._changed = False

    def rollback(self) -> None:
        """Forget everything since begin(): dirty nodes, allocations, cached records."""
        self.in_txn = False
        if not self.writable:
            return
        for pno in self.dirty:
            self.pager.cache.pop(pno)
        self.dirty.clear()
        try:
            self.pager.flush_staged()     # may hold pages of open write streams
        except OSError as e:
            self.pager.drop_staged()
            self.failed = e
        self.allocator.rollback()
        self.system_epoch += 1
        self.rollbacks += 1
        self.root = self._saved.copy()
        self.records.clear()
        self._build_trees()
        self._changed = False
        if self.participants:
            for p in list(self.participants):
                p.after_rollback(self)

    def commit(self, force_sync: bool = False) -> None:
        """Make the open transaction the newest committed state (docs/FORMAT.md §8).

        An error before the root flip (a full disk, an I/O error) rolls the transaction back and
        leaves the handle usable; an error during the flip leaves the root's fate unknown, so the
        handle refuses further use (the file stays consistent either way).

        The participants' before_commit(self) runs first, inside the transaction, so that what
        they stage lands in this same commit; one that raises rolls the transaction back."""
        # the pack table first (entries written, packs left empty freed), so that the
        # participants see the catalog as it commits; again after them if what they staged
        # replaced a packed file (an SQLite member written with write_many)
        for stage in ("packs", "participants", "packs"):
            if not self.writable:
                break
            try:
                if stage == "packs":
                    if self.packs.dirty:
                        self.packs.before_commit()
                else:
                    for p in list(self.participants):
                        p.before_commit(self)
            except BaseException:
                self.rollback()
                raise
        self.in_txn = False
        if not self._changed:
            if force_sync and self.writable:
                self.pager.sync_now()
            return
        try:
            root = self._write_pages()
        except BaseException:
            self.in_txn = True
            self.rollback()
            raise
        pager = self.pager
        try:
            pager.write_root(root)
            if pager.sync_mode == "normal" and not force_sync:
                # sync every few commits (FORMAT §8, "normal"); a commit that shrinks the file's
                # page count at once, so that the next root goes to the other slot (§12.5)
                force_sync = pager.sync_due() or root.page_count < self.root.page_count
            if force_sync and pager.sync_mode != "full":
                pager.sync_now()
        except BaseException as e:
            self.failed = e
            raise
        # the new pages are committed: cache them, queue this commit's frees
        self.root = root
        if self.cache_base:
            self.fit_cache()
        cache = self.pager.cache
        for pno, node in self.dirty.items():
            cache.put(pno, node, PAGE_SIZE)
        self.dirty.clear()
        self._features_saved = self.allocator.features
        freed = self.allocator.end_transaction()
        if freed:
            self.pending_queue.append((root.generation, freed))
        self._changed = False
        self._unsaved_releases = 0
        self._release()

    def unseal(self, both: bool = False) -> None:
        """Writers, at open and close: once a sealed commit is durable, rewrite its root without
        the seal, so that pages damaged later are reported as damage by verify() rather than
        taken for a commit a crash cut off (FORMAT.md §8, Unsealing). In place (same
        generation and slot) when the other slot holds an older commit; otherwise (it is
        damaged, or holds a torn newer commit) as generation + 1 into that other slot, so that
        a torn write never costs the only good root; that copy is also written when the root is
        not sealed but the other slot holds a torn newer commit, which it replaces. `both` (at
        close): the older slot too, so that a closed archive holds no seal at all."""
        if not self.writable or self.in_txn or self.failed is not None:
            return
        if both:
            self.settle_frees()
        _hdr, roots = parse_page0(self.pager.read_page0(), self.name)
        g = self.root.generation
        other = roots[(g + 1) % 2]
        todo = []
        newer = other is not None and other.generation > g     # a torn commit we fell back from
        unsealed = None                                         # our root, rewritten
        if self.root.seal or newer:
            unsealed = self.root.copy()
            unsealed.seal, unsealed.seal_checksum = (), 0
            if other is None or newer:
                unsealed.generation += 1
                other = None
            todo.append(unsealed)
        if both and other is not None and other.seal and other.generation < g:
            other.seal, other.seal_checksum = (), 0
            todo.append(other)
        if not todo:
            return
        try:
            if self.pager.dirty:
                self.pager.sync_now()  # a sealed root not yet durable: make it durable first
            for root in todo:
                self.pager.write_root(root)
                if self.pager.sync_mode != "full":
                    self.pager.sync_now()
        except BaseException as e:
            self.failed = e
            raise
        if unsealed is not None:
            self.root = unsealed

    def _write_pages(self) -> Root:
        """Steps 2-4 of the commit: persist the allocation map, write every new page, barrier.
        Returns the root to flip to."""
        a = self.allocator
        # Copying allocation-map nodes allocates pages, which changes more entries, so first
        # make every changed entry's path writable until no new entry turns up, then write the
        # final values in place (same size: no further allocation).
        touched: dict[int, tuple | None] = {}      # entry -> (writable leaf, index) once touched
        grew = False
        allocmap = self.allocmap
        new: Collection[int] | None = a.dirty_chunks()
        for _ in range(1000):
            if not new:
                break
            mark = len(a.txn_allocated)
            keys = [ALLOC_KEY.pack(c) for c in new]
            for c, key, spot in zip(new, keys, allocmap.touch_many(keys)):
                if spot is None or (c == 0 and a.features != self._features_saved):
                    # a new entry, or entry 0 changing size (feature flags): may split leaves
                    allocmap.put(key, a.chunk_value(c))
                    grew = True
                touched[c] = spot
            # only allocating (copies of map nodes) changes more entries
            new = [c for c in a.dirty_chunks() if c not in touched] if (
                len(a.txn_allocated) != mark) else None
        else:
            raise CorruptionError(f"{self.name}: allocation map did not settle")
        for c, spot in touched.items():
            if spot is None or grew:
                self.allocmap.put(ALLOC_KEY.pack(c), a.chunk_value(c))
            else:
                spot[0].set_value_same_size(spot[1], a.chunk_value(c))
        a.clear_dirty()
        root = self.root.copy()
        root.page_count = a.n_pages
        root.catalog_root, root.catalog_height, root.catalog_count = (
            self.catalog.root, self.catalog.height, self.catalog.count)
        root.allocmap_root, root.allocmap_height, root.allocmap_count = (
            self.allocmap.root, self.allocmap.height, self.allocmap.count)
        root.commit_time_ns = time.time_ns()
        root.pending_pages = a.pending_count
        self.pager.grow(a.n_pages)
        # "full" and "normal" seal a commit that fits a seal rather than syncing before the
        # root flip ("normal": with everything written since the last barrier)
        seal = self.pager.write_commit(
            {pno: node.seal() for pno, node in self.dirty.items()},
            a.persisted_in_use if self.pager.sync_mode != "off" else None,
            recheck=bool(a.detached or a.releasing))
        root.seal, root.seal_checksum = seal if seal is not None else ((), 0)
        # the generation (and so the slot) once the barrier, if any, is known: never the slot
        # whose root open falls back to after a power cut (FORMAT §2.2)
        root.generation = self.pager.next_generation(self.root.generation)
        return root

    def release_now(self) -> int:
        """Outside a transaction: release every pending page the rules allow now, committing
        the same state again (at most twice, three times with sync="normal") when the newest
        commits' own frees wait only for a newer root. Returns the pages still pending."""
        a = self.allocator
        for _ in range(3):
            self._release(force=True)
            if not self.pending_queue or self.in_txn or a.hold_frees:
                break
            if self.pins and min(self.pins) < self.pending_queue[0][0]:
                break                      # a stream of ours reads an older state
            other = locking.oldest_pin_below(self.fd, self.root.generation)
            if other is not None and other < self.pending_queue[0][0]:
                break                      # a reader of another handle does
            self.begin()
            self._changed = True
            # each of these commits synced ("normal" too), so that the slots move on
            self.commit(force_sync=self.pager.sync_mode == "normal")
        self._release(force=True)     # what the last of those commits made releasable
        return a.pending_count

    def release_ready(self) -> None:
        """Release every pending page the rules allow now, in memory (no commit)."""
        self._release(force=True)

    def mark_changed(self) -> None:
        """Inside a transaction: the next commit writes a new root even if no call changed
        the catalog (a layer that copied pages or shrank the allocator itself)."""
        self._changed = True

    @property
    def saved_root(self) -> Root:
        """The root of the last commit (inside a transaction: the state a rollback returns to)."""
        return self._saved

    def _release(self, force: bool = False) -> None:
        """Free pages that no root slot and no reader can reach any more."""
        if not self.pending_queue or self.allocator.hold_frees:
            return
        if (not force and len(self.pending_queue) < RELEASE_BATCH
                and self.allocator.pending_count < RELEASE_PAGES):
            return   # release in batches: one lock query per batch, not per commit
        # Frees of commit f are pages of roots older than f: safe once no root slot can hold
        # one after a power cut, i.e. once both slots hold f or newer as of the last barrier
        # (with "full" after commit g: f <= g - 1; with "normal" a few commits later) ...
        limit = self.pager.durable_floor()
        if self.pins:
            limit = min(limit, min(self.pins))  # ... and no stream of ours reads an older root
        if self.pending_queue[0][0] > limit:
            return
        other = locking.oldest_pin_below(self.fd, limit + 1)
        if other is not None:
            limit = min(limit, other)           # ... and no other handle pins one
        keep = []
        for f, runs in self.pending_queue:
            if f <= limit:
                self.allocator.release(runs)
                self._unsaved_releases += sum(n for _, n in runs)
            else:
                keep.append((f, runs))
        self.pending_queue = keep

    def settle_frees(self) -> None:
        """Writers at open and at close, outside a transaction: when many freed pages wait, one
        small commit saves them free, so that a process committing once per open (every CLI
        write) does not leak them (docs/FORMAT.md §8, step 7). It saves the pages freed by
        commits f <= limit (the bound _release() applies after that commit, and no pin of
        another handle below f) as free without writing into them itself: the root it
        replaces may still reach them until it lands. Pages _release() freed in memory since
        the last commit are saved with them."""
        a = self.allocator
        if (not self.writable or self.in_txn or self.failed is not None or self._changed
                or a.hold_frees or a.detached or self.frozen):
            return
        # this commit goes on top of a durable newest root g and is synced itself ("normal"
        # syncs before and after it), so that afterwards both slots hold g or newer: f <= g
        limit = self.root.generation
        if self.pins:
            limit = min(limit, min(self.pins))

        def ready_pages(bound: int) -> int:
            return sum(n for f, runs in self.pending_queue if f <= bound for _, n in runs)

        if ready_pages(limit) + self._unsaved_releases < SETTLE_PAGES:
            return
        other = locking.oldest_pin_below(self.fd, limit + 1)
        if other is not None:
            limit = min(limit, other)
            if ready_pages(limit) + self._unsaved_releases < SETTLE_PAGES:
                return
        if self.pager.sync_mode == "normal" and self.pager.dirty:
            try:
                self.pager.sync_now()
            except OSError as e:
                self.failed = e
                raise
        ready = [e for e in self.pending_queue if e[0] <= limit]
        self.pending_queue = [e for e in self.pending_queue if e[0] > limit]
        self.begin()
        a.release_in_commit([run for _, runs in ready for run in runs])
        self._changed = True
        try:
            self.commit()
        except (OSError, CartridgeError):
            if self.failed is not None:
                raise
            # rolled back before the root flip (a full disk...): the pages simply wait longer,
            # and neither open nor close fails for want of this optional commit
            self.pending_queue = sorted(ready + self.pending_queue, key=lambda e: e[0])
            return
        if self.pager.sync_mode == "normal":
            self.pager.sync_now()

    # -- info -------------------------------------------------------------------------------
    def stats(self) -> dict:
        file_size = self.pager.io.fstat(self.fd).st_size
        out = {
            "generation": self.root.generation,
            "files": self.root.file_count,
            "directories": self.root.dir_count,
            "total_bytes": self.root.total_bytes,
            "file_size": file_size,
            "page_size": PAGE_SIZE,
            "catalog_entries": self.catalog.count,
            "catalog_height": self.catalog.height,
            "format_version": f"{self.header.version_major}.{self.header.version_minor}",
            "cache": self.pager.cache.stats(),
        }
        a = self.allocator or self._read_allocator()
        out.update(a.stats())
        out.update(self.space_and_packs(a, file_size))
        if self.source is not None:
            out["remote"] = self.source.stats()
        return out

    def identity(self) -> tuple:
        """What tells this archive file from others in the process: (st_dev, st_ino) of a local
        file, ("remote", id) of a remote source (each remote handle is its own file)."""
        if self.source is not None:
            return ("remote", id(self.source))
        st = os.fstat(self.fd)
        return (st.st_dev, st.st_ino)

    def space_and_packs(self, a: Allocator, file_bytes: int) -> dict:
        """space() and the pack figures (docs/FORMAT.md §14.3), with the packs' dead bytes
        counted in reclaimable_bytes: what info() reports and what auto-compaction decides on."""
        out = self.space(a, file_bytes)
        packs = self.packs.totals() if (a.features & FEATURE_PACKS or self.packs.dirty) else {
            "packs": 0, "packed_files": 0, "pack_pages": 0, "pack_dead_bytes": 0}
        out.update(packs)
        out["reclaimable_bytes"] += packs["pack_dead_bytes"]
        return out

    def space(self, a: Allocator, file_bytes: int) -> dict:
        """The space figures of info() (docs/FORMAT.md §12; README "Space"): live_bytes (pages
        the live state reaches, page 0 and metadata included), snapshot_bytes (held: only
        snapshots reach them), pending_bytes (freed, reusable after the next commits),
        free_bytes (free pages, and the file's tail past page_count), reclaimable_bytes (what
        a full compaction gives back: the file can shrink to the pages in use, but not below
        the last page a snapshot reaches, since snapshots' pages never move)."""
        n = a.n_pages
        held = a.held_count
        live = a.used.count_used() - a.pending.count_used() - held
        pending = a.pending.count_used()
        file_pages = file_bytes // PAGE_SIZE
        free = n - live - held - pending + max(file_pages - n, 0)
        reach = a.reach
        if reach is None and not self.writable and a.features & FEATURE_SNAPSHOTS:
            reach = snapstore.union(self, [r for _, r, _ in snapstore.all_snapshots(self)])
        last = 0
        if reach is not None and reach.any():
            last = int(np.flatnonzero(reach)[-1]) + 1
        floor = max(last, live + held)
        return {
            "file_bytes": file_bytes,
            "live_bytes": live * PAGE_SIZE,
            "snapshot_bytes": held * PAGE_SIZE,
            "pending_bytes": pending * PAGE_SIZE,
            "free_bytes": free * PAGE_SIZE,
            "reclaimable_bytes": max(file_pages - floor, 0) * PAGE_SIZE,
            "snapshots": (len(snapstore.all_snapshots(self))
                          if a.features & FEATURE_SNAPSHOTS else 0),
        }

    def close(self) -> None:
        self.closed = True
        if self.source is not None:
            self.source.close()
            return
        try:
            os.close(self.fd)
        except OSError:
            pass

