"""The SQLite VFSes over archive members: MemberFile (a file SQLite opened: locks, sync =
publish), a handle's private VFS (HandleVFS, also a principal's) and the global "cartridge" VFS
that names archives in URIs (GlobalVFS)."""
from __future__ import annotations

import os
import threading
import time
import weakref

import apsw

from .. import _handle as H
from .. import locking
from .. import paths as P
from .._core.vfslock import AccessKernel, Const, FileKernel, LockState
from ..errors import (
    AccessDeniedError,
    CartridgeError,
)
from ..format import (
    KIND_FILE,
    PAGE_SIZE,
)
from .member import Member, Registry, _quiet, _registries, _registries_lock, _tls, registry

VFS_NAME = "cartridge"
COMPANIONS = P.SQLITE_COMPANIONS
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
_IOCAP_CONST = Const(_IOCAP)
_NONE, _SHARED, _RESERVED, _PENDING, _EXCLUSIVE = (
    apsw.SQLITE_LOCK_NONE, apsw.SQLITE_LOCK_SHARED, apsw.SQLITE_LOCK_RESERVED,
    apsw.SQLITE_LOCK_PENDING, apsw.SQLITE_LOCK_EXCLUSIVE)


# -- locks -----------------------------------------------------------------------------------
_locks: dict[tuple, LockState] = {}
_locks_mutex = threading.Lock()


_writer_present = locking.writer_present

# The C kernels (cartridge/_core/vfslock.pyx) serve the common case of the calls SQLite makes
# around every statement; False (tests only: tests/test_vfslock.py) leaves every call of files
# and VFSes made from then on to the Python methods, the reference the kernels must match.
FAST_CALLS = True


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
        self.seen = 0                        # reload_count() when SQLite last (re)read the database
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
            self.xRead = m.vfs_read  # type: ignore[method-assign]  # per file: SQLite calls the member directly
            if not self.readonly:
                self.xWrite = m.vfs_write  # type: ignore[method-assign]  # as xRead
            if FAST_CALLS:
                # the calls SQLite makes around every statement, in C for their common case
                # (the methods below are the reference, and serve the rest)
                self.xFileSize = m.vfs_size  # type: ignore[method-assign]
                self.xDeviceCharacteristics = _IOCAP_CONST  # type: ignore[method-assign]
                kernel = FileKernel(self, MemberFile.xLock, MemberFile.xUnlock, self.lock,
                                    _locks_mutex, _locks, self.lock_id, self.eng, reg.members,
                                    self.group_keys, reg.ready, apsw.BusyError)
                self.xLock = kernel.x_lock  # type: ignore[method-assign]
                self.xUnlock = kernel.x_unlock  # type: ignore[method-assign]
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
    def xRead(self, amount: int, offset: int) -> bytes:
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
            members = self.group_members() if self.group_key is not None else [self.m]
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
                    m.load(m.rec)
                return
            # a principal's rights are checked again, with the sizes, as part of the publish
            reg.publish(group, self.principal, self.check_publish)

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
            group = self.group_members()
            if not self.eng.closed:
                rollbacks = self.eng.rollbacks
                for m in group:
                    if m.epoch != rollbacks:
                        m.fresh()
            st = _locks.get(self.lock_id)
            if st is None:
                st = _locks[self.lock_id] = LockState()
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
            for m in self.group_members() if group is None else group:
                m.revalidate()
                seen += m.reloads
            self.seen = seen

    def reload_count(self) -> int:
        """How often this database's files changed behind SQLite's back (see Member.fresh)."""
        return sum(m.reloads for m in self.group_members())

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
            for m in self.group_members():
                if m.epoch != rollbacks:
                    m.fresh()
                seen += m.reloads
            if seen != self.seen:
                return True
            self.quiet_rollbacks = rollbacks
            self.quiet_reloads = self.reg.reloads
            return False

    def group_members(self) -> list[Member]:
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
            companions = [c for c in self.group_members() if c is not m and c.changed]
            if self.committed or companions:
                self._publish()
            elif m.changed:
                m.load(m.rec)

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
        return PAGE_SIZE            # the archive writes whole pages

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

    def xOpen(self, name, flags) -> apsw.VFSFile:
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

    def xGetLastError(self) -> tuple[int, str]:
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
        if authorize is None and FAST_CALLS:    # a name seen before: in C (a principal's VFS
            # always checks its rights first)
            self.xAccess = AccessKernel(  # type: ignore[method-assign]
                self._access_keys, self._reg, self._access_slow)

    def resolve(self, name, uri) -> tuple[Registry, str]:
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
        # skips resolution (a principal's VFS always checks its rights first); AccessKernel
        # (installed on the instance) does that part in C and calls _access_slow for the rest
        return self._access_slow(pathname, flags)

    def _access_slow(self, pathname: str, flags: int) -> bool:
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

    def resolve(self, name, uri) -> tuple[Registry, str]:
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


# -- a handle's VFSes ------------------------------------------------------------------------
_vfs_counter = 0


def handle_vfs(reg: Registry) -> HandleVFS:
    """The handle's own private VFS (made on first use)."""
    if reg.own_vfs is None:
        reg.own_vfs = new_vfs(reg, reg.cart)
    return reg.own_vfs


def principal_vfs(reg: Registry, principal) -> HandleVFS:
    """The private VFS of a principal handle over this handle's members: every member it
    opens is checked by principal.sqlite_authorize, every publish by
    principal.sqlite_check_publish (made once per principal handle)."""
    vfs = reg.principal_vfs.get(principal)
    if vfs is None:
        vfs = new_vfs(reg, principal, principal.sqlite_authorize,
                      principal.sqlite_check_publish, principal.principal)
        reg.principal_vfs[principal] = vfs
    return vfs


def new_vfs(reg: Registry, owner, authorize=None, check_publish=None,
            principal: str | None = None) -> HandleVFS:
    """A new private VFS over this handle's members, registered while `owner` lives."""
    global _vfs_counter
    with _registries_lock:
        _vfs_counter += 1
        name = f"{VFS_NAME}-{_vfs_counter}"
    vfs = HandleVFS(name, reg, authorize, check_publish)
    vfs.principal = principal
    # unregistered once the owner is gone; open files keep the handle (and so the VFS)
    # alive; never at interpreter exit, when connections may still close through it
    weakref.finalize(owner, _unregister, vfs).atexit = False
    return vfs


def _unregister(vfs: apsw.VFS) -> None:
    try:
        vfs.unregister()
    except Exception:
        pass
