"""cart.sqlite_export(): a database member as a plain SQLite file on disk."""
from __future__ import annotations

import os

import apsw

from .. import _handle as H
from .. import localfile as LF
from .. import namespace as N
from .. import paths as P
from ..errors import (
    LockedError,
    ReadOnlyError,
)
from ..format import (
    KIND_FILE,
)
from .connection import connect, register


def export(cart, path: str, dest: str | os.PathLike) -> None:
    """cart.sqlite_export(): checkpoint a WAL, then copy the committed database to `dest`
    (written beside it and renamed into place by cartridge.localfile, so `dest` is never half
    a database; a `dest` that is a directory or a symlink is refused before anything)."""
    register()
    dest = LF.check_destination(dest)
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
            try:
                # SQLite opens the temp file by name: it exists already (created exclusively,
                # never through a link), so SQLite creates no file there but its -journal
                with LF.atomic_path(dest, sidecars=("-journal", "-wal", "-shm")) as tmp:
                    out = apsw.Connection(tmp, flags=apsw.SQLITE_OPEN_READWRITE
                                          | apsw.SQLITE_OPEN_NOFOLLOW)
                    try:
                        with out.backup("main", src, "main") as b:
                            b.step(-1)
                        out.execute("PRAGMA journal_mode=DELETE").fetchall()
                    finally:
                        out.close()
            finally:
                src.close()
            return
    with cart.open(p, "rb") as f, LF.atomic_writer(dest) as dst:
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            dst.write(block)
