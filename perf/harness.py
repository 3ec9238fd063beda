"""In-process timing harness that records pyperf-compatible results.

Every peer of a workload is set up in this one process, calibrated like pyperf calibrates
(double the loop count until one value takes at least ``min_time``), warmed up once, and then
measured in interleaved rounds: round r times every peer once, starting from a different peer
each round, so that drift on a shared machine (other jobs, frequency changes, page-cache churn)
lands on all peers alike. The values are stored as ``pyperf.Run`` objects (seconds per
operation, ``loops`` and ``inner_loops`` metadata as pyperf's own workers record them) and
saved as one ``pyperf.BenchmarkSuite`` JSON file, so ``python -m pyperf stats FILE`` and
``python -m pyperf compare_to A B`` work on it.
"""
from __future__ import annotations

import gc
import statistics
import sys
from dataclasses import dataclass, field
from typing import Callable

import pyperf

perf_counter = pyperf.perf_counter


@dataclass
class Peer:
    """One contestant in a workload.

    time_func(loops) runs the operation `loops` times (each loop doing `inner` operations)
    and returns the elapsed seconds, excluding any per-loop setup it does itself (pyperf's
    bench_time_func contract). close() releases whatever the peer holds.
    """

    name: str
    time_func: Callable[[int], float]
    close: Callable[[], None] = lambda: None
    inner: int = 1
    fixed_loops: int | None = None     # skip calibration (e.g. one transaction per loop)
    note: str = ""


@dataclass
class Result:
    workload: str
    peer: str
    values: list[float]                # seconds per operation
    loops: int
    inner: int
    warmup: float
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def stdev(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


def calibrate(peer: Peer, min_time: float, max_loops: int = 1 << 24) -> int:
    if peer.fixed_loops:
        return peer.fixed_loops
    loops = 1
    while True:
        dt = peer.time_func(loops)
        if dt >= min_time or loops >= max_loops:
            return loops
        # aim a bit above min_time, at most 16x per step (like pyperf, but fewer steps)
        if dt <= 0:
            loops *= 16
        else:
            loops = min(loops * 16, max(loops * 2, int(loops * min_time * 1.25 / dt) + 1))
        loops = min(loops, max_loops)


def run_workload(workload: str, peers: list[Peer], *, values: int, min_time: float,
                 log=print) -> list[Result]:
    """Calibrate, warm up and measure every peer in interleaved rounds. Everything the setup
    made is frozen out of the garbage collector first (gc.freeze), so the collection before
    each value only walks what the peers allocate since: with millions of keys and cached
    records alive, a full collection per value would cost seconds and dominate the run."""
    gc.collect()
    gc.freeze()
    try:
        return _run_workload(workload, peers, values=values, min_time=min_time, log=log)
    finally:
        gc.unfreeze()


def _run_workload(workload: str, peers: list[Peer], *, values: int, min_time: float,
                  log=print) -> list[Result]:
    loops = {}
    warm = {}
    for p in peers:
        gc.collect()
        loops[p.name] = calibrate(p, min_time)
        gc.collect()
        warm[p.name] = p.time_func(loops[p.name]) / (loops[p.name] * p.inner)
    samples: dict[str, list[float]] = {p.name: [] for p in peers}
    n = len(peers)
    for r in range(values):
        for k in range(n):
            p = peers[(r + k) % n]
            gc.collect()
            dt = p.time_func(loops[p.name])
            samples[p.name].append(max(dt, 1e-12) / (loops[p.name] * p.inner))
    out = []
    for p in peers:
        res = Result(workload, p.name, samples[p.name], loops[p.name], p.inner, warm[p.name],
                     p.note)
        out.append(res)
        log(f"  {workload:<14} {p.name:<22} {fmt_time(res.median):>10} per op "
            f"(+- {fmt_time(res.stdev)}, loops={res.loops} x {res.inner})")
        sys.stdout.flush()
    return out


def to_suite(results: list[Result], common_meta: dict) -> pyperf.BenchmarkSuite:
    benches = []
    for r in results:
        meta = dict(common_meta)
        meta.update({"name": f"{r.workload}/{r.peer}", "workload": r.workload, "peer": r.peer,
                     "loops": r.loops, "inner_loops": r.inner, "unit": "second"})
        if r.note:
            meta["description"] = r.note
        for k, v in r.extra.items():
            meta[k] = v
        run = pyperf.Run(r.values, warmups=[(r.loops, r.warmup)], metadata=meta,
                         collect_metadata=False)
        benches.append(pyperf.Benchmark([run]))
    return pyperf.BenchmarkSuite(benches)


def from_suite(suite: pyperf.BenchmarkSuite) -> list[Result]:
    out = []
    for b in suite.get_benchmarks():
        md = b.get_metadata()
        run = b.get_runs()[0]
        warm = run.warmups[0][1] if run.warmups else 0.0
        out.append(Result(md["workload"], md["peer"], list(b.get_values()),
                          int(md.get("loops", 1)), int(md.get("inner_loops", 1)), warm,
                          md.get("description", "")))
    return out


def fmt_time(sec: float) -> str:
    if sec >= 1:
        return f"{sec:.3f} s"
    if sec >= 1e-3:
        return f"{sec * 1e3:.2f} ms"
    if sec >= 1e-6:
        return f"{sec * 1e6:.2f} us"
    return f"{sec * 1e9:.0f} ns"
