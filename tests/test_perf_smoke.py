"""Performance smoke test: fails only on gross regressions of *ratios* to a peer measured in the
same process moments apart (SQLite through the stdlib, native files, numpy, an LRU), never on
absolute times. The thresholds leave several-fold headroom over the ratios perf/README.md
reports, so a busy machine does not trip them; a change that makes a hot path several times
slower does. Needs nothing beyond the test extra. The full benchmark is `python -m perf`.
"""
from __future__ import annotations

import os
import random
import sqlite3
import time

import numpy as np
import pytest

import cartridge
from cartridge._core.arc import ARCCache, LRUCache

pytestmark = pytest.mark.slow

SQLAR = "CREATE TABLE sqlar(name TEXT PRIMARY KEY, mode INT, mtime INT, sz INT, data BLOB)"
INSERT = "INSERT OR REPLACE INTO sqlar VALUES (?, 33188, 0, ?, ?)"
N = 2000
REPEATS = 7
# Thresholds are multiplied by this (CARTRIDGE_PERF_SMOKE_FACTOR=0 makes every check fail and so
# prints the measured ratios).
FACTOR = float(os.environ.get("CARTRIDGE_PERF_SMOKE_FACTOR", "1"))


def best_ratio(fa, fb, ops: int) -> float:
    """min over interleaved repeats of time(fa) / time(fb); each runs `ops` operations."""
    ra, rb = [], []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fa()
        t1 = time.perf_counter()
        fb()
        t2 = time.perf_counter()
        ra.append(t1 - t0)
        rb.append(t2 - t1)
    return min(ra) / min(rb)


def sqlite_db(path):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    return db


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    rng = random.Random(1)
    names = [f"/d{i % 20:02d}/f{i:05d}.bin" for i in range(N)]
    blobs = [rng.randbytes(4096) for _ in range(64)]
    cart = cartridge.open(tmp / "s.cart", "w", sync="off", audit="off")
    with cart.transaction():
        for i, n in enumerate(names):
            cart.write(n, blobs[i % 64])
        for i in range(1000):
            cart.write(f"/list/f{i:04d}", b"x")
    db = sqlite_db(str(tmp / "s.sqlite"))
    db.execute(SQLAR)
    db.execute("BEGIN")
    db.executemany(INSERT, ((n, 4096, blobs[i % 64]) for i, n in enumerate(names)))
    db.executemany(INSERT, ((f"/list/f{i:04d}", 1, b"x") for i in range(1000)))
    db.execute("COMMIT")
    native = tmp / "native"
    for i, n in enumerate(names[:500]):
        p = native / n[1:]
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(blobs[i % 64])
    keys = [names[rng.randrange(N)] for _ in range(5000)]
    yield cart, db, str(native), names, keys, tmp
    cart.close()
    db.close()


def test_cached_read_beats_sqlite_and_native(stores):
    cart, db, native, names, keys, _ = stores
    cur = db.cursor()
    sql = "SELECT data FROM sqlar WHERE name = ?"
    for k in keys:
        cart.read(k)
        cur.execute(sql, (k,)).fetchone()

    def c():
        for k in keys:
            cart.read(k)

    def s():
        for k in keys:
            cur.execute(sql, (k,)).fetchone()

    nkeys = [native + k for k in keys if k in set(names[:500])][:1000]
    ckeys = [k[len(native):] for k in nkeys]

    def cn():
        for k in ckeys:
            cart.read(k)

    def n():
        for p in nkeys:
            with open(p, "rb") as f:
                f.read()

    assert (r := best_ratio(c, s, len(keys))) < 1.0 * FACTOR, r       # reported: about 0.1
    assert (r := best_ratio(cn, n, len(nkeys))) < 1.0 * FACTOR, r     # reported: about 0.06


def test_lookup_and_listing_against_sqlite(stores):
    cart, db, _, _, keys, _ = stores
    cur = db.cursor()
    sql = "SELECT mode, mtime, sz FROM sqlar WHERE name = ?"

    def c():
        for k in keys:
            cart.stat(k)

    def s():
        for k in keys:
            cur.execute(sql, (k,)).fetchone()

    assert (r := best_ratio(c, s, len(keys))) < 2.0 * FACTOR, r       # reported: about 0.3
    lsql = "SELECT name FROM sqlar WHERE name >= '/list/' AND name < '/list0'"
    assert len(cart.listdir("/list")) == 1000

    def cl():
        for _ in range(20):
            cart.listdir("/list")

    def sl():
        for _ in range(20):
            [r[0][6:] for r in cur.execute(lsql)]

    assert (r := best_ratio(cl, sl, 20))   < 2.0 * FACTOR, r            # reported: about 0.3


