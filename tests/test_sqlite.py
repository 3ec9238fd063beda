"""SQLite databases inside the archive (cartridge.sqlite): API, journal modes, locking,
transactions, import/export, errors."""
from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time

import apsw
import pytest

import cartridge
from cartridge import sqlite as csql
from cartridge._handle import engine

MODES = ["delete", "truncate", "persist", "memory", "off", "wal"]


def rows(conn, sql="SELECT * FROM t ORDER BY 1"):
    return conn.execute(sql).fetchall()


def test_create_write_reopen(tmp_path):
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "a") as cart:
        conn = cart.sqlite("/db/app.db")
        assert cart.isfile("/db/app.db")          # created at once, like a native open
        assert rows(conn, "PRAGMA journal_mode") == [("memory",)]
        conn.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)")
        with conn:
            conn.executemany("INSERT INTO t VALUES(?, ?)", [(i, f"v{i}") for i in range(1000)])
        conn.close()
        assert cart.stat("/db/app.db").size > 4096
    with cartridge.open(path, "r") as cart:
        conn = cart.sqlite("/db/app.db")
        assert conn.readonly("main")
        assert rows(conn, "SELECT count(*), sum(a) FROM t") == [(1000, 499500)]
        assert rows(conn, "PRAGMA integrity_check") == [("ok",)]
        with pytest.raises(apsw.ReadOnlyError):
            conn.execute("INSERT INTO t VALUES(5000, 'x')")
        conn.close()
        assert cart.verify().ok


def test_member_bytes_are_a_sqlite_file(cart, tmp_path):
    conn = cart.sqlite("/app.db")
    conn.execute("CREATE TABLE t(a, b); INSERT INTO t VALUES(1, randomblob(100000))")
    conn.close()
    out = tmp_path / "plain.db"
    out.write_bytes(cart.read("/app.db"))
    with sqlite3.connect(out) as s:
        assert s.execute("SELECT a, length(b) FROM t").fetchall() == [(1, 100000)]
        assert s.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_import_plain_database(cart, tmp_path):
    src = tmp_path / "x.db"
    with sqlite3.connect(src) as s:
        s.execute("CREATE TABLE t(a)")
        s.executemany("INSERT INTO t VALUES(?)", [(i,) for i in range(5000)])
    s.close()
    cart.write("/imported.db", src.read_bytes())
    conn = cart.sqlite("/imported.db")
    assert rows(conn, "SELECT count(*) FROM t") == [(5000,)]
    conn.execute("DELETE FROM t WHERE a % 2")
    assert rows(conn, "SELECT count(*) FROM t") == [(2500,)]
    conn.close()


@pytest.mark.parametrize("mode", MODES)
def test_every_journal_mode(tmp_path, mode):
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "a") as cart:
        conn = cart.sqlite("/app.db")
        assert rows(conn, f"PRAGMA journal_mode={mode}") == [(mode,)]
        if mode == "wal":
            assert rows(conn, "PRAGMA locking_mode") == [("exclusive",)]
        conn.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b)")
        conn.execute("PRAGMA cache_size=10")               # small: transactions spill
        with conn:
            conn.executemany("INSERT INTO t VALUES(?, randomblob(500))", [(i,) for i in range(2000)])
        before = rows(conn, "SELECT a, b FROM t ORDER BY a")
        if True:      # even journal_mode=OFF rolls back: the overlay is dropped, SQLite re-reads
            conn.execute("BEGIN")
            conn.execute("UPDATE t SET b = randomblob(700)")
            conn.execute("DELETE FROM t WHERE a > 1000")
            conn.execute("ROLLBACK")
        assert rows(conn, "SELECT a, b FROM t ORDER BY a") == before
        conn.execute("DELETE FROM t WHERE a > 1500")
        if mode != "off":     # a savepoint needs a journal (OFF: undefined, as natively)
            conn.execute("SAVEPOINT s; DELETE FROM t WHERE a < 10; ROLLBACK TO s; RELEASE s")
        expect = rows(conn, "SELECT a, b FROM t ORDER BY a")
        assert len(expect) == 1501
        if mode == "wal":
            assert cart.exists("/app.db-wal")
        conn.close()
        if mode == "persist":
            assert cart.exists("/app.db-journal")
        if mode in ("delete", "memory", "off", "wal"):
            assert not cart.exists("/app.db-journal") and not cart.exists("/app.db-wal")
    with cartridge.open(path, "a") as cart:
        conn = cart.sqlite("/app.db")
        assert rows(conn, "SELECT a, b FROM t ORDER BY a") == expect
        assert rows(conn, "PRAGMA integrity_check") == [("ok",)]
        if mode == "wal":
            assert rows(conn, "PRAGMA journal_mode") == [("wal",)]   # persistent, reopened
        conn.close()
        assert cart.verify().ok


