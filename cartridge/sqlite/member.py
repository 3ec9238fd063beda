"""SQLite members: one archive member as SQLite sees it (Member: the committed record plus an
overlay of modified chunks) and the per-handle table of them (Registry)."""
from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable

import numpy as np

from .. import _handle as H
from .. import paths as P
from .._core.checksum import xxh3_64
from .._core.pageio import Overlay
from ..content import chunk_len, publish_file
from ..errors import (
    ClosedError,
    LockedError,
    PathIsDirectoryError,
)
from ..format import (
    CHUNK_SIZE,
    KIND_FILE,
    PAGE_SIZE,
    STORE_CHUNKS,
    STORE_EMPTY,
    STORE_INLINE,
    STORE_PACKED,
    STORE_XMAP,
    XMAP_REF,
)
from ..iam import actions as A
from ..records import Record, max_payload

SPILL_CHUNKS = 256          # modified chunks (16 MiB) kept in memory before full ones go to pages
FEW_CHUNKS = 4              # a publish with at most this many changed chunks places them one by one

_CHUNK_SHIFT = CHUNK_SIZE.bit_length() - 1
_CHUNK_MASK = CHUNK_SIZE - 1
assert 1 << _CHUNK_SHIFT == CHUNK_SIZE

_tls = threading.local()     # closing: a Connection.close() runs; last_db: the file just opened


def _quiet() -> bool:
    """Is SQLite closing a connection whose archive is already closed (conn.close() of ours,
    or interpreter exit)? Then there is nothing to publish and nothing to complain about."""
    return getattr(_tls, "closing", False) or sys.is_finalizing()


