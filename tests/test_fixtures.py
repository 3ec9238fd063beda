"""Format stability: archives written by earlier builds (tests/fixtures/v*.cart and
v*.cart.gz, made by tests/fixtures/make_fixtures.py) must read back exactly as their manifests
say - every file's size, mode, FileInfo.checksum and bytes (whole, streamed and in ranges),
every directory, explicit or implicit, and its listing - pass verify(), and stay writable."""
from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import re

import pytest

import cartridge
from cartridge.content import content_checksum

HERE = os.path.join(os.path.dirname(__file__), "fixtures")
FIXTURES = sorted(glob.glob(os.path.join(HERE, "v*.cart")) + glob.glob(os.path.join(HERE, "v*.cart.gz")))


def stem(path: str) -> str:
    return re.sub(r"\.cart(\.gz)?$", "", path)


def materialise(path: str, tmp_path) -> str:
    """The fixture as a plain .cart file (a copy, so that tests may write to it)."""
    out = str(tmp_path / "fixture.cart")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f, open(out, "wb") as g:
        g.write(f.read())
    return out


def test_there_are_fixtures_for_this_format_version():
    from cartridge import format as F

    mine = [f for f in FIXTURES if os.path.basename(f).startswith(f"v{F.VERSION_MAJOR}_{F.VERSION_MINOR}")]
    assert len(mine) >= 2
    for f in mine:
        assert os.path.exists(stem(f) + ".json")


