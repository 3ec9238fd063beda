"""perf/space_bench.py runs every workload end to end (smoke test at tiny sizes, no timings)."""
from __future__ import annotations

from perf import space_bench as sb


def test_space_bench_workloads_run(tmp_path):
    logged = []
    snap = sb.bench_snapshot(str(tmp_path), [100, 300], 2, logged.append)
    assert set(snap) == {100, 300} and all(t > 0 for t in snap.values())
    cyc = sb.bench_compact_cycle(str(tmp_path), 2, 2, logged.append)
    assert set(cyc) == {"off", "full"}
    vac = sb.bench_vacuum(str(tmp_path), 2, logged.append)
    assert vac["cart_mib"] > 0 and vac["sqlite_mib"] > 0
    dele = sb.bench_delete_snapshot(str(tmp_path), [200, 400], [20, 40], logged.append)
    assert all(held > 0 for _, held in dele.values())
    assert len(logged) == 2 + 2 + 1 + 4
