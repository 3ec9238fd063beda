"""Incremental compaction (docs/FORMAT.md §12.5): move in-use pages from the tail of the file
into free pages nearer the front, one bounded cycle (one commit) at a time, and give the free
tail back to the file system.

Moving is copy-on-write like every other change: a moved page gets a fresh copy on the lowest
free page and its old copy becomes pending, so readers of older commits, open read streams and
the other root slot keep reading the old copy until it is released. Pages a snapshot reaches,
pending and held pages, pages of open write streams and key-overflow pages are never moved.

Shrinking the file: a cycle that finds the file's tail free commits a smaller page_count (with
the allocation-map entries past it removed), commits once more so that neither root slot names
the old size, syncs, and only then truncates the file.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import packs as _packs
from ._core.checksum import xxh3_64
from .allocator import GROW_MIN_PAGES, set_runs
from .content import chunk_len
from .errors import CorruptionError
from .format import (
    ALLOC_CHUNK_BITS,
    ALLOC_KEY,
    CHUNK_PAGES,
    FEATURE_PACKS,
    PACK_REF,
    PAGE_SIZE,
    STORE_PACKED,
    STORE_XMAP,
    XMAP_REF,
)
from .records import Record, decode, max_payload

SHRINK_SLACK = 16          # free pages left at the end of a shrunk file (64 KiB)
VACUUM_PAGES = 16384       # pages per cycle when compact() runs to completion (64 MiB)
SHRINK_EARLY = 4096        # a cycle that moved pages truncates only a free tail this long


@dataclass(frozen=True)
class CompactStats:
    """One compaction call: pages moved, bytes the file shrank by, the file's size after it,
    and whether nothing is left to do (no movable page above a free one, nothing pending, no
    free tail)."""

    pages_moved: int
    bytes_freed: int
    file_bytes: int
    done: bool


def _bits(bm) -> np.ndarray:
    return np.unpackbits(np.asarray(bm.words).view(np.uint8), bitorder="little").astype(bool)


def movable_pages(eng) -> np.ndarray:
    """One bool per page: live pages compaction may move (no snapshot reaches them, not
    pending, held or held by an open write stream; not page 0)."""
    a = eng.allocator
    n = a.n_pages
    out = a.live_pages()
    if a.reach is not None:
        m = min(len(a.reach), n)
        out[:m] &= ~a.reach[:m]
    out[0] = False
    return out


def boundary(eng) -> int:
    """Where a perfectly packed file would end: the number of pages taken (in use, pending
    and held). Pages past it are what compaction moves; below it is where they go."""
    return int(eng.allocator.used.count_used())


def _candidates(eng, max_pages: int) -> np.ndarray:
    """The highest movable pages past the boundary and the slack a shrunk file keeps after it
    (at most max_pages): moving pages that already lie below would not let the file shrink,
    only churn. The slack matters: every commit copies a few metadata pages (allocation map,
    catalog path) to the lowest free pages, right at the boundary, so moving pages that sit
    there would only swap places with those copies, cycle after cycle, for ever."""
    a = eng.allocator
    n = a.n_pages
    t = boundary(eng) + SHRINK_SLACK
    if t >= n:
        return np.zeros(0, dtype=np.int64)
    mov = movable_pages(eng)
    above = np.flatnonzero(mov[t:]) + t
    return above[-max_pages:] if max_pages else above


def _owners(eng, wanted: set[int]):
    """Who points at the `wanted` pages: catalog nodes (a key in each), allocation-map nodes
    (their entry indexes) and files (key -> record) whose content or chunk-map pages are
    wanted. One walk of both trees (nodes through the page cache)."""
    cat_keys: list[bytes] = []
    files: dict[bytes, Record] = {}
    alloc_chunks: list[int] = []

    def walk(tree, on_leaf):
        store = tree.store
        if not tree.root:
            return

        def visit(pno: int) -> bytes | None:
            node = store.load(pno)
            n = node.nkeys
            first = None
            if node.is_leaf:
                if n:
                    first = node.key(0)
                    if on_leaf is not None:
                        on_leaf(node)
            else:
                for i in range(n + 1):
                    k = visit(node.child(i))
                    if first is None:
                        first = k
            if pno in wanted and first is not None:
                owners_nodes.append((tree, first))
            return first
        visit(tree.root)

    owners_nodes: list = []

    lo = min(wanted)

    def catalog_leaf(node) -> None:
        # the cells whose record may own a wanted page, picked in the Cython core (a chunk
        # map wholly below the lowest wanted page rules its record out without a Python
        # object per cell); those are decoded and checked page by page here
        for i in node.content_cells_from(lo):
            k = node.key(i)
            rec = decode(node.value(i), eng.where(k))
            for s, c in eng.content.page_runs(rec, eng.where(k)):
                if any(p in wanted for p in range(s, s + c)):
                    files[k] = rec
                    break

    walk(eng.catalog, catalog_leaf)
    walk(eng.allocmap, None)
    for tree, key in owners_nodes:
        if tree is eng.catalog:
            cat_keys.append(key)
        else:
            alloc_chunks.append(ALLOC_KEY.unpack(key)[0] if len(key) == 8 else 0)
    return cat_keys, files, alloc_chunks


def _move_file(eng, key: bytes, rec: Record, wanted: set[int], limit: int) -> int:
    """Copy the wanted chunks of one file (and its chunk map if it lives on wanted XMAP pages)
    to lower free pages; the record points at the copies. Returns pages moved."""
    a = eng.allocator
    pager = eng.pager
    where = eng.where(key)
    content = eng.content
    cmap = np.array(content.chunk_map(rec, where), dtype=np.uint64)
    moved = 0
    for i in range(len(cmap)):
        start = int(cmap[i, 0])
        ln = chunk_len(rec.size, i)
        npg = -(-ln // PAGE_SIZE)
        if not any(p in wanted for p in range(start, start + npg)):
            continue
        new = a.alloc_run(npg)
        if new >= start or new + npg > limit:   # no room below the boundary: leave it
            a.free(new, npg)
            continue
        data = pager.read_checked(start, ln, int(cmap[i, 1]), where, i)   # damaged: raises
        pager.stage(new, data)
        cmap[i, 0] = new
        a.free(start, npg)
        moved += npg
    old_xmap = content.xmap_pages(rec) if rec.storage == STORE_XMAP else []
    if not moved and not any(p in wanted for p in old_xmap):
        return 0
    storage, payload = content.store_map(cmap, max_payload(len(key)))
    for p in old_xmap:
        a.free(p, 1)
    if old_xmap:
        content.cache.pop(-XMAP_REF.unpack(rec.payload)[0])
    moved += len(old_xmap)
    new_rec = Record(rec.kind, storage, rec.mode, rec.size, rec.ctime_ns, rec.mtime_ns,
                     rec.checksum, payload)
    if key[:1] == b"/":
        eng.put_file(key, new_rec, rec)
    else:
        eng.put(key, new_rec)
    return moved


def _put(eng, key: bytes, new_rec: Record, rec: Record) -> None:
    if key[:1] == b"/":
        eng.put_file(key, new_rec, rec)
    else:
        eng.put(key, new_rec)


def _move_packs(eng, packed: dict[bytes, Record], sparse: set[int], later: set[int],
                limit: int) -> int:
    """Packed files whose pack compaction wants (FORMAT §14.3): the live files of `sparse`
    packs are rewritten together into new, full packs, placed below `limit` like every other
    move (when they do not fit there, the rewrite waits for a later cycle); `later` packs
    (sparse, past this cycle's budget) stay where they are; every other pack is copied page
    for page to a lower free run (its dead bytes with it: the copy is a position move, not a
    rewrite), or left where it is when no lower run is free. The old packs go at commit
    (their last file left them). Returns pages moved."""
    a = eng.allocator
    pager = eng.pager
    content = eng.content
    table = eng.packs.table
    by_pack: dict[int, list[tuple[bytes, Record]]] = {}
    for key, rec in packed.items():
        by_pack.setdefault(_packs.ref(rec)[0], []).append((key, rec))
    moved = 0
    rewrite: list[tuple[bytes, Record]] = []
    for page in sorted(by_pack):
        members = by_pack[page]
        pack = table.get(page)
        if pack is None:
            continue
        if page in sparse or page in later or len(members) != pack.files:
            if page in sparse and len(members) == pack.files:
                rewrite.extend(members)
            continue               # (a member held open elsewhere: the pack stays whole)
        new = a.alloc_run(pack.pages)
        if new >= page or new + pack.pages > limit:     # no room below: leave it
            a.free(new, pack.pages)
            continue
        raw = pager.read_run(page, pack.pages)
        for key, rec in members:     # a damaged file is not copied on as if it were good
            _, off = _packs.ref(rec)
            if xxh3_64(raw[off:off + rec.size]) != rec.checksum:
                raise CorruptionError(f"{eng.where(key)}: content checksum mismatch in packed "
                                      f"file (pack {page}, offset {off})")
        pager.stage(new, raw)
        eng.packs.move(page, new)
        for key, rec in members:
            _, off = _packs.ref(rec)
            _put(eng, key, Record(rec.kind, STORE_PACKED, rec.mode, rec.size, rec.ctime_ns,
                                  rec.mtime_ns, rec.checksum, PACK_REF.pack(new, off, 0)), rec)
        moved += pack.pages
    if rewrite:
        rewrite.sort(key=lambda kr: _packs.ref(kr[1]))      # keep neighbours together
        datas = [content.load_packed(rec, eng.where(key)) for key, rec in rewrite]
        sizes = np.array([rec.size for _, rec in rewrite], np.int64)
        # the files of the lowest packs first: when all of them do not fit below the limit,
        # try the first half of the packs, and so on down to one (the rest wait)
        packs_in = sorted({_packs.ref(rec)[0] for _, rec in rewrite})
        take = len(packs_in)
        while take:
            n = len(rewrite) if take == len(packs_in) else \
                next(i for i, (_, rec) in enumerate(rewrite)
                     if _packs.ref(rec)[0] >= packs_in[take])
            before = len(a.txn_allocated)
            placed = content.place_packed(datas, np.arange(n, dtype=np.intp), sizes[:n], limit)
            if placed is not None:
                break
            take //= 2
        else:
            return moved                # no room below the limit even for one: it waits
        pages, offsets, _sums = placed
        for (key, rec), pg, off in zip(rewrite[:n], pages.tolist(), offsets.tolist()):
            _put(eng, key, Record(rec.kind, STORE_PACKED, rec.mode, rec.size, rec.ctime_ns,
                                  rec.mtime_ns, rec.checksum, PACK_REF.pack(pg, off, 0)), rec)
            content.free(rec, eng.where(key))
        moved += len(a.txn_allocated) - before
    return moved


def _sparse_budget(eng, sparse: list[int], budget: int) -> set[int]:
    """The sparse packs (lowest first) one cycle rewrites: as many as fit in `budget` pages,
    and at least one, so that every cycle makes progress. Their live bytes, which the rewrite
    holds in memory, are at most half their pages (FORMAT §14.3)."""
    table = eng.packs.table
    out: set[int] = set()
    used = 0
    for page in sparse:
        n = table[page].pages
        if out and used + n > budget:
            break
        out.add(page)
        used += n
    return out


def cycle(eng, max_pages: int, skip=None) -> tuple[int, int, bool]:
    """One cycle (see _cycle), with first-fit placement whatever the sync mode: copies go to
    the lowest free pages, not after sync="normal"'s sequential cursor (allocator.py)."""
    a = eng.allocator
    seq, a.sequential = a.sequential, False
    try:
        return _cycle(eng, max_pages, skip)
    finally:
        a.sequential = seq


def _cycle(eng, max_pages: int, skip=None) -> tuple[int, int, bool]:
    """One cycle (the caller holds the handle's lock, outside a transaction): move up to
    `max_pages` pages down in one commit, then give back a free tail. Files for which
    skip(key) is true (members a feature layer holds open: SQLite databases) stay where they
    are. Returns (pages moved, bytes freed, done)."""
    a = eng.allocator
    size_before = eng.pager.io.fstat(eng.fd).st_size
    eng.release_ready()            # what the rules allow already: no commit needed
    cand = _candidates(eng, max_pages)
    if not len(cand) and a.pending_count:
        eng.release_now()               # pending pages count as taken until released
        cand = _candidates(eng, max_pages)
    # packs with too few live bytes left are rewritten whatever their position (FORMAT §14.3)
    all_sparse = eng.packs.sparse(a.reach) if a.features & FEATURE_PACKS else []
    sparse = _sparse_budget(eng, all_sparse, max_pages - len(cand))
    later = set(all_sparse) - sparse
    moved = 0
    if len(cand) or sparse:
        wanted = set(cand.tolist())
        for page in sparse:
            wanted.update(range(page, page + eng.packs.table[page].pages))
        limit = boundary(eng) + SHRINK_SLACK + 2 * CHUNK_PAGES   # room for a chunk past it
        cat_keys, files, alloc_chunks = _owners(eng, wanted)
        eng.begin()
        try:
            packed: dict[bytes, Record] = {}
            for key in sorted(files):
                if skip is not None and skip(key):
                    continue
                if files[key].storage == STORE_PACKED:
                    packed[key] = files[key]
                    continue
                moved += _move_file(eng, key, files[key], wanted, limit)
            if packed:
                moved += _move_packs(eng, packed, sparse, later, limit)
            if cat_keys:
                before = len(a.txn_allocated)
                eng.catalog.touch_many(sorted(set(cat_keys)))
                moved += len(a.txn_allocated) - before
                eng.mark_changed()
            for c in alloc_chunks:
                a.touch(c * ALLOC_CHUNK_BITS, 1)   # its map node is copied by the commit
                eng.mark_changed()
                moved += 1
        except BaseException:
            eng.rollback()
            raise
        if eng.changed:
            eng.commit()
        else:
            eng.rollback()                  # nothing found a lower home: forget the trials
    # a cycle that moved pages leaves their old copies pending (released by later commits as
    # usual); one that found nothing left to move releases now, so that the tail can go
    pending = eng.release_now() if moved == 0 else a.pending_count
    if moved == 0 or tail_free(a) >= SHRINK_EARLY:
        shrink(eng)
    freed = max(size_before - eng.pager.io.fstat(eng.fd).st_size, 0)
    # done: this cycle found nothing to move (or no lower room for it), nothing waits to be
    # released, and the tail is as short as it gets
    done = moved == 0 and freed == 0 and (pending == 0 or not _pending_holds_tail(eng))
    return moved, freed, done


def _pending_holds_tail(eng) -> bool:
    """Whether a pending page that a later commit could release lies past every page in use
    (its release would shorten the file further). The newest commit's own frees do not count:
    releasing them takes another commit, which frees pages of its own."""
    a = eng.allocator
    used = _bits(a.used)[:a.n_pages]
    pend = _bits(a.pending)[:a.n_pages]
    live = np.flatnonzero(used & ~pend)
    last = int(live[-1]) if len(live) else 0
    newest = eng.root.generation
    return any(s + n - 1 > last for f, runs in eng.pending_queue if f < newest
               for s, n in runs)


def tail_free(a) -> int:
    """Pages at the end of the file that are free (not used, pending or held)."""
    used = _bits(a.used)[:a.n_pages]
    nz = np.flatnonzero(used)
    last = int(nz[-1]) if len(nz) else 0
    return a.n_pages - last - 1


def shrink(eng) -> int:
    """Give a free tail back to the file system (three steps, each safe to cut: commit the
    smaller page_count, commit again so that no slot names the old one, sync, truncate).
    Returns the bytes the file shrank by."""
    a = eng.allocator
    if a.detached or a.hold_frees or a.txn_allocated or a.txn_freed:
        return 0
    before = eng.pager.io.fstat(eng.fd).st_size
    free_tail = tail_free(a)
    # keep a little free room past the last page in use: the shrinking commits themselves
    # copy a few allocation-map nodes, and without room the allocator would grow the file
    new_n = max(a.n_pages - free_tail + SHRINK_SLACK, GROW_MIN_PAGES)
    committed = False
    if new_n < a.n_pages - SHRINK_SLACK // 2:
        eng.begin()
        try:
            old_chunks = -(-a.n_pages // ALLOC_CHUNK_BITS)
            a.shrink(new_n)
            for c in range(-(-new_n // ALLOC_CHUNK_BITS), old_chunks):
                eng.allocmap.delete(ALLOC_KEY.pack(c))
            eng.mark_changed()
        except BaseException:
            eng.rollback()
            raise
        eng.commit()
        eng.begin()
        eng.mark_changed()                 # the same state again: the other slot too
        eng.commit()
        # an allocation during these commits may have grown the file again: never cut below
        # what the newest root covers
        new_n = eng.root.page_count
        committed = True
    target = max(new_n, eng.root.page_count) * PAGE_SIZE
    if target < before:
        # both roots naming the new size are durable first: with sync="full" the two commits
        # above each synced after writing their root (FORMAT §8), so no third sync is needed;
        # otherwise (sync="normal", or roots found at open, which may not be on disk yet) sync
        if eng.pager.sync_mode == "normal" or (eng.pager.sync_mode == "full" and not committed):
            eng.pager.sync_now()
        eng.pager.shrink(target // PAGE_SIZE)
    return max(before - eng.pager.io.fstat(eng.fd).st_size, 0)


def pending_runs(a) -> list[tuple[int, int]]:
    return set_runs(a.pending)
