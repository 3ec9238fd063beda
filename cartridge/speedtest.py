"""`python -m cartridge.speedtest ...`: apsw's speedtest (`python -m apsw.speedtest`) with the
cartridge VFS registered. Use `--vfs cartridge --database /abs/path/bench.cart::/speed.db`; the
speedtest's "remove the old database" step deletes the member (and its journal/WAL).

Three options of ours come before apsw's, so that a native run and an archive run can use the
same pragmas (perf/sqlite_bench.py runs both sides through this wrapper):
  --journal-mode MODE   PRAGMA journal_mode on every new connection (default: untouched, i.e.
                        SQLite's DELETE natively, MEMORY in an archive)
  --synchronous LEVEL   PRAGMA synchronous on every new connection (default: untouched)
  --archive-sync SYNC   open the archive with sync=off/normal/full (default: the archive's own)
"""
from __future__ import annotations

import argparse
import os
import runpy
import sys

import apsw

from . import sqlite as _sqlite


def _split(p):
    if isinstance(p, str) and "::" in p:
        arch, member = p.split("::", 1)
        return arch, member
    return None


def _pragmas_hook(journal_mode: str | None, synchronous: str | None):
    """An apsw connection hook setting the chosen pragmas on every new connection (after the
    cartridge VFS's own hook, which sets its default journal mode)."""
    def hook(conn: apsw.Connection) -> None:
        if journal_mode:
            conn.execute(f"PRAGMA journal_mode={journal_mode}").fetchall()
        if synchronous:
            conn.execute(f"PRAGMA synchronous={synchronous}")
    return hook


def main(argv: list[str] | None = None) -> None:
    _sqlite.register()
    from .archive import open as _open

    ours = argparse.ArgumentParser(add_help=False)
    ours.add_argument("--journal-mode", default=None)
    ours.add_argument("--synchronous", default=None)
    ours.add_argument("--archive-sync", default=None, choices=["off", "normal", "full"])
    ours.add_argument("--database", default=None)
    opts, rest = ours.parse_known_args(sys.argv[1:] if argv is None else argv)
    if opts.database is not None:
        rest += ["--database", opts.database]

    held = None            # the archive, open for the whole run with the chosen sync level
    sp = _split(opts.database)
    if sp is not None and opts.archive_sync is not None:
        held = _open(sp[0], "a", sync=opts.archive_sync)    # the VFS finds and uses this handle

    real_exists, real_remove = os.path.exists, os.remove

    def exists(p):
        sp = _split(p)
        if sp is None:
            return real_exists(p)
        if held is not None:
            return held.exists(sp[1])
        if not real_exists(sp[0]):
            return False
        with _open(sp[0], "r") as c:
            return c.exists(sp[1])

    def remove(p, *a, **kw):
        sp = _split(p)
        if sp is None:
            return real_remove(p, *a, **kw)

        def drop(c):
            for suffix in ("", "-journal", "-wal"):
                if c.exists(sp[1] + suffix):
                    c.delete(sp[1] + suffix)
        if held is not None:
            drop(held)
        else:
            with _open(sp[0], "a") as c:
                drop(c)

    hook = None
    if opts.journal_mode or opts.synchronous:
        hook = _pragmas_hook(opts.journal_mode, opts.synchronous)
        apsw.connection_hooks.append(hook)
    os.path.exists, os.remove = exists, remove  # type: ignore[assignment]  # patched for the run, restored after
    sys.argv = ["apsw.speedtest"] + rest
    try:
        runpy.run_module("apsw.speedtest", run_name="__main__", alter_sys=True)
    finally:
        os.path.exists, os.remove = real_exists, real_remove
        if hook is not None:
            apsw.connection_hooks.remove(hook)
        if held is not None:
            held.close()


if __name__ == "__main__":
    main()
