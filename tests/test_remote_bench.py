"""perf/remote_bench.py runs every side on the same sample and reports ratios (smoke test at tiny
sizes; no timing is asserted)."""
from __future__ import annotations

import pytest

pytest.importorskip("fsspec", reason="fsspec is not installed")
pytest.importorskip("aiohttp", reason="fsspec's HTTP filesystem needs aiohttp")

from perf import remote_bench as rb


def test_remote_bench_smoke(capsys):
    assert rb.main(["--files", "60", "--reads", "10", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    for side in rb.SIDES:
        assert side in out
    assert "cartridge / zip over http" in out
    res = rb.measure(40, 5, 1)
    assert set(res["times"]) == set(rb.SIDES)
    req, nbytes = res["fetched"]["cart-http"]
    assert 0 < req and 0 < nbytes < res["sizes"][0]
