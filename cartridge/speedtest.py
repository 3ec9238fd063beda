"""`python -m cartridge.speedtest ...`: apsw's speedtest (`python -m apsw.speedtest`) with the
cartridge VFS registered. Use `--vfs cartridge --database /abs/path/bench.cart::/speed.db`; the
speedtest's "remove the old database" step deletes the member (and its journal/WAL)."""
from __future__ import annotations

import os
import runpy
import sys

from . import sqlite as _sqlite


def _split(p):
    if isinstance(p, str) and "::" in p:
        arch, member = p.split("::", 1)
        return arch, member
    return None


def main(argv: list[str] | None = None) -> None:
    _sqlite.register()
    from .cartridge import open as _open

    real_exists, real_remove = os.path.exists, os.remove

    def exists(p):
        sp = _split(p)
        if sp is None:
            return real_exists(p)
        if not real_exists(sp[0]):
            return False
        with _open(sp[0], "r") as c:
            return c.exists(sp[1])

    def remove(p, *a, **kw):
        sp = _split(p)
        if sp is None:
            return real_remove(p, *a, **kw)
        with _open(sp[0], "a") as c:
            for suffix in ("", "-journal", "-wal"):
                if c.exists(sp[1] + suffix):
                    c.delete(sp[1] + suffix)

    os.path.exists, os.remove = exists, remove
    sys.argv = ["apsw.speedtest"] + list(sys.argv[1:] if argv is None else argv)
    try:
        runpy.run_module("apsw.speedtest", run_name="__main__", alter_sys=True)
    finally:
        os.path.exists, os.remove = real_exists, real_remove


if __name__ == "__main__":
    main()
