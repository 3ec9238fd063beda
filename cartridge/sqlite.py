"""SQLite databases inside the archive: an apsw VFS whose files are archive members.

    conn = cart.sqlite("/app.db")                       # an apsw.Connection on member /app.db
    apsw.Connection("file:/app.db?vfs=cartridge&cartridge=/abs/data.cart",
                    flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI)

How it works (docs/SQLITE.md has the whole story):

- Every member SQLite opens (the database, its rollback journal, its WAL) is a `Member`: the
  committed record of the archive plus an in-memory overlay of modified 64 KiB chunks (the
  archive's checksum unit; SQLite pages, 512 B..64 KiB, never straddle one). Reads come from the
  overlay or from the archive's page cache; writes only touch the overlay. A large transaction
  moves full overlay chunks to fresh archive pages that no committed state references.
- The overlay is published as ONE atomic archive commit when SQLite makes the database durable:
  on SQLITE_FCNTL_SYNC (sent at every commit, also with synchronous=OFF), xSync, commit phase two,
  the end of a WAL checkpoint, the release of the write lock and close. The database and its
  companions (`-journal`, `-wal`) are published together. Inside `with cart.transaction():` the
  publish joins the archive transaction instead.
- Locks: SHARED/RESERVED/PENDING/EXCLUSIVE between connections of this process, per
  (archive file, member); busy raises SQLITE_BUSY, so busy timeouts work. Across processes the
  archive's single-writer lock applies and readers see committed snapshots.
- The default journal mode is MEMORY (set on each new connection): the archive commit is the
  atomic step, so a journal on "disk" buys nothing. WAL needs locking_mode=EXCLUSIVE (no shared
  memory in a Python VFS); asking for WAL sets it first.
"""
from __future__ import annotations

import os
import re
import sys
import threading
import time
import weakref
from typing import Any

import apsw
import numpy as np

from . import _handle as H
from . import locking
from . import namespace as N
from . import paths as P
from ._core.checksum import xxh3_64
from ._core.pageio import Overlay, StatementGuard
from .content import chunk_len, publish_file
from .errors import (
    AccessDeniedError,
    CartridgeError,
    ClosedError,
    LockedError,
    NotFoundError,
    PathIsDirectoryError,
    ReadOnlyError,
)
from .format import (
    CHUNK_SIZE,
    KIND_FILE,
    PAGE_SIZE,
    STORE_CHUNKS,
    STORE_EMPTY,
    STORE_INLINE,
    STORE_XMAP,
)
from .records import Record, max_payload

VFS_NAME = "cartridge"
DEFAULT_JOURNAL_MODE = "MEMORY"
SPILL_CHUNKS = 256          # modified chunks (16 MiB) kept in memory before full ones go to pages
COMPANIONS = P.SQLITE_COMPANIONS
FEW_CHUNKS = 4              # a publish with at most this many changed chunks places them one by one

_CHUNK_SHIFT = CHUNK_SIZE.bit_length() - 1
_CHUNK_MASK = CHUNK_SIZE - 1
assert 1 << _CHUNK_SHIFT == CHUNK_SIZE

# open flags (sqlite3.h)
_MAIN_DB = apsw.SQLITE_OPEN_MAIN_DB
_TEMP = (apsw.SQLITE_OPEN_TEMP_DB | apsw.SQLITE_OPEN_TEMP_JOURNAL | apsw.SQLITE_OPEN_SUBJOURNAL
         | apsw.SQLITE_OPEN_TRANSIENT_DB)