def test_writes_against_sqlite(stores):
    cart, db, _, names, keys, tmp = stores
    payload = b"w" * 4096
    wkeys = keys[:300]

    def c():
        for k in wkeys:
            cart.write(k, payload)

    def s():
        for k in wkeys:
            db.execute(INSERT, (k, 4096, payload))

    assert (r := best_ratio(c, s, len(wkeys))) < 6.0 * FACTOR, r      # reported: about 1.2-1.7
    count = iter(range(1000))

    def cb():
        with cartridge.open(tmp / f"b{next(count)}.cart", "w", sync="off", audit="off") as b, b.transaction():
            for k in names:
                b.write(k, payload[:1024])

    def sb():
        d = sqlite_db(str(tmp / f"b{next(count)}.sqlite"))
        d.execute(SQLAR)
        d.execute("BEGIN")
        for k in names:
            d.execute(INSERT, (k, 1024, payload[:1024]))
        d.execute("COMMIT")
        d.close()

    assert (r := best_ratio(cb, sb, len(names))) < 8.0 * FACTOR, r    # reported: about 2.5

    def cm():
        with cartridge.open(tmp / f"b{next(count)}.cart", "w", sync="off", audit="off") as b:
            b.write_many((k, payload[:1024]) for k in names)

    assert (r := best_ratio(cm, sb, len(names))) < 3.0 * FACTOR, r    # measured: about 0.3


def test_sequential_read_against_memcpy(tmp_path):
    n = 32 << 20
    src = np.frombuffer(np.random.default_rng(2).bytes(n), dtype=np.uint8)
    dst = np.empty(n, dtype=np.uint8)
    with cartridge.open(tmp_path / "q.cart", "w", sync="off", audit="off") as c:
        c.write("/big", src)
        c.readinto("/big", dst)
        assert np.array_equal(src, dst)
        ratio = best_ratio(lambda: c.readinto("/big", dst), lambda: np.copyto(dst, src), 1)
    assert ratio < 8.0 * FACTOR, ratio                        # reported: about 1.5-2


def test_arc_beats_lru_on_a_scan_mixed_trace():
    """Not a timing: hit ratios on a fixed zipfian trace with sweeps (as the zipf workload)."""
    rng = np.random.default_rng(7)
    n, cap = 20_000, 2_000
    p = np.arange(1, n + 1, dtype=np.float64) ** -0.99
    draws = rng.permutation(n)[rng.choice(n, size=150_000, p=p / p.sum())]
    parts, sweep = [], 0
    for lo in range(0, len(draws), 3000):
        parts += [draws[lo:lo + 3000], np.arange(sweep, sweep + 1000) % n]
        sweep += 1000
    trace = np.concatenate(parts).tolist()
    ratios = {}
    for cls in (ARCCache, LRUCache):
        cache = cls(cap)
        for i, k in enumerate(trace):
            if i == len(trace) // 5:
                cache.reset_stats()
            if cache.get(k) is None:
                cache.put(k, True, 1)
        ratios[cls.__name__] = cache.stats()["hit_ratio"]
    assert ratios["ARCCache"] >= ratios["LRUCache"] + 0.02 * FACTOR, ratios     # reported: +7 points




def test_audit_log_overhead_on_writes(tmp_path):
    """The storage paths above run with audit="off"; this bounds what the default audit="writes"
    adds to them, as a gross-regression guard. Issue 13's targets (<= 1% in a transaction, <= 3%
    per commit) are NOT met (docs/AUDIT.md, "Cost"). Here every path is new to the log (each is
    interned: a string-table and an index entry) and each run opens a new archive; three runs on
    the loaded 2-core development machine measured 1.8-3.3x for write_many and 1.6-2.7x in a
    transaction (before the batch encoder in C: up to about 5x and 2.4x). The bounds leave
    room for a loaded CI machine and catch a return to the old costs."""
    names = [f"/d{i % 40}/n{i:05d}" for i in range(2000)]
    payload = b"w" * 1024
    count = iter(range(1000))

    def batch(audit):
        def run():
            with cartridge.open(tmp_path / f"a{next(count)}.cart", "w", sync="off",
                                audit=audit) as c:
                c.write_many((k, payload) for k in names)
        return run

    def txn(audit):
        def run():
            with cartridge.open(tmp_path / f"t{next(count)}.cart", "w", sync="off",
                                audit=audit) as c, c.transaction():
                for k in names[:500]:
                    c.write(k, payload)
        return run

    assert (r := best_ratio(batch("writes"), batch("off"), len(names))) < 6.0 * FACTOR, r
    assert (r := best_ratio(txn("writes"), txn("off"), 500)) < 4.0 * FACTOR, r


