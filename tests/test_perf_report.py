"""The perf report's targets table and its 'what limits' notes (no benchmarks run here)."""
from __future__ import annotations

import pytest

pytest.importorskip("pyperf", reason="the perf extra (pyperf) is not installed")
from perf import harness, run


def _result(workload: str, peer: str, seconds: float) -> harness.Result:
    return harness.Result(workload, peer, [seconds] * 3, 1, 1, 0.0)


def _report(commit_cart: float, bulk_cart: float) -> str:
    results = [
        _result("commit-off", "cartridge", commit_cart), _result("commit-off", "lmdb", 2e-6),
        _result("commit-off", "sqlite", 30e-6),
        _result("bulk", "cartridge-write_many", bulk_cart), _result("bulk", "cartridge", 1e-5),
    ]
    return run.render(results, {})


def test_limits_notes_follow_the_targets_missed():
    text = _report(commit_cart=40e-6, bulk_cart=2e-6)          # commit missed, bulk met
    assert "| bulk load of 1 KiB files in one transaction (write_many) | 500,000 files/s" in text
    assert "### What limits the targets not met" in text
    assert "**Single-write commit vs LMDB**" in text
    assert "**Bulk load**" not in text
    assert "| lookup" not in text                # not run: no rows invented for it
    text = _report(commit_cart=1e-6, bulk_cart=5e-6)            # commit met, bulk missed
    assert "**Single-write commit vs LMDB**" not in text and "**Bulk load**" in text


def test_no_limits_section_when_every_target_run_is_met():
    text = _report(commit_cart=1e-6, bulk_cart=2e-6)
    assert "What limits" not in text
