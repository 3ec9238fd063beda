"""The workloads and their peers. Each builder returns a list of harness.Peer set up in this
process over data it creates under the run's temporary directory (or, for the big lookup
archives, under perf/.data/ where they are cached across runs).

Peers and their settings (the same for every workload unless a peer's note says otherwise):
  cartridge       cartridge.open(path, "a", sync="off"), default 64 MiB page cache
  cartridge-ro    cartridge.open(path, "r"): a read-only handle, which looks for a newer commit
                  on every call
  native          one file per entry in a directory; open()+read() / open("wb")+write()
  sqlite          stdlib sqlite3, a sqlar table (name TEXT PRIMARY KEY, mode, mtime, sz, data),
                  journal_mode=WAL, synchronous=OFF, autocommit (one transaction per statement)
  lmdb            py-lmdb, sync=False, metasync=False, writemap=True; reads with one long-lived
                  read transaction (the fastest way to call get)
  lmdb-txn        as lmdb, but a read transaction per get
  lmdb-nowritemap as lmdb without writemap (writes only)
  zipfile         stdlib zipfile, ZIP_STORED members, one ZipFile object kept open
"""
from __future__ import annotations

import itertools
import os
import random
import shutil
import sqlite3
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import cartridge
from cartridge import format as cfmt
from cartridge._handle import engine

from .harness import Peer, perf_counter

# Bump when the layout of the cached lookup data (paths, values, peers' settings) changes
# (2: rebuilt after B-tree splits started leaving nodes full on in-order inserts).
WORKLOAD_VERSION = 2
DATA_DIR = Path(__file__).resolve().parent / ".data"
CHUNK = 64 << 10
LMDB_MAP = 8 << 30          # sparse on Linux; only what is written takes space
SQLAR = "CREATE TABLE sqlar(name TEXT PRIMARY KEY, mode INT, mtime INT, sz INT, data BLOB)"
SQLAR_INSERT = "INSERT OR REPLACE INTO sqlar(name, mode, mtime, sz, data) VALUES (?, ?, ?, ?, ?)"
FILE_MODE = 0o100644
SQLITE_MAX_BLOB = 1_000_000_000    # SQLite's default SQLITE_MAX_LENGTH: a 1 GiB blob does not fit
MTIME = 1_700_000_000


@dataclass
class Config:
    quick: bool
    read_files: int          # files in the cached-read and write workloads (fewer when large)
    read_bytes: int          # at most this much data per cached-read workload
    uncached_ops: int        # operations per value in the uncached workloads
    bulk_files: int          # 1 KiB files in the one-transaction bulk load
    lookup_sizes: tuple      # file counts of the lookup and listing workloads
    seq_bytes: int           # sequential read / write size
    values: int              # measured values per peer
    min_time: float          # seconds per value, at least
    lookup_keys: int         # distinct random paths cycled through per lookup peer
    zipf_cache: int          # cache budget of the zipfian workloads (data is 10x this)
    zipf_requests: int       # requests per zipfian run (the first fifth warms up)
    space_files: int         # files per size in the space workload

    @classmethod
    def make(cls, quick: bool) -> Config:
        if quick:
            return cls(True, 2_000, 16 << 20, 100, 10_000, (1_000, 10_000, 100_000), 64 << 20,
                       3, 0.02, 100_000, 4 << 20, 200_000, 1_000)
        return cls(False, 10_000, 48 << 20, 200, 100_000,
                   (1_000, 10_000, 100_000, 1_000_000, 10_000_000), 1 << 30,
                   15, 0.1, 1_000_000, 32 << 20, 2_000_000, 10_000)


def label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else (
        f"{n // 1000}K" if n % 1000 == 0 else str(n))


def _cycle_timer(fn, keys):
    """time_func calling fn(key) once per loop over keys cycled in a fixed random order; the
    keys for one value are taken from the cycle before the clock starts."""
    it = itertools.cycle(keys)

    def time_func(loops: int) -> float:
        ks = list(itertools.islice(it, loops))
        t0 = perf_counter()
        for k in ks:
            fn(k)
        return perf_counter() - t0

    return time_func


def _sqlite(path, *, wal=True, sync="OFF") -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute(f"PRAGMA journal_mode={'WAL' if wal else 'DELETE'}")
    db.execute(f"PRAGMA synchronous={sync}")
    return db


def _lmdb(path, *, writemap=True, readonly=False, sync=False, metasync=False, readahead=True):
    import lmdb

    return lmdb.open(str(path), map_size=LMDB_MAP, sync=sync, metasync=metasync, writemap=writemap,
                     readahead=readahead,
                     readonly=readonly, lock=not readonly, max_readers=16)


def _check(name, got, want):
    if bytes(got) != bytes(want):
        raise AssertionError(f"{name}: read back wrong data ({len(got)} bytes, want {len(want)})")


