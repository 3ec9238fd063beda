"""cart.sqlite_export(): a database member as a plain SQLite file on disk."""
from __future__ import annotations

import os

import apsw

from .. import _handle as H
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
