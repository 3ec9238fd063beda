"""Dense small files: packs (issue 16 targets, docs/FORMAT.md §14), reported as ratios measured
in the same run.

    python perf/pack_bench.py           # 10,000 files per size (about a minute)
    python perf/pack_bench.py --quick   # 2,000 files, for a look (and the smoke test)

Workloads:
  space        N files of each size written with write_many into a new archive, against an
               sqlar table (SQLite, WAL checkpointed) holding the same files: bytes allocated
               on disk / bytes of content; target for 1, 2 and 5 KiB: <= SQLite's, and <= 1.25
               for 1 KiB
  read1k       cached random reads of 1 KiB files (packed; read(path) on a handle opened "a"
               as in perf/workloads.py, every file read once before timing) against LMDB
               get in one long-lived read transaction, the same keys in the same order;
               target ratio <= 1.0; and against the same files unpacked (PACK_MAX = 0)
  write_many   write_many() of N 1 KiB files into a new archive, packing on against packing
               off (cartridge.packs.PACK_MAX = 0: the write path of the build before packs, one
               page run per file) alternately in the same run; target ratio <= 1.05
  txn          write() of N 1 KiB files in one transaction (they share the transaction's
               open pack), packing on against off: time and space (comparison rows)
  rewrite      N 1 KiB files written with write_many, each overwritten twice (write_many), then
               vacuum(): the file's size against its size right after the first load; target
               <= 1.1

Each row's "met" is computed from the number it shows.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cartridge
from cartridge import packs
from perf.measures import _allocated
from perf.workloads import FILE_MODE, MTIME, SQLAR, SQLAR_INSERT, _lmdb, _sqlite

SIZES = (100, 1024, 2048, 3000, 5120)
TARGET_SIZES = {1024: 1.25, 2048: None, 5120: None}     # size -> extra absolute bound


def names_for(n: int) -> list[str]:
    return [f"/s/d{i % 100:02d}/f{i:07d}.bin" for i in range(n)]


def space(tmp: Path, n: int, log) -> dict:
    out = {}
    rng = random.Random(16)
    names = names_for(n)
    for size in SIZES:
        data = [rng.randbytes(size) for _ in range(n)]
        content = n * size
        p = tmp / f"space{size}.cart"
        with cartridge.open(p, "w", sync="off") as c:
            c.write_many(zip(names, data))
        cart = _allocated(p)[0] / content
        p.unlink()
        with cartridge.open(p, "w", sync="off", audit="off") as c:
            c.write_many(zip(names, data))
        bare = _allocated(p)[0] / content
        q = tmp / f"space{size}.sqlite"
        db = _sqlite(q)
        db.execute(SQLAR)
        db.execute("BEGIN")
        db.executemany(SQLAR_INSERT, ((k, FILE_MODE, MTIME, size, v) for k, v in zip(names, data)))
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        sq = _allocated(q)[0] / content
        out[size] = (cart, sq, bare)
        log(f"  space {size:>5} B: cartridge {cart:.2f}x (audit off {bare:.2f}x), "
            f"SQLite {sq:.2f}x")
        p.unlink()
        q.unlink()
    return out


def read1k(tmp: Path, n: int, repeats: int, log) -> tuple[float, float, float]:
    rng = random.Random(17)
    names = names_for(n)
    data = [rng.randbytes(1024) for _ in range(n)]
    p = tmp / "read.cart"
    with cartridge.open(p, "w", sync="off") as c:
        c.write_many(zip(names, data))
    q = tmp / "read-unpacked.cart"
    saved = packs.PACK_MAX
    packs.PACK_MAX = 0
    try:
        with cartridge.open(q, "w", sync="off") as c:
            c.write_many(zip(names, data))
    finally:
        packs.PACK_MAX = saved
    env = _lmdb(tmp / "read-lmdb")
    with env.begin(write=True) as t:
        for k, v in zip(names, data):
            t.put(k.encode(), v)
    order = list(range(n))
    rng.shuffle(order)
    keys = [names[i] for i in order]
    bkeys = [k.encode() for k in keys]
    best_c = best_l = best_u = float("inf")
    # "a" as perf/workloads.py's cartridge peer (a read-only handle also looks for a newer
    # commit on every call: its own row there, cartridge-ro)
    with cartridge.open(p, "a", sync="off") as c, env.begin() as txn, \
            cartridge.open(q, "a", sync="off") as u:
        assert c.info()["packed_files"] == n and u.info()["packed_files"] == 0
        read = c.read
        uread = u.read
        get = txn.get
        for k in keys:                      # warm: every file in the page cache
            read(k)
            uread(k)
        for _ in range(repeats):
            t0 = time.perf_counter()
            for k in keys:
                uread(k)
            best_u = min(best_u, time.perf_counter() - t0)
            t0 = time.perf_counter()
            for k in keys:
                read(k)
            best_c = min(best_c, time.perf_counter() - t0)
            t0 = time.perf_counter()
            for k in bkeys:
                get(k)
            best_l = min(best_l, time.perf_counter() - t0)
        assert read(keys[0]) == data[order[0]] and bytes(get(bkeys[0])) == data[order[0]]
    env.close()
    log(f"  read1k: cartridge {best_c / n * 1e9:.0f} ns (unpacked {best_u / n * 1e9:.0f} ns), "
        f"LMDB {best_l / n * 1e9:.0f} ns")
    return best_c / n, best_l / n, best_u / n


def write_many(tmp: Path, n: int, repeats: int, log) -> tuple[float, float]:
    rng = random.Random(18)
    items = list(zip(names_for(n), (rng.randbytes(1024) for _ in range(n))))
    saved = packs.PACK_MAX
    times: dict[bool, float] = {True: float("inf"), False: float("inf")}
    try:
        for _ in range(repeats):
            for on in (True, False):
                packs.PACK_MAX = saved if on else 0
                p = tmp / f"wm-{on}.cart"
                with cartridge.open(p, "w", sync="off", audit="off") as c:
                    t0 = time.perf_counter()
                    c.write_many(items)
                    times[on] = min(times[on], time.perf_counter() - t0)
                    assert (c.info()["packed_files"] > 0) == on
                p.unlink()
    finally:
        packs.PACK_MAX = saved
    log(f"  write_many 1 KiB: packed {n / times[True]:,.0f} files/s, "
        f"unpacked {n / times[False]:,.0f} files/s")
    return times[True], times[False]


def txn_writes(tmp: Path, n: int, repeats: int, log) -> tuple[float, float, float, float]:
    """write() per file inside one transaction (they share the transaction's open pack),
    packing on and off: (time on, time off, bytes/content on, bytes/content off)."""
    rng = random.Random(20)
    items = list(zip(names_for(n), (rng.randbytes(1024) for _ in range(n))))
    saved = packs.PACK_MAX
    times: dict[bool, float] = {True: float("inf"), False: float("inf")}
    space: dict[bool, float] = {}
    try:
        for _ in range(repeats):
            for on in (True, False):
                packs.PACK_MAX = saved if on else 0
                p = tmp / f"txn-{on}.cart"
                with cartridge.open(p, "w", sync="off", audit="off") as c:
                    t0 = time.perf_counter()
                    with c.transaction():
                        for k, v in items:
                            c.write(k, v)
                    times[on] = min(times[on], time.perf_counter() - t0)
                space[on] = _allocated(p)[0] / (n * 1024)
                p.unlink()
    finally:
        packs.PACK_MAX = saved
    log(f"  write() in a transaction, 1 KiB: packed {times[True] / n * 1e6:.1f} us/file "
        f"({space[True]:.2f}x), unpacked {times[False] / n * 1e6:.1f} us/file "
        f"({space[False]:.2f}x)")
    return times[True], times[False], space[True], space[False]


def rewrite(tmp: Path, n: int, log) -> tuple[int, int]:
    rng = random.Random(19)
    names = names_for(n)
    p = tmp / "rewrite.cart"
    with cartridge.open(p, "w", sync="off") as c:
        c.write_many((k, rng.randbytes(1024)) for k in names)
    first = os.path.getsize(p)
    with cartridge.open(p, "a", sync="off") as c:
        for _ in range(2):
            c.write_many((k, rng.randbytes(1024)) for k in names)
        c.vacuum()
        assert c.verify().ok
    after = os.path.getsize(p)
    log(f"  rewrite: {first:,} B after the first load, {after:,} B after two rewrites + vacuum")
    return first, after


def met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def rows_of(sp: dict, rd: tuple, wm: tuple, rw: tuple,
            tx: tuple) -> list[tuple[str, str, str, str]]:
    rows = []
    for size, bound in TARGET_SIZES.items():
        cart, sq, bare = sp[size]
        rows.append((f"space on disk / content, {size:,} B files: cartridge", f"{cart:.2f}",
                     f"<= SQLite ({sq:.2f})", met(cart <= sq)))
        if bound is not None:
            rows.append((f"space on disk / content, {size:,} B files", f"{cart:.2f}",
                         f"<= {bound}", met(cart <= bound)))
            rows.append((f"space on disk / content, {size:,} B files, audit=\"off\"",
                         f"{bare:.2f}", f"<= {bound}", met(bare <= bound)))
    for size in SIZES:
        if size not in TARGET_SIZES:
            cart, sq, bare = sp[size]
            rows.append((f"space on disk / content, {size:,} B files (no target)",
                         f"{cart:.2f} (audit off {bare:.2f}, SQLite {sq:.2f})",
                         "(comparison)", "-"))
    r = rd[0] / rd[1]
    rows.append(("cached random read of 1 KiB packed files: cartridge / LMDB get", f"{r:.2f}",
                 "<= 1.0", met(r <= 1.0)))
    u = rd[0] / rd[2]
    rows.append(("cached random read of 1 KiB files: packed / unpacked (PACK_MAX = 0)",
                 f"{u:.2f}", "(comparison)", "-"))
    w = wm[0] / wm[1]
    rows.append(("write_many of 1 KiB files: packing on / off", f"{w:.2f}", "<= 1.05",
                 met(w <= 1.05)))
    rows.append(("write() of 1 KiB files in one transaction: packing on / off",
                 f"{tx[0] / tx[1]:.2f}", "(comparison)", "-"))
    rows.append(("  space on disk / content, audit=\"off\": packing on (off)",
                 f"{tx[2]:.2f} ({tx[3]:.2f})", "(comparison)", "-"))
    v = rw[1] / rw[0]
    rows.append(("file size after 2 rewrites of every file + vacuum / after the first load",
                 f"{v:.2f}", "<= 1.1", met(v <= 1.1)))
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2,000 files per size")
    args = ap.parse_args(argv)
    n = 2000 if args.quick else 10_000
    repeats = 3 if args.quick else 5
    tmp = Path(tempfile.mkdtemp(prefix="cart-packs-"))
    try:
        sp = space(tmp, n, print)
        rd = read1k(tmp, n, repeats, print)
        wm = write_many(tmp, n, repeats, print)
        tx = txn_writes(tmp, n, repeats, print)
        rw = rewrite(tmp, n, print)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = rows_of(sp, rd, wm, rw, tx)
    print("\n| target | measured | threshold | met |\n|---|---:|---:|:---:|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return {"space": sp, "read1k": rd, "write_many": wm, "txn": tx, "rewrite": rw, "rows": rows}


if __name__ == "__main__":
    main()