# -- populating each store with the same files ---------------------------------------------
def _fill(tmp: Path, tag: str, names: list[str], payload, which) -> dict:
    """Create one store per peer kind in `which` holding names -> payload (bytes or a list)."""
    data = payload if isinstance(payload, list) else [payload] * len(names)
    out = {}
    if "cartridge" in which:
        p = tmp / f"{tag}.cart"
        with cartridge.open(p, "w", sync="off") as c, c.transaction():
            for n, d in zip(names, data):
                c.write(n, d)
        out["cartridge"] = p
    if "native" in which:
        root = tmp / f"{tag}-native"
        for n, d in zip(names, data):
            fp = root / n.lstrip("/")
            fp.parent.mkdir(parents=True, exist_ok=True)
            fp.write_bytes(d)
        out["native"] = root
    if "sqlite" in which:
        p = tmp / f"{tag}.sqlite"
        db = _sqlite(p)
        db.execute(SQLAR)
        db.execute("BEGIN")
        db.executemany(SQLAR_INSERT, ((n, FILE_MODE, MTIME, len(d), d) for n, d in zip(names, data)))
        db.execute("COMMIT")
        db.close()
        out["sqlite"] = p
    for kind, wm in (("lmdb", True), ("lmdb-nowritemap", False)):
        if kind in which:
            p = tmp / f"{tag}-{kind}"
            env = _lmdb(p, writemap=wm)
            with env.begin(write=True) as t:
                for n, d in zip(names, data):
                    t.put(n.encode(), d)
            env.close()
            out[kind] = p
    if "zipfile" in which:
        p = tmp / f"{tag}.zip"
        with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as z:
            for n, d in zip(names, data):
                z.writestr(n.lstrip("/"), d)
        out["zipfile"] = p
    return out