def test_wal_database_reopens_through_uri(tmp_path):
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "a") as cart:
        conn = cart.sqlite("/w.db")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t(a); INSERT INTO t VALUES(1)")
        conn.close()
    uri = f"file:/w.db?vfs=cartridge&cartridge={path}"
    conn = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_URI)
    assert rows(conn) == [(1,)]
    conn.close()


def test_wal_needs_the_automatic_exclusive_locking(cart):
    conn = cart.sqlite("/w.db")
    conn.exec_trace = None                     # the automatic locking_mode is gone: SQLite
    assert rows(conn, "PRAGMA journal_mode=WAL") == [("memory",)]     # keeps its mode
    conn.exec_trace = csql._wal_guard
    assert rows(conn, "PRAGMA main.journal_mode = 'wal'") == [("wal",)]
    conn.close()


def test_hot_journal_is_rolled_back(tmp_path):
    """A native database caught mid-transaction (its journal hot) is imported with its journal;
    opening it in the archive rolls the transaction back."""
    native = tmp_path / "n.db"
    c = apsw.Connection(str(native))
    c.execute("PRAGMA journal_mode=DELETE").fetchall()
    c.execute("PRAGMA cache_size=5")
    c.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b)")
    with c:
        c.executemany("INSERT INTO t VALUES(?, randomblob(300))", [(i,) for i in range(3000)])
    committed = c.execute("SELECT a, b FROM t ORDER BY a").fetchall()
    c.execute("BEGIN")
    c.execute("UPDATE t SET b = randomblob(400)")        # spills: the db file is modified
    db_bytes = native.read_bytes()
    journal = native.with_name("n.db-journal").read_bytes()
    c.execute("ROLLBACK")
    c.close()
    assert len(journal) > 4096
    with pytest.raises(sqlite3.DatabaseError):           # the torn file alone is broken
        t = tmp_path / "torn.db"
        t.write_bytes(db_bytes)
        s = sqlite3.connect(t)
        try:
            got = s.execute("SELECT a, b FROM t ORDER BY a").fetchall()
            ok = s.execute("PRAGMA integrity_check").fetchall()
        finally:
            s.close()
        if got != committed or ok != [("ok",)]:
            raise sqlite3.DatabaseError("differs")
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "a") as cart:
        cart.write("/n.db", db_bytes)
        cart.write("/n.db-journal", journal)
    with cartridge.open(path, "a") as cart:
        conn = cart.sqlite("/n.db")
        assert rows(conn, "SELECT a, b FROM t ORDER BY a") == committed
        assert rows(conn, "PRAGMA integrity_check") == [("ok",)]
        conn.close()
        assert not cart.exists("/n.db-journal")
    with cartridge.open(path, "r") as cart:
        conn = cart.sqlite("/n.db")
        assert rows(conn, "SELECT a, b FROM t ORDER BY a") == committed
        conn.close()


def test_two_connections_contend(cart):
    a = cart.sqlite("/app.db")
    b = cart.sqlite("/app.db")
    a.execute("CREATE TABLE t(a)")
    a.execute("BEGIN IMMEDIATE")
    with pytest.raises(apsw.BusyError):
        b.execute("BEGIN IMMEDIATE")
    assert rows(b, "SELECT count(*) FROM t") == [(0,)]       # readers go on
    a.execute("INSERT INTO t VALUES(1)")
    with pytest.raises(apsw.BusyError):                      # a's commit waits for b's read
        with b:
            b.execute("SELECT * FROM t").fetchall()
            a.execute("COMMIT")
    a.execute("COMMIT")
    b.execute("BEGIN IMMEDIATE")
    with pytest.raises(apsw.BusyError):
        a.execute("INSERT INTO t VALUES(2)")
    timer = threading.Timer(0.2, lambda: b.execute("COMMIT"))
    timer.start()
    a.set_busy_timeout(5000)
    t0 = time.monotonic()
    a.execute("INSERT INTO t VALUES(2)")                    # waits for b, then succeeds
    assert time.monotonic() - t0 >= 0.1
    timer.join()
    assert rows(b, "SELECT a FROM t ORDER BY a") == [(1,), (2,)]
    a.close()
    b.close()


