"""Format stability: archives written by earlier builds (tests/fixtures/v*.cart, made by
tests/fixtures/make_fixtures.py) must read back exactly as their manifests say, and stay
writable."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil

import pytest

import cartridge

FIXTURES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "fixtures", "v*.cart")))


def test_there_is_a_fixture_for_this_format_version():
    from cartridge import format as F

    assert any(f.endswith(f"v{F.VERSION_MAJOR}_{F.VERSION_MINOR}.cart") for f in FIXTURES)


@pytest.mark.parametrize("path", FIXTURES, ids=os.path.basename)
def test_fixture_reads_byte_exactly(path):
    manifest = json.load(open(path[:-5] + ".json"))
    with cartridge.open(path, "r") as c:
        files = {i.path: hashlib.sha256(c.read(i.path)).hexdigest() for i in c.scan("/")}
        assert files == manifest["files"]
        assert sorted(d for d, _, _ in c.walk("/")) == manifest["dirs"]
        for p, digest in manifest["files"].items():      # streams and ranged reads too
            with c.open(p, "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == digest
        report = c.verify()
        assert report.ok, report.problems


@pytest.mark.parametrize("path", FIXTURES, ids=os.path.basename)
def test_fixture_stays_writable(path, tmp_path):
    copy = str(tmp_path / "copy.cart")
    shutil.copy(path, copy)
    manifest = json.load(open(path[:-5] + ".json"))
    with cartridge.open(copy, "a") as c:
        c.write("/added/by/this/build.txt", b"new")
        some = sorted(manifest["files"])[0]
        c.delete(some)
        assert c.verify().ok
    with cartridge.open(copy, "r") as c:
        assert c.read("/added/by/this/build.txt") == b"new"
        assert not c.exists(some)
        assert len(list(c.scan("/"))) == len(manifest["files"])
