"""SQLite connections living alongside their archive: archive rollbacks reaching open connections,
lock waits, ATTACH, delete protection of open databases, WAL's exclusive locking, export of a
hot journal, and closing after the archive (or the interpreter) has gone."""
from __future__ import annotations

import apsw
import pytest

import cartridge
from cartridge.errors import CartridgeError

MODES = ["delete", "truncate", "persist", "memory", "off", "wal"]


def rows(conn, sql="SELECT * FROM t ORDER BY 1"):
    return conn.execute(sql).fetchall()


# -- an archive rollback in exclusive locking mode ---------------------------------------
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


# -- busy waiting sleeps without the GIL -------------------------------------------------
def _work(n):
    x = 0
    for i in range(n):
        x += i
    return x


def test_busy_wait_does_not_starve_the_lock_holder(tmp_path):
    import threading
    import time
    cart = cartridge.open(str(tmp_path / "a.cart"), "a", sync="off")
    a, b = cart.sqlite("/x.db"), cart.sqlite("/x.db")
    a.execute("CREATE TABLE t(x)")
    n = 200_000
    t0 = time.perf_counter()
    _work(n)
    unit = time.perf_counter() - t0
    n = max(n, int(n * 0.3 / unit))                 # about 0.3 s of pure Python work alone
    t0 = time.perf_counter()
    _work(n)
    alone = time.perf_counter() - t0
    a.execute("BEGIN IMMEDIATE")
    b.set_busy_timeout(1000)
    waited = []

    def waiter():
        t = time.monotonic()
        with pytest.raises(apsw.BusyError):
            b.execute("BEGIN IMMEDIATE")
        waited.append(time.monotonic() - t)

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    _work(n)                                         # the holder works while b busy-waits
    busy = time.perf_counter() - t0
    a.execute("INSERT INTO t VALUES(1)")
    th.join(5)
    a.execute("COMMIT")
    assert waited and waited[0] < 2.0
    assert busy < max(3 * alone, alone + 0.3), (alone, busy)
    assert rows(b, "SELECT * FROM t") == [(1,)]
    a.close()
    b.close()
    cart.close()


# -- ATTACH does not configure the next native connection --------------------------------
def test_attach_does_not_leak_into_native_connections(cart, tmp_path):
    conn = cart.sqlite("/a.db")
    conn.execute("ATTACH '/b.db' AS b")
    conn.execute("CREATE TABLE b.t(x)")
    native = apsw.Connection(str(tmp_path / "native.db"))
    assert rows(native, "PRAGMA journal_mode") == [("delete",)]
    assert native.exec_trace is None
    native.close()
    conn.close()
    again = cart.sqlite("/c.db")                   # ours are still configured
    assert rows(again, "PRAGMA journal_mode") == [("memory",)]
    again.close()


# -- open databases are protected from a recursive delete of "/" and across handles ------
def test_open_database_survives_delete_of_root(cart):
    conn = cart.sqlite("/d/app.db")
    conn.execute("CREATE TABLE t(a); INSERT INTO t VALUES(1)")
    with pytest.raises(cartridge.LockedError):
        cart.delete("/", recursive=True)
    assert cart.isfile("/d/app.db")
    assert rows(conn) == [(1,)]
    conn.close()
    cart.delete("/", recursive=True)
    assert not cart.exists("/d/app.db")


def test_read_only_handles_connection_blocks_delete(tmp_path):
    path = str(tmp_path / "a.cart")
    cart = cartridge.open(path, "a")
    conn = cart.sqlite("/r.db")
    conn.execute("CREATE TABLE t(a); INSERT INTO t VALUES(5)")
    conn.close()
    reader = cartridge.open(path, "r")
    rc = reader.sqlite("/r.db")
    assert rows(rc) == [(5,)]
    with pytest.raises(cartridge.LockedError):
        cart.delete("/r.db")
    with pytest.raises(cartridge.LockedError):
        cart.rename("/r.db", "/s.db")
    rc.close()
    cart.rename("/r.db", "/s.db")
    reader.close()
    cart.close()


# -- every spelling of "journal_mode WAL" gets exclusive locking first --------------------
@pytest.mark.parametrize("how", [
    lambda c: c.execute("PRAGMA journal_mode(wal)").fetchall(),
    lambda c: c.execute("pragma \"journal_mode\" = 'WAL'").fetchall(),
    lambda c: c.execute("PRAGMA main.journal_mode ( 'wal' )").fetchall(),
    lambda c: c.pragma("journal_mode", "wal"),
    lambda c: c.execute("PRAGMA journal_mode=wAl").fetchall(),
], ids=["parens", "quoted", "schema-parens", "apsw-pragma", "mixed-case"])
def test_wal_spellings_get_exclusive_locking(cart, how):
    conn = cart.sqlite("/w.db")
    conn.execute("CREATE TABLE t(a)")
    how(conn)
    assert rows(conn, "PRAGMA journal_mode") == [("wal",)]
    assert rows(conn, "PRAGMA main.locking_mode") == [("exclusive",)]
    conn.execute("INSERT INTO t VALUES(1)")
    conn.close()
    assert cart.isfile("/w.db-wal") or cart.isfile("/w.db")
    again = cart.sqlite("/w.db")
    assert rows(again) == [(1,)]
    again.close()


def test_archive_rollback_with_connection_as_context_manager(cart):
    conn = cart.sqlite("/app.db")
    conn.execute("PRAGMA locking_mode=EXCLUSIVE").fetchall()
    conn.execute("CREATE TABLE t(a)")
    with pytest.raises(RuntimeError):
        with cart.transaction():
            with conn:                       # the exec_trace gets the connection here
                conn.execute("INSERT INTO t VALUES(1)")
            raise RuntimeError
    with conn:
        assert rows(conn) == []
        conn.execute("INSERT INTO t VALUES(2)")
    assert rows(conn) == [(2,)]
    conn.close()
    assert cart.verify().ok


