"""SQLite databases inside the archive: an apsw VFS whose files are archive members.

Importing this package (or calling register(), idempotent) registers the "cartridge" VFS for
URIs; cart.sqlite() and cart.sqlite_export() do it on first use. `import cartridge` alone
imports neither apsw nor this package.

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

The package: member.py (Member, Registry: the overlay of one member and a handle's table of
them), vfs.py (MemberFile, the VFSes, SQLite's locks), connection.py (connect, the statement
guard, register), export.py (export).
"""

from __future__ import annotations

from .connection import DEFAULT_JOURNAL_MODE, Connection, _wal_guard, connect, register
from .export import export
from .member import FEW_CHUNKS, SPILL_CHUNKS, Member, Registry, refuse_held, registry
from .vfs import (
    COMPANIONS,
    VFS_NAME,
    GlobalVFS,
    HandleVFS,
    MemberFile,
    _writer_present,
    handle_vfs,
    principal_vfs,
)

__all__ = [
    "COMPANIONS",
    "DEFAULT_JOURNAL_MODE",
    "FEW_CHUNKS",
    "SPILL_CHUNKS",
    "VFS_NAME",
    "Connection",
    "GlobalVFS",
    "HandleVFS",
    "Member",
    "MemberFile",
    "Registry",
    "_wal_guard",
    "_writer_present",
    "connect",
    "export",
    "handle_vfs",
    "principal_vfs",
    "refuse_held",
    "register",
    "registry",
]

register()          # the "cartridge" VFS, usable by URI once this package is imported
