"""perf/engram_bench.py runs every side on the same content (smoke test, no timings)."""
from __future__ import annotations

import pytest

pytest.importorskip("lz4", reason="the engram extra (lz4) is not installed")
pytest.importorskip("zstandard", reason="the engram extra (zstandard) is not installed")
pytest.importorskip("cryptography", reason="the engram extra (cryptography) is not installed")

from perf import engram_bench as eb


def test_content_is_1_to_16_kib_and_repeatable():
    a, b = eb.make_content(200), eb.make_content(200)
    assert a == b and all(1024 <= len(d) <= 16384 for _, d in a)


def test_small_run_reports_every_side(tmp_path, capsys):
    assert eb.main(["--quick", "--no-memory", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for side in ("engram lz4", "zipfile deflate-1", "tarfile + lz4", "zipfile/engram"):
        assert side in out