def test_packed_small_files_against_sqlite_and_unpacked(tmp_path, monkeypatch):
    """Packs (issue 16, perf/pack_bench.py): write_many of 1 KiB files packed vs the same with
    packing off (reported: about 0.5-0.7, faster), a cached read of a packed 1 KiB file vs an
    unpacked one (reported: about 1.0), and the bytes on disk vs an sqlar table (not a timing;
    reported: 1.28 vs SQLite's 1.37, 1.09 with audit="off")."""
    from cartridge import packs

    names = [f"/d{i % 20:02d}/f{i:05d}.bin" for i in range(N)]
    rng = random.Random(16)
    data = [rng.randbytes(1024) for _ in range(N)]
    count = iter(range(1000))
    saved = packs.PACK_MAX

    def load(pack_max):
        def run():
            monkeypatch.setattr(packs, "PACK_MAX", pack_max)
            with cartridge.open(tmp_path / f"w{next(count)}.cart", "w", sync="off",
                                audit="off") as c:
                c.write_many(zip(names, data))
        return run

    assert (r := best_ratio(load(saved), load(0), N)) < 2.0 * FACTOR, r
    monkeypatch.setattr(packs, "PACK_MAX", 0)
    with cartridge.open(tmp_path / "u.cart", "w", sync="off", audit="off") as u:
        u.write_many(zip(names, data))
    monkeypatch.setattr(packs, "PACK_MAX", saved)
    with cartridge.open(tmp_path / "p.cart", "w", sync="off", audit="off") as c:
        c.write_many(zip(names, data))
        assert c.info()["packed_files"] == N
    keys = names[:]
    rng.shuffle(keys)
    with cartridge.open(tmp_path / "p.cart", "a", sync="off") as c, \
            cartridge.open(tmp_path / "u.cart", "a", sync="off") as u:
        for k in keys:
            c.read(k)
            u.read(k)

        def rc():
            for k in keys:
                c.read(k)

        def ru():
            for k in keys:
                u.read(k)
        assert (r := best_ratio(rc, ru, N)) < 2.0 * FACTOR, r
    db = sqlite_db(tmp_path / "s.sqlite")
    db.execute(SQLAR)
    db.execute("BEGIN")
    db.executemany(INSERT, ((k, 1024, v) for k, v in zip(names, data)))
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    cart_bytes = os.stat(tmp_path / "p.cart").st_blocks * 512
    sql_bytes = os.stat(tmp_path / "s.sqlite").st_blocks * 512
    assert cart_bytes < 1.5 * sql_bytes * max(FACTOR, 1e-9), (cart_bytes, sql_bytes)


