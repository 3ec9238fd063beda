"""Snapshots kept inside the archive (docs/FORMAT.md §12): named, immutable committed states.

A snapshot is a system entry b"\\x00snapshot/" + NAME whose (inline) content is the root of
the committed state it pins. Taking one writes nothing else: pages stay shared with the live
state until the live state changes them. A committed page the live state frees while some
snapshot still reaches it becomes *held* (allocator) instead of pending; deleting a snapshot
turns the held pages no remaining snapshot reaches into pending pages of that commit.

Which pages a snapshot reaches is read from the allocation map it pinned (its root names it):
the pages marked used and not pending there are exactly the pages its root reaches (FORMAT §6).
The union over all snapshots is kept in memory by the writer (Allocator.reach).
"""
from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from . import packs
from ._core.btree import BTree
from ._core.checksum import xxh3_64
from .errors import AlreadyExistsError, CartridgeError, CorruptionError, NotFoundError
from .format import (
    ALLOC_CHUNK_BITS,
    ALLOC_CHUNK_BYTES,
    ALLOC_KEY,
    DEFAULT_MODE_FILE,
    FEATURE_SNAPSHOTS,
    KIND_DIR,
    KIND_FILE,
    MAX_TREE_HEIGHT,
    SNAPSHOT_PREFIX,
    STORE_INLINE,
    STORE_PACKED,
    TREE_ALLOCMAP,
    TREE_CATALOG,
)
from .nodestore import TreeStore
from .pager import Root
from .records import Record, decode

MAX_NAME_CHARS = 255
MAX_PAGES = 1 << 48            # a page number fits 48 bits (FORMAT §2.3)
# magic, version, reserved, generation, page_count, catalog root/count/height, allocmap
# height/root/count, file count, dir count, total bytes, commit time ns, created ns
SNAP_RECORD = struct.Struct("<4sHHQQQQIIQQQQQqq")
SNAP_MAGIC = b"SNAP"
SNAP_VERSION = 1
BATCH = 256


class SnapshotInfo(NamedTuple):
    """A snapshot: its name, when it was taken (seconds since the epoch), the generation of
    the commit it pins, and the bytes of the files in it."""

    name: str
    time: float
    generation: int
    size: int


