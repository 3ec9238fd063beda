"""SQLite inside the archive against apsw on a native file, same pragmas, same run.

    python perf/sqlite_bench.py                     # sync off, normal and full
    python perf/sqlite_bench.py --sync off --quick  # smaller sizes
    python perf/sqlite_bench.py --json out.json     # also save a pyperf BenchmarkSuite

Workloads (journal_mode=MEMORY on both sides, the cartridge default; synchronous=OFF/NORMAL/FULL
natively against the archive's sync="off"/"normal"/"full"):
  speedtest   apsw.speedtest (bigstmt, statements, statements_nobindings) total, on a file
  lookups     200,000 random primary-key lookups in a 1,000,000-row table, cache_size=-256 (256 KiB)
  bulk        1,000,000 rows inserted in one transaction
  autocommit  1,000 single-row INSERTs, each its own transaction
Each value is the median of --repeat runs; the ratio is cartridge / native (lower is better).
"""
from __future__ import annotations

import argparse
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import apsw

import cartridge

SYNC = {"off": "OFF", "normal": "NORMAL", "full": "FULL"}
TARGETS = {"speedtest": 1.3, "lookups": 1.3, "bulk": 1.5, "autocommit": 1.5}


class Side:
    """One side of a comparison: a native file or an archive member."""

    def __init__(self, kind: str, d: Path, sync: str, name: str):
        self.kind, self.d, self.sync, self.name = kind, d, sync, name
        self.cart = None

    def connect(self) -> apsw.Connection:
        if self.kind == "native":
            conn = apsw.Connection(str(self.d / f"{self.name}.db"))
        else:
            if self.cart is None:
                self.cart = cartridge.open(str(self.d / f"{self.name}.cart"), "a", sync=self.sync)
            conn = self.cart.sqlite(f"/{self.name}.db")
        conn.execute("PRAGMA journal_mode=MEMORY").fetchall()
        conn.execute(f"PRAGMA synchronous={SYNC[self.sync]}")
        return conn

    def close(self):
        if self.cart is not None:
            self.cart.close()
            self.cart = None


def fill(conn, n: int) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES(?, ?)", ((i, f"value {i:08d} " * 3) for i in range(n)))
    conn.execute("COMMIT")


def w_bulk(side: Side, n: int) -> float:
    conn = side.connect()
    t = time.perf_counter()
    fill(conn, n)
    dt = time.perf_counter() - t
    conn.close()
    return dt


def w_lookups(side: Side, rows: int, n: int) -> float:
    conn = side.connect()
    if conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()[0][0] == 0:
        fill(conn, rows)
    conn.execute("PRAGMA cache_size=-256")
    rng = random.Random(1)
    keys = [rng.randrange(rows) for _ in range(n)]
    t = time.perf_counter()
    for k in keys:
        conn.execute("SELECT v FROM t WHERE id=?", (k,)).fetchall()
    dt = time.perf_counter() - t
    conn.close()
    return dt


def w_autocommit(side: Side, n: int) -> float:
    conn = side.connect()
    conn.execute("CREATE TABLE IF NOT EXISTS a(x INTEGER, y TEXT)")
    t = time.perf_counter()
    for i in range(n):
        conn.execute("INSERT INTO a VALUES(?, 'some text')", (i,))
    dt = time.perf_counter() - t
    conn.close()
    return dt


def w_speedtest(side: Side, scale: int) -> float:
    if side.kind == "native":
        db = str(side.d / "speed.db")
        cmd = [sys.executable, "-m", "apsw.speedtest", "--database", db]
    else:
        db = f"{side.d / 'speed.cart'}::/speed.db"
        cmd = [sys.executable, "-m", "cartridge.speedtest", "--vfs", "cartridge", "--database", db]
    cmd += ["--apsw", "--scale", str(scale), "--iterations", "2", "--hide-runs"]
    # speedtest sets its own pragmas (locking_mode=EXCLUSIVE, default journal and synchronous):
    # each side runs with its defaults (native DELETE/FULL, cartridge MEMORY/sync="full")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    total = sum(float(m.group(1)) for m in re.finditer(r"^apsw_\w+\s+([\d.]+)", out, re.M))
    return total


def measure(fn, repeat: int, fresh) -> list[float]:
    out = []
    for _ in range(repeat):
        side = fresh()
        try:
            out.append(fn(side))
        finally:
            side.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sync", action="append", choices=list(SYNC), help="sync level(s) (default: all)")
    ap.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="speedtest,lookups,bulk,autocommit")
    ap.add_argument("--json", default=None, help="save a pyperf BenchmarkSuite here")
    args = ap.parse_args(argv)
    syncs = args.sync or ["off", "normal", "full"]
    div = 10 if args.quick else 1
    rows, lookups, bulk, auto = 1_000_000 // div, 200_000 // div, 1_000_000 // div, 1000 // div
    scale = 2 if args.quick else 5
    results = []
    print(f"apsw {apsw.apsw_version()}, SQLite {apsw.sqlite_lib_version()}, journal_mode=MEMORY")
    print(f"{'workload':12} {'sync':7} {'native s':>10} {'cartridge s':>12} {'ratio':>7} {'target':>7}")
    for sync in syncs:
        for w in args.only.split(","):
            base = Path(tempfile.mkdtemp(prefix="cart-sqlbench-"))
            try:
                ratios = {}
                for kind in ("native", "cartridge"):
                    counter = [0]

                    def fresh(kind=kind, counter=counter, base=base, sync=sync):
                        counter[0] += 1
                        d = base / f"{kind}{counter[0]}"
                        d.mkdir()
                        return Side(kind, d, sync, "bench")

                    if w == "lookups":         # build once, then time lookups only
                        d = base / f"{kind}-lk"
                        d.mkdir()
                        side = Side(kind, d, sync, "bench")
                        w_bulk(side, rows)
                        side.close()
                        vals = measure(lambda s, side=side: w_lookups(side, rows, lookups),
                                       args.repeat, lambda side=side: side)
                    else:
                        fn = {"bulk": lambda s: w_bulk(s, bulk),
                              "autocommit": lambda s: w_autocommit(s, auto),
                              "speedtest": lambda s: w_speedtest(s, scale)}[w]
                        vals = measure(fn, args.repeat, fresh)
                    ratios[kind] = vals
                nat, car = statistics.median(ratios["native"]), statistics.median(ratios["cartridge"])
                ratio = car / nat
                results.append((w, sync, ratios))
                print(f"{w:12} {sync:7} {nat:10.3f} {car:12.3f} {ratio:6.2f}x {TARGETS[w]:6.1f}x",
                      flush=True)
            finally:
                shutil.rmtree(base, ignore_errors=True)
    if args.json:
        import pyperf

        suite = pyperf.BenchmarkSuite([
            pyperf.Benchmark([pyperf.Run(vals, metadata={"name": f"sqlite-{w}-{sync}-{kind}",
                                                         "unit": "second"},
                                         collect_metadata=False)])
            for w, sync, r in results for kind, vals in r.items()])
        suite.dump(args.json, replace=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