@pytest.mark.parametrize("path", FIXTURES, ids=os.path.basename)
def test_fixture_reads_byte_exactly(path, tmp_path):
    manifest = json.load(open(stem(path) + ".json"))
    cart = materialise(path, tmp_path)
    with cartridge.open(cart, "r") as c:
        assert sorted(i.path for i in c.scan("/")) == sorted(manifest["files"])
        for p, want in manifest["files"].items():
            info = c.stat(p)
            assert (info.size, info.mode, info.checksum) == (want["size"], want["mode"], want["checksum"]), p
            data = c.read(p)
            assert hashlib.sha256(data).hexdigest() == want["sha256"], p
            assert len(data) == want["size"]
            assert content_checksum(data) == want["checksum"], p      # format §5.4
            with c.open(p, "rb") as f:                                         # streamed
                assert hashlib.sha256(f.read()).hexdigest() == want["sha256"], p
            step = max(1, want["size"] // 3 + 1)                               # in ranges
            parts = b"".join(c.read(p, offset=o, size=step) for o in range(0, want["size"], step))
            assert hashlib.sha256(parts).hexdigest() == want["sha256"], p
        walked = {d: sorted(dirs + files) for d, dirs, files in c.walk("/")}
        assert walked == {d: v["listing"] for d, v in manifest["dirs"].items()}
        for d, v in manifest["dirs"].items():
            assert c.listdir(d) == v["listing"], d
            assert c.isdir(d)
            if d != "/":
                # an explicit directory (made by mkdir) has a catalog entry, an implicit one not
                assert (c.stat(d).ctime > 0) == v["explicit"], d
        report = c.verify()
        assert report.ok, report.problems
    assert any(v["explicit"] for v in manifest["dirs"].values())
    assert any(not v["explicit"] for d, v in manifest["dirs"].items() if d != "/")


@pytest.mark.parametrize("path", FIXTURES, ids=os.path.basename)
def test_fixture_snapshots_read_as_taken(path, tmp_path):
    """Format 1.2 fixtures hold snapshots (and pages only they reach): each reads back as its
    manifest says, and the archive stays writable with them."""
    manifest = json.load(open(stem(path) + ".json"))
    if "snapshots" not in manifest:
        pytest.skip("this fixture's format version has no snapshots")
    cart = materialise(path, tmp_path)
    with cartridge.open(cart, "r") as c:
        assert sorted(s.name for s in c.snapshots()) == sorted(manifest["snapshots"])
        for name, files in manifest["snapshots"].items():
            with c.at(name) as v:
                got = {i.path: hashlib.sha256(v.read(i.path)).hexdigest() for i in v.scan("/")}
                assert got == files, name
                assert v.verify().ok
    with cartridge.open(cart, "a") as c:
        for name in manifest["snapshots"]:
            c.delete_snapshot(name)
        rep = c.verify()
        assert rep.ok and rep.snapshot_pages == 0, rep.problems


@pytest.mark.parametrize("path", FIXTURES, ids=os.path.basename)
def test_fixture_stays_writable(path, tmp_path):
    copy = materialise(path, tmp_path)
    manifest = json.load(open(stem(path) + ".json"))
    some = sorted(manifest["files"])[0]
    empty_dirs = [d for d, v in manifest["dirs"].items() if v["explicit"] and not v["listing"]]
    with cartridge.open(copy, "a") as c:
        c.write("/added/by/this/build.txt", b"new")
        c.delete(some)
        for d in empty_dirs:
            c.write(d + "/child", b"c")
        assert c.verify().ok
    with cartridge.open(copy, "r") as c:
        assert c.read("/added/by/this/build.txt") == b"new"
        assert not c.exists(some)
        assert len(list(c.scan("/"))) == len(manifest["files"]) + len(empty_dirs)
        for p in sorted(manifest["files"])[1:]:
            assert hashlib.sha256(c.read(p)).hexdigest() == manifest["files"][p]["sha256"]
        assert c.verify().ok


@pytest.mark.parametrize("path", FIXTURES, ids=os.path.basename)
def test_fixture_audit_log(path, tmp_path):
    """Format 1.3 fixtures hold an audit log whose head is pinned in the manifest and which
    verifies; older ones have none, and writing to one starts it (docs/AUDIT.md)."""
    manifest = json.load(open(stem(path) + ".json"))
    cart = materialise(path, tmp_path)
    with cartridge.open(cart, "r") as c:
        head = c.audit.head()
        assert c.audit.verify().ok
        if "audit" in manifest:
            assert (head.size, head.root.hex()) == (manifest["audit"]["size"],
                                                   manifest["audit"]["root"])
            assert head.size > 0
        else:
            assert head.size == 0
    with cartridge.open(cart, "a") as c:
        c.write("/audit-fixture-probe", b"x")
    with cartridge.open(cart, "r") as c:
        assert c.audit.verify(head=head).ok
        last = c.audit.record(len(c.audit) - 1)
        assert (last.action, last.path) == ("cart:PutObject", "/audit-fixture-probe")


@pytest.mark.parametrize("path", FIXTURES, ids=os.path.basename)
def test_fixture_packs(path, tmp_path):
    """Format 1.4 fixtures hold packs (docs/FORMAT.md §14) whose figures are pinned in the
    manifest; every older archive stays writable by this build and gains packs when a batch of
    small files is written to it (no conversion: the PACKS feature flag is set then), and the
    packs it holds are compacted like the new ones."""
    manifest = json.load(open(stem(path) + ".json"))
    cart = materialise(path, tmp_path)
    with cartridge.open(cart, "r") as c:
        info = c.info()
        if "packs" in manifest:
            assert {k: info[k] for k in manifest["packs"]} == manifest["packs"]
            assert info["packed_files"] > 0 and info["pack_dead_bytes"] > 0
        else:
            assert info["packs"] == info["packed_files"] == info["pack_pages"] == 0
    files = {f"/added/{i}.bin": bytes([i]) * (1500 + i) for i in range(30)}
    with cartridge.open(cart, "a") as c:
        before = c.info()["packed_files"]
        c.write_many(files.items())
        assert c.info()["packed_files"] == before + len(files)
        c.delete("/added/0.bin")
        c.vacuum()
        assert c.verify().ok
    with cartridge.open(cart, "r") as c:
        for p, data in files.items():
            if p != "/added/0.bin":
                assert c.read(p) == data
        for p, want in manifest["files"].items():
            assert hashlib.sha256(c.read(p)).hexdigest() == want["sha256"], p
        assert c.verify().ok
