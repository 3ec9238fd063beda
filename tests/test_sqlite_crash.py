"""Crash simulation with SQLite transactions in flight: record every write and sync of the
archive while a connection commits (and rolls back) transactions, then rebuild the file as a
killed process or a power cut would leave it, at every write/sync boundary. After every cut the
archive opens, the database passes PRAGMA integrity_check and holds exactly a committed state:
every transaction whose COMMIT returned (sync="full"), possibly the in-flight one whole, never
part of one, never a rolled-back one."""
from __future__ import annotations

import random
import warnings

import pytest

import cartridge
from cartridge.testing.crash import CrashRecorder


def db_state(path: str) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cartridge.open(path, "a") as c:        # "a": a hot journal may need rolling back
            assert c.verify().ok
            conn = c.sqlite("/app.db")
            try:
                assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
                return conn.execute("SELECT a, b FROM t ORDER BY a").fetchall()
            finally:
                conn.close()


def run_workload(c, conn, rng: random.Random, rec: CrashRecorder, n_txn: int):
    """Transactions of inserts, updates and deletes (some large enough to spill SQLite's small
    page cache to the file), every fourth one rolled back. Returns the committed states and,
    for each, the log length when its COMMIT returned."""
    model = dict(conn.execute("SELECT a, b FROM t").fetchall())
    states = [sorted(model.items())]
    marks = [len(rec.log)]
    next_id = max(model, default=0) + 1
    for k in range(n_txn):
        new = dict(model)
        conn.execute("BEGIN")
        for _ in range(rng.choice([1, 3, 40])):
            op = rng.random()
            if op < 0.5 or not new:
                size = rng.choice([10, 500, 3000])
                b = rng.randbytes(size)
                conn.execute("INSERT INTO t VALUES(?, ?)", (next_id, b))
                new[next_id] = b
                next_id += 1
            elif op < 0.8:
                a = rng.choice(sorted(new))
                b = rng.randbytes(rng.choice([20, 800]))
                conn.execute("UPDATE t SET b = ? WHERE a = ?", (b, a))
                new[a] = b
            else:
                a = rng.choice(sorted(new))
                conn.execute("DELETE FROM t WHERE a = ?", (a,))
                del new[a]
        if k % 4 == 3:
            conn.execute("ROLLBACK")
            continue
        conn.execute("COMMIT")
        model = new
        states.append(sorted(model.items()))
        marks.append(len(rec.log))
    return states, marks


def check_every_cut(tmp_path, mode: str, n_txn: int, seeds: int, sample: float = 1.0):
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "w") as c:
        conn = c.sqlite("/app.db")
        if mode == "wal":
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)")
        with conn:
            conn.executemany("INSERT INTO t VALUES(?, ?)", [(i, bytes([i]) * 300) for i in range(50)])
        conn.close()
    c = cartridge.open(path, "a", sync="full")
    conn = c.sqlite("/app.db")
    conn.execute(f"PRAGMA journal_mode={mode}").fetchall()
    conn.execute("PRAGMA cache_size=8")
    conn.execute("SELECT count(*) FROM t").fetchall()
    rec = CrashRecorder(c)
    states, marks = run_workload(c, conn, random.Random(5), rec, n_txn)
    rec.detach()
    conn.close()
    c.close()
    assert len(states) > n_txn // 2
    models = [("killed", None), ("power", None)] + [("power", random.Random(s)) for s in range(seeds)]
    checked = 0
    pick = random.Random(9)
    for model, rng in models:
        for cut in rec.cuts():
            if (rng is not None or sample < 1) and pick.random() > sample:
                continue
            p = str(tmp_path / "crash.cart")
            with open(p, "wb") as f:
                f.write(rec.image(cut, model, rng))
            got = db_state(p)
            returned = max(i for i, m in enumerate(marks) if m <= cut)
            ok = [j for j, st in enumerate(states) if st == got]
            assert ok, f"{mode} {model} cut {cut}: the database matches no committed state"
            j = ok[-1]
            assert returned <= j <= returned + 1, (mode, model, cut, j, returned)
            checked += 1
    return len(rec.log), checked


@pytest.mark.parametrize("mode", ["memory", "delete", "wal"])
def test_every_cut_holds_exactly_the_committed_transactions(tmp_path, mode):
    n_ops, checked = check_every_cut(tmp_path, mode, n_txn=20, seeds=2)
    assert n_ops > 50 and checked > 3 * n_ops


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["memory", "delete", "truncate", "persist", "off", "wal"])
def test_every_cut_all_modes_long(tmp_path, mode):
    n_ops, checked = check_every_cut(tmp_path, mode, n_txn=40, seeds=3)
    assert n_ops > 100 and checked > 3 * n_ops


@pytest.mark.parametrize("mode", ["delete", "truncate", "persist"])
def test_multi_database_transactions_are_atomic_at_every_cut(tmp_path, mode):
    """ATTACH + a rollback journal: SQLite's super-journal protocol must hold across crashes
    (it did not while the VFS claimed SQLITE_IOCAP_SEQUENTIAL: the super-journal was never
    synced, so never published before the journals that name it)."""
    path = str(tmp_path / "m.cart")
    with cartridge.open(path, "w") as c:
        for name, table in (("/a.db", "t"), ("/b.db", "u")):
            k = c.sqlite(name)
            k.execute(f"CREATE TABLE {table}(x)")
            k.close()
    c = cartridge.open(path, "a", sync="full")
    a = c.sqlite("/a.db")
    a.execute(f"PRAGMA journal_mode={mode}").fetchall()
    a.execute("ATTACH '/b.db' AS b")
    a.execute(f"PRAGMA b.journal_mode={mode}").fetchall()
    a.execute("SELECT count(*) FROM t, b.u").fetchall()
    rec = CrashRecorder(c)
    n_txn = 4
    for i in range(n_txn):
        with a:
            a.execute("INSERT INTO t VALUES(?)", (i,))
            a.execute("INSERT INTO b.u VALUES(?)", (i,))
    rec.detach()
    a.close()
    c.close()
    image = str(tmp_path / "img.cart")
    checked = 0
    for model, rng in (("killed", None), ("power", None), ("power", random.Random(1))):
        for cut in rec.cuts():
            with open(image, "wb") as f:
                f.write(rec.image(cut, model, rng))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with cartridge.open(image, "a") as k:
                    x = k.sqlite("/a.db")
                    x.execute("ATTACH '/b.db' AS b")
                    ta = x.execute("SELECT count(*) FROM t").fetchall()[0][0]
                    tb = x.execute("SELECT count(*) FROM b.u").fetchall()[0][0]
                    assert x.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
                    x.close()
                    assert k.verify().ok
            assert ta == tb, (model, cut, ta, tb)
            assert 0 <= ta <= n_txn
            checked += 1
    assert checked > 50


@pytest.mark.parametrize("few", [0, 1000])
def test_every_cut_with_either_chunk_placement(tmp_path, monkeypatch, few):
    """A publish places its changed chunks one by one (up to FEW_CHUNKS of them) or as one
    joined run: both hold at every cut."""
    from cartridge import sqlite as csql
    monkeypatch.setattr(csql.member, "FEW_CHUNKS", few)
    n_ops, checked = check_every_cut(tmp_path, "memory", n_txn=12, seeds=1)
    assert n_ops > 30 and checked > 2 * n_ops
