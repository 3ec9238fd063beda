"""perf/space_bench.py runs every workload end to end (smoke test at tiny sizes, no timings)."""
from __future__ import annotations

from perf import space_bench as sb


def test_space_bench_workloads_run(tmp_path):
    logged = []
    snap = sb.bench_snapshot(str(tmp_path), [100, 300], 2, logged.append)
    assert set(snap) == {100, 300} and all(t > 0 for t in snap.values())
    cyc = sb.bench_compact_cycle(str(tmp_path), 2, 2, logged.append)
    assert {"off", "full", "floor"} <= set(cyc) and cyc["floor"] > 0
    vac = sb.bench_vacuum(str(tmp_path), 2, logged.append)
    assert vac["cart_mib"] > 0 and vac["sqlite_mib"] > 0
    dele = sb.bench_delete_snapshot(str(tmp_path), [200, 400], [20, 40], logged.append)
    assert all(held > 0 for _, held in dele.values())
    assert cyc["full_holes"] > 0
    assert len(logged) == 2 + 4 + 1 + 4


def test_met_column_is_computed_from_each_number(tmp_path):
    """Every row with a target says yes or **no** from its own number (a slow run is not
    reported as met); comparison rows say "-"."""
    logged = []
    dpass = sb.bench_delete_pass([5000], 2, logged.append)
    scale = sb.bench_cycle_scale(str(tmp_path), [400], 2, logged.append)
    assert set(scale) == {400} and scale[400] > 0
    assert set(dpass) == {5000} and dpass[5000] > 0
    fast = dict(snapshot={1000: 1e-4, 1_000_000: 1.2e-4}, cycle={"off": 2e-3, "full": 9e-3, "floor": 8e-3,
                                                           "full_holes": 9.5e-3},
                vac=dict(cart_mib_s=400.0, cart_s=1.0, sqlite_s=2.0),
                dele={(10, 1): (1e-3, 5), (100, 1): (1.1e-3, 5), (10, 10): (5e-3, 50),
                      (100, 10): (6e-3, 50)},
                dpass={1_000_000: 4e-4})
    rows = sb.rows_of(fast["snapshot"], fast["cycle"], fast["vac"], fast["dele"], fast["dpass"])
    assert all(ok is True for *_, ok in rows if ok is not None)
    assert [name for name, *_, ok in rows if ok is None] == [
        "compact(max_pages=100), sync=full / the disk's floor (116 pages, one fdatasync)",
        "vacuum time: cartridge / SQLite VACUUM (same files)"]
    slow = dict(snapshot={1000: 2e-3, 1_000_000: 5e-3}, cycle={"off": 2e-3, "full": 11.4e-3, "floor": 9e-3,
                                                            "full_holes": 5e-3},
                vac=dict(cart_mib_s=150.0, cart_s=1.0, sqlite_s=2.0),
                dele={(10, 1): (1e-3, 5), (100, 1): (9e-3, 5), (10, 10): (5e-3, 50),
                      (100, 10): (60e-3, 50)},
                dpass={1_000_000: 3e-3})
    rows = sb.rows_of(slow["snapshot"], slow["cycle"], slow["vac"], slow["dele"], slow["dpass"],
                      {100_000: 0.033, 10_000: 0.004})
    assert [ok for name, *_, ok in rows if "live files" in name] == [True, False]
    missed = {name for name, *_, ok in rows if ok is False}
    assert "compact(max_pages=100), sync=full" in missed
    assert "compact(max_pages=100), sync=off" not in missed
    assert "vacuum throughput (moved data)" in missed
    assert "delete_snapshot, the same 1 changed: 100 files / 10" in missed  # grew with the archive
    assert "delete_snapshot at 100 files: 10 changed / 1" not in missed    # 6.7 <= 2 * 10
    assert ("delete_snapshot in-memory pass at 1,000,000 pages (O(page_count) part)"
            in missed)
    assert sb.met(True) == "yes" and sb.met(False) == "**no**" and sb.met(None) == "-"