# -- connecting never waits for another connection's lock --------------------------------
def test_connect_does_not_block_on_an_exclusive_lock(cart):
    import time
    a = cart.sqlite("/x.db")
    a.execute("CREATE TABLE t(a)")
    a.execute("BEGIN EXCLUSIVE")
    a.execute("INSERT INTO t VALUES(1)")
    t = time.monotonic()
    b = cart.sqlite("/x.db")                      # used to wait 60 s, then BusyError
    assert time.monotonic() - t < 2
    with pytest.raises(apsw.BusyError):
        b.execute("SELECT * FROM t").fetchall()   # its own busy timeout: none
    a.execute("COMMIT")
    assert rows(b) == [(1,)]
    assert rows(b, "PRAGMA journal_mode") == [("memory",)]    # the default, set late
    c = cart.sqlite("/x.db")
    a.execute("BEGIN EXCLUSIVE")
    a.execute("COMMIT")
    c.execute("PRAGMA journal_mode=DELETE")       # the application's choice wins
    assert rows(c, "PRAGMA journal_mode") == [("delete",)]
    for conn in (a, b, c):
        conn.close()


# -- export rolls a hot journal back first, and leaves no temp file behind ---------------
def _hot_journal_archive(tmp_path):
    native = tmp_path / "n.db"
    c = apsw.Connection(str(native))
    c.execute("PRAGMA journal_mode=DELETE").fetchall()
    c.execute("PRAGMA cache_size=5")
    c.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b)")
    with c:
        c.executemany("INSERT INTO t VALUES(?, randomblob(300))", [(i,) for i in range(3000)])
    c.execute("BEGIN")
    c.execute("UPDATE t SET b = randomblob(400)")            # spills: the file is half-changed
    db_bytes = native.read_bytes()
    journal = (tmp_path / "n.db-journal").read_bytes()
    c.execute("ROLLBACK")
    c.close()
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "a") as cart:
        cart.write("/n.db", db_bytes)
        cart.write("/n.db-journal", journal)
    return path


def test_export_rolls_a_hot_journal_back(tmp_path):
    import sqlite3
    path = _hot_journal_archive(tmp_path)
    dest = tmp_path / "exp.db"
    with cartridge.open(path, "r") as cart:
        with pytest.raises(cartridge.ReadOnlyError, match="hot journal"):
            cart.sqlite_export("/n.db", dest)
    assert not dest.exists() and not (tmp_path / "exp.db.cartridge-export").exists()
    with cartridge.open(path, "a") as cart:
        cart.sqlite_export("/n.db", dest)
        assert not cart.exists("/n.db-journal")
    s = sqlite3.connect(dest)
    assert s.execute("SELECT count(*), sum(length(b)) FROM t").fetchall() == [(3000, 900000)]
    assert s.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    s.close()


def test_export_failure_removes_the_temp_file(cart, tmp_path):
    conn = cart.sqlite("/x.db")
    conn.execute("CREATE TABLE t(a); INSERT INTO t VALUES(1)")
    conn.close()
    dest = tmp_path / "dir"
    (dest / "sub").mkdir(parents=True)                      # os.replace onto it fails
    with pytest.raises(OSError):
        cart.sqlite_export("/x.db", dest)
    assert sorted(p.name for p in tmp_path.iterdir() if "cartridge-export" in p.name) == []


# -- closing a connection after its archive is quiet ------------------------------------
@pytest.mark.parametrize("mode", ["wal", "memory", "delete"])
def test_close_after_the_archive_closed_is_quiet(tmp_path, mode):
    path = str(tmp_path / "a.cart")
    cart = cartridge.open(path, "a")
    c = cart.sqlite("/a.db")
    c.execute(f"PRAGMA journal_mode={mode}").fetchall()
    c.execute("PRAGMA cache_size=2")
    c.execute("CREATE TABLE t(a)")
    c.executemany("INSERT INTO t VALUES(randomblob(3000))", [()] * 100)
    d = cart.sqlite("/b.db")
    d.execute("CREATE TABLE t(a)")
    d.execute("PRAGMA cache_size=2")
    d.execute("BEGIN")
    d.executemany("INSERT INTO t VALUES(randomblob(3000))", [()] * 100)
    cart.close()
    c.close()
    d.close()
    with cartridge.open(path, "r") as again:
        k = again.sqlite("/a.db")
        assert rows(k, "SELECT count(*) FROM t") == [(100,)]
        k.close()
        k = again.sqlite("/b.db")
        assert rows(k, "SELECT count(*) FROM t") == [(0,)]      # the open transaction: gone
        k.close()


def test_no_tracebacks_at_interpreter_exit(tmp_path):
    import subprocess
    import sys
    script = f"""
import cartridge
cart = cartridge.open({str(tmp_path / "a.cart")!r}, "a")
c = cart.sqlite("/a.db")
c.execute("PRAGMA journal_mode=DELETE").fetchall()
c.execute("CREATE TABLE t(a, b); INSERT INTO t VALUES(1, zeroblob(10))")
blob = c.blob_open("main", "t", "b", 1, True)
blob.write(b"zz")
w = cart.sqlite("/w.db")
w.execute("PRAGMA journal_mode=WAL")
w.execute("CREATE TABLE t(a); INSERT INTO t VALUES(1)")
cart.close()
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "Error" not in out.stderr, out.stderr