# -- 1. cached random reads of 1 KiB .. 1 MiB files -------------------------------------------
def read_files_for(cfg: Config, size: int) -> int:
    """How many files of `size` the cached-read workload stores (at most cfg.read_bytes)."""
    return max(16, min(cfg.read_files, cfg.read_bytes // size))


def cached_read(size: int):
    """Builder of the cached random read workload for files of `size` bytes."""

    def build(cfg: Config, tmp: Path, log=print) -> list[Peer]:
        rng = random.Random(1)
        n = read_files_for(cfg, size)
        names = [f"/r/d{i % 100:02d}/f{i:06d}.bin" for i in range(n)]
        blobs = [rng.randbytes(size) for _ in names]
        st = _fill(tmp, "read", names, blobs, {"cartridge", "native", "sqlite", "lmdb", "zipfile"})
        order = list(range(n)) * max(1, 2000 // n)
        rng.shuffle(order)
        keys = [names[i] for i in order]
        i0 = order[0]
        peers = []

        c = cartridge.open(st["cartridge"], "a", sync="off")
        _check("cartridge", c.read(names[i0]), blobs[i0])
        peers.append(Peer("cartridge", _cycle_timer(c.read, keys), c.close, note="read(path)"))
        if size == 4096:
            cro = cartridge.open(st["cartridge"], "r")
            _check("cartridge-ro", cro.read(names[i0]), blobs[i0])
            peers.append(Peer("cartridge-ro", _cycle_timer(cro.read, keys), cro.close,
                              note="read-only handle (checks for a newer commit on every call)"))
        if size >= CHUNK:
            _check("cartridge-buffer", c.read_buffer(names[i0]), blobs[i0])
            peers.append(Peer("cartridge-buffer", _cycle_timer(c.read_buffer, keys),
                              note="read_buffer(path): a memoryview, no copy after the read"))
            buf = bytearray(size)

            def cart_into(k):
                return c.readinto(k, buf)

            peers.append(Peer("cartridge-readinto", _cycle_timer(cart_into, keys),
                              note="readinto(path, preallocated buffer)"))

        root = str(st["native"])
        nkeys = [root + k for k in keys]

        def native_read(p):
            with open(p, "rb") as f:
                return f.read()

        _check("native", native_read(root + names[i0]), blobs[i0])
        peers.append(Peer("native", _cycle_timer(native_read, nkeys), note="open()+read()"))

        def native_pread(p):
            fd = os.open(p, os.O_RDONLY)
            try:
                return os.pread(fd, size, 0)
            finally:
                os.close(fd)

        _check("native-pread", native_pread(root + names[i0]), blobs[i0])
        peers.append(Peer("native-pread", _cycle_timer(native_pread, nkeys),
                          note="os.open()+os.pread()+os.close()"))

        db = _sqlite(st["sqlite"])
        cur = db.cursor()
        sql = "SELECT data FROM sqlar WHERE name = ?"

        def sqlite_read(n):
            return cur.execute(sql, (n,)).fetchone()[0]

        _check("sqlite", sqlite_read(names[i0]), blobs[i0])
        peers.append(Peer("sqlite", _cycle_timer(sqlite_read, keys), db.close))

        env = _lmdb(st["lmdb"])
        rtxn = env.begin()
        bkeys = [k.encode() for k in keys]
        _check("lmdb", rtxn.get(names[i0].encode()), blobs[i0])
        peers.append(Peer("lmdb", _cycle_timer(rtxn.get, bkeys), note="get() in one long read txn"))

        def lmdb_txn_get(k):
            with env.begin() as t:
                return t.get(k)

        def close_lmdb():
            rtxn.abort()
            env.close()

        _check("lmdb-txn", lmdb_txn_get(names[i0].encode()), blobs[i0])
        peers.append(Peer("lmdb-txn", _cycle_timer(lmdb_txn_get, bkeys), close_lmdb,
                          note="a read txn per get()"))

        zf = zipfile.ZipFile(st["zipfile"])
        zkeys = [k.lstrip("/") for k in keys]
        _check("zipfile", zf.read(names[i0].lstrip("/")), blobs[i0])
        peers.append(Peer("zipfile", _cycle_timer(zf.read, zkeys), zf.close))

        for p in peers:          # warm every cache: each peer reads every file once
            p.time_func(len(set(keys)))
        return peers

    return build


# -- 1b. uncached reads ----------------------------------------------------------------------
def _drop(path) -> None:
    """Evict a file (or every file of a directory) from the OS page cache."""
    path = Path(path)
    files = [q for q in path.iterdir() if q.is_file()] if path.is_dir() else [path]
    for q in files:
        fd = os.open(q, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _per_op_timer(prepare, fn, keys):
    """time_func that runs prepare(key) untimed before each timed fn(key)."""
    it = itertools.cycle(keys)

    def time_func(loops: int) -> float:
        total = 0.0
        for k in itertools.islice(it, loops):
            prepare(k)
            t0 = perf_counter()
            fn(k)
            total += perf_counter() - t0
        return total

    return time_func


UNCACHED_STORE_CACHE = 2 << 20   # cartridge's page cache here: SQLite's default (2 MB) too


def uncached_read(size: int):
    """Random reads whose bytes are in no cache: before each timed read the OS page cache of
    every store's files is dropped (posix_fadvise DONTNEED)."""

    def build(cfg: Config, tmp: Path, log=print) -> list[Peer]:
        if not hasattr(os, "posix_fadvise"):
            raise RuntimeError("uncached workloads need os.posix_fadvise (Linux)")
        rng = random.Random(6)
        n = max(64, min(cfg.read_files, (256 << 20) // size))
        names = [f"/u/d{i % 100:02d}/f{i:06d}.bin" for i in range(n)]
        blobs = [rng.randbytes(size) for _ in range(min(n, 64))]
        data = [blobs[i % len(blobs)] for i in range(n)]
        st = _fill(tmp, "unc", names, data, {"cartridge", "native", "sqlite", "lmdb", "zipfile"})
        os.sync()       # DONTNEED drops only clean pages: write everything back first
        keys = [names[rng.randrange(n)] for _ in range(max(4 * cfg.uncached_ops, 1000))]
        ops = cfg.uncached_ops
        peers = []

        c = cartridge.open(st["cartridge"], "a", sync="off", cache_size=UNCACHED_STORE_CACHE)
        cart_file = st["cartridge"]

        def cart_prep(k):
            _drop(cart_file)
            rec = engine(c).get(k.encode())        # the content chunk leaves cartridge's own cache
            if rec is not None and rec.chunk_key:
                engine(c).pager.cache.pop(rec.chunk_key)

        _check("cartridge", c.read(names[3]), data[3])
        peers.append(Peer("cartridge", _per_op_timer(cart_prep, c.read, keys), c.close,
                          fixed_loops=ops, note="read(path), 2 MiB page cache"))

        root = str(st["native"])

        def native_prep(k):
            _drop(root + k)

        def native_read(k):
            with open(root + k, "rb") as f:
                return f.read()

        peers.append(Peer("native", _per_op_timer(native_prep, native_read, keys),
                          fixed_loops=ops, note="open()+read()"))

        db = _sqlite(st["sqlite"])
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        os.sync()
        cur = db.cursor()
        sql = "SELECT data FROM sqlar WHERE name = ?"
        sq_file = st["sqlite"]

        def sqlite_read(k):
            return cur.execute(sql, (k,)).fetchone()[0]

        peers.append(Peer("sqlite", _per_op_timer(lambda k: _drop(sq_file), sqlite_read, keys),
                          db.close, fixed_loops=ops, note="default 2 MB page cache"))

        lm = {"env": None}
        lm_dir = st["lmdb"]

        def lmdb_prep(k):      # LMDB's mapped pages cannot be dropped: reopen the map
            if lm["env"] is not None:
                lm["txn"].abort()
                lm["env"].close()
            _drop(lm_dir)
            lm["env"] = _lmdb(lm_dir, readonly=True, readahead=False)
            lm["txn"] = lm["env"].begin()

        def lmdb_get(k):
            return lm["txn"].get(k.encode())

        def lmdb_close():
            if lm["env"] is not None:
                lm["txn"].abort()
                lm["env"].close()

        peers.append(Peer("lmdb", _per_op_timer(lmdb_prep, lmdb_get, keys), lmdb_close,
                          fixed_loops=ops,
                          note="get(), readahead=False; the map is reopened (untimed) before each"))

        zf = zipfile.ZipFile(st["zipfile"])
        zp = st["zipfile"]
        peers.append(Peer("zipfile", _per_op_timer(lambda k: _drop(zp),
                                                   lambda k: zf.read(k[1:]), keys),
                          zf.close, fixed_loops=ops))
        return peers

    return build


# -- 2. one 4 KiB write per commit, at each sync mode ----------------------------------------
SQLITE_SYNC = {"full": "FULL", "normal": "NORMAL", "off": "OFF"}
# LMDB: full = sync + metasync; normal = MDB_NOMETASYNC (data flushed, the last commit may be
# lost after a power cut: cartridge's "normal"); off = MDB_NOSYNC
LMDB_SYNC = {"full": (True, True), "normal": (True, False), "off": (False, False)}


def write_commit(mode: str):
    """Builder: replace a random 4 KiB file, each write its own commit, at sync `mode`."""

    def build(cfg: Config, tmp: Path, log=print) -> list[Peer]:
        rng = random.Random(2)
        n = cfg.read_files
        names = [f"/w/d{i % 100:02d}/f{i:06d}.bin" for i in range(n)]
        payload = rng.randbytes(4096)
        which = {"cartridge", "native", "sqlite", "lmdb"}
        if mode == "off":
            which.add("lmdb-nowritemap")
        st = _fill(tmp, "write", names, payload, which)
        keys = [names[rng.randrange(n)] for _ in range(max(50_000, n))]
        peers = []

        c = cartridge.open(st["cartridge"], "a", sync=mode)
        peers.append(Peer("cartridge", _cycle_timer(lambda k: c.write(k, payload), keys), c.close,
                          note=f'write(path, 4 KiB) replacing a file, sync="{mode}"'))

        if mode != "normal":
            root = str(st["native"])

            def native_write(p):
                with open(p, "wb") as f:
                    f.write(payload)
                    if mode == "full":
                        f.flush()
                        os.fsync(f.fileno())

            peers.append(Peer("native", _cycle_timer(native_write, [root + k for k in keys]),
                              note='open("wb")+write()' + ("+fsync()" if mode == "full" else
                                                          ", no fsync") + ", not atomic"))

        db = _sqlite(st["sqlite"], sync=SQLITE_SYNC[mode])

        def sqlite_write(k):
            db.execute(SQLAR_INSERT, (k, FILE_MODE, MTIME, 4096, payload))

        peers.append(Peer("sqlite", _cycle_timer(sqlite_write, keys), db.close,
                          note=f"INSERT OR REPLACE, autocommit, WAL, synchronous={SQLITE_SYNC[mode]}"))

        bkeys = [k.encode() for k in keys]
        sync, metasync = LMDB_SYNC[mode]
        for kind in ("lmdb", "lmdb-nowritemap"):
            if kind not in st:
                continue
            env = _lmdb(st[kind], writemap=(kind == "lmdb"), sync=sync, metasync=metasync)

            def lmdb_write(k, env=env):
                with env.begin(write=True) as t:
                    t.put(k, payload)

            peers.append(Peer(kind, _cycle_timer(lmdb_write, bkeys), env.close,
                              note=f"a write txn per put, sync={sync}, metasync={metasync}"
                              + (", writemap" if kind == "lmdb" else "")))
        return peers

    return build


# -- 3. bulk load: many 1 KiB files in one transaction ---------------------------------------
def bulk_load(cfg: Config, tmp: Path, log=print) -> list[Peer]:
    rng = random.Random(3)
    n = cfg.bulk_files
    names = [f"/b/d{i % 1000:03d}/f{i:07d}.bin" for i in range(n)]
    rng.shuffle(names)
    payload = rng.randbytes(1024)
    base = tmp / "bulk"
    base.mkdir()
    counter = itertools.count()

    def timer(fresh, work, cleanup):
        def time_func(loops: int) -> float:
            total = 0.0
            for _ in range(loops):
                state = fresh(base / f"t{next(counter)}")
                t0 = perf_counter()
                work(state)
                total += perf_counter() - t0
                cleanup(state)
            return total
        return time_func

    def rm(path):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        for suffix in ("-wal", "-shm", "-journal"):
            q = Path(str(path) + suffix)
            if q.exists():
                q.unlink()

    peers = []

    def cart_fresh(p):
        return p, cartridge.open(p, "w", sync="off")

    def cart_work(s):
        c = s[1]
        with c.transaction():
            for k in names:
                c.write(k, payload)

    def cart_clean(s):
        s[1].close()
        rm(s[0])

    peers.append(Peer("cartridge", timer(cart_fresh, cart_work, cart_clean), inner=n,
                      fixed_loops=1, note=f'{n:,} write() calls in one transaction() into a new '
                      'archive, sync="off", commit included'))

    def cart_many(s):
        s[1].write_many((k, payload) for k in names)

    peers.append(Peer("cartridge-write_many", timer(cart_fresh, cart_many, cart_clean), inner=n,
                      fixed_loops=1, note=f'one write_many() of {n:,} (path, data) pairs into a '
                      'new archive, sync="off", commit included'))

    def sqlite_fresh(p):
        db = _sqlite(p)
        db.execute(SQLAR)
        return p, db

    def sqlite_work(s):
        db = s[1]
        db.execute("BEGIN")
        for k in names:
            db.execute(SQLAR_INSERT, (k, FILE_MODE, MTIME, 1024, payload))
        db.execute("COMMIT")

    def sqlite_many(s):
        db = s[1]
        db.execute("BEGIN")
        db.executemany(SQLAR_INSERT, ((k, FILE_MODE, MTIME, 1024, payload) for k in names))
        db.execute("COMMIT")

    def sqlite_clean(s):
        s[1].close()
        rm(s[0])

    peers.append(Peer("sqlite", timer(sqlite_fresh, sqlite_work, sqlite_clean), inner=n,
                      fixed_loops=1, note="one execute() per row between BEGIN and COMMIT"))
    peers.append(Peer("sqlite-executemany", timer(sqlite_fresh, sqlite_many, sqlite_clean),
                      inner=n, fixed_loops=1, note="executemany() between BEGIN and COMMIT"))

    bnames = [k.encode() for k in names]

    def lmdb_fresh(p):
        return p, _lmdb(p)

    def lmdb_work(s):
        with s[1].begin(write=True) as t:
            put = t.put
            for k in bnames:
                put(k, payload)

    def lmdb_clean(s):
        s[1].close()
        rm(s[0])

    peers.append(Peer("lmdb", timer(lmdb_fresh, lmdb_work, lmdb_clean), inner=n, fixed_loops=1,
                      note="put() per file in one write txn"))

    znames = [k.lstrip("/") for k in names]

    def zip_fresh(p):
        return p, zipfile.ZipFile(p, "w", zipfile.ZIP_STORED)

    def zip_work(s):
        z = s[1]
        for k in znames:
            z.writestr(k, payload)
        z.close()

    peers.append(Peer("zipfile", timer(zip_fresh, zip_work, lambda s: rm(s[0])), inner=n,
                      fixed_loops=1, note="writestr() into a new zip, close() included"))
    for p in peers:
        p.time_func(1)     # first-touch costs (imports, page faults) out of calibration
    return peers


# -- 4. lookup at small vs large file counts ----------------------------------------------------
def lookup_name(i: int) -> str:
    return f"/l/d{i // 1000:04d}/f{i:07d}.dat"


LOOKUP_VALUE = b"0123456789abcdef"


def _lookup_store(n: int, log) -> dict:
    """Cartridge, LMDB and SQLite stores holding n 16-byte files, built once and cached under
    perf/.data/ keyed by the cartridge format version and WORKLOAD_VERSION."""
    key = f"lookup-w{WORKLOAD_VERSION}-f{cfmt.VERSION_MAJOR}.{cfmt.VERSION_MINOR}-{n}"
    d = DATA_DIR / key
    done = d / "complete"
    if done.exists():
        try:
            with cartridge.open(d / "lookup.cart", "r") as c:
                if c.stat(lookup_name(n - 1)).size == len(LOOKUP_VALUE):
                    return {"cartridge": d / "lookup.cart", "sqlite": d / "lookup.sqlite",
                            "lmdb": d / "lookup-lmdb"}
        except cartridge.CartridgeError as e:
            log(f"  cached {d.name} unusable ({e}); rebuilding")
    if d.exists():
        shutil.rmtree(d)
    tmp = DATA_DIR / (key + ".building")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    log(f"  building {n:,}-file lookup stores in {d} (cached for later runs)")
    step = 100_000
    t0 = perf_counter()
    with cartridge.open(tmp / "lookup.cart", "w", sync="off") as c:
        for lo in range(0, n, step):
            with c.transaction():
                for i in range(lo, min(n, lo + step)):
                    c.write(lookup_name(i), LOOKUP_VALUE)
    t1 = perf_counter()
    db = _sqlite(tmp / "lookup.sqlite")
    db.execute(SQLAR)
    for lo in range(0, n, step):
        db.execute("BEGIN")
        db.executemany(SQLAR_INSERT, ((lookup_name(i), FILE_MODE, MTIME, 16, LOOKUP_VALUE)
                                      for i in range(lo, min(n, lo + step))))
        db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    t2 = perf_counter()
    env = _lmdb(tmp / "lookup-lmdb")
    for lo in range(0, n, step):
        with env.begin(write=True) as t:
            for i in range(lo, min(n, lo + step)):
                t.put(lookup_name(i).encode(), LOOKUP_VALUE, append=True)
    env.close()
    t3 = perf_counter()
    log(f"  built in {t1 - t0:.1f} s (cartridge), {t2 - t1:.1f} s (sqlite), "
        f"{t3 - t2:.1f} s (lmdb)")
    (tmp / "complete").write_text(f"{n}\n")
    tmp.rename(d)
    return {"cartridge": d / "lookup.cart", "sqlite": d / "lookup.sqlite",
            "lmdb": d / "lookup-lmdb"}


def lookup(cfg: Config, tmp: Path, log=print) -> list[Peer]:
    peers = []
    rng = random.Random(4)
    for n in cfg.lookup_sizes:
        st = _lookup_store(n, log)
        lab = label(n)
        count = min(cfg.lookup_keys, 20 * n)

        def draw(count=count, n=n) -> list[str]:
            """Each peer its own random keys: peers cycling one sequence in step would find
            the leaves the peer before them just loaded."""
            return [lookup_name(rng.randrange(n)) for _ in range(count)]

        keys = draw()
        c = cartridge.open(st["cartridge"], "a", sync="off")
        assert c.stat(keys[0]).size == 16
        peers.append(Peer(f"cartridge@{lab}", _cycle_timer(c.stat, keys), c.close,
                          note="stat(path) of an existing file"))
        cro = cartridge.open(st["cartridge"], "r")
        peers.append(Peer(f"cartridge-ro@{lab}", _cycle_timer(cro.stat, draw()), cro.close,
                          note="stat(path), read-only handle"))
        peers.append(Peer(f"cartridge-exists@{lab}", _cycle_timer(c.exists, draw()),
                          note="exists(path)"))
        db = _sqlite(st["sqlite"])
        cur = db.cursor()
        sql = "SELECT mode, mtime, sz FROM sqlar WHERE name = ?"

        def sqlite_stat(k, cur=cur, sql=sql):
            return cur.execute(sql, (k,)).fetchone()

        assert sqlite_stat(keys[0])[2] == 16
        peers.append(Peer(f"sqlite@{lab}", _cycle_timer(sqlite_stat, draw()), db.close,
                          note="SELECT mode, mtime, sz WHERE name = ?"))
        env = _lmdb(st["lmdb"])
        rtxn = env.begin()
        bkeys = [k.encode() for k in draw()]
        assert rtxn.get(bkeys[0]) == LOOKUP_VALUE

        def close(rtxn=rtxn, env=env):
            rtxn.abort()
            env.close()

        peers.append(Peer(f"lmdb@{lab}", _cycle_timer(rtxn.get, bkeys), close,
                          note="get() in one long read txn"))
        for p in peers[-5:]:      # one pass over this size's keys: warm the caches
            p.time_func(len(keys))
    return peers


# -- 4c. SQLite pages: a database inside the archive against the same on a native file ------
SQL_ROWS = 300_000
SQL_LOOKUP_CACHE = 50        # SQLite pages: most lookups go to the VFS


def _sql_rows(n: int):
    return ((i, f"value {i:08d} " * 3) for i in range(n))


def _sql_side(kind: str, d: Path):
    """(apsw connection, archive handle or None) on a fresh database, the same pragmas both
    sides: journal_mode=MEMORY (cart.sqlite()'s default) and synchronous=OFF, sync="off"."""
    import apsw

    d.mkdir(parents=True, exist_ok=True)
    if kind == "native":
        conn, cart = apsw.Connection(str(d / "native.db")), None
    else:
        cart = cartridge.open(d / "member.cart", "w", sync="off")
        conn = cart.sqlite("/member.db")
    conn.execute("PRAGMA journal_mode=MEMORY").fetchall()
    conn.execute("PRAGMA synchronous=OFF").fetchall()
    return conn, cart


def _sql_fill(conn, n: int) -> None:
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES(?, ?)", _sql_rows(n))
    conn.execute("COMMIT")


def sql_insert(cfg: Config, tmp: Path, log=print) -> list[Peer]:
    """300,000 rows inserted in one transaction (executemany, commit included) into a new
    database: inside an archive (cart.sqlite) and on a native file, both through apsw."""
    n = SQL_ROWS // 10 if cfg.quick else SQL_ROWS
    counter = itertools.count()
    peers = []
    for kind in ("cartridge", "native"):
        def time_func(loops: int, kind=kind) -> float:
            total = 0.0
            for _ in range(loops):
                d = tmp / f"sqlins-{kind}-{next(counter)}"
                conn, cart = _sql_side(kind, d)
                t0 = perf_counter()
                _sql_fill(conn, n)
                total += perf_counter() - t0
                conn.close()
                if cart is not None:
                    cart.close()
                shutil.rmtree(d)
            return total
        peers.append(Peer(kind, time_func, inner=n, fixed_loops=1,
                          note=(f"{n:,} rows, executemany in BEGIN..COMMIT, " +
                                ("cart.sqlite() member, archive sync=\"off\""
                                 if kind == "cartridge" else "apsw on a native file")
                                + ", journal_mode=MEMORY, synchronous=OFF")))
    return peers


def sql_lookup(cfg: Config, tmp: Path, log=print) -> list[Peer]:
    """Point lookups by primary key in a 300,000-row table with cache_size=50 (so that most
    reach the VFS): autocommit, one statement each."""
    n = SQL_ROWS // 10 if cfg.quick else SQL_ROWS
    rng = random.Random(18)
    keys = [rng.randrange(n) for _ in range(100_000)]
    peers = []
    for kind in ("cartridge", "native"):
        conn, cart = _sql_side(kind, tmp / f"sqllk-{kind}")
        _sql_fill(conn, n)
        conn.execute(f"PRAGMA cache_size={SQL_LOOKUP_CACHE}").fetchall()
        assert conn.execute("SELECT v FROM t WHERE id=?", (keys[0],)).fetchall()

        def one(k, conn=conn):
            return conn.execute("SELECT v FROM t WHERE id=?", (k,)).fetchall()

        def close(conn=conn, cart=cart):
            conn.close()
            if cart is not None:
                cart.close()

        peers.append(Peer(kind, _cycle_timer(one, keys), close,
                          note=f"SELECT v WHERE id=? in {n:,} rows, cache_size="
                               f"{SQL_LOOKUP_CACHE}, autocommit" +
                               (", cart.sqlite() member" if kind == "cartridge" else
                                ", native file")))
    return peers


LIST_SQL = "SELECT name FROM sqlar WHERE name >= ? AND name < ?"


# -- 4b. listing the 1,000 children of one directory -----------------------------------------
def listing(cfg: Config, tmp: Path, log=print) -> list[Peer]:
    """listdir() of a directory of 1,000 files in the lookup stores of every size."""
    peers = []
    for n in cfg.lookup_sizes:
        if n < 1000:
            continue
        st = _lookup_store(n, log)
        lab = label(n)
        d = (n // 1000) // 2
        dirpath = f"/l/d{d:04d}"
        want = [lookup_name(i).rsplit("/", 1)[1] for i in range(d * 1000, d * 1000 + 1000)]
        c = cartridge.open(st["cartridge"], "a", sync="off")
        assert c.listdir(dirpath) == want
        peers.append(Peer(f"cartridge@{lab}", _cycle_timer(c.listdir, [dirpath]), c.close,
                          note="listdir(dir): sorted names"))
        db = _sqlite(st["sqlite"])
        cur = db.cursor()
        lo, hi = dirpath + "/", dirpath + "0"
        cut = len(lo)

        def sqlite_list(_d, cur=cur, lo=lo, hi=hi, cut=cut):
            return [r[0][cut:] for r in cur.execute(LIST_SQL, (lo, hi))]

        assert sqlite_list(dirpath) == want
        peers.append(Peer(f"sqlite@{lab}", _cycle_timer(sqlite_list, [dirpath]), db.close,
                          note="SELECT name WHERE name >= dir/ AND name < dir0 (range scan)"))
        env = _lmdb(st["lmdb"])
        rtxn = env.begin()
        blo = lo.encode()

        def lmdb_list(_d, rtxn=rtxn, blo=blo, cut=cut):
            cur = rtxn.cursor()
            out = []
            if cur.set_range(blo):
                for k in cur.iternext(keys=True, values=False):
                    if not k.startswith(blo):
                        break
                    out.append(k[cut:].decode())
            return out

        assert lmdb_list(dirpath) == want

        def close(rtxn=rtxn, env=env):
            rtxn.abort()
            env.close()

        peers.append(Peer(f"lmdb@{lab}", _cycle_timer(lmdb_list, [dirpath]), close,
                          note="cursor set_range + iternext(values=False) in one read txn"))
    ndir = tmp / "native-dir"
    ndir.mkdir()
    for i in range(1000):
        (ndir / f"f{i:07d}.dat").write_bytes(LOOKUP_VALUE)
    peers.append(Peer("native@1K", _cycle_timer(lambda d: sorted(os.listdir(d)), [str(ndir)]),
                      note="sorted(os.listdir(dir)) of a real directory of 1,000 files"))
    for p in peers:
        p.time_func(3)
    return peers


# -- 5. large sequential read ----------------------------------------------------------------
def seqread(cfg: Config, tmp: Path, log=print) -> list[Peer]:
    import apsw

    n = cfg.seq_bytes
    src = np.frombuffer(np.random.default_rng(5).bytes(n), dtype=np.uint8).copy()
    data = src.tobytes()
    st = _fill(tmp, "seq", ["/big.bin"], data, {"cartridge", "native", "lmdb", "zipfile"})
    peers = []
    dst = np.empty(n, dtype=np.uint8)

    def timer(fn):
        def time_func(loops):
            t0 = perf_counter()
            for _ in range(loops):
                fn()
            return perf_counter() - t0
        return time_func

    def check(name, fn):
        dst[:] = 0
        fn()
        if not np.array_equal(dst, src):
            raise AssertionError(f"{name}: read back wrong data")

    def memcpy():
        np.copyto(dst, src)

    peers.append(Peer("memcpy", timer(memcpy), note=f"np.copyto(dst, src), both {_mib(n)} arrays"))

    c = cartridge.open(st["cartridge"], "a", sync="off")

    def cart_readinto():
        c.readinto("/big.bin", dst)

    check("cartridge", cart_readinto)
    peers.append(Peer("cartridge", timer(cart_readinto), c.close,
                      note="Cartridge.readinto(path, numpy buffer): the zero-copy path"))

    def cart_buffer():
        c.read_buffer("/big.bin")

    if not np.array_equal(np.frombuffer(c.read_buffer("/big.bin"), np.uint8), src):
        raise AssertionError("cartridge-buffer: read back wrong data")
    peers.append(Peer("cartridge-buffer", timer(cart_buffer),
                      note="read_buffer(path): allocates and fills a new buffer each time"))

    try:
        with c.open("/big.bin", "rb") as f:
            f.readinto(dst)
        have_streams = True
    except (ImportError, AttributeError, NotImplementedError) as e:
        log(f"  cartridge-stream skipped: cart.open() unavailable ({type(e).__name__}: {e})")
        have_streams = False
    if have_streams:
        def cart_stream():
            with c.open("/big.bin", "rb") as f:
                f.readinto(dst)

        check("cartridge-stream", cart_stream)
        peers.append(Peer("cartridge-stream", timer(cart_stream),
                          note='cart.open(path, "rb").readinto(buffer)'))

    native_path = str(st["native"] / "big.bin")

    def native():
        with open(native_path, "rb", buffering=0) as f:
            f.readinto(dst)

    check("native", native)
    peers.append(Peer("native", timer(native), note="open(path, 'rb', buffering=0).readinto()"))

    env = _lmdb(st["lmdb"])
    dmv = memoryview(dst)

    def lmdb_read():
        with env.begin(buffers=True) as t:
            dmv[:] = t.get(b"/big.bin")

    check("lmdb", lmdb_read)
    peers.append(Peer("lmdb", timer(lmdb_read), env.close,
                      note="get(buffers=True) (zero-copy view of the map) copied into the buffer"))

    if n <= SQLITE_MAX_BLOB:
        sp = tmp / "seq.sqlite"
        db = apsw.Connection(str(sp))
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.execute(SQLAR)
        db.execute(SQLAR_INSERT, ("/big.bin", FILE_MODE, MTIME, n, data))
        rowid = db.last_insert_rowid()

        def sqlite_read():
            with db.blob_open("main", "sqlar", "data", rowid, False) as b:
                b.readinto(dst)

        check("sqlite", sqlite_read)
        peers.append(Peer("sqlite", timer(sqlite_read), db.close,
                          note="apsw blob_open().readinto() (stdlib sqlite3 has no readinto)"))
    else:
        log(f"  sqlite left out: a blob holds at most {SQLITE_MAX_BLOB:,} bytes (SQLITE_MAX_LENGTH)")

    zf = zipfile.ZipFile(st["zipfile"])

    def zip_read():
        with zf.open("big.bin") as f:
            f.readinto(dst)

    check("zipfile", zip_read)
    peers.append(Peer("zipfile", timer(zip_read), zf.close, note="ZipFile.open(name).readinto()"))
    del data
    return peers


def _mib(n: int) -> str:
    return f"{n >> 30} GiB" if n >= 1 << 30 and n % (1 << 30) == 0 else f"{n >> 20} MiB"


# -- 6. large sequential write -----------------------------------------------------------------
def seqwrite(cfg: Config, tmp: Path, log=print) -> list[Peer]:
    """Write one large file (replacing the previous version), syncing off everywhere."""
    n = cfg.seq_bytes
    src = np.frombuffer(np.random.default_rng(8).bytes(n), dtype=np.uint8).copy()
    dst = np.empty(n, dtype=np.uint8)
    peers = []

    def timer(fn):
        def time_func(loops):
            t0 = perf_counter()
            for _ in range(loops):
                fn()
            return perf_counter() - t0
        return time_func

    peers.append(Peer("memcpy", timer(lambda: np.copyto(dst, src)),
                      note=f"np.copyto(dst, src), both {_mib(n)} arrays"))
    c = cartridge.open(tmp / "w.cart", "w", sync="off")

    def cart_write():
        c.write("/big.bin", src)

    cart_write()
    assert c.stat("/big.bin").size == n
    peers.append(Peer("cartridge", timer(cart_write), c.close,
                      note='write(path, numpy array) replacing the file, sync="off" (own commit)'))
    native_path = str(tmp / "big.bin")

    def native():
        with open(native_path, "wb", buffering=0) as f:
            f.write(src)

    peers.append(Peer("native", timer(native), note="open('wb', buffering=0).write(), no fsync"))
    env = _lmdb(tmp / "w-lmdb")

    def lmdb_write():
        with env.begin(write=True) as t:
            t.put(b"/big.bin", src)

    peers.append(Peer("lmdb", timer(lmdb_write), env.close, note="put() in a write txn, "
                      "sync=False, writemap"))
    if n <= SQLITE_MAX_BLOB:
        db = _sqlite(tmp / "w.sqlite")
        db.execute(SQLAR)

        def sqlite_write():
            db.execute(SQLAR_INSERT, ("/big.bin", FILE_MODE, MTIME, n, memoryview(src)))

        peers.append(Peer("sqlite", timer(sqlite_write), db.close,
                          note="INSERT OR REPLACE of the blob, WAL, synchronous=OFF"))
    else:
        log(f"  sqlite left out: a blob holds at most {SQLITE_MAX_BLOB:,} bytes (SQLITE_MAX_LENGTH)")
    for p in peers:
        p.time_func(1)
    return peers


WORKLOADS = {
    "read1k": (cached_read(1024), "Cached random reads of 1 KiB files"),
    "read4k": (cached_read(4096), "Cached random reads of 4 KiB files"),
    "read64k": (cached_read(64 << 10), "Cached random reads of 64 KiB files"),
    "read1m": (cached_read(1 << 20), "Cached random reads of 1 MiB files"),
    "uncached4k": (uncached_read(4096), "Uncached random reads of 4 KiB files"),
    "uncached1m": (uncached_read(1 << 20), "Uncached random reads of 1 MiB files"),
    "commit-off": (write_commit("off"), '4 KiB write, each its own commit, sync="off"'),
    "commit-normal": (write_commit("normal"), '4 KiB write, each its own commit, sync="normal"'),
    "commit-full": (write_commit("full"), '4 KiB write, each its own commit, sync="full"'),
    "bulk": (bulk_load, "Bulk load: 1 KiB files in one transaction (time per file)"),
    "lookup": (lookup, "Lookup of a random existing path, by archive size"),
    "listdir": (listing, "Listing the 1,000 children of a directory, by archive size"),
    "sqlinsert": (sql_insert, "SQLite inside the archive: 300,000-row insert (time per row)"),
    "sqllookup": (sql_lookup, "SQLite inside the archive: point lookups, cache_size=50"),
    "seqread": (seqread, "Sequential read of one large file into a preallocated buffer"),
    "seqwrite": (seqwrite, "Sequential write of one large file, syncing off"),
}
