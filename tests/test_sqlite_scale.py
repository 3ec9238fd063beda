"""Slow tier: databases larger than every cache, and past the 1 GiB lock-byte page."""
from __future__ import annotations

import random

import pytest

import cartridge

pytestmark = pytest.mark.slow


def test_database_larger_than_the_caches(tmp_path):
    """~200 MB of rows through a 16 MiB archive cache and a 2 MiB SQLite cache."""
    path = str(tmp_path / "big.cart")
    rng = random.Random(3)
    with cartridge.open(path, "a", sync="normal", cache_size=16 << 20) as cart:
        conn = cart.sqlite("/big.db")
        conn.execute("PRAGMA cache_size=-2048")
        conn.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB, h INTEGER)")
        conn.execute("CREATE INDEX t_h ON t(h)")
        for batch in range(20):
            with conn:
                conn.executemany("INSERT INTO t VALUES(?, randomblob(10000), ?)",
                                 [(batch * 1000 + i, rng.randrange(1 << 30)) for i in range(1000)])
        size = cart.stat("/big.db").size
        assert size > 200_000_000
        with conn:                                       # scattered updates and deletes
            for _ in range(2000):
                conn.execute("UPDATE t SET h = h + 1 WHERE a = ?", (rng.randrange(20000),))
            conn.execute("DELETE FROM t WHERE a % 97 = 0")
        n = conn.execute("SELECT count(*) FROM t").fetchall()[0][0]
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.close()
    with cartridge.open(path, "r", cache_size=16 << 20) as cart:
        conn = cart.sqlite("/big.db")
        conn.execute("PRAGMA cache_size=-2048")
        assert conn.execute("SELECT count(*) FROM t").fetchall()[0][0] == n
        for _ in range(500):
            a = rng.randrange(20000)
            got = conn.execute("SELECT length(b) FROM t WHERE a = ?", (a,)).fetchall()
            assert got == ([] if a % 97 == 0 else [(10000,)])
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.close()
        assert cart.verify().ok


def test_past_the_lock_byte_page(tmp_path):
    """A database beyond 1 GiB: SQLite never reads or writes the page holding the pending
    byte (offset 0x40000000). The member is an ordinary dense file, so that page is stored
    (as zeros) like any other; everything around it reads back right."""
    path = str(tmp_path / "huge.cart")
    with cartridge.open(path, "a", sync="off", cache_size=16 << 20) as cart:
        conn = cart.sqlite("/huge.db")
        conn.execute("PRAGMA page_size=65536")
        conn.execute("PRAGMA cache_size=-4096")
        conn.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB, c BLOB)")
        for batch in range(12):
            with conn:
                conn.executemany("INSERT INTO t VALUES(?, zeroblob(1000000), ?)",
                                 [(batch * 100 + i, (batch * 100 + i).to_bytes(4, "little"))
                                  for i in range(100)])
        size = cart.stat("/huge.db").size
        assert size > (1 << 30) + (64 << 20)
        pending = cart.read("/huge.db", 1 << 30, 65536)
        assert pending == bytes(65536)              # the lock-byte page: never written
        assert conn.execute("SELECT count(*) FROM t").fetchall() == [(1200,)]
        got = conn.execute("SELECT a, c FROM t WHERE a IN (0, 600, 1199)").fetchall()
        assert got == [(a, a.to_bytes(4, "little")) for a in (0, 600, 1199)]
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.close()
    with cartridge.open(path, "r") as cart:
        conn = cart.sqlite("/huge.db")
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        conn.close()