def test_concurrent_writers_lose_nothing(tmp_path):
    cart = cartridge.open(str(tmp_path / "c.cart"), "a", sync="off")
    setup = cart.sqlite("/c.db")
    setup.execute("CREATE TABLE c(n INTEGER); INSERT INTO c VALUES(0); CREATE TABLE log(w, i)")
    setup.close()
    errors = []

    def worker(w):
        try:
            conn = cart.sqlite("/c.db")
            conn.set_busy_timeout(20000)
            for i in range(25):
                # BEGIN IMMEDIATE: a deferred reader that upgrades gets SQLITE_BUSY at once
                # (SQLite's deadlock rule), natively too
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("UPDATE c SET n = n + 1")
                conn.execute("INSERT INTO log VALUES(?, ?)", (w, i))
                conn.execute("COMMIT")
            conn.close()
        except Exception as e:       # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    conn = cart.sqlite("/c.db")
    assert rows(conn, "SELECT n FROM c") == [(100,)]
    assert rows(conn, "SELECT count(*) FROM log") == [(100,)]
    conn.close()
    cart.close()


def test_open_database_cannot_be_deleted_or_renamed(cart):
    conn = cart.sqlite("/d/app.db")
    conn.execute("CREATE TABLE t(a)")
    for call in (lambda: cart.delete("/d/app.db"), lambda: cart.rename("/d/app.db", "/x.db"),
                 lambda: cart.delete("/d", recursive=True), lambda: cart.rename("/d", "/e"),
                 lambda: cart.rename("/other", "/d/app.db")):
        if not cart.exists("/other"):
            cart.write("/other", b"x")
        with pytest.raises(cartridge.LockedError, match="SQLite"):
            call()
    assert cart.read("/d/app.db")[:16] == b"SQLite format 3\x00"     # an ordinary file to read
    conn.close()
    cart.rename("/d/app.db", "/x.db")
    conn = cart.sqlite("/x.db")
    assert rows(conn, "SELECT count(*) FROM t") == [(0,)]
    conn.close()
    cart.delete("/x.db")
    assert not cart.exists("/x.db")


def test_sqlite_commit_joins_archive_transaction(cart):
    conn = cart.sqlite("/app.db")
    conn.execute("CREATE TABLE t(a)")
    with pytest.raises(RuntimeError):
        with cart.transaction():
            cart.write("/side.txt", b"hello")
            conn.execute("INSERT INTO t VALUES(1)")
            raise RuntimeError("undo both")
    assert not cart.exists("/side.txt")
    assert rows(conn, "SELECT count(*) FROM t") == [(0,)]
    assert rows(conn, "PRAGMA integrity_check") == [("ok",)]
    with cart.transaction():
        cart.write("/side.txt", b"hello")
        conn.execute("INSERT INTO t VALUES(2)")
    assert cart.read("/side.txt") == b"hello"
    assert rows(conn) == [(2,)]
    conn.close()


def test_several_databases_and_attach(cart):
    a = cart.sqlite("/a.db")
    a.execute("CREATE TABLE t(a); INSERT INTO t VALUES('a')")
    b = cart.sqlite("/b.db")
    b.execute("CREATE TABLE t(a); INSERT INTO t VALUES('b')")
    b.close()
    a.execute("ATTACH '/b.db' AS other")
    assert rows(a, "SELECT a FROM t UNION ALL SELECT a FROM other.t") == [("a",), ("b",)]
    with a:
        a.execute("INSERT INTO t VALUES('a2'); INSERT INTO other.t VALUES('b2')")
    a.close()
    b = cart.sqlite("/b.db")
    assert rows(b) == [("b",), ("b2",)]
    b.close()


