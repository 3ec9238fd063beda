"""SQLite inside the archive against apsw on a native file, same run.

    python perf/sqlite_bench.py                     # sync off, normal and full
    python perf/sqlite_bench.py --sync off --quick  # a tenth of the sizes (autocommit: still 1,000)
    python perf/sqlite_bench.py --journal memory --journal delete   # like for like in both modes
    python perf/sqlite_bench.py --json out.json     # also save a pyperf BenchmarkSuite

Two comparisons, printed as two tables:
  same pragmas   (the targets) both sides run PRAGMA journal_mode=J (each --journal, default
                 MEMORY) and PRAGMA synchronous=S; the archive is opened with sync=s, natively
                 SQLite syncs its file as synchronous=S says (s = off/normal/full, S = OFF/...)
  defaults       (labelled, not the targets) each side as an application would run it safely:
                 the archive with cart.sqlite()'s defaults (journal_mode=MEMORY, crash-safe
                 because the archive commit is atomic) and sync=s, against native SQLite's default
                 rollback journal (DELETE) at synchronous=S. Skip it with --no-defaults.
Workloads:
  speedtest   apsw.speedtest (bigstmt, statements, statements_nobindings) total, on a file, both
              sides through `python -m cartridge.speedtest` with the same pragmas
  lookups     200,000 random primary-key lookups in a 1,000,000-row table, cache_size=-256 (256 KiB)
  bulk        1,000,000 rows inserted in one transaction
  autocommit  1,000 single-row INSERTs, each its own transaction
Each value is the median of --repeat runs (autocommit: at least 7, its fsync times vary most on a
shared disk); the ratio is cartridge / native (lower is better).
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
AUTOCOMMIT_REPEAT = 7
TARGETS = {"speedtest": 1.3, "lookups": 1.3, "bulk": 1.5, "autocommit": 1.5}


class Side:
    """One side of a comparison: a native file or an archive member, with its pragmas."""

    def __init__(self, kind: str, d: Path, sync: str, name: str, pragmas: dict[str, str]):
        self.kind, self.d, self.sync, self.name, self.pragmas = kind, d, sync, name, pragmas
        self.cart = None

    def connect(self) -> apsw.Connection:
        if self.kind == "native":
            conn = apsw.Connection(str(self.d / f"{self.name}.db"))
        else:
            if self.cart is None:
                self.cart = cartridge.open(str(self.d / f"{self.name}.cart"), "a", sync=self.sync)
            conn = self.cart.sqlite(f"/{self.name}.db")
        for k, v in self.pragmas.items():
            conn.execute(f"PRAGMA {k}={v}").fetchall()
        return conn

    def close(self):
        if self.cart is not None:
            self.cart.close()
            self.cart = None


def configs(sync: str, journals: list[str], defaults: bool) -> list[tuple[str, dict, dict]]:
    """(label, native pragmas, cartridge pragmas) for one sync level."""
    S = SYNC[sync]
    out = [(f"same pragmas: journal_mode={j.upper()} synchronous={S}",
            {"journal_mode": j.upper(), "synchronous": S},
            {"journal_mode": j.upper(), "synchronous": S}) for j in journals]
    if defaults:
        out.append((f"defaults: cartridge cart.sqlite() (journal_mode=MEMORY) vs native "
                    f"journal_mode=DELETE synchronous={S}",
                    {"journal_mode": "DELETE", "synchronous": S}, {}))
    return out


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
    cmd = [sys.executable, "-m", "cartridge.speedtest"]
    if "journal_mode" in side.pragmas:
        cmd += ["--journal-mode", side.pragmas["journal_mode"]]
    if "synchronous" in side.pragmas:
        cmd += ["--synchronous", side.pragmas["synchronous"]]
    if side.kind == "native":
        cmd += ["--database", str(side.d / "speed.db")]
    else:
        cmd += ["--archive-sync", side.sync, "--vfs", "cartridge",
                "--database", f"{side.d / 'speed.cart'}::/speed.db"]
    # speedtest also sets page_size=4096, cache_size, locking_mode=EXCLUSIVE, temp_store=MEMORY
    cmd += ["--apsw", "--scale", str(scale), "--iterations", "2", "--hide-runs"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    total = sum(float(m.group(1)) for m in re.finditer(r"^apsw_\w+\s+([\d.]+)", out, re.M))
    return total


def measure(w: str, base: Path, sync: str, pragmas: dict, sizes: dict, repeat: int) -> dict:
    """{kind: [seconds per run]}: the two sides take turns (native first in even rounds,
    cartridge first in odd ones), so that a slow spell of a shared machine hits both."""
    sides = {}
    for kind in ("native", "cartridge"):
        if w == "lookups":                      # build once, then time lookups only
            d = base / f"{kind}-lk"
            d.mkdir()
            side = Side(kind, d, sync, "bench", pragmas[kind])
            w_bulk(side, sizes["rows"])
            side.close()
            sides[kind] = side
    out: dict[str, list[float]] = {"native": [], "cartridge": []}
    if w == "autocommit":
        repeat = max(repeat, AUTOCOMMIT_REPEAT)     # short runs whose fsyncs vary a lot
    for r in range(repeat):
        for kind in ("native", "cartridge") if r % 2 == 0 else ("cartridge", "native"):
            if w == "lookups":
                side = sides[kind]
            else:
                d = base / f"{kind}{r}"
                d.mkdir()
                side = Side(kind, d, sync, "bench", pragmas[kind])
            try:
                if w == "lookups":
                    out[kind].append(w_lookups(side, sizes["rows"], sizes["lookups"]))
                elif w == "bulk":
                    out[kind].append(w_bulk(side, sizes["bulk"]))
                elif w == "autocommit":
                    out[kind].append(w_autocommit(side, sizes["auto"]))
                else:
                    out[kind].append(w_speedtest(side, sizes["scale"]))
            finally:
                side.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sync", action="append", choices=list(SYNC), help="sync level(s) (default: all)")
    ap.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="speedtest,lookups,bulk,autocommit")
    ap.add_argument("--journal", action="append", type=str.lower,
                    choices=["memory", "delete", "truncate", "persist", "wal", "off"],
                    help="journal mode(s) of the same-pragmas comparison (default: memory)")
    ap.add_argument("--no-defaults", action="store_true", help="skip the defaults comparison")
    ap.add_argument("--json", default=None, help="save a pyperf BenchmarkSuite here")
    args = ap.parse_args(argv)
    syncs = args.sync or ["off", "normal", "full"]
    journals = args.journal or ["memory"]
    div = 10 if args.quick else 1
    sizes = {"rows": 1_000_000 // div, "lookups": 200_000 // div, "bulk": 1_000_000 // div,
             "auto": 1000, "scale": 2 if args.quick else 5}
    results = []
    print(f"apsw {apsw.apsw_version()}, SQLite {apsw.sqlite_lib_version()}; "
          f"{'quick' if args.quick else 'full'} sizes, median of {args.repeat}")
    for sync in syncs:
        for label, nat_pragmas, car_pragmas in configs(sync, journals, not args.no_defaults):
            print(f"\n[sync={sync}] {label}")
            print(f"{'workload':12} {'native s':>10} {'cartridge s':>12} {'ratio':>7} {'target':>7}")
            tag = "same" if label.startswith("same") else "defaults"
            jm = nat_pragmas["journal_mode"].lower() if tag == "same" else "default"
            for w in args.only.split(","):
                base = Path(tempfile.mkdtemp(prefix="cart-sqlbench-"))
                try:
                    ratios = measure(w, base, sync, {"native": nat_pragmas, "cartridge": car_pragmas},
                                     sizes, args.repeat)
                    nat = statistics.median(ratios["native"])
                    car = statistics.median(ratios["cartridge"])
                    results.append((w, sync, jm, ratios))
                    target = f"{TARGETS[w]:6.1f}x" if tag == "same" else f"{'-':>7}"
                    print(f"{w:12} {nat:10.3f} {car:12.3f} {car / nat:6.2f}x {target}", flush=True)
                finally:
                    shutil.rmtree(base, ignore_errors=True)
    if args.json:
        import pyperf

        suite = pyperf.BenchmarkSuite([
            pyperf.Benchmark([pyperf.Run(vals, metadata={"name": f"sqlite-{w}-{sync}-{jm}-{kind}",
                                                         "unit": "second"},
                                         collect_metadata=False)])
            for w, sync, jm, r in results for kind, vals in r.items()])
        suite.dump(args.json, replace=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
