"""Snapshot, compaction and vacuum benchmarks (issue 14 targets), reported as ratios.

    python perf/space_bench.py           # full sizes (1M files, 256 MiB); a few minutes
    python perf/space_bench.py --quick   # small sizes, for a look (and the smoke test)

Workloads (minimum of repeats; absolute times are noise on a shared machine, the ratios in one
run are what count):
  snapshot        cart.snapshot() on an archive of 1K files and of 1M files (sync="off": the
                  cost of the operation itself, not of the disk's flush); target <= 1 ms at
                  both and a ratio <= 1.5
  compact cycle   one cart.compact(max_pages=100) on a 64 MiB archive with half its files
                  deleted (sync="off" and "full"); target <= 10 ms. With sync="full" a cycle
                  is one sealed commit (FORMAT 2.3: one fdatasync), so its peer is the disk's
                  floor: the same number of pages written and fdatasync'ed once, same run
  vacuum          cart.vacuum() of an archive with every other 256 KiB file deleted, against
                  SQLite's VACUUM of an sqlar table holding the same files after the same
                  deletes, in the same run: MiB moved per second (cartridge: the pages it
                  moved; SQLite: VACUUM rewrites the whole database) and the ratio of the two
                  elapsed times; target >= 200 MiB/s
  delete_snapshot delete_snapshot() after K files changed (the same files: every 2nd of the
                  first 2K), at two archive sizes: the cost should follow K (changed pages),
                  not the archive size; also per held page (a changed file holds its content
                  page and a share of the catalog leaves and allocation-map nodes it touched)
  cycle scale     the work of one cycle (sync="off") with free space in 1-page holes at 5K and
                  50K live files: it grows with the catalog (one pass over its entries per cycle)
  delete pass     the part of delete_snapshot() that does look at the whole archive: the
                  in-memory bookkeeping (the union of the remaining snapshots' reach, one byte
                  per page each, and the scan of the held bitmap's words) at 1M and 10M pages,
                  with one snapshot left and a handful of held pages, through the allocator's
                  and snapstore's own code (no 4 GiB file needed)

Each table row's "met" is computed from the number it shows; rows that are a comparison with
no target of their own (the vacuum time ratio to SQLite) say "-".
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cartridge

MIB = 1 << 20


def best(fn, repeats: int) -> float:
    """The minimum time of `repeats` calls of fn() (each may set up first: fn returns the
    seconds of the part measured)."""
    return min(fn() for _ in range(repeats))


def build_tiny_files(path: str, n: int) -> None:
    """n files of 16 bytes (inline in the catalog), written in batches."""
    with cartridge.open(path, "x", sync="off") as c:
        batch = 100_000
        for lo in range(0, n, batch):
            c.write_many((f"/d{i // 1000}/f{i}", b"%16d" % i) for i in range(lo, min(n, lo + batch)))


def bench_snapshot(tmp: str, sizes: list[int], repeats: int, log) -> dict:
    out = {}
    for n in sizes:
        p = os.path.join(tmp, f"snap{n}.cart")
        build_tiny_files(p, n)
        with cartridge.open(p, "a", sync="off") as c:
            times = []
            for i in range(repeats):
                t = time.perf_counter()
                c.snapshot(f"s{i}")
                times.append(time.perf_counter() - t)
            out[n] = statistics.median(times)
        os.unlink(p)
        log(f"snapshot at {n:,} files: {out[n] * 1e3:.3f} ms (median of {repeats})")
    return out


def build_files(path: str, n: int, size: int, sync: str, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    blob = rng.randbytes(size + 4096)
    datas = []
    with cartridge.open(path, "x", sync=sync) as c:
        with c.transaction():
            for i in range(n):
                d = blob[i % 4096:i % 4096 + size]
                c.write(f"/f{i:06d}", d)
                datas.append(d)
    return datas


def bench_compact_cycle(tmp: str, total_mib: int, repeats: int, log) -> dict:
    out = {}
    for sync in ("off", "full"):
        p = os.path.join(tmp, f"cycle-{sync}.cart")
        n = total_mib * MIB // (64 << 10)
        build_files(p, n, 64 << 10, "off")
        rng = random.Random(2)
        with cartridge.open(p, "a", sync=sync) as c:
            with c.transaction():
                for i in rng.sample(range(n), n // 2):
                    c.delete(f"/f{i:06d}")
            times = []
            shrunk = []
            for _ in range(repeats):
                t = time.perf_counter()
                st = c.compact(max_pages=100)
                times.append(time.perf_counter() - t)
                shrunk.append(st.bytes_freed)
                if st.done:
                    break
            out[sync] = statistics.median(times)
            if sync == "full":
                out["shrink_cycles"] = sum(t > 0 for t in shrunk)
                out["cycles"] = len(times)
                out["floor"] = fsync_floor(tmp, c.info()["file_bytes"], len(times))
        os.unlink(p)
        log(f"compact(max_pages=100), sync={sync!r}: {out[sync] * 1e3:.2f} ms per cycle "
            f"(median of {len(times)})")
    log(f"  the disk's floor for one durable commit (116 pages written at 4 places, one "
        f"fdatasync): {out['floor'] * 1e3:.2f} ms (median); cycles that also shrank the file "
        f"(3 syncs): {out['shrink_cycles']} of {out['cycles']}")
    # the worst case for a seal: free space in 1-page holes (every other 4 KiB file deleted),
    # so 100 moved pages land in ~100 separate places - more runs than a seal names (16), and
    # the commit takes its barrier: two syncs
    out["full_holes"], cycles = holes_cycle(tmp, total_mib * MIB // 4096 // 2, "full", repeats)
    log(f"compact(max_pages=100), sync='full', free space in 1-page holes (not sealable): "
        f"{out['full_holes'] * 1e3:.2f} ms per cycle (median of {cycles})")
    return out


def holes_cycle(tmp: str, n: int, sync: str, repeats: int) -> tuple[float, int]:
    """n files of 4 KiB, every other one deleted, then compact(max_pages=100) cycles: the
    median seconds per cycle and the number of cycles."""
    p = os.path.join(tmp, f"cycle-holes-{n}.cart")
    build_files(p, n, 4096, "off")
    with cartridge.open(p, "a", sync=sync) as c:
        with c.transaction():
            for i in range(0, n, 2):
                c.delete(f"/f{i:06d}")
        c.compact(max_pages=100)              # the deletes' free tail goes first
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            st = c.compact(max_pages=100)
            times.append(time.perf_counter() - t)
            if st.done:
                break
    os.unlink(p)
    return statistics.median(times), len(times)


def bench_cycle_scale(tmp: str, sizes: list[int], repeats: int, log) -> dict:
    """The work of one cycle (sync="off") as the catalog grows: a cycle finds the owners of
    the pages it moves by one pass over every catalog entry (FORMAT 12.5), so this grows with
    the number of files."""
    out = {}
    for n in sizes:
        out[n], cycles = holes_cycle(tmp, n, "off", repeats)
        log(f"compact(max_pages=100), sync='off', {n // 2:,} live files in 1-page holes: "
            f"{out[n] * 1e3:.2f} ms per cycle (median of {cycles})")
    return out


def fsync_floor(tmp: str, size: int, repeats: int) -> float:
    """The peer of a sealed compaction cycle: what the disk takes to make one commit's worth of
    pages durable - 116 pages (100 moved plus the nodes that point at them) written at four
    places of a file as large as the archive, then one fdatasync. Median of `repeats`."""
    p = os.path.join(tmp, "floor.bin")
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, max(size, 8 * MIB))
        os.fsync(fd)
        blob = os.urandom(29 * 4096)
        rng = random.Random(6)
        times = []
        for _ in range(max(repeats, 5)):
            t = time.perf_counter()
            for _ in range(4):
                os.pwrite(fd, blob, rng.randrange(0, max(size, 8 * MIB) // 4096 - 29) * 4096)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
        return statistics.median(times)
    finally:
        os.close(fd)
        os.unlink(p)


def bench_vacuum(tmp: str, total_mib: int, log) -> dict:
    size = 256 << 10
    n = total_mib * MIB // size
    p = os.path.join(tmp, "vacuum.cart")
    datas = build_files(p, n, size, "off", seed=3)
    with cartridge.open(p, "a", sync="off") as c:
        with c.transaction():
            for i in range(0, n, 2):
                c.delete(f"/f{i:06d}")
        t = time.perf_counter()
        st = c.vacuum()
        cart_s = time.perf_counter() - t
        assert c.verify(deep=False).ok
    cart_mib = st.pages_moved * 4096 / MIB
    os.unlink(p)
    db = os.path.join(tmp, "vacuum.sqlar")
    con = sqlite3.connect(db)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("CREATE TABLE sqlar(name TEXT PRIMARY KEY, mode INT, mtime INT, sz INT, "
                "data BLOB)")
    with con:
        con.executemany("INSERT INTO sqlar VALUES (?, ?, ?, ?, ?)",
                        ((f"f{i:06d}", 0o100644, 0, len(d), d) for i, d in enumerate(datas)))
    with con:
        con.executemany("DELETE FROM sqlar WHERE name = ?", ((f"f{i:06d}",)
                                                               for i in range(0, n, 2)))
    t = time.perf_counter()
    con.execute("VACUUM")
    sql_s = time.perf_counter() - t
    con.close()
    sql_mib = os.path.getsize(db) / MIB
    os.unlink(db)
    out = {"cart_s": cart_s, "cart_mib": cart_mib, "cart_mib_s": cart_mib / cart_s,
           "sqlite_s": sql_s, "sqlite_mib": sql_mib, "sqlite_mib_s": sql_mib / sql_s}
    log(f"vacuum: cartridge moved {cart_mib:.1f} MiB in {cart_s:.3f} s "
        f"({out['cart_mib_s']:.0f} MiB/s); SQLite VACUUM rewrote {sql_mib:.1f} MiB in "
        f"{sql_s:.3f} s ({out['sqlite_mib_s']:.0f} MiB/s); time ratio cartridge/SQLite "
        f"{cart_s / sql_s:.2f}")
    return out


def bench_delete_snapshot(tmp: str, sizes: list[int], changed: list[int], log,
                          repeats: int = 3) -> dict:
    """The same changes (every `step`-th of the first files) in each archive size, so that the
    only difference between sizes is the archive around them: an O(archive) cost would grow
    with the size, an O(changed) one stays."""
    out = {}
    step = max(1, min(sizes) // max(changed))
    for n in sizes:
        for k in changed:
            p = os.path.join(tmp, f"del{n}-{k}.cart")
            build_files(p, n, 4096, "off", seed=4)
            with cartridge.open(p, "a", sync="off") as c:
                best_t, held = float("inf"), 0
                for r in range(repeats):
                    c.snapshot(f"s{r}")
                    with c.transaction():
                        for i in range(k):
                            c.write(f"/f{i * step:06d}",       # one page, as before
                                    (b"changed %d %d " % (r, i)).ljust(4096, b"."))
                    held = c.info()["snapshot_bytes"] // 4096
                    t = time.perf_counter()
                    c.delete_snapshot(f"s{r}")
                    best_t = min(best_t, time.perf_counter() - t)
                out[(n, k)] = (best_t, held)
            os.unlink(p)
            log(f"delete_snapshot, {n:,} files, {k:,} changed ({held:,} held pages): "
                f"{out[(n, k)][0] * 1e3:.2f} ms (best of {repeats})")
    return out


def bench_delete_pass(sizes: list[int], repeats: int, log) -> dict:
    """delete_snapshot()'s in-memory bookkeeping (snapstore.delete minus the catalog and the
    commit) on an allocator of n pages with one other snapshot left and 64 held pages."""
    import types

    import numpy as np

    from cartridge import snapstore
    from cartridge.allocator import Allocator

    out = {}
    for n in sizes:
        rng = np.random.default_rng(5)
        times = []
        for _ in range(repeats):
            a = Allocator(n, lambda k: None)
            for s in rng.choice(n - 8, 8, replace=False):
                a._hold(int(s), 8)
            other = rng.random(n) < 0.5
            eng = types.SimpleNamespace(snap_cache={1: other})
            rest = [types.SimpleNamespace(generation=1, page_count=n)]
            t = time.perf_counter()
            keep = snapstore.union(eng, rest)
            a.drop_held(keep)
            a.set_reach(keep)
            times.append(time.perf_counter() - t)
        out[n] = min(times)
        log(f"delete_snapshot in-memory pass at {n:,} pages (1 snapshot left): "
            f"{out[n] * 1e3:.3f} ms (best of {repeats})")
    return out


def rows_of(snap: dict, cyc: dict, vac: dict, dele: dict, dpass: dict,
            scale: dict | None = None) -> list:
    """The report's rows: (target, measured, threshold, met), met computed from the number
    (None for a comparison with no target of its own)."""
    small, large = sorted(snap)
    rows = [
        ("snapshot() at 1K files", f"{snap[small] * 1e3:.3f} ms", "<= 1 ms", snap[small] <= 1e-3),
        (f"snapshot() at {large:,} files", f"{snap[large] * 1e3:.3f} ms", "<= 1 ms",
         snap[large] <= 1e-3),
        (f"snapshot() at {large:,} / at {small:,}", f"{snap[large] / snap[small]:.2f}",
         "<= 1.5", snap[large] / snap[small] <= 1.5),
        ("compact(max_pages=100), sync=off", f"{cyc['off'] * 1e3:.2f} ms", "<= 10 ms",
         cyc["off"] <= 10e-3),
        ("compact(max_pages=100), sync=full", f"{cyc['full'] * 1e3:.2f} ms", "<= 10 ms",
         cyc["full"] <= 10e-3),
        ("compact(max_pages=100), sync=full, free space in 1-page holes",
         f"{cyc['full_holes'] * 1e3:.2f} ms", "<= 10 ms", cyc["full_holes"] <= 10e-3),
        ("compact(max_pages=100), sync=full / the disk's floor (116 pages, one fdatasync)",
         f"{cyc['full'] / cyc['floor']:.2f}", "(comparison)", None),
        ("vacuum throughput (moved data)", f"{vac['cart_mib_s']:.0f} MiB/s", ">= 200 MiB/s",
         vac["cart_mib_s"] >= 200),
        ("vacuum time: cartridge / SQLite VACUUM (same files)",
         f"{vac['cart_s'] / vac['sqlite_s']:.2f}", "(comparison)", None),
    ]
    sizes = sorted({n for n, _ in dele})
    grow = sizes[-1] / sizes[0]
    for k in sorted({k for _, k in dele}):
        (a, ha), (b, hb) = dele[(sizes[0], k)], dele[(sizes[-1], k)]
        # O(changed): the same changes in a larger archive cost about the same (an O(archive)
        # cost would grow with it, here by `grow`); allow 2x for noise
        rows.append((f"delete_snapshot, the same {k:,} changed: {sizes[-1]:,} files / "
                     f"{sizes[0]:,}", f"{b / a:.2f}", f"<= 2 (archive x{grow:g})", b / a <= 2.0))
        per = (b / hb) / (a / ha)
        rows.append((f"  per held page ({ha:,} and {hb:,} held)", f"{per:.2f}", "<= 2",
                     per <= 2.0))
    ks = sorted({k for _, k in dele})
    n = sizes[-1]
    kr = dele[(n, ks[-1])][0] / dele[(n, ks[0])][0]
    # the cost follows the changes: more changes cost more, but at most in proportion (x2 slack)
    rows.append((f"delete_snapshot at {n:,} files: {ks[-1]:,} changed / {ks[0]:,}",
                 f"{kr:.2f}", f"<= {2 * ks[-1] // ks[0]} (O(changed))", kr <= 2 * ks[-1] / ks[0]))
    for n, t in sorted((scale or {}).items()):
        rows.append((f"compact(max_pages=100) work, sync=off, {n // 2:,} live files",
                     f"{t * 1e3:.2f} ms", "<= 10 ms", t <= 10e-3))
    for pages, t in sorted(dpass.items()):
        # the part of delete_snapshot that is O(page_count): at most 1 ms per 1M pages
        per_m = t / (pages / 1e6)
        rows.append((f"delete_snapshot in-memory pass at {pages:,} pages (O(page_count) part)",
                     f"{t * 1e3:.3f} ms", f"<= {pages / 1e6:g} ms (1 ms per 1M pages)",
                     per_m <= 1e-3))
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="space-bench-", dir=args.dir)
    log = print
    try:
        if args.quick:
            snap = bench_snapshot(tmp, [1_000, 20_000], 5, log)
            cyc = bench_compact_cycle(tmp, 8, 5, log)
            scale = bench_cycle_scale(tmp, [2_000, 8_000], 3, log)
            vac = bench_vacuum(tmp, 8, log)
            dele = bench_delete_snapshot(tmp, [2_000, 8_000], [200, 1_000], log)
            dpass = bench_delete_pass([1_000_000], 3, log)
        else:
            snap = bench_snapshot(tmp, [1_000, 1_000_000], 21, log)
            cyc = bench_compact_cycle(tmp, 64, 21, log)
            scale = bench_cycle_scale(tmp, [10_000, 100_000], 11, log)
            vac = bench_vacuum(tmp, 256, log)
            dele = bench_delete_snapshot(tmp, [20_000, 100_000], [1_000, 10_000], log, 5)
            dpass = bench_delete_pass([1_000_000, 10_000_000], 7, log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = rows_of(snap, cyc, vac, dele, dpass, scale)
    print()
    print("| target | measured | threshold | met |")
    print("|---|---:|---:|:---:|")
    for name, got, want, ok in rows:
        print(f"| {name} | {got} | {want} | {met(ok)} |")
    return {"snapshot": snap, "cycle": cyc, "vacuum": vac, "delete": dele, "pass": dpass,
            "scale": scale, "rows": rows}


def met(ok: bool | None) -> str:
    """The "met" column: computed from the row's number (None: a comparison, no target)."""
    return "-" if ok is None else "yes" if ok else "**no**"


if __name__ == "__main__":
    main()