def test_durable_commits_against_sqlite(tmp_path):
    """One 4 KiB write per commit at the durable sync modes, against SQLite (WAL) at the same
    setting and, for "full", write()+fsync() of a native file. "normal" issues no sync per
    commit (docs/FORMAT.md §8.1): a change that brought back a barrier per commit makes it
    several times slower than SQLite's NORMAL, which this catches where a sync costs anything."""
    rng = random.Random(4)
    payload = rng.randbytes(4096)
    names = [f"/d{i % 10}/f{i:04d}" for i in range(400)]
    carts, dbs = {}, {}
    for mode in ("normal", "full"):
        p = tmp_path / f"{mode}.cart"
        with cartridge.open(p, "w", sync="off", audit="off") as c:
            c.write("/room", bytes(8 << 20))      # a free tail to place the commits in
            c.delete("/room")
            c.write_many((n, payload) for n in names)
        carts[mode] = cartridge.open(p, "a", sync=mode, audit="off")
        db = sqlite3.connect(str(tmp_path / f"{mode}.sqlite"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={mode.upper()}")
        db.execute(SQLAR)
        db.executemany(INSERT, ((n, 4096, payload) for n in names))
        dbs[mode] = db
    native = tmp_path / "native.bin"
    native.write_bytes(payload)

    def cw(mode, ks):
        def run():
            for k in ks:
                carts[mode].write(k, payload)
        return run

    def sw(mode, ks):
        def run():
            for k in ks:
                dbs[mode].execute(INSERT, (k, 4096, payload))
        return run

    def nw(ks):
        def run():
            for _ in ks:
                with open(native, "wb") as f:
                    f.write(payload)
                    f.flush()
                    os.fsync(f.fileno())
        return run

    try:
        ks = [names[rng.randrange(len(names))] for _ in range(150)]
        # measured about 1.4 (a barrier per commit: about 40 where fdatasync takes ~2 ms)
        assert (r := best_ratio(cw("normal", ks), sw("normal", ks), len(ks))) < 6.0 * FACTOR, r
        ks = ks[:40]
        # measured about 1.3 and 0.8
        assert (r := best_ratio(cw("full", ks), sw("full", ks), len(ks))) < 4.0 * FACTOR, r
        assert (r := best_ratio(cw("full", ks), nw(ks), len(ks))) < 4.0 * FACTOR, r
    finally:
        for c in carts.values():
            c.close()
        for db in dbs.values():
            db.close()


def test_lookup_against_lmdb(stores, tmp_path):
    """stat() and exists() of a cached archive against LMDB get() (issue 18's target: <= 2x at
    every size; perf/README.md's lookup table)."""
    lmdb = pytest.importorskip("lmdb", reason="lmdb is an optional peer (pip install lmdb)")
    cart, _, _, names, keys, _ = stores
    env = lmdb.open(str(tmp_path / "lk"), map_size=1 << 26, sync=False, metasync=False)
    with env.begin(write=True) as t:
        for n in names:
            t.put(n.encode(), b"x" * 16)
    txn = env.begin()
    bkeys = [k.encode() for k in keys]
    for k in keys:
        cart.stat(k)

    def c():
        for k in keys:
            cart.stat(k)

    def e():
        for k in keys:
            cart.exists(k)

    def m():
        for k in bkeys:
            txn.get(k)

    try:
        assert (r := best_ratio(c, m, len(keys))) < 6.0 * FACTOR, r    # reported: about 2
        assert (r := best_ratio(e, m, len(keys))) < 6.0 * FACTOR, r    # reported: about 2
    finally:
        txn.abort()
        env.close()


def test_sqlite_member_against_a_native_file(tmp_path):
    """A database inside the archive against the same on a native file, both through apsw with
    the same pragmas (issue 18's targets: <= 1.3x for a bulk insert and for point lookups with
    a small SQLite cache; perf/README.md's sqlinsert and sqllookup)."""
    import apsw

    rows = 30_000
    counter = iter(range(1_000_000))

    def side(kind):
        d = tmp_path / f"{kind}{next(counter)}"
        d.mkdir()
        if kind == "native":
            conn, cart = apsw.Connection(str(d / "n.db")), None
        else:
            cart = cartridge.open(d / "c.cart", "w", sync="off", audit="off")
            conn = cart.sqlite("/c.db")
        conn.execute("PRAGMA journal_mode=MEMORY").fetchall()
        conn.execute("PRAGMA synchronous=OFF").fetchall()
        return conn, cart

    def fill(conn):
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES(?, ?)",
                         ((i, f"value {i:08d} " * 3) for i in range(rows)))
        conn.execute("COMMIT")

    def insert(kind):
        def run():
            conn, cart = side(kind)
            fill(conn)
            conn.close()
            if cart is not None:
                cart.close()
        return run

    assert (r := best_ratio(insert("cartridge"), insert("native"), rows)) < 3.0 * FACTOR, r
    # reported: about 1.2
    rng = random.Random(5)
    keys = [rng.randrange(rows) for _ in range(5000)]
    sides = {k: side(k) for k in ("cartridge", "native")}
    for conn, _ in sides.values():
        fill(conn)
        conn.execute("PRAGMA cache_size=50").fetchall()

    def lookups(kind):
        conn = sides[kind][0]

        def run():
            for k in keys:
                conn.execute("SELECT v FROM t WHERE id=?", (k,)).fetchall()
        return run

    try:
        assert (r := best_ratio(lookups("cartridge"), lookups("native"), len(keys))) \
            < 3.5 * FACTOR, r                                             # reported: about 1.3
    finally:
        for conn, cart in sides.values():
            conn.close()
            if cart is not None:
                cart.close()
