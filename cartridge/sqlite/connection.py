"""SQLite connections on archive members: what cart.sqlite() returns, the statement guard every
connection gets (journal mode, stale caches, WAL), and register() of the global VFS."""
from __future__ import annotations

import re
import weakref
from typing import Any

import apsw

from .. import _handle as H
from .. import namespace as N
from .. import paths as P
from .._core.pageio import StatementGuard
from ..errors import (
    CartridgeError,
    NotADatabaseError,
    NotFoundError,
    PathIsDirectoryError,
)
from ..format import (
    KIND_FILE,
)
from .member import _tls, registry
from .vfs import VFS_NAME, GlobalVFS, MemberFile, handle_vfs, principal_vfs

DEFAULT_JOURNAL_MODE = "MEMORY"


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
        for m in f.group_members():
            m.poisoned = True
            m.load(m.rec)
        raise CartridgeError(
            f"{f.m.path}: an archive transaction holding this WAL connection's commit was "
            f"rolled back; close the connection and open a new one (the database is intact)")
    conn.release_memory()          # the pages SQLite cached: it re-reads them from the archive
    f.seen = f.reload_count()


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


SQLITE_MAGIC = b"SQLite format 3\0"


def check_header(head: bytes, where: str) -> None:
    """Raise NotADatabaseError unless `head` (a member's first 100 bytes) is an SQLite header
    SQLite itself would accept: the magic, a valid page size, the fixed payload fractions.
    (SQLite would raise apsw.NotADBError at the first query instead.)"""
    ok = len(head) >= 100 and head[:16] == SQLITE_MAGIC and head[21:24] == b"\x40\x20\x20"
    if ok:
        page_size = int.from_bytes(head[16:18], "big")
        ok = page_size == 1 or (512 <= page_size <= 32768 and page_size & (page_size - 1) == 0)
    if not ok:
        raise NotADatabaseError(f"{where} is not an SQLite database (no valid SQLite header)")


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
        elif rec.size > 0:
            check_header(eng.content.read(rec, 0, 100, p), p)
        reg = registry(cart)
        vfs = handle_vfs(reg) if as_principal is None else principal_vfs(reg, as_principal)
    # A principal's connection never interprets URI file names: a URI could name another VFS
    # (ATTACH 'file:x?vfs=...'), which would step around the principal's checks.
    flags = (0 if as_principal is not None else apsw.SQLITE_OPEN_URI) | (
        apsw.SQLITE_OPEN_READONLY if readonly else
        apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
    return Connection(p, flags=flags, vfs=vfs.name, **apsw_kwargs)
