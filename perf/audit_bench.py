"""Audit log benchmarks (issue 13 targets), peers side by side in one run, reported as ratios.

    python -m perf.audit_bench            # full sizes (a few minutes)
    python -m perf.audit_bench --quick    # small sizes
    python -m perf.audit_bench --big      # also the inclusion proof at 10,000,000 records

Workloads (each peer pair interleaved round by round; median of the rounds):
  txn4k      4 KiB writes inside one transaction: audit="writes" / audit="off"   (<= 1.01)
  commit4k   single 4 KiB write commits (sync="off" and sync="full"): writes / off (<= 1.03)
  read4k     cached 4 KiB reads on a writable handle: audit="all" / audit="off"   (<= 1.03)
  many       write_many of 1,000 small files per call: audit="writes" / audit="off" (no target
             of its own; reported beside the others)
  ring       records/s pushed through cartridge._core.ringbuf.Ring from C, one core (>= 1e6)
  verify     records/s of cart.audit.verify() (>= 500,000)
  proof      inclusion proof time at 1,000,000 (and with --big 10,000,000) records (<= 1 ms),
             with the log entries each proof reads (O(log n): the 10M figure can be
             extrapolated from the smaller tree's reads when building 10M is too slow)
  space      audit bytes per record, writes to 1,000 distinct paths (<= 48)
The 1M/10M logs for `proof` are built synthetically at the store level (every record a real
record with its own seq, every hash real), not through 10M API calls.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

import cartridge
from cartridge import _handle as H
from cartridge._core.ringbuf import Ring
from cartridge.audit import merkle
from cartridge.audit import store as S

PAYLOAD = os.urandom(4096)


def rounds(peers: dict, n_rounds: int) -> dict:
    """Run each peer's function once per round, interleaved; median seconds per peer."""
    times: dict = {k: [] for k in peers}
    for _ in range(n_rounds):
        for k, fn in peers.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_txn(tmp: str, n: int, n_rounds: int) -> float:
    carts = {lvl: cartridge.open(os.path.join(tmp, f"txn-{lvl}.cart"), "x", sync="off", audit=lvl)
             for lvl in ("writes", "off")}
    counter = [0]

    def run(c):
        def go():
            base = counter[0]
            counter[0] += 1
            with c.transaction():
                for i in range(n):
                    c.write(f"/t/{(base * n + i) % 5000}", PAYLOAD)
        return go
    med = rounds({k: run(c) for k, c in carts.items()}, n_rounds)
    for c in carts.values():
        c.close()
    return med["writes"] / med["off"]


def bench_commit(tmp: str, n: int, n_rounds: int, sync: str) -> float:
    carts = {lvl: cartridge.open(os.path.join(tmp, f"c-{sync}-{lvl}.cart"), "x", sync=sync,
                                 audit=lvl) for lvl in ("writes", "off")}

    def run(c):
        def go():
            for i in range(n):
                c.write(f"/c/{i % 1000}", PAYLOAD)
        return go
    med = rounds({k: run(c) for k, c in carts.items()}, n_rounds)
    for c in carts.values():
        c.close()
    return med["writes"] / med["off"]


def bench_read(tmp: str, n: int, n_rounds: int) -> float:
    carts = {}
    for lvl in ("all", "off"):
        c = cartridge.open(os.path.join(tmp, f"r-{lvl}.cart"), "x", sync="off", audit=lvl)
        c.write_many([(f"/r/{i}", PAYLOAD) for i in range(1000)])
        carts[lvl] = c
    keys = [f"/r/{random.randrange(1000)}" for _ in range(n)]

    def run(c):
        def go():
            rd = c.read
            for k in keys:
                rd(k)
        return go
    med = rounds({k: run(c) for k, c in carts.items()}, n_rounds)
    for c in carts.values():
        c.close()
    return med["all"] / med["off"]


def bench_many(tmp: str, n: int, n_rounds: int) -> float:
    carts = {lvl: cartridge.open(os.path.join(tmp, f"m-{lvl}.cart"), "x", sync="off", audit=lvl)
             for lvl in ("writes", "off")}
    small = PAYLOAD[:200]
    counter = [0]

    def run(c):
        def go():
            base = counter[0]
            counter[0] += 1
            c.write_many([(f"/m/{(base * n + i) % 5000}", small) for i in range(n)])
        return go
    med = rounds({k: run(c) for k, c in carts.items()}, n_rounds)
    for c in carts.values():
        c.close()
    return med["writes"] / med["off"]


def bench_ring(n: int) -> float:
    r = Ring(8192, 240)
    t = time.perf_counter()
    r.bench_c(n, 32, True)
    return n / (time.perf_counter() - t)


def synthetic_log(path: str, n: int) -> None:
    """A log of n records written straight into the store's entries: block by block through
    the real writer (so every entry, hash and summary is the writer's own), with the records
    all alike but for seq and time."""
    with cartridge.open(path, "x", sync="off", audit="off") as c:
        step = 65536

        def go(eng, k):
            w = S.LogWriter(eng)
            base = 1_700_000_000_000_000
            w.append([(base + i, "alice", "cart:PutObject", f"/data/f{i % 1000}", None,
                       "allowed", 4096, f"{i:016x}") for i in range(k, min(n, k + step))])
        for k in range(0, n, step):
            H.apply(c, go, k)