def test_uri_vfs(tmp_path):
    path = str(tmp_path / "u.cart")
    flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI
    conn = apsw.Connection(f"file:/app.db?vfs=cartridge&cartridge={path}", flags=flags)
    conn.execute("CREATE TABLE t(a); INSERT INTO t VALUES(1)")
    conn.execute(f"ATTACH 'file:/b.db?vfs=cartridge&cartridge={path}' AS b")
    conn.execute("CREATE TABLE b.u(x); INSERT INTO b.u VALUES(2)")
    conn.close()
    with cartridge.open(path, "a") as cart:          # the VFS closed the handle it opened
        assert sorted(cart.listdir("/")) == ["app.db", "b.db"]
        # with a handle open in this process the VFS uses it (no second writer lock)
        conn = apsw.Connection(f"file:/app.db?vfs=cartridge&cartridge={path}", flags=flags)
        conn.execute("INSERT INTO t VALUES(3)")
        assert rows(conn) == [(1,), (3,)]
        conn.close()
        assert not cart.closed
        c2 = cart.sqlite("/app.db")
        assert rows(c2) == [(1,), (3,)]
        c2.close()
    conn = apsw.Connection(f"{path}::/app.db", vfs="cartridge")      # the path form
    assert rows(conn) == [(1,), (3,)]
    conn.close()
    with pytest.raises(apsw.CantOpenError):
        apsw.Connection("file:/app.db?vfs=cartridge&cartridge=relative.cart", flags=flags)


def test_export_checkpoints_wal(cart, tmp_path):
    conn = cart.sqlite("/w.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(a); INSERT INTO t VALUES(1); INSERT INTO t VALUES(2)")
    conn.close()
    conn = cart.sqlite("/w.db")
    conn.execute("INSERT INTO t VALUES(3)")
    conn.close()
    out = tmp_path / "out.db"
    cart.sqlite_export("/w.db", out)
    s = sqlite3.connect(out)
    assert s.execute("SELECT a FROM t ORDER BY a").fetchall() == [(1,), (2,), (3,)]
    assert s.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    s.close()
    with pytest.raises(cartridge.NotFoundError):
        cart.sqlite_export("/missing.db", out)


def test_export_from_read_only_handle(tmp_path):
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "a") as cart:
        conn = cart.sqlite("/p.db")
        conn.execute("CREATE TABLE t(a); INSERT INTO t VALUES(7)")
        conn.close()
    with cartridge.open(path, "r") as cart:
        cart.sqlite_export("/p.db", tmp_path / "p.db")
    assert sqlite3.connect(tmp_path / "p.db").execute("SELECT a FROM t").fetchall() == [(7,)]


def test_bad_input(cart):
    cart.mkdir("/dir")
    with pytest.raises(cartridge.PathIsDirectoryError):
        cart.sqlite("/dir")
    with pytest.raises(cartridge.InvalidPathError):
        cart.sqlite("/a/../b.db")
    with pytest.raises(cartridge.NotFoundError):
        cart.sqlite("/missing.db", readonly=True)
    with pytest.raises(TypeError):
        cart.sqlite("/x.db", vfs="unix")
    cart.write("/notadb", b"hello world, this is not sqlite" * 100)
    with pytest.raises(cartridge.NotADatabaseError, match="not an SQLite database"):
        cart.sqlite("/notadb")                  # issue 19 item 9: not apsw.NotADBError


def test_corruption_surfaces_as_an_error(tmp_path):
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "a") as cart:
        conn = cart.sqlite("/app.db")
        conn.execute("CREATE TABLE t(a, b)")
        with conn:
            conn.executemany("INSERT INTO t VALUES(?, randomblob(1000))", [(i,) for i in range(300)])
        conn.close()
        data = cart.read("/app.db")
    raw = bytearray(open(path, "rb").read())
    pos = raw.find(data[4096 * 3:4096 * 3 + 64])
    assert pos > 0
    raw[pos + 100] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    with cartridge.open(path, "r") as cart:
        with pytest.raises(cartridge.CorruptionError):
            conn = cart.sqlite("/app.db")
            try:
                conn.execute("SELECT sum(length(b)) FROM t").fetchall()
            finally:
                conn.close()


