"""The fuzz target of tests/fuzz_archive.py: replay the findings that once failed (every run,
committed bytes only: tests/fixtures/fuzz/base.cart.gz plus each finding's byte patches), and
fuzz for a bounded time with atheris (slow tier)."""
from __future__ import annotations

import glob
import gzip
import json
import os
import subprocess
import sys

import pytest

from cartridge._handle import engine

sys.path.insert(0, os.path.dirname(__file__))
import fuzz_archive

import cartridge

pytestmark = pytest.mark.timeout(600)

HERE = os.path.dirname(os.path.abspath(__file__))
FOUND = sorted(glob.glob(os.path.join(HERE, "fixtures", "fuzz", "*.json")))


def test_base_is_committed_and_has_every_kind_of_page():
    with gzip.open(fuzz_archive.BASE_FILE) as f:
        img = f.read()
    img2, meta, content, _ = fuzz_archive.base()
    assert img == img2 and len(meta) >= 8 and len(content) >= 30
    with cartridge.open(fuzz_archive.base()[3], "r") as c:
        assert c.verify().ok
        assert engine(c).catalog.height >= 2


@pytest.mark.parametrize("path", FOUND, ids=lambda p: os.path.basename(p)[:-5])
def test_regression_inputs(path):
    """Each of these once escaped as an untyped error (struct.error, MemoryError,
    OverflowError, InvalidPathError from a listed name, NotFoundError for a listed file)."""
    finding = json.load(open(path))
    img = fuzz_archive.apply(finding)
    assert img != fuzz_archive.base()[0] and len(img) == finding["length"]
    fuzz_archive.check_image(img)


def test_the_target_runs_without_atheris():
    import random

    rng = random.Random(0)
    for _ in range(300):
        fuzz_archive.one_input(rng.randbytes(rng.randrange(1, 120)))


def test_the_target_changes_length_and_content_pages():
    img = fuzz_archive.base()[0]
    content = fuzz_archive.base()[2]
    cut = fuzz_archive.build(bytes([16, 1, 0, 0, 0, 0, 3, 0, 0]))     # one patch, then length
    assert len(cut) == 3 * 4096
    longer = fuzz_archive.build(bytes([16, 1, 0, 0, 0, 0]) + (len(img) // 4096 + 5).to_bytes(2, "little")
                                + b"\x03")
    assert len(longer) > len(img)
    touched = fuzz_archive.build(bytes([32, 9, 0, 0, 0, 0xAB]))       # selector 9: a content page
    page = content[9 // 8 % len(content)]
    assert touched[page * 4096] == 0xAB and touched != img
    for data in (cut, longer, touched):
        fuzz_archive.check_image(data)


def test_findings_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(fuzz_archive, "FUZZ_DIR", str(tmp_path))
    img = fuzz_archive.build(bytes([16 | 1, 3, 10, 0, 5]) + b"xyzxyz" + bytes([1, 0, 0, 0]) + b"q"
                             + bytes([200, 0, 0]))
    assert len(img) == 200 * 4096
    out = fuzz_archive.save_finding("probe", img, "round trip")
    assert fuzz_archive.apply(json.load(open(out))) == img


@pytest.mark.slow
def test_atheris_bounded_run(tmp_path):
    pytest.importorskip("atheris", reason="atheris has no wheel for this platform/Python")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    r = subprocess.run([sys.executable, os.path.join(HERE, "fuzz_archive.py"),
                        "-max_total_time=90", "-rss_limit_mb=4096", f"-artifact_prefix={tmp_path}/",
                        str(corpus)], capture_output=True, text=True, timeout=600)
    crashes = list(tmp_path.glob("crash-*")) + list(tmp_path.glob("oom-*"))
    assert r.returncode == 0 and not crashes, (r.stderr[-3000:], crashes)