def bench_verify(tmp: str, n: int) -> float:
    p = os.path.join(tmp, "verify.cart")
    synthetic_log(p, n)
    with cartridge.open(p, "r") as c:
        c.audit.head()
        t = time.perf_counter()
        rep = c.audit.verify()
        d = time.perf_counter() - t
    assert rep.ok and rep.size >= n, rep.problems
    return n / d


def bench_proof(tmp: str, n: int) -> tuple[float, float]:
    p = os.path.join(tmp, f"proof{n}.cart")
    t0 = time.perf_counter()
    synthetic_log(p, n)
    build = time.perf_counter() - t0
    rng = random.Random(1)
    with cartridge.open(p, "r") as c:
        head = c.audit.head()
        seqs = [rng.randrange(head.size) for _ in range(200)]
        c.audit.inclusion_proof(seqs[0])
        times = []
        reads: list[int] = []
        real = S.LogView.read
        count = [0]

        def counting(v, key):
            count[0] += 1
            return real(v, key)
        for s in seqs:
            t = time.perf_counter()
            proof = c.audit.inclusion_proof(s)
            times.append(time.perf_counter() - t)
        S.LogView.read = counting                   # entries read per proof (after the timing)
        try:
            for s in seqs[:50]:
                count[0] = 0
                c.audit.inclusion_proof(s)
                reads.append(count[0])
        finally:
            S.LogView.read = real
        rec = c.audit.record(seqs[-1])
        assert merkle.verify_inclusion(rec.leaf_hash, seqs[-1], head.size, proof, head.root)
    return statistics.median(times), build, statistics.median(reads)


def bench_space(tmp: str, n: int) -> float:
    p = os.path.join(tmp, "space.cart")
    with cartridge.open(p, "x", sync="off") as c:
        for k in range(0, n, 100):
            with c.transaction():
                for i in range(k, k + 100):
                    c.write(f"/space/dir{i % 1000 // 100}/file-{i % 1000:04d}.dat", b"x" * 100)
        eng = H.engine(c)
        records = len(c.audit)
        total = 0
        for key, rec in eng.items(S.AUDIT_PREFIX, S.AUDIT_PREFIX):
            cell = 4 + 2 + len(key) + 40          # cell header, slot, key, record header
            if rec.storage == 1:                  # inline content
                total += cell + rec.size
            else:                                 # content pages + the chunk map entry
                total += cell + 16 + -(-rec.size // 4096) * 4096
    return total / records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--big", action="store_true", help="also the proof at 10,000,000 records")
    ap.add_argument("--tmpdir", default=None)
    a = ap.parse_args(argv)
    q = a.quick
    tmp = tempfile.mkdtemp(prefix="audit-bench-", dir=a.tmpdir)
    rows = []
    try:
        r = bench_txn(tmp, 500 if q else 2000, 7 if q else 15)
        rows.append(("4 KiB writes in one transaction: writes / off", f"{r:.3f}", "<= 1.01", r <= 1.01))
        r = bench_commit(tmp, 100 if q else 400, 7 if q else 15, "off")
        rows.append(("single-write commits, sync=off: writes / off", f"{r:.3f}", "<= 1.03", r <= 1.03))
        r = bench_commit(tmp, 20 if q else 60, 5 if q else 9, "full")
        rows.append(("single-write commits, sync=full: writes / off", f"{r:.3f}", "<= 1.03", r <= 1.03))
        r = bench_read(tmp, 5000 if q else 20000, 7 if q else 15)
        rows.append(("cached 4 KiB reads: all / off", f"{r:.3f}", "<= 1.03", r <= 1.03))
        r = bench_many(tmp, 500 if q else 1000, 7 if q else 15)
        rows.append(("write_many of 1,000 files: writes / off", f"{r:.3f}", "(none)", None))
        r = bench_ring(2_000_000 if q else 20_000_000)
        rows.append(("ring buffer from C, one core", f"{r:,.0f} rec/s", ">= 1,000,000", r >= 1e6))
        r = bench_verify(tmp, 100_000 if q else 500_000)
        rows.append(("audit.verify()", f"{r:,.0f} rec/s", ">= 500,000", r >= 5e5))
        sizes = [200_000 if q else 1_000_000] + ([10_000_000] if a.big else [])
        for n in sizes:
            t, build, nreads = bench_proof(tmp, n)
            rows.append((f"inclusion proof at {n:,} records ({nreads:.0f} entries read; "
                         f"log built in {build:.0f} s)", f"{t * 1e3:.3f} ms", "<= 1 ms", t <= 1e-3))
        r = bench_space(tmp, 20_000 if q else 100_000)
        rows.append(("audit bytes per record, writes to 1,000 paths", f"{r:.1f} B", "<= 48 B", r <= 48))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    w = max(len(r[0]) for r in rows)
    print(f"{'target':<{w}}  {'measured':>16}  {'threshold':>14}  met")
    for name, got, want, ok in rows:
        print(f"{name:<{w}}  {got:>16}  {want:>14}  {'-' if ok is None else 'yes' if ok else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