def test_closed_archive(tmp_path):
    cart = cartridge.open(str(tmp_path / "a.cart"), "a")
    conn = cart.sqlite("/app.db")
    conn.execute("CREATE TABLE t(a)")
    cart.close()
    with pytest.raises((cartridge.ClosedError, apsw.Error)):
        conn.execute("SELECT * FROM t").fetchall()
    conn.close()
    with pytest.raises(cartridge.ClosedError):
        cart.sqlite("/app.db")


def test_cross_process_reader_sees_committed_snapshots(tmp_path):
    """A read-only handle (as another process would hold) reads consistent committed states
    while the writer commits."""
    path = str(tmp_path / "a.cart")
    w = cartridge.open(path, "a")
    wc = w.sqlite("/app.db")
    wc.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b)")
    r = cartridge.open(path, "r")
    rc = r.sqlite("/app.db")
    for i in range(30):
        with wc:
            wc.executemany("INSERT INTO t VALUES(?, randomblob(3000))",
                           [(i * 10 + k,) for k in range(10)])
        with rc:
            n = rows(rc, "SELECT count(*) FROM t")[0][0]
            assert n == (i + 1) * 10
            assert rows(rc, "PRAGMA quick_check") == [("ok",)]
    rc.close()
    r.close()
    wc.close()
    w.close()


def test_big_transaction_spills_to_pages(cart, monkeypatch):
    monkeypatch.setattr(csql.member, "SPILL_CHUNKS", 8)
    conn = cart.sqlite("/big.db")
    conn.execute("PRAGMA cache_size=20")
    conn.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b)")
    with conn:
        conn.executemany("INSERT INTO t VALUES(?, randomblob(2000))", [(i,) for i in range(3000)])
        conn.execute("UPDATE t SET b = randomblob(1500) WHERE a % 3 = 0")
    assert rows(conn, "SELECT count(*) FROM t") == [(3000,)]
    assert rows(conn, "PRAGMA integrity_check") == [("ok",)]
    conn.close()
    assert cart.verify().ok
    conn = cart.sqlite("/big.db")
    conn.execute("BEGIN")
    conn.execute("DELETE FROM t WHERE a > 100")
    conn.execute("VACUUM") if False else None
    conn.execute("ROLLBACK")
    assert rows(conn, "SELECT count(*) FROM t") == [(3000,)]
    conn.execute("VACUUM")
    assert rows(conn, "PRAGMA integrity_check") == [("ok",)]
    conn.close()
    info = cart.info()
    assert info["files"] == 1
    assert cart.verify().ok


def test_vfs_exception_is_not_swallowed(cart, monkeypatch):
    conn = cart.sqlite("/app.db")
    conn.execute("CREATE TABLE t(a)")

    def boom(self, amount, offset):
        raise OSError(5, "simulated read failure")
    monkeypatch.setattr(csql.Member, "read", boom)
    with pytest.raises(OSError, match="simulated"):
        conn.execute("SELECT * FROM t").fetchall()
    monkeypatch.undo()
    conn.close()


def test_speedtest_runs_against_the_vfs(tmp_path):
    import subprocess
    import sys
    db = f"{tmp_path / 's.cart'}::/speed.db"
    r = subprocess.run([sys.executable, "-m", "cartridge.speedtest", "--apsw", "--vfs", "cartridge",
                        "--database", db, "--scale", "1", "--iterations", "2", "--hide-runs"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "apsw" in r.stdout


def test_copy_of_archive_keeps_database(tmp_path):
    path = tmp_path / "a.cart"
    with cartridge.open(str(path), "a") as cart:
        conn = cart.sqlite("/app.db")
        conn.execute("CREATE TABLE t(a); INSERT INTO t VALUES(42)")
        conn.close()
    shutil.copy(path, tmp_path / "b.cart")
    with cartridge.open(str(tmp_path / "b.cart"), "r") as cart:
        conn = cart.sqlite("/app.db")
        assert rows(conn) == [(42,)]
        conn.close()
    assert os.path.getsize(path) > 0


def test_reader_handle_asks_for_the_writer_lock_without_taking_it(tmp_path):
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "a") as cart:
        cart.sqlite("/app.db").close()
    r = cartridge.open(path, "r")
    conn = r.sqlite("/app.db")
    assert not csql._writer_present(engine(r).fd)
    w = cartridge.open(path, "a")                 # a writer can still open
    assert csql._writer_present(engine(r).fd)
    w.close()
    conn.close()
    r.close()
