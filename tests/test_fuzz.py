"""The fuzz target of tests/fuzz_archive.py: replay the inputs that once failed (every run), and
fuzz for a bounded time with atheris (slow tier)."""
from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import fuzz_archive

HERE = os.path.dirname(os.path.abspath(__file__))
FOUND = sorted(glob.glob(os.path.join(HERE, "fixtures", "fuzz", "*")))


@pytest.mark.parametrize("path", FOUND, ids=os.path.basename)
def test_regression_inputs(path):
    """Each of these once escaped as an untyped error (struct.error, MemoryError,
    OverflowError, InvalidPathError from a listed name, NotFoundError for a listed file)."""
    fuzz_archive.one_input(open(path, "rb").read())


def test_the_target_runs_without_atheris():
    import random

    rng = random.Random(0)
    for _ in range(300):
        fuzz_archive.one_input(rng.randbytes(rng.randrange(1, 120)))


@pytest.mark.slow
def test_atheris_bounded_run(tmp_path):
    pytest.importorskip("atheris", reason="atheris has no wheel for this platform/Python")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for p in FOUND:
        (corpus / os.path.basename(p)).write_bytes(open(p, "rb").read())
    r = subprocess.run([sys.executable, os.path.join(HERE, "fuzz_archive.py"),
                        "-max_total_time=90", "-rss_limit_mb=4096", f"-artifact_prefix={tmp_path}/",
                        str(corpus)], capture_output=True, text=True, timeout=600)
    crashes = list(tmp_path.glob("crash-*")) + list(tmp_path.glob("oom-*"))
    assert r.returncode == 0 and not crashes, (r.stderr[-3000:], crashes)
