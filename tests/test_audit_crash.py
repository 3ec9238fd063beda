"""Crash simulation for the audit log (cartridge.testing.crash): at every write/sync cut of a
workload of single writes, deletes, renames, transactions and a rolled-back transaction, the
image opens, verify() and audit.verify() pass, and the log matches the files exactly: every
committed change has its record and no record describes a change that did not commit."""
from __future__ import annotations

import random
import warnings

import pytest

import cartridge
from cartridge.testing.crash import CrashRecorder

pytestmark = pytest.mark.timeout(600)


def workload(c, rng):
    """Yields after each call returns (its commit done)."""
    for i in range(40):
        k = rng.random()
        if k < 0.5:
            c.write(f"/f{rng.randrange(5)}", bytes([i]) * rng.choice([3, 900, 5000]))
        elif k < 0.65:
            try:
                c.delete(f"/f{rng.randrange(5)}")
            except cartridge.NotFoundError:
                pass
        elif k < 0.8:
            try:
                c.rename(f"/f{rng.randrange(5)}", f"/g{i}")
            except (cartridge.NotFoundError, cartridge.AlreadyExistsError):
                pass
        elif k < 0.9:
            with c.transaction():
                c.write(f"/t{i}a", b"a")
                c.write(f"/t{i}b", b"b")
        else:
            try:
                with c.transaction():
                    c.write(f"/r{i}", b"r")
                    raise RuntimeError("roll back")
            except RuntimeError:
                pass
        yield


def replay(records):
    """The files (path -> checksum) the log's successful changes say exist."""
    files: dict = {}
    for r in records:
        if r.result != "allowed":
            continue
        if r.action == "cart:PutObject":
            files[r.path] = r.checksum
        elif r.action == "cart:DeleteObject":
            files.pop(r.path, None)
        elif r.action == "cart:Rename":
            files[r.dest] = files.pop(r.path, None)
    return files


def actual(c):
    return {i.path: i.checksum for i in c.scan("/")}


@pytest.mark.parametrize("model", ["killed", "power"])
@pytest.mark.parametrize("seed", [1, 2])
def test_every_committed_change_has_its_record(tmp_path, model, seed):
    path = str(tmp_path / "a.cart")
    rng = random.Random(seed)
    with cartridge.open(path, "x") as c:
        c.write("/seed", b"s")
    c = cartridge.open(path, "a", sync="full" if model == "power" else "off")
    rec = CrashRecorder(c)
    for _ in workload(c, rng):
        pass
    rec.detach()
    c.close()
    assert len(rec.log) > 40
    img_path = str(tmp_path / "img.cart")
    seen = set()
    sizes: set = set()
    for cut in rec.cuts():
        img = rec.image(cut, model, random.Random(cut) if model == "power" else None)
        if img in seen:
            continue
        seen.add(img)
        with open(img_path, "wb") as f:
            f.write(img)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with cartridge.open(img_path, "r") as r:
                assert r.verify().ok, (cut, r.verify().problems)
                rep = r.audit.verify()
                assert rep.ok, (cut, rep.problems)
                recs = list(r.audit.entries())
                assert [x.seq for x in recs] == list(range(len(recs)))
                assert replay(recs) == actual(r), cut
                sizes.add(len(recs))
    assert len(sizes) > 20          # images of many different commits were checked


@pytest.mark.slow
@pytest.mark.parametrize("model", ["killed", "power"])
@pytest.mark.parametrize("seed", range(3, 11))
def test_every_committed_change_has_its_record_many_seeds(tmp_path, model, seed):
    test_every_committed_change_has_its_record(tmp_path, model, seed)