def check_name(name: object) -> str:
    """1-255 printable characters (str.isprintable), valid UTF-8."""
    if not isinstance(name, str):
        raise TypeError(f"snapshot name must be str, not {type(name).__name__}")
    if not 1 <= len(name) <= MAX_NAME_CHARS or not name.isprintable():
        raise ValueError(f"snapshot name must be 1-{MAX_NAME_CHARS} printable characters, "
                         f"not {name[:80]!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"snapshot name is not valid text: {name[:80]!r}") from None
    return name


def snap_key(name: str) -> bytes:
    return SNAPSHOT_PREFIX + check_name(name).encode("utf-8")


def is_system_key(key: bytes) -> bool:
    """A well-formed snapshot key (for verify)."""
    if not key.startswith(SNAPSHOT_PREFIX):
        return False
    try:
        check_name(key[len(SNAPSHOT_PREFIX):].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, TypeError):
        return False
    return True


# -- records ----------------------------------------------------------------------------------
def encode(root: Root, created_ns: int) -> bytes:
    return SNAP_RECORD.pack(SNAP_MAGIC, SNAP_VERSION, 0, root.generation, root.page_count,
                            root.catalog_root, root.catalog_count, root.catalog_height,
                            root.allocmap_height, root.allocmap_root, root.allocmap_count,
                            root.file_count, root.dir_count, root.total_bytes,
                            root.commit_time_ns, created_ns)


def parse(eng, key: bytes, rec: Record) -> tuple[Root, int]:
    """A snapshot record's root and creation time, every field bounded (hostile input)."""
    where = eng.where(key)
    if rec.kind != KIND_FILE or rec.storage != STORE_INLINE or rec.size != SNAP_RECORD.size:
        raise CorruptionError(f"{where}: malformed snapshot record")
    (magic, version, _r, gen, page_count, cat_root, cat_count, cat_h, am_h, am_root, am_count,
     files, dirs, total, commit_ns, created_ns) = SNAP_RECORD.unpack(bytes(rec.payload))
    current = eng.root.generation
    if (magic != SNAP_MAGIC or version != SNAP_VERSION or not 1 <= gen < max(current, 1)
            or not 1 <= page_count < MAX_PAGES
            or max(cat_h, am_h) > MAX_TREE_HEIGHT or not 0 < am_root < page_count
            or not 0 <= cat_root < page_count or (cat_root == 0) != (cat_h == 0)):
        raise CorruptionError(f"{where}: malformed snapshot record")
    root = Root(generation=gen, page_count=page_count, catalog_root=cat_root,
                catalog_count=cat_count, catalog_height=cat_h, allocmap_height=am_h,
                allocmap_root=am_root, allocmap_count=am_count, file_count=files,
                dir_count=dirs, total_bytes=total, commit_time_ns=commit_ns)
    return root, created_ns


def _entries(eng) -> Iterator[tuple[bytes, Record]]:
    start = SNAPSHOT_PREFIX
    while True:
        batch = eng.catalog.items_from(start, BATCH, SNAPSHOT_PREFIX)
        for k, v in batch:
            yield k, decode(v, eng.where(k))
        if len(batch) < BATCH:
            return
        start = batch[-1][0] + b"\x00"


def _name(eng, key: bytes) -> str:
    if not is_system_key(key):
        raise CorruptionError(f"{eng.name}: malformed snapshot key {key[:60]!r}")
    return key[len(SNAPSHOT_PREFIX):].decode("utf-8")


def all_snapshots(eng) -> list[tuple[str, Root, int]]:
    """(name, root, created_ns) of every snapshot, oldest generation first."""
    out = []
    for k, rec in _entries(eng):
        root, created = parse(eng, k, rec)
        out.append((_name(eng, k), root, created))
    out.sort(key=lambda t: (t[1].generation, t[0]))
    return out


def info(name: str, root: Root, created_ns: int) -> SnapshotInfo:
    return SnapshotInfo(name, created_ns / 1e9, root.generation, root.total_bytes)


def lookup(eng, name: str) -> tuple[Root, int]:
    key = snap_key(name)
    rec = eng.get(key)
    if rec is None:
        raise NotFoundError(f"no snapshot named {name!r}")
    return parse(eng, key, rec)


# -- what snapshots reach ---------------------------------------------------------------------
def tree(eng, root: int, height: int, count: int, tree_id: int) -> BTree:
    """A read-only B+tree of a snapshot's state (its pages are never reused while it exists)."""
    return BTree(TreeStore(eng.pager, None, {}, tree_id), root, height, count, tree_id)


def reached(eng, root: Root) -> np.ndarray:
    """One bool per page: the pages `root` reaches, read from the allocation map it pinned
    (used and not pending there). Cached per generation: a snapshot never changes."""
    got = eng.snap_cache.get(root.generation)
    if got is not None:
        return got
    n_chunks = -(-root.page_count // ALLOC_CHUNK_BITS)
    out = np.zeros(n_chunks * ALLOC_CHUNK_BITS, dtype=bool)
    seen = 0
    am = tree(eng, root.allocmap_root, root.allocmap_height, root.allocmap_count, TREE_ALLOCMAP)
    for key, value in am.items_from(b"", 1 << 62):
        (idx,) = ALLOC_KEY.unpack(key) if len(key) == 8 else (-1,)
        if idx != seen or idx >= n_chunks or len(value) < 2 * ALLOC_CHUNK_BYTES:
            raise CorruptionError(f"{eng.name}: the allocation map of snapshot generation "
                                  f"{root.generation} is malformed (entry {idx})")
        used = np.frombuffer(value, np.uint8, ALLOC_CHUNK_BYTES)
        pending = np.frombuffer(value, np.uint8, ALLOC_CHUNK_BYTES, ALLOC_CHUNK_BYTES)
        live = np.unpackbits(used & ~pending, bitorder="little").astype(bool)
        out[idx * ALLOC_CHUNK_BITS:(idx + 1) * ALLOC_CHUNK_BITS] = live
        seen += 1
    if seen != n_chunks:
        raise CorruptionError(f"{eng.name}: the allocation map of snapshot generation "
                              f"{root.generation} has {seen} of {n_chunks} entries")
    out = out[:root.page_count]
    eng.snap_cache[root.generation] = out
    return out


def union(eng, roots: list[Root]) -> np.ndarray | None:
    """The pages any of `roots` reaches (None for no roots)."""
    if not roots:
        return None
    n = max(r.page_count for r in roots)
    out = np.zeros(n, dtype=bool)
    for r in roots:
        bits = reached(eng, r)
        out[:len(bits)] |= bits
    return out


def init_reach(eng) -> None:
    """Writers at open: which pages the archive's snapshots reach."""
    eng.allocator.reach = union(eng, [r for _, r, _ in all_snapshots(eng)])


# -- changes (inside the caller's transaction) -------------------------------------------------
def create(eng, name: str) -> SnapshotInfo:
    """Pin the committed state under `name`: one small catalog entry (O(1) on disk)."""
    key = snap_key(name)
    if eng.get(key) is not None:
        raise AlreadyExistsError(f"a snapshot named {name!r} already exists")
    root = eng.root.copy()          # the newest commit: what this transaction started from
    a = eng.allocator
    live = a.live_pages()
    eng.snap_cache[root.generation] = live[:root.page_count]
    old = a.reach
    if old is None:
        new = live.copy()
    else:
        new = np.zeros(max(len(old), len(live)), dtype=bool)
        new[:len(old)] = old
        new[:len(live)] |= live
    a.set_reach(new)                # from here on, freeing a page of this state holds it
    a.set_features(a.features | FEATURE_SNAPSHOTS)
    now = time.time_ns()
    payload = encode(root, now)
    eng.put(key, Record(KIND_FILE, STORE_INLINE, DEFAULT_MODE_FILE, len(payload), now, now,
                        xxh3_64(payload), payload))
    return info(name, root, now)


def delete(eng, name: str) -> int:
    """Remove a snapshot; the held pages no other snapshot reaches become pending (freed by
    this commit). Returns the number of pages freed."""
    root, _ = lookup(eng, name)
    eng.delete(snap_key(name))
    rest = [r for _, r, _ in all_snapshots(eng)]
    a = eng.allocator
    keep = union(eng, rest)
    freed = a.drop_held(keep)
    a.set_reach(keep)
    if not rest:
        a.set_features(a.features & ~FEATURE_SNAPSHOTS)
    if not any(r.generation == root.generation for r in rest):
        eng.snap_cache.pop(root.generation, None)
    return freed


def _user_items(cat: BTree) -> Iterator[tuple[bytes, bytes]]:
    start = b"/"
    while True:
        batch = cat.items_from(start, BATCH, b"/")
        yield from batch
        if len(batch) < BATCH:
            return
        start = batch[-1][0] + b"\x00"


def restore(eng, name: str) -> int:
    """Make the live user namespace equal the snapshot's (system entries - policies and
    snapshots - stay as they are). Returns the number of entries changed."""
    root, _ = lookup(eng, name)
    snap_cat = tree(eng, root.catalog_root, root.catalog_height, root.catalog_count,
                    TREE_CATALOG)
    # the difference first (nothing changes while both trees are read)
    diff: list[tuple[bytes, bytes | None, bytes | None]] = []
    live_it, snap_it = _user_items(eng.catalog), _user_items(snap_cat)
    lv = next(live_it, None)
    sv = next(snap_it, None)
    while lv is not None or sv is not None:
        if lv is not None and (sv is None or lv[0] < sv[0]):
            diff.append((lv[0], lv[1], None))
            lv = next(live_it, None)
        elif sv is not None and (lv is None or sv[0] < lv[0]):
            diff.append((sv[0], None, sv[1]))
            sv = next(snap_it, None)
        else:
            assert lv is not None and sv is not None
            if lv[1] != sv[1]:
                diff.append((lv[0], lv[1], sv[1]))
            lv = next(live_it, None)
            sv = next(snap_it, None)
    back = []
    snap_packs = None           # the snapshot's pack table (FORMAT §14), read when needed
    # every record that goes is given up before any comes back: a packed file renamed since
    # the snapshot leaves its pack under the new name and returns under the old one, and the
    # pack's counts must see it leave first (FORMAT §14.2)
    for key, old, _new in diff:
        if old is not None:
            where = eng.where(key)
            eng.delete(key)
            eng.content.free(decode(old, where), where)
    for key, _old, new in diff:
        where = eng.where(key)
        if new is not None:
            rec = decode(new, where)
            if rec.kind not in (KIND_FILE, KIND_DIR):
                raise CorruptionError(f"{where}: snapshot {name!r} holds a malformed record")
            eng.put(key, rec)
            if rec.storage == STORE_PACKED:
                # its pack counts it again; a pack the live state had given up is live again
                if snap_packs is None:
                    snap_packs = packs.read_table(snap_cat, eng.name)
                if eng.packs.acquire(rec, snap_packs, where):
                    page, _ = packs.ref(rec)
                    back.append((page, eng.packs.table[page].pages))
            else:
                back.extend(eng.content.page_runs(rec, where))
    eng.allocator.revive(back)      # the snapshot's pages are the live state's again
    if root.total_bytes != eng.root.total_bytes or root.file_count != eng.root.file_count:
        raise CartridgeError(f"{eng.name}: restore of {name!r} left the counts inconsistent")
    return len(diff)
