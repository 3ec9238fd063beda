"""The independent reader (tests/spec_reader.py, written from docs/FORMAT.md alone) reads every
fixture byte-exactly and every packed file (FORMAT §14), and its view of the pack table
agrees with the files it found."""
from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import random
import re

import pytest

import cartridge

pytest.importorskip("xxhash")
from spec_reader import Reader

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = sorted(glob.glob(os.path.join(HERE, "fixtures", "v*.cart"))
                  + glob.glob(os.path.join(HERE, "fixtures", "v*.cart.gz")))


@pytest.mark.parametrize("path", FIXTURES, ids=os.path.basename)
def test_spec_reader_reads_every_fixture(path, tmp_path):
    manifest = json.load(open(re.sub(r"\.cart(\.gz)?$", "", path) + ".json"))
    plain = str(tmp_path / "f.cart")
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f, open(plain, "wb") as g:
        g.write(f.read())
    files = Reader(plain).files()
    assert sorted(files) == sorted(manifest["files"])
    for p, want in manifest["files"].items():
        assert hashlib.sha256(files[p]).hexdigest() == want["sha256"], p


def test_spec_reader_reads_packed_files(tmp_path):
    rng = random.Random(16)
    files = {f"/p/{i:04d}": rng.randbytes(rng.randint(1000, 16384)) for i in range(400)}
    p = str(tmp_path / "a.cart")
    with cartridge.open(p, "w") as c:
        c.write_many(files.items())
        c.write_many((k, b"new" * 500) for k in list(files)[::4])
        for k in list(files)[::4]:
            files[k] = b"new" * 500
        c.delete("/p/0001")
        del files["/p/0001"]
        c.write("/single", b"s" * 3000)
        files["/single"] = b"s" * 3000
    r = Reader(p)
    assert r.files() == files
    table = r.pack_table()
    assert table and sum(t[1] for t in table.values()) == 400 - 1
    with cartridge.open(p, "r") as c:
        assert c.info()["pack_dead_bytes"] == sum(t[3] for t in table.values()) > 0
        assert c.info()["pack_pages"] == sum(t[0] for t in table.values())
