"""Regressions found in review of the SQLite VFS (issue 5 follow-up)."""
from __future__ import annotations

import pytest

import cartridge
from cartridge.errors import CartridgeError

MODES = ["delete", "truncate", "persist", "memory", "off", "wal"]


def rows(conn, sql="SELECT * FROM t ORDER BY 1"):
    return conn.execute(sql).fetchall()


@pytest.fixture
def cart(tmp_path):
    c = cartridge.open(str(tmp_path / "a.cart"), "a")
    yield c
    c.close()


# -- 1. an archive rollback in exclusive locking mode ---------------------------------------
@pytest.mark.parametrize("locking", ["normal", "exclusive"])
@pytest.mark.parametrize("mode", MODES)
def test_archive_rollback_reaches_exclusive_connections(tmp_path, mode, locking):
    path = str(tmp_path / "a.cart")
    cart = cartridge.open(path, "a")
    conn = cart.sqlite("/app.db")
    conn.execute(f"PRAGMA locking_mode={locking}").fetchall()
    conn.execute(f"PRAGMA journal_mode={mode}").fetchall()
    conn.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b)")
    conn.executemany("INSERT INTO t VALUES(?, randomblob(2000))", [(i,) for i in range(50)])
    with pytest.raises(RuntimeError):
        with cart.transaction():
            cart.write("/side.txt", b"x")
            conn.execute("INSERT INTO t VALUES(1000, 'in-txn')")
            conn.execute("UPDATE t SET b=randomblob(3000) WHERE a<20")
            raise RuntimeError
    assert not cart.exists("/side.txt")
    if mode == "wal":
        # SQLite keeps an exclusive WAL connection's index in its heap: it cannot be brought
        # back, so it says so (and never writes) until it is closed
        with pytest.raises(CartridgeError, match="rolled back"):
            rows(conn, "SELECT count(*) FROM t")
        with pytest.raises(CartridgeError, match="rolled back"):
            conn.execute("INSERT INTO t VALUES(2000, 'after')")
        conn.close()
        conn = cart.sqlite("/app.db")
    assert rows(conn, "SELECT count(*), sum(a=1000) FROM t") == [(50, 0)]
    assert rows(conn, "PRAGMA integrity_check") == [("ok",)]
    conn.execute("INSERT INTO t VALUES(2000, 'after')")
    conn.executemany("INSERT INTO t VALUES(?, randomblob(2000))", [(i,) for i in range(3000, 3100)])
    conn.close()
    assert cart.verify().ok
    cart.close()
    with cartridge.open(path, "r") as c:
        k = c.sqlite("/app.db")
        assert rows(k, "SELECT count(*), sum(a=1000), sum(a=2000) FROM t") == [(151, 0, 1)]
        assert rows(k, "PRAGMA integrity_check") == [("ok",)]
        k.close()
        assert c.verify().ok