# -- members ---------------------------------------------------------------------------------
class Member(Overlay):
    """One archive member as SQLite sees it: the committed version plus unpublished changes.

    Shared by every file SQLite has open on the member through one archive handle, like the OS
    page cache is shared by every descriptor of a file; SQLite's locks keep writers apart.
    """

    def __init__(self, reg: Registry, key: bytes):
        self.reg = reg
        self.key = key
        self.path = key.decode("utf-8")
        self.opens = 0                       # SQLite files open on it
        self.rec: Record | None = None       # the committed record the overlay applies to
        # Overlay's state: exists, size (current state, overlay applied), nbase (leading chunks
        # of `rec` still valid after a truncation), dirty (chunk index -> current bytes),
        # placed (spilled chunks: start page, csum, pages), changed, poisoned
        self.spill_at = SPILL_CHUNKS
        self.bind(reg.lock, reg.eng, reg.writer)
        self.base_size = 0
        self.cmap: np.ndarray | None = None  # chunk map of `rec` (chunked storage)
        self.ckeys: dict[int, int] = {}      # chunk index -> page-cache key, filled lazily
        self.reloads = 0                     # times the base changed behind SQLite's back
        self.epoch = reg.eng.rollbacks     # the engine's rollback count last checked
        self.load(reg.eng.get(key))

    # -- base ------------------------------------------------------------------------------
    def load(self, rec: Record | None) -> None:
        """Adopt `rec` as the committed base and forget every unpublished change."""
        if rec is not None and rec.kind != KIND_FILE:
            raise PathIsDirectoryError(f"{self.path} is a directory")
        self._drop_overlay()
        self.rec = rec
        self.exists = rec is not None
        self.size = self.base_size = rec.size if rec is not None else 0
        self.ckeys = {}
        self.cmap = None
        if rec is None or rec.storage in (STORE_EMPTY, STORE_INLINE, STORE_PACKED):
            # a packed file (FORMAT §14; members are never packed by SQLite itself, but a
            # database written with write_many may be) is one base chunk, like inline content
            self.nbase = 0 if rec is None or rec.storage == STORE_EMPTY else 1
        else:
            eng = self.reg.eng
            self.cmap = eng.content.chunk_map(rec, eng.where(self.key))
            self.nbase = len(self.cmap)
        self.changed = False

    def _drop_overlay(self) -> None:
        self.dirty = {}
        if self.placed:
            self.placed = {}
            eng = self.reg.eng
            if eng.allocator is not None and not self.reg.cart.closed:
                eng.allocator.abandon(self)

    def revalidate(self) -> None:
        """Catch up with the archive when the committed record is no longer ours (a reader
        handle moved on, an archive transaction rolled back, a rename...). Unpublished changes
        survive only while the record they apply to is still the committed one."""
        rec = self.reg.eng.get(self.key)
        if rec is self.rec:
            return
        if rec is not None and self.rec is not None and rec.encode() == self.rec.encode():
            self.rec = rec
            return
        self.reloads += 1
        self.reg.reloads += 1
        self.load(rec)

    def fresh(self) -> None:
        """Revalidate if the archive rolled a transaction back since we last looked: a record
        adopted inside it (and the pages it freed) is gone. Cheap when nothing happened."""
        eng = self.reg.eng
        if self.epoch != eng.rollbacks:
            self.epoch = eng.rollbacks
            self.revalidate()

    def _closed_read(self) -> bytes:
        """xRead after the archive closed (vfs_read)."""
        if _quiet():
            return b""           # closing after the archive: nothing left to read
        raise ClosedError(f"{self.reg.cart.path}: archive is closed")

    @staticmethod
    def _closed_write() -> bool:
        """xWrite after the archive closed: ignore it (True) if the connection is closing."""
        return _quiet()          # a checkpoint at close: the archive already decided

    def _base_chunk(self, i: int) -> bytes:
        """Chunk i of the committed content (shorter than a full chunk at its end)."""
        rec = self.rec
        assert rec is not None          # only chunks below nbase are asked for: there is a record
        if rec.storage == STORE_INLINE:
            return rec.payload
        if rec.storage == STORE_PACKED:
            eng = self.reg.eng
            return eng.content.load_packed(rec, eng.where(self.key))
        ck = self.ckeys.get(i)
        eng = self.reg.eng
        if ck is None:
            assert self.cmap is not None    # chunked storage has its chunk map
            start = int(self.cmap[i, 0])
            csum = int(self.cmap[i, 1])
            ck = (start << 64) | csum
            self.ckeys[i] = ck
        data = eng.pager.cache.get(ck)
        if data is None:
            data = eng.content.load_chunk(ck >> 64, ck & 0xFFFFFFFFFFFFFFFF,
                                           chunk_len(self.base_size, i), i, eng.where(self.key))
        return data

    def _chunk(self, i: int):
        """Current bytes of chunk i as stored (may be shorter than its length: zeros follow)."""
        buf = self.dirty.get(i)
        if buf is not None:
            return buf
        pl = self.placed.get(i)
        if pl is not None:
            start, _csum, n = pl
            buf = bytearray(self.reg.eng.pager.read_run(start, n))
            del buf[chunk_len(self.size, i):]
            return buf
        if i < self.nbase:
            return self._base_chunk(i)
        return b""

    # -- I/O -------------------------------------------------------------------------------
    # read(amount, offset) and write(data, offset) are Overlay's (cartridge/_core/pageio.pyx):
    # memcpy between SQLite's pages and the overlay, calling back into _chunk/_base_chunk only
    # for a chunk not in memory yet and into _spill when too many are dirty.

    def truncate(self, size: int) -> None:
        if self.poisoned:
            return                  # a stale connection closing (its checkpoint): never kept
        if not self.exists:
            self.exists = True
            self.size = 0
            self.nbase = 0
        if size < self.size:
            last = (size - 1) >> _CHUNK_SHIFT if size else -1
            for i in [i for i in self.dirty if i > last]:
                del self.dirty[i]
            for i in [i for i in self.placed if i > last]:
                del self.placed[i]
            if size & _CHUNK_MASK and last >= 0:
                buf = self.dirty.get(last)
                if buf is None:
                    buf = bytearray(self._chunk(last))
                    self.placed.pop(last, None)
                    self.dirty[last] = buf
                del buf[size - (last << _CHUNK_SHIFT):]
            self.nbase = min(self.nbase, last + 1)
        self.size = size
        self.changed = True

    def changed_bytes(self) -> int:
        """Bytes of the chunks modified since the last publish (the operation hook's size)."""
        return sum(map(len, self.dirty.values())) + sum(n for _, _, n in self.placed.values()) * PAGE_SIZE

    def delete(self) -> None:
        self._drop_overlay()
        self.exists = False
        self.size = 0
        self.nbase = 0
        self.changed = self.rec is not None

    def _spill(self) -> None:
        """Move full modified chunks to fresh pages no committed state references."""
        eng = self.reg.eng
        full = sorted(i for i, b in self.dirty.items()
                      if len(b) == CHUNK_SIZE and (i + 1) << _CHUNK_SHIFT <= self.size)
        full = full[:len(full) - SPILL_CHUNKS // 4] if len(full) > SPILL_CHUNKS // 4 else full
        if not full:
            return
        data = b"".join(self.dirty[i] for i in full)
        cmap = eng.content.write_chunks(data, owner=self)
        for n, i in enumerate(full):
            self.placed[i] = (int(cmap[n, 0]), int(cmap[n, 1]), CHUNK_SIZE // PAGE_SIZE)
            del self.dirty[i]

    # -- publishing ------------------------------------------------------------------------
    def stage(self, eng) -> tuple:
        """Write this member's new state into the open archive transaction. Returns what
        `adopt` needs once the transaction commits."""
        key = self.key
        old = self.rec
        if not self.exists:
            if old is not None:
                eng.delete(key)
                eng.content.free(old, eng.where(key))
            eng.allocator.abandon(self)
            return (None, None, [])
        size = self.size
        max_inline = max_payload(len(key))
        replaced: list[int] = []
        cmap = None
        fresh: list = []
        if size <= max_inline:
            data = bytes(self.read(size, 0)) if size else b""
            eng.allocator.abandon(self)
            if old is not None and old.storage in (STORE_CHUNKS, STORE_XMAP):
                replaced = list(range(self.base_chunks()))
        else:
            n_chunks = -(-size // CHUNK_SIZE)
            cmap = np.empty((n_chunks, 2), dtype=np.uint64)
            chunked_base = old is not None and old.storage in (STORE_CHUNKS, STORE_XMAP)
            m = min(self.nbase, n_chunks) if chunked_base else 0
            if m:
                assert self.cmap is not None    # a chunked base has its chunk map
                cmap[:m] = self.cmap[:m]
            chosen = set(self.dirty)
            keep_runs = []
            for i, (start, csum, n) in self.placed.items():
                cmap[i] = (start, csum)
                keep_runs.append((start, n))
            chosen.update(i for i in range(m, n_chunks) if i not in self.placed)
            if m and chunk_len(self.base_size, m - 1) != chunk_len(size, m - 1) \
                    and m - 1 not in self.placed:
                chosen.add(m - 1)          # the base's short last chunk now has another length
            todo = sorted(chosen)
            if todo:
                parts = []
                for i in todo:
                    want = chunk_len(size, i)
                    data = self._chunk(i)
                    have = len(data)
                    if have < want:
                        data = bytes(data) + bytes(want - have)
                    elif have > want:
                        data = bytes(memoryview(data)[:want])
                    elif type(data) is not bytes:
                        data = bytes(data)      # immutable: it goes to the page cache as is
                    parts.append(data)
                if len(todo) <= FEW_CHUNKS:
                    # a small commit (an autocommit INSERT): each chunk on a run of its own, no
                    # joined copy, no numpy (what ContentStore.store does for one chunk)
                    alloc_run, stage = eng.allocator.alloc_run, eng.pager.stage
                    for i, data in zip(todo, parts):
                        start = alloc_run(-(-len(data) // PAGE_SIZE))
                        csum = xxh3_64(data)
                        stage(start, data)
                        cmap[i, 0] = start
                        cmap[i, 1] = csum
                        fresh.append(((start << 64) | csum, data))
                else:
                    placed = eng.content.write_chunks(b"".join(parts))
                    cmap[todo] = placed
                    fresh = [(int(placed[n, 0]) << 64 | int(placed[n, 1]), parts[n])
                             for n in range(min(len(todo), FEW_CHUNKS))]
            eng.allocator.attach(self, keep_runs)
            if chunked_base:
                nb = self.base_chunks()
                replaced = [i for i in todo if i < nb] + [i for i in self.placed if i < nb] + \
                    list(range(max(m, min(n_chunks, nb)), nb)) + list(range(n_chunks, nb))
                replaced = sorted(set(i for i in replaced if i >= m or i in self.placed or
                                      i in self.dirty or i == m - 1))
        rec = publish_file(eng, key, old, size, data=data if cmap is None else None, cmap=cmap,
                           free_old=lambda old, _storage: self._free_old(eng, old, replaced))
        return (rec, cmap, fresh)

    def base_chunks(self) -> int:
        return 0 if self.cmap is None else len(self.cmap)

    def _free_old(self, eng, old: Record, replaced: list[int]) -> None:
        """Give back the old version's chunks that the new one no longer uses."""
        if old.storage == STORE_PACKED:         # its bytes become dead in its pack
            eng.content.free(old, eng.where(self.key))
            return
        if old.storage not in (STORE_CHUNKS, STORE_XMAP):
            return
        free = eng.allocator.free
        uncache = eng.pager.cache.pop
        cm = self.cmap
        assert cm is not None           # the old version was chunked: its map is loaded
        for i in replaced:
            start = int(cm[i, 0])
            free(start, -(-chunk_len(old.size, i) // PAGE_SIZE))
            # out of the page cache now rather than when it ages out: the next commit's chunk
            # reuses its memory (an autocommit INSERT replaces a 64 KiB chunk every time)
            uncache((start << 64) | int(cm[i, 1]))
        if old.storage == STORE_XMAP:
            for pno in eng.content.xmap_pages(old):
                free(pno, 1)
            eng.pager.cache.pop(-XMAP_REF.unpack(old.payload)[0])

    def adopt(self, staged: tuple) -> None:
        """The archive committed what stage() wrote: it is our new base."""
        rec, cmap, fresh = staged
        cache = self.reg.eng.pager.cache
        for ck, data in fresh:            # what the next transaction most likely reads again
            cache.put(ck, data, len(data))
        self.dirty = {}
        self.placed = {}
        self.rec = rec
        self.exists = rec is not None
        self.size = self.base_size = rec.size if rec is not None else 0
        self.ckeys = {}
        self.cmap = cmap
        if rec is None or rec.storage == STORE_EMPTY:
            self.nbase = 0
        elif rec.storage in (STORE_INLINE, STORE_PACKED):
            self.nbase = 1
        else:
            self.nbase = len(cmap)
        self.changed = False
        self.epoch = self.reg.eng.rollbacks


# -- per-handle registry ---------------------------------------------------------------------
_registries: weakref.WeakSet = weakref.WeakSet()
_registries_lock = threading.Lock()


class Registry:
    """SQLite state of one Cartridge handle: its members and its private VFS."""

    def __init__(self, cart):
        self.cart = cart
        self.lock = H.lock(cart)
        self.eng = H.engine(cart)
        self.writer = H.writer_check(cart)
        self.ready = H.ready_check(cart)
        self.members: dict[bytes, Member] = {}
        self.reloads = 0            # reloads of all its members (see MemberFile.stale)
        # principal handle -> its VFS over these members (vfs.principal_vfs)
        self.principal_vfs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.ident = self.eng.identity()
        self.own_vfs = None         # the handle's private VFS (vfs.handle_vfs)
        self.owned = False          # opened by the global VFS for a URI: closed with its last file
        self.files = 0

    def member(self, key: bytes) -> Member:
        m = self.members.get(key)
        if m is None:
            m = Member(self, key)
            self.members[key] = m
        return m

    def forget(self, m: Member) -> None:
        if m.opens <= 0 and not m.changed and self.members.get(m.key) is m:
            del self.members[m.key]

    def group(self, key: bytes) -> list[Member]:
        out = []
        for k in (key, key + b"-journal", key + b"-wal"):
            m = self.members.get(k)
            if m is not None and m.changed:
                out.append(m)
        return out

    def publish(self, members: list[Member], principal: str | None = None,
                check: Callable[[str, int], None] | None = None) -> None:
        """One archive commit (or a step of the open archive transaction) for `members`,
        reported to the operation hook as one "sqlite_commit" event (cart:PutObject on their
        database; size: the bytes of the modified chunks; files: each member's new size and
        checksum) by `principal`. `check(member path, new size)` (a principal's VFS: its rights
        again) runs first, as part of that event; refused, the members' changes are dropped."""
        members = [m for m in members if m.changed]
        if not members:
            return
        if not H.hooks:
            self._publish(members, check)
            return
        ev = H.begin_op(self.cart, principal, "sqlite_commit", A.PUT_OBJECT,
                        P.database_of(members[0].path), sum(m.changed_bytes() for m in members))
        try:
            self._publish(members, check)
        except BaseException as e:
            H.end_op(ev, e)
            raise
        H.end_op(ev, None)

    def _publish(self, members: list[Member], check: Callable[[str, int], None] | None) -> None:
        cart = self.cart
        with self.lock:
            if check is not None:
                try:
                    for m in members:
                        check(m.path, m.size)
                except BaseException:
                    for m in members:        # refused: the changes are dropped, not kept
                        m.load(m.rec)
                    raise
            eng = H.writer(cart)
            staged = []
            try:
                with H.change(cart):
                    for m in members:
                        staged.append(m.stage(eng))
                    if H.hooks:
                        H.note(cart, files=tuple(
                            H.FileWrite(m.path, 0, None) if s[0] is None else
                            H.FileWrite(m.path, s[0].size, f"{s[0].checksum:016x}")
                            for m, s in zip(members, staged)))
            except BaseException:
                # the archive is back at its last commit; so are these members
                for m in members:
                    m.placed = {}
                    m.load(eng.get(m.key) if not cart.closed and eng.failed is None else m.rec)
                raise
            for m, s in zip(members, staged):
                m.adopt(s)
                self.forget(m)

    def held(self, path: str, tree: bool) -> None:
        """Refuse to change a member SQLite holds open (delete, rename, replace)."""
        key = P.to_key(path)
        prefix = key if key.endswith(b"/") else key + b"/"      # the root's key is "/"
        for k, m in self.members.items():
            if m.opens > 0 and (k == key or (tree and k.startswith(prefix))):
                raise LockedError(f"{m.path} is open as a SQLite database or journal "
                                  f"({m.opens} open file{'s' if m.opens != 1 else ''}); "
                                  f"close its connections first")


def refuse_held(cart, path: str, tree: bool) -> None:
    """Registry.held for every handle of this archive file in the process: a read-only
    handle's connection blocks a writable handle's delete/rename too."""
    if not _registries:
        return
    ident = H.engine(cart).identity()
    for reg in list(_registries):
        if reg.ident == ident and not reg.cart.closed:
            reg.held(path, tree)


def registry(cart) -> Registry:
    """The SQLite state of handle `cart` (made on first use)."""
    return H.feature(cart, "sqlite", _new_registry)


def _new_registry(cart) -> Registry:
    reg = Registry(cart)
    with _registries_lock:
        _registries.add(reg)
    return reg


H.change_guards.append(refuse_held)   # delete/rename of a member SQLite holds open: LockedError