# file controls (sqlite3.h)
FCNTL_SYNC = 21
FCNTL_COMMIT_PHASETWO = 22
FCNTL_CKPT_DONE = 37
# not SQLITE_IOCAP_SEQUENTIAL: members are published at their own syncs, so SQLite must sync
# (publish) a super-journal before the databases' journals name it
_IOCAP = apsw.SQLITE_IOCAP_POWERSAFE_OVERWRITE | apsw.SQLITE_IOCAP_SAFE_APPEND
_NONE, _SHARED, _RESERVED, _PENDING, _EXCLUSIVE = (
    apsw.SQLITE_LOCK_NONE, apsw.SQLITE_LOCK_SHARED, apsw.SQLITE_LOCK_RESERVED,
    apsw.SQLITE_LOCK_PENDING, apsw.SQLITE_LOCK_EXCLUSIVE)


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
        self._load(reg.eng.get(key))

    # -- base ------------------------------------------------------------------------------
    def _load(self, rec: Record | None) -> None:
        """Adopt `rec` as the committed base and forget every unpublished change."""
        if rec is not None and rec.kind != KIND_FILE:
            raise PathIsDirectoryError(f"{self.path} is a directory")
        self._drop_overlay()
        self.rec = rec
        self.exists = rec is not None
        self.size = self.base_size = rec.size if rec is not None else 0
        self.ckeys = {}
        self.cmap = None
        if rec is None or rec.storage in (STORE_EMPTY, STORE_INLINE):
            self.nbase = 1 if rec is not None and rec.storage == STORE_INLINE else 0
        else:
            eng = self.reg.eng
            self.cmap = eng.content.chunk_map(rec, eng._where(self.key))
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
        self._load(rec)

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
        if rec.storage == STORE_INLINE:
            return rec.payload
        ck = self.ckeys.get(i)
        eng = self.reg.eng
        if ck is None:
            start = int(self.cmap[i, 0])
            csum = int(self.cmap[i, 1])
            ck = (start << 64) | csum
            self.ckeys[i] = ck
        data = eng.pager.cache.get(ck)
        if data is None:
            data = eng.content._load_chunk(ck >> 64, ck & 0xFFFFFFFFFFFFFFFF,
                                           chunk_len(self.base_size, i), i, eng._where(self.key))
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
                eng.content.free(old, eng._where(key))
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
                cmap[:m] = self.cmap[:m]
            todo = set(self.dirty)
            keep_runs = []
            for i, (start, csum, n) in self.placed.items():
                cmap[i] = (start, csum)
                keep_runs.append((start, n))
            todo.update(i for i in range(m, n_chunks) if i not in self.placed)
            if m and chunk_len(self.base_size, m - 1) != chunk_len(size, m - 1) \
                    and m - 1 not in self.placed:
                todo.add(m - 1)          # the base's short last chunk now has another length
            todo = sorted(todo)
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
        if old.storage not in (STORE_CHUNKS, STORE_XMAP):
            return
        free = eng.allocator.free
        uncache = eng.pager.cache.pop
        cm = self.cmap
        for i in replaced:
            start = int(cm[i, 0])
            free(start, -(-chunk_len(old.size, i) // PAGE_SIZE))
            # out of the page cache now rather than when it ages out: the next commit's chunk
            # reuses its memory (an autocommit INSERT replaces a 64 KiB chunk every time)
            uncache((start << 64) | int(cm[i, 1]))
        if old.storage == STORE_XMAP:
            from .format import XMAP_REF
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
        elif rec.storage == STORE_INLINE:
            self.nbase = 1
        else:
            self.nbase = len(cmap)
        self.changed = False
        self.epoch = self.reg.eng.rollbacks


# -- per-handle registry ---------------------------------------------------------------------
_registries: weakref.WeakSet = weakref.WeakSet()
_registries_lock = threading.Lock()
_vfs_counter = 0


class Registry:
    """SQLite state of one Cartridge handle: its members and its private VFS."""

    def __init__(self, cart):
        self.cart = cart
        self.lock = H.lock(cart)
        self.eng = H.engine(cart)
        self.writer = H.writer_check(cart)
        self.members: dict[bytes, Member] = {}
        self.reloads = 0            # reloads of all its members (see MemberFile.stale)
        self._principal_vfs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        st = os.fstat(self.eng.fd)
        self.ident = (st.st_dev, st.st_ino)
        self._vfs: HandleVFS | None = None
        self.owned = False          # opened by the global VFS for a URI: closed with its last file
        self.files = 0

    def vfs(self) -> HandleVFS:
        if self._vfs is None:
            self._vfs = self.new_vfs(self.cart)
        return self._vfs

    def principal_vfs(self, principal) -> HandleVFS:
        """The private VFS of a principal handle over this handle's members: every member it
        opens is checked by principal.sqlite_authorize, every publish by
        principal.sqlite_check_publish (made once per principal handle)."""
        vfs = self._principal_vfs.get(principal)
        if vfs is None:
            vfs = self.new_vfs(principal, principal.sqlite_authorize,
                               principal.sqlite_check_publish, principal.principal)
            self._principal_vfs[principal] = vfs
        return vfs

    def new_vfs(self, owner, authorize=None, check_publish=None,
                principal: str | None = None) -> HandleVFS:
        """A new private VFS over this handle's members, registered while `owner` lives."""
        global _vfs_counter
        with _registries_lock:
            _vfs_counter += 1
            name = f"{VFS_NAME}-{_vfs_counter}"
        vfs = HandleVFS(name, self, authorize, check_publish)
        vfs.principal = principal
        # unregistered once the owner is gone; open files keep the handle (and so the VFS)
        # alive; never at interpreter exit, when connections may still close through it
        weakref.finalize(owner, _unregister, vfs).atexit = False
        return vfs

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

    def publish(self, members: list[Member], principal: str | None = None) -> None:
        """One archive commit (or a step of the open archive transaction) for `members`,
        reported to the operation hook as one "sqlite_commit" per member (by `principal`)."""
        members = [m for m in members if m.changed]
        if not members:
            return
        cart = self.cart
        reported = [(m.path, m.size if m.exists else 0) for m in members] if H.hooks else None
        with self.lock:
            try:
                eng = H.writer(cart)
                staged = []
                try:
                    with H.change(cart):
                        for m in members:
                            staged.append(m.stage(eng))
                except BaseException:
                    # the archive is back at its last commit; so are these members
                    for m in members:
                        m.placed = {}
                        m._load(eng.get(m.key) if not cart.closed and eng.failed is None else m.rec)
                    raise
            except BaseException as e:
                if reported:
                    _report(principal, reported, e)
                raise
            for m, s in zip(members, staged):
                m.adopt(s)
                self.forget(m)
        if reported:
            _report(principal, reported, None)

    def held(self, path: str, tree: bool) -> None:
        """Refuse to change a member SQLite holds open (delete, rename, replace)."""
        key = P.to_key(path)
        prefix = key if key.endswith(b"/") else key + b"/"      # the root's key is "/"
        for k, m in self.members.items():
            if m.opens > 0 and (k == key or (tree and k.startswith(prefix))):
                raise LockedError(f"{m.path} is open as a SQLite database or journal "
                                  f"({m.opens} open file{'s' if m.opens != 1 else ''}); "
                                  f"close its connections first")


def _report(principal: str | None, members: list[tuple[str, int]],
            exc: BaseException | None) -> None:
    """Tell the operation hook about the publish of `members` ((path, size) pairs)."""
    result = H.outcome(exc)
    for path, size in members:
        H.emit(principal, "sqlite_commit", path, result, size)


def refuse_held(cart, path: str, tree: bool) -> None:
    """Registry.held for every handle of this archive file in the process: a read-only
    handle's connection blocks a writable handle's delete/rename too."""
    if not _registries:
        return
    st = os.fstat(H.engine(cart).fd)
    ident = (st.st_dev, st.st_ino)
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


def _unregister(vfs: apsw.VFS) -> None:
    try:
        vfs.unregister()
    except Exception:
        pass


# -- locks -----------------------------------------------------------------------------------
class _LockState:
    __slots__ = ("shared", "reserved", "pending", "exclusive")

    def __init__(self):
        self.shared = 0
        self.reserved = None
        self.pending = None
        self.exclusive = None


_locks: dict[tuple, _LockState] = {}
_locks_mutex = threading.Lock()


_writer_present = locking.writer_present


def _quiet() -> bool:
    """Is SQLite closing a connection whose archive is already closed (conn.close() of ours,
    or interpreter exit)? Then there is nothing to publish and nothing to complain about."""
    return getattr(_tls, "closing", False) or sys.is_finalizing()


class Connection(apsw.Connection):
    """What cart.sqlite() returns: an apsw.Connection whose close() is quiet when the archive
    was closed first (the archive's close already decided what is committed)."""

    def close(self, force: bool = False) -> None:
        prev = getattr(_tls, "closing", False)
        _tls.closing = True
        try:
            super().close(force)
        finally:
            _tls.closing = prev


# -- files -----------------------------------------------------------------------------------
class MemberFile(apsw.VFSFile):
    """A file SQLite opened on an archive member."""

    check_publish = None      # set by a principal's VFS: re-checks its rights at each publish

    def __init__(self, reg: Registry, key: bytes, flags: list[int], companion_of: bytes | None,
                 principal: str | None = None):
        # no super().__init__(): nothing is inherited, every method is ours
        self.reg = reg
        self.cart = reg.cart
        self.lock = reg.lock
        self.eng = reg.eng
        self.principal = principal           # the principal handle whose VFS opened it
        self.key = key
        self.flags = flags[0]
        self.is_db = bool(flags[0] & _MAIN_DB)
        self.readonly = bool(flags[0] & apsw.SQLITE_OPEN_READONLY) or not reg.eng.writable
        self.level = _NONE
        self.lock_id = reg.ident + (key,)
        self.pinned: int | None = None
        self.seen = 0                        # _reloads() when SQLite last (re)read the database
        self.committed = True                # no write transaction left unpublished
        self.closed = False
        self.delete_on_close = bool(flags[0] & apsw.SQLITE_OPEN_DELETEONCLOSE)
        self.group_key = key if self.is_db else companion_of
        self.group_keys = (key, key + b"-journal", key + b"-wal")
        self.quiet_rollbacks = self.quiet_reloads = -1    # see stale()
        with self.lock:
            H.ready(self.cart)
            m = reg.member(key)
            m.revalidate()
            if not m.exists:
                transient = self.readonly and flags[0] & apsw.SQLITE_OPEN_WAL
                if not transient and (not flags[0] & apsw.SQLITE_OPEN_CREATE or self.readonly):
                    reg.forget(m)
                    raise apsw.CantOpenError(f"cartridge: no such member {m.path} in "
                                             f"{self.cart.path}")
                m.exists = True
                m.size = 0
                m.nbase = 0
                # a read-only reader of a WAL database without a WAL gets an empty one that
                # is never stored
                m.changed = not transient
            m.opens += 1
            reg.files += 1
            self.m = m
            self.xRead = m.vfs_read
            if not self.readonly:
                self.xWrite = m.vfs_write
            if self.is_db and m.changed:
                try:
                    reg.publish([m], principal)    # a new database is an (empty) file at once
                except BaseException:
                    m.opens -= 1
                    reg.files -= 1
                    reg.forget(m)
                    raise
        if self.is_db:
            _tls.last_db = self
        if self.readonly:
            flags[1] = (flags[0] & ~(apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)) | \
                apsw.SQLITE_OPEN_READONLY
        else:
            flags[1] = flags[0]

    # reads and writes -----------------------------------------------------------------------
    # (__init__ also binds xRead, and xWrite of a writable file, straight to the kernel's
    # vfs_read/vfs_write on the instance: apsw then calls into C with no Python frame)
    def xRead(self, amount: int, offset: int):
        return self.m.vfs_read(amount, offset)

    def xWrite(self, data, offset: int) -> None:
        if self.readonly:
            raise apsw.ReadOnlyError(f"cartridge: {self.m.path} is open read-only")
        self.m.vfs_write(data, offset)

    def xTruncate(self, newsize: int) -> None:
        with self.lock:
            if self.readonly:
                raise apsw.ReadOnlyError(f"cartridge: {self.m.path} is open read-only")
            if self.eng.closed and _quiet():
                return
            H.writer(self.cart)
            self.m.fresh()
            self.m.truncate(newsize)

    def xFileSize(self) -> int:
        with self.lock:
            if not self.eng.closed:
                self.m.fresh()
            return self.m.size if self.m.exists else 0

    def xSync(self, flags: int) -> None:
        self._publish()

    def _publish(self) -> None:
        reg = self.reg
        with self.lock:
            if self.readonly or (self.eng.closed and _quiet()):
                return
            members = self._group_members() if self.group_key is not None else [self.m]
            rollbacks = self.eng.rollbacks
            for m in members:
                if m.epoch != rollbacks:
                    m.fresh()
            if self.group_key is None:
                group = [self.m] if self.m.changed else []
            elif self.is_db:              # the same three files: what reg.group would give
                group = [m for m in members if m.changed]
            else:
                group = reg.group(self.group_key)
            if not group:
                return                    # (SQLite asks two or three times per commit)
            if any(m.poisoned for m in group):
                for m in group:
                    m._load(m.rec)
                return
            if group and self.check_publish is not None:
                try:
                    for m in group:        # a principal's rights are checked again, with sizes
                        self.check_publish(m.path, m.size)
                except BaseException as e:
                    if H.hooks:
                        _report(self.principal, [(m.path, m.size) for m in group], e)
                    for m in group:        # refused: the changes are dropped, not kept
                        m._load(m.rec)
                    raise
            if group:
                reg.publish(group, self.principal)

    def xFileControl(self, op: int, ptr: int) -> bool:
        if op == FCNTL_SYNC or op == FCNTL_COMMIT_PHASETWO or op == FCNTL_CKPT_DONE:
            if self.is_db:
                if op == FCNTL_COMMIT_PHASETWO:
                    self.committed = True
                self._publish()
            return False
        return False

    # locks ----------------------------------------------------------------------------------
    def xLock(self, level: int) -> None:
        if level <= self.level:
            return
        # lock order everywhere: the handle's lock, then the lock table's
        with self.lock, _locks_mutex:
            group = self._group_members()
            if not self.eng.closed:
                rollbacks = self.eng.rollbacks
                for m in group:
                    if m.epoch != rollbacks:
                        m.fresh()
            st = _locks.get(self.lock_id)
            if st is None:
                st = _locks[self.lock_id] = _LockState()
            if self.level == _NONE:
                if st.pending is not None or st.exclusive is not None:
                    raise apsw.BusyError("cartridge: database is locked")
                st.shared += 1
                self.level = _SHARED
                try:
                    if not (self.eng.closed and _quiet()):   # else: closing, nothing to read
                        self._begin_read(group)
                except BaseException:
                    st.shared -= 1
                    self.level = _NONE
                    raise
            if self.level < _RESERVED:
                self.committed = False           # a write transaction may begin
            if level == _RESERVED and self.level < _RESERVED:
                if st.reserved is not None or st.pending is not None or st.exclusive is not None:
                    raise apsw.BusyError("cartridge: database is locked")
                st.reserved = self
                self.level = _RESERVED
            elif level >= _PENDING and self.level < level:
                if st.pending is not None and st.pending is not self:
                    raise apsw.BusyError("cartridge: database is locked")
                if st.exclusive is not None and st.exclusive is not self:
                    raise apsw.BusyError("cartridge: database is locked")
                st.pending = self
                self.level = max(self.level, _PENDING)
                if level == _EXCLUSIVE:
                    if st.shared > 1:
                        raise apsw.BusyError("cartridge: database is locked")
                    st.exclusive = self
                    self.level = _EXCLUSIVE

    def _begin_read(self, group: list[Member] | None = None) -> None:
        """A read transaction starts: see the newest committed state (read-only handles move
        to it and pin it so that the writer does not reuse its pages meanwhile)."""
        cart = self.cart
        with self.lock:
            eng = H.ready(cart)
            if not eng.writable:
                self.pinned = eng.root.generation
                eng.pins[self.pinned] += 1
                eng.sync_pins()
            seen = 0
            for m in self._group_members() if group is None else group:
                m.revalidate()
                seen += m.reloads
            self.seen = seen

    def _reloads(self) -> int:
        """How often this database's files changed behind SQLite's back (see Member.fresh)."""
        return sum(m.reloads for m in self._group_members())

    def stale(self) -> bool:
        """Does SQLite, holding its lock across transactions (locking_mode=EXCLUSIVE), cache
        a state the archive rolled back?"""
        if self.eng.closed or self.level == _NONE:
            return False
        rollbacks = self.eng.rollbacks
        if self.quiet_rollbacks == rollbacks and self.quiet_reloads == self.reg.reloads:
            return False            # no rollback and no reload since the last look said no
        with self.lock:
            if self.eng.closed or self.level == _NONE:
                return False
            rollbacks = self.eng.rollbacks
            seen = 0
            for m in self._group_members():
                if m.epoch != rollbacks:
                    m.fresh()
                seen += m.reloads
            if seen != self.seen:
                return True
            self.quiet_rollbacks = rollbacks
            self.quiet_reloads = self.reg.reloads
            return False

    def _group_members(self) -> list[Member]:
        get = self.reg.members.get
        out = []
        for k in self.group_keys:
            m = get(k)
            if m is not None:
                out.append(m)
        return out

    def xUnlock(self, level: int) -> None:
        if level >= self.level:
            return
        try:
            if self.level >= _RESERVED and level <= _SHARED and not self.readonly \
                    and not self.cart.closed:
                self._end_write()
        finally:
            with self.lock, _locks_mutex:
                st = _locks.get(self.lock_id)
                if st is not None:
                    if level <= _SHARED:
                        if st.reserved is self:
                            st.reserved = None
                        if st.pending is self:
                            st.pending = None
                        if st.exclusive is self:
                            st.exclusive = None
                    if level == _NONE and self.level >= _SHARED:
                        st.shared -= 1
                        self._end_read()
                    if not st.shared and st.reserved is None and st.pending is None:
                        del _locks[self.lock_id]
                self.level = level

    def _end_write(self) -> None:
        """The write lock is released. A committed transaction (or a recovery, which rewrites
        the journal) is published; a rolled-back one is forgotten, so that even with
        journal_mode=OFF a ROLLBACK leaves the committed database (SQLite re-reads it)."""
        with self.lock:
            m = self.m
            companions = [c for c in self._group_members() if c is not m and c.changed]
            if self.committed or companions:
                self._publish()
            elif m.changed:
                m._load(m.rec)

    def _end_read(self) -> None:
        if self.pinned is None:
            return
        cart = self.cart
        with self.lock:
            eng = self.eng
            g = self.pinned
            self.pinned = None
            eng.pins[g] -= 1
            if eng.pins[g] <= 0:
                del eng.pins[g]
                if not cart.closed:
                    eng.sync_pins()

    def xCheckReservedLock(self) -> bool:
        with _locks_mutex:
            st = _locks.get(self.lock_id)
            if st is not None and (st.reserved is not None or st.pending is not None
                                   or st.exclusive is not None):
                return True
        if not self.eng.writable:
            # a writer in another process: its journal is not ours to roll back
            return _writer_present(self.eng.fd)
        return False

    def wal_header(self) -> bool:
        """Does the database header say WAL (file format versions 2)?"""
        with self.lock:
            head = bytes(self.m.read(20, 0))
        return len(head) == 20 and head[:16] == b"SQLite format 3\x00" and head[18] == 2

    def xSectorSize(self) -> int:
        return 4096

    def xDeviceCharacteristics(self) -> int:
        return _IOCAP

    def xClose(self) -> None:
        if self.closed:
            return
        self.closed = True
        reg = self.reg
        try:
            with self.lock:
                if not self.eng.closed and self.eng.failed is None:
                    if self.level > _NONE:
                        self.xUnlock(_NONE)
                    if self.delete_on_close and not self.readonly:
                        self.m.delete()
                    if not self.readonly and (self.m.changed or (self.is_db and
                                                                  reg.group(self.key))):
                        self._publish()
                elif self.level > _NONE:
                    self.xUnlock(_NONE)
        finally:
            self.m.opens -= 1
            reg.files -= 1
            if not self.eng.closed:
                reg.forget(self.m)
            else:
                reg.members.pop(self.key, None)
            if reg.owned and reg.files <= 0:
                _close_owned(reg)

    def __repr__(self) -> str:
        return f"<cartridge.sqlite.MemberFile {self.key!r} of {self.cart.path!r}>"


# -- VFSes -----------------------------------------------------------------------------------
def _database_of(member: str) -> str:
    """The database a journal/WAL member belongs to (by name), or the member itself."""
    for suffix in COMPANIONS:
        if member.endswith(suffix) and len(member) > len(suffix) + 1:
            return member[:-len(suffix)]
    return member


_keys: dict[str, bytes] = {}     # member path -> catalog key, for xAccess (asked at every lock)


def _access(reg: Registry, key: bytes, flags: int) -> bool:
    """xAccess once the name is resolved: the member as SQLite would see it now."""
    cart = reg.cart
    with H.lock(cart):
        eng = H.ready(cart)
        m = reg.members.get(key)
        if m is not None:
            m.revalidate()
            exists, size = m.exists, m.size
        else:
            rec = eng.get(key)
            exists = rec is not None and rec.kind == KIND_FILE
            size = rec.size if exists else 0
        if flags == apsw.SQLITE_ACCESS_EXISTS:
            return exists and size > 0           # as the unix VFS: an empty file is absent
        if flags == apsw.SQLITE_ACCESS_READWRITE:
            return exists and eng.writable
        return exists


class _BaseVFS(apsw.VFS):
    """What both VFS kinds share: temporary files go to the default VFS, member files to us."""

    # A principal handle's VFS checks every member SQLite opens (ATTACH included):
    # authorize(member path, wants write) -> write allowed; raises AccessDeniedError.
    # check_publish(member path, new size) runs again before each publish (raises to refuse).
    authorize = None
    check_publish = None
    principal: str | None = None     # the principal a principal's VFS acts for (operation hook)

    def resolve(self, name: str, uri: apsw.URIFilename | None) -> tuple[Registry, str]:
        raise NotImplementedError

    def xOpen(self, name, flags):
        if name is None or flags[0] & _TEMP:
            return apsw.VFSFile("", name, flags)       # private scratch: a native temp file
        uri = name if isinstance(name, apsw.URIFilename) else None
        fname = uri.filename() if uri is not None else name
        try:
            reg, member = self.resolve(fname, uri)
        except apsw.CantOpenError:
            if not _quiet():
                raise
            # a connection closing after its archive (e.g. rolling back into a journal):
            # an anonymous scratch file, so that nothing reaches the archive
            return apsw.VFSFile("", None, flags)
        key = P.to_key(member)
        companion_of = None
        if not flags[0] & _MAIN_DB:
            for suffix in COMPANIONS:
                if member.endswith(suffix):
                    companion_of = key[:-len(suffix)]
        if self.authorize is not None:
            # a principal's VFS: a journal/WAL name follows its database's rights however it
            # is opened (even as a main database); without write rights the file is opened
            # read-only (AccessDeniedError without read rights)
            target = _database_of(member)
            if not self.authorize(target, bool(flags[0] & apsw.SQLITE_OPEN_READWRITE)):
                flags[0] = (flags[0] & ~(apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)) \
                    | apsw.SQLITE_OPEN_READONLY
        f = MemberFile(reg, key, flags, companion_of, self.principal)
        f.check_publish = self.check_publish
        return f

    def xAccess(self, pathname: str, flags: int) -> bool:
        try:
            reg, member = self.resolve(pathname, None)
            if self.authorize is not None:
                self.authorize(_database_of(member), False)
        except (apsw.CantOpenError, CartridgeError):
            return False
        key = _keys.get(member)
        if key is None:
            key = P.to_key(member)
            if len(_keys) < 1024:
                _keys[member] = key
        return _access(reg, key, flags)

    def xDelete(self, filename: str, syncdir: bool) -> None:
        try:
            reg, member = self.resolve(filename, None)
        except apsw.CantOpenError:
            if _quiet():
                return            # closing after the archive: nothing of it is changed now
            raise
        if self.authorize is not None:
            base = _database_of(member)
            if not self.authorize(base, True):
                raise AccessDeniedError(f"no write access to {base}")
        cart = reg.cart
        with H.lock(cart):
            H.writer(cart)
            key = P.to_key(member)
            m = reg.member(key)
            m.revalidate()
            m.delete()
            companion_of = None
            for suffix in COMPANIONS:
                if member.endswith(suffix):
                    companion_of = key[:-len(suffix)]
            if companion_of is None or companion_of not in reg.members:
                reg.publish([m], self.principal)   # a file on its own (a super-journal): gone now
            reg.forget(m)

    def xFullPathname(self, name: str) -> str:
        return name

    def xSleep(self, microseconds: int) -> int:
        # the inherited one sleeps in C holding the GIL: a busy wait would starve the thread
        # that holds the lock (time.sleep releases it)
        time.sleep(microseconds / 1e6)
        return microseconds

    def xGetLastError(self):
        return 0, ""


class HandleVFS(_BaseVFS):
    """The private VFS of one archive handle: file names are member paths."""

    def __init__(self, name: str, reg: Registry, authorize=None, check_publish=None):
        super().__init__(name, "")
        self.name = name
        self._reg = weakref.ref(reg)
        self._names: dict[str, str] = {}      # file name -> member path (normalize_file)
        self._access_keys: dict[str, bytes] = {}  # file name -> catalog key (xAccess)
        self.authorize = authorize
        self.check_publish = check_publish

    def resolve(self, name, uri):
        reg = self._reg()
        if reg is None or reg.cart.closed:
            raise apsw.CantOpenError("cartridge: the archive handle is closed")
        member = self._names.get(name)
        if member is None:
            try:
                member = P.normalize_file(name)
            except CartridgeError as e:
                raise apsw.CantOpenError(f"cartridge: {e}") from e
            if len(self._names) < 256:        # SQLite asks about the same few names again and again
                self._names[name] = member
        return reg, member

    def xFullPathname(self, name: str) -> str:
        try:
            return P.normalize_file(name)
        except CartridgeError as e:
            raise apsw.CantOpenError(f"cartridge: {e}") from e

    def xAccess(self, pathname: str, flags: int) -> bool:
        # SQLite asks about "-journal" and "-wal" at every read transaction: a name seen before
        # skips resolution (a principal's VFS always checks its rights first)
        key = self._access_keys.get(pathname)
        if key is None or self.authorize is not None:
            found = super().xAccess(pathname, flags)
            member = self._names.get(pathname)
            if member is not None and len(self._access_keys) < 256:
                self._access_keys[pathname] = _keys.get(member) or P.to_key(member)
            return found
        reg = self._reg()
        if reg is None or reg.eng.closed:
            return False
        return _access(reg, key, flags)


_owned: dict[tuple, Registry] = {}          # archives the global VFS opened itself
_owned_lock = threading.RLock()
_uri_dbs: dict[str, set] = {}               # member path -> archive idents open by URI


def _find_handle(archive: str, want_write: bool):
    """An open Cartridge on `archive` in this process (a writable one if wanted), or None."""
    try:
        st = os.stat(archive)
    except OSError:
        return None
    best = None
    for cart in H.open_handles():
        eng = H.engine(cart)
        try:
            cst = os.fstat(eng.fd)
        except OSError:
            continue
        if (cst.st_dev, cst.st_ino) != (st.st_dev, st.st_ino):
            continue
        if eng.writable or not want_write:
            if best is None or eng.writable:
                best = cart
    return best


def _close_owned(reg: Registry) -> None:
    with _owned_lock:
        if reg.files > 0:
            return
        for k, r in list(_owned.items()):
            if r is reg:
                del _owned[k]
        for s in _uri_dbs.values():
            s.discard(reg.ident)
        try:
            reg.cart.close()
        except CartridgeError:
            pass


class GlobalVFS(_BaseVFS):
    """The registered "cartridge" VFS: names are `file:/member?cartridge=/abs/archive` URIs or
    `/abs/archive::/member` paths; journals and WALs follow their database."""

    def __init__(self):
        super().__init__(VFS_NAME, "")

    def xFullPathname(self, name: str) -> str:
        if "::" in name:
            arch, member = name.split("::", 1)
            try:
                return f"{os.path.abspath(arch)}::{P.normalize_file(member)}"
            except CartridgeError as e:
                raise apsw.CantOpenError(f"cartridge: {e}") from e
        return name

    def resolve(self, name, uri):
        archive = None
        member = name
        if uri is not None:
            archive = uri.uri_parameter("cartridge")
        if "::" in name:
            archive, member = name.split("::", 1)
        try:
            member = P.normalize_file(member)
        except CartridgeError as e:
            raise apsw.CantOpenError(f"cartridge: {e}") from e
        with _owned_lock:
            if archive is None:
                base = member
                for suffix in COMPANIONS:
                    if member.endswith(suffix):
                        base = member[:-len(suffix)]
                if "-mj" in member:
                    base = member[:member.rindex("-mj")]
                idents = _uri_dbs.get(base, set())
                if len(idents) != 1:
                    owned = {r.ident for r in _owned.values()} | set().union(*_uri_dbs.values()) \
                        if _uri_dbs else {r.ident for r in _owned.values()}
                    idents = owned if len(owned) == 1 else set()
                if len(idents) != 1:
                    raise apsw.CantOpenError(
                        f"cartridge: which archive holds {member}? name it: "
                        f"file:{member}?vfs=cartridge&cartridge=/abs/path/data.cart or "
                        f"/abs/path/data.cart::{member}")
                ident = next(iter(idents))
                reg = self._by_ident(ident)
                if reg is None:
                    raise apsw.CantOpenError(f"cartridge: the archive holding {member} is closed")
                return reg, member
            if not os.path.isabs(archive):
                raise apsw.CantOpenError(f"cartridge: the archive path must be absolute: "
                                         f"{archive!r}")
            reg = self._open(archive, uri)
            _uri_dbs.setdefault(member, set()).add(reg.ident)
            return reg, member

    @staticmethod
    def _by_ident(ident) -> Registry | None:
        for reg in list(_owned.values()) + list(_registries):
            if reg.ident == ident and not reg.cart.closed:
                return reg
        return None

    def _open(self, archive: str, uri) -> Registry:
        want_write = True
        if uri is not None:
            mode = uri.uri_parameter("mode")
            want_write = mode != "ro"
        cart = _find_handle(archive, want_write)
        if cart is not None:
            return registry(cart)
        try:
            st = os.stat(archive)
            reg = _owned.get((st.st_dev, st.st_ino))
            if reg is not None and not reg.cart.closed:
                return reg
        except OSError:
            pass
        try:
            cart = H.open_archive(archive, "a" if want_write else "r")
        except CartridgeError as e:
            raise apsw.CantOpenError(f"cartridge: {archive}: {e}") from e
        reg = registry(cart)
        reg.owned = True
        _owned[reg.ident] = reg
        return reg


_global_vfs: GlobalVFS | None = None


def register() -> None:
    """Register the "cartridge" VFS (idempotent; importing cartridge.sqlite does it)."""
    global _global_vfs
    if _global_vfs is None:
        _global_vfs = GlobalVFS()
        apsw.connection_hooks.append(_on_connection)


# -- connections -----------------------------------------------------------------------------
# PRAGMA [schema.]journal_mode = wal, journal_mode(wal), "journal_mode"('wal') (apsw's
# Connection.pragma), with the names quoted or not
_WAL_RE = re.compile(r"\bpragma\s+(?:([\"`\[]?\w+[\"`\]]?)\s*\.\s*)?[\"`\[]?journal_mode[\"`\]]?"
                     r"\s*(?:=|\()\s*['\"`]?wal\b", re.IGNORECASE)
_JM_SET_RE = re.compile(r"journal_mode[\"`\]]?\s*(?:=|\()", re.IGNORECASE)
_tls = threading.local()


class _Guard(StatementGuard):
    """exec_trace of our connections. It runs before every statement (executemany rows too),
    so its common case is StatementGuard's (Cython); slow() does the work: set the default
    journal mode still pending, drop a stale page cache, and for a request for WAL first set
    locking_mode=EXCLUSIVE."""

    def __init__(self, f: MemberFile | None):
        self.bind(f)                # the connection's main database file
        self.pending = False        # the default journal mode is still to be set

    def slow(self, cursor, sql: str, bindings) -> bool:
        if self.pending:
            conn = cursor if isinstance(cursor, apsw.Connection) else cursor.connection
            if _JM_SET_RE.search(sql):
                self.pending = False             # the application chooses its journal mode
            else:
                _default_journal_mode(conn, self)
        f = self.f
        if f is not None and not f.closed:
            cart = f.cart
            # the counters before the check: a change after it shows at the next statement
            before = None if H.is_closed(cart) else (H.engine(cart).rollbacks, f.reg.reloads)
            if f.m.poisoned or f.stale():
                _reset_cache(cursor if isinstance(cursor, apsw.Connection) else cursor.connection,
                             f)
            elif before is not None:
                self.quiet(*before)
        if "wal" in sql.lower():
            conn = cursor if isinstance(cursor, apsw.Connection) else cursor.connection
            for mt in _WAL_RE.finditer(sql):
                schema = f"{mt.group(1)}." if mt.group(1) else ""
                conn.execute(f"PRAGMA {schema}locking_mode=EXCLUSIVE").fetchall()
        return True


_guards: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # connection -> its _Guard


def _wal_guard(cursor, sql: str, bindings) -> bool:
    """The exec_trace of our connections as a function (each connection gets its _Guard)."""
    conn = cursor if isinstance(cursor, apsw.Connection) else cursor.connection
    g = _guards.get(conn)
    return (g if g is not None else _Guard(None)).slow(cursor, sql, bindings)


def _reset_cache(conn: apsw.Connection, f: MemberFile) -> None:
    """An archive transaction that held this connection's commit rolled back while SQLite kept
    its lock (exclusive locking mode): SQLite's page cache is stale. Drop it."""
    wal = f.reg.members.get(f.key + b"-wal")
    if wal is not None and wal.opens > 0 and f.wal_header():
        # SQLite keeps the WAL index of an exclusive-mode connection in its heap, where no
        # VFS can reach it: this connection cannot be brought back. It refuses to write
        # (nothing it holds is ever published) and every statement says so.
        for m in f._group_members():
            m.poisoned = True
            m._load(m.rec)
        raise CartridgeError(
            f"{f.m.path}: an archive transaction holding this WAL connection's commit was "
            f"rolled back; close the connection and open a new one (the database is intact)")
    conn.release_memory()          # the pages SQLite cached: it re-reads them from the archive
    f.seen = f._reloads()


def _on_connection(conn: apsw.Connection) -> None:
    """apsw.connection_hooks: set up every connection on the cartridge VFS: WAL guard, exclusive
    locking for a database in WAL mode, and the default journal mode."""
    f = getattr(_tls, "last_db", None)     # the database file this open just made, if ours
    _tls.last_db = None
    if f is None:
        return
    # last_db may be left over from an ATTACH on one of ours: is this connection's main
    # database that file? (open_vfs is the default VFS for a URI naming vfs=cartridge)
    vfs = getattr(conn, "open_vfs", None) or ""
    name = conn.filename or ""
    if not (vfs == VFS_NAME or vfs.startswith(VFS_NAME + "-")) and \
            not (name == f.m.path or name.endswith("::" + f.m.path)):
        return
    guard = _Guard(f)
    _guards[conn] = guard
    conn.exec_trace = guard
    if f is not None and f.wal_header():
        conn.execute("PRAGMA locking_mode=EXCLUSIVE").fetchall()
        return
    if not conn.readonly("main"):
        _default_journal_mode(conn, guard)


def _default_journal_mode(conn: apsw.Connection, guard: _Guard) -> None:
    """Set the default journal mode now if the database can be read without waiting (a new
    connection has no busy timeout); otherwise before the connection's next statement, which
    waits as its busy timeout says (so cart.sqlite() never blocks)."""
    guard.pending = False
    try:
        conn.execute(f"PRAGMA journal_mode={DEFAULT_JOURNAL_MODE}").fetchall()
    except apsw.BusyError:
        guard.pending = True              # another connection holds it: try again later
    except apsw.NotADBError:
        pass              # not a database: the first statement says so, as natively


def connect(cart, path: str, readonly: bool = False, *, as_principal=None,
            **apsw_kwargs: Any) -> apsw.Connection:
    """cart.sqlite(): an apsw.Connection on member `path` of `cart`; with as_principal (a
    PrincipalCartridge), through that principal's own VFS, which checks every member it opens
    and every publish."""
    for bad in ("vfs", "flags"):
        if bad in apsw_kwargs:
            raise TypeError(f"cart.sqlite() chooses {bad}= itself")
    register()
    with H.lock(cart):
        eng = H.ready(cart)
        p = P.normalize_file(path)
        key = P.to_key(p)
        rec = eng.get(key)
        readonly = bool(readonly) or not eng.writable
        if rec is None:
            kind, _ = N.kind(eng, p)
            if kind == "dir":
                raise PathIsDirectoryError(f"{p} is a directory")
            if readonly:
                raise NotFoundError(f"no such database: {p}")
            H.writer(cart)
            N.check_parents(eng, p)
        elif rec.kind != KIND_FILE:
            raise PathIsDirectoryError(f"{p} is a directory")
        reg = registry(cart)
        vfs = reg.vfs() if as_principal is None else reg.principal_vfs(as_principal)
    # A principal's connection never interprets URI file names: a URI could name another VFS
    # (ATTACH 'file:x?vfs=...'), which would step around the principal's checks.
    flags = (0 if as_principal is not None else apsw.SQLITE_OPEN_URI) | (
        apsw.SQLITE_OPEN_READONLY if readonly else
        apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
    return Connection(p, flags=flags, vfs=vfs.name, **apsw_kwargs)


def export(cart, path: str, dest: str | os.PathLike) -> None:
    """cart.sqlite_export(): checkpoint a WAL, then copy the committed database to `dest`
    (written beside it and renamed into place, so `dest` is never half a database)."""
    register()
    dest = os.fspath(dest)
    with H.lock(cart):
        eng = H.ready(cart)
        p = P.normalize_file(path)
        N.file_record(eng, p)                     # NotFoundError / PathIsDirectoryError
        wal = eng.get(P.to_key(p + "-wal"))
        has_wal = wal is not None and wal.kind == KIND_FILE and wal.size > 0
        journal = eng.get(P.to_key(p + "-journal"))
        has_journal = journal is not None and journal.kind == KIND_FILE and journal.size > 0
        writable = eng.writable
    if has_journal:
        # maybe a hot journal (a crash mid-transaction): the bytes of the database alone are
        # not the committed database. Any read through SQLite rolls it back first.
        conn = connect(cart, p, readonly=not writable)
        try:
            conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()
        except apsw.ReadOnlyError:
            raise ReadOnlyError(f"{p} has a hot journal ({p}-journal) that only a writable "
                                f"handle can roll back; export through one") from None
        except apsw.BusyError:
            raise LockedError(f"{p} is in use by another connection; close it to export") \
                from None
        finally:
            conn.close()
    if has_wal:
        if eng.writable:
            conn = connect(cart, p)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except apsw.BusyError:
                raise LockedError(f"{p} is in use by another connection; close it to export") \
                    from None
            finally:
                conn.close()
        else:                  # cannot checkpoint through a read-only handle: copy via SQLite
            src = connect(cart, p, readonly=True)
            tmp = f"{dest}.cartridge-export"
            if os.path.exists(tmp):
                os.remove(tmp)
            try:
                out = apsw.Connection(tmp)
                try:
                    with out.backup("main", src, "main") as b:
                        b.step(-1)
                    out.execute("PRAGMA journal_mode=DELETE").fetchall()
                finally:
                    out.close()
                os.replace(tmp, dest)
            except BaseException:
                _remove_quietly(tmp)
                _remove_quietly(tmp + "-journal")
                raise
            finally:
                src.close()
            return
    tmp = f"{dest}.cartridge-export"
    try:
        with cart.open(p, "rb") as f, open(tmp, "wb") as out:
            while True:
                block = f.read(1 << 20)
                if not block:
                    break
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


H.change_guards.append(refuse_held)   # delete/rename of a member SQLite holds open: LockedError
register()
