"""Snapshots (issue 14 items 1-2, docs/FORMAT.md §12): O(1) named states, read through at(),
restored and deleted atomically; their pages are never freed while they exist; space figures."""
from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import warnings

import pytest

import cartridge
from cartridge import (
    AccessDeniedError,
    AlreadyExistsError,
    CartridgeError,
    LockedError,
    NotFoundError,
    ReadOnlyError,
    UnsupportedVersionError,
)
from cartridge import _handle as H
from cartridge.format import ALLOC_CHUNK_BYTES, ALLOC_KEY, PAGE_SIZE
from cartridge.testing.crash import CrashRecorder

KIB = 1024


def files_of(c) -> dict[str, str]:
    return {i.path: hashlib.sha256(c.read(i.path)).hexdigest() for i in c.scan("/")}


def state_of(c) -> tuple:
    """The live files and every snapshot's files, as sha256 digests."""
    snaps = {}
    for s in c.snapshots():
        with c.at(s.name) as v:
            snaps[s.name] = files_of(v)
    return files_of(c), snaps


def fill(c, rng, n=12, prefix="/f"):
    for i in range(n):
        size = rng.choice([0, 10, 3000, 70 * KIB, 200 * KIB])
        c.write(f"{prefix}{i}", rng.randbytes(size))


def entry0_len(c) -> int:
    eng = H.engine(c)
    return len(eng.allocmap.get(ALLOC_KEY.pack(0)))


# -- the API ----------------------------------------------------------------------------------
def test_snapshot_info_list_and_isolation(tmp_path):
    p = str(tmp_path / "a.cart")
    rng = random.Random(1)
    with cartridge.open(p, "x") as c:
        fill(c, rng)
        c.mkdir("/d/e", parents=True)
        before = files_of(c)
        gen = H.engine(c).root.generation
        info = c.snapshot("first")
        assert info.name == "first" and info.generation == gen
        assert info.size == sum(c.stat(f).size for f in before)
        assert abs(info.time - __import__("time").time()) < 60
        # later writes, deletes, renames and a directory change
        c.write("/f0", b"changed")
        c.delete("/f1")
        c.rename("/f2", "/moved")
        c.delete("/d", recursive=True)
        c.write("/new", rng.randbytes(100 * KIB))
        assert c.snapshots() == [info]
        with c.at("first") as v:
            assert files_of(v) == before
            assert v.isdir("/d/e") and not v.exists("/new") and v.exists("/f1")
            assert v.listdir("/d") == ["e"]
            assert [x[0] for x in v.walk("/")][:1] == ["/"]
            with v.open("/f3", "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == before["/f3"]
            buf = bytearray(v.stat("/f3").size)
            assert v.readinto("/f3", buf) == len(buf)
            assert bytes(v.read_buffer("/f3")) == bytes(buf)
            assert v.verify().ok
            with pytest.raises(ReadOnlyError):
                v.write("/x", b"1")
            with pytest.raises(ReadOnlyError):
                v.snapshot("nested")
        rep = c.verify()
        assert rep.ok, rep.problems
        assert rep.snapshot_pages > 0


def test_snapshot_of_a_sqlite_database(tmp_path):
    pytest.importorskip("apsw")
    p = str(tmp_path / "a.cart")
    with cartridge.open(p, "x") as c:
        db = c.sqlite("/db.sqlite")
        db.execute("create table t(x)")
        db.execute("insert into t values (1), (2)")
        db.close()
        c.snapshot("two rows")
        db = c.sqlite("/db.sqlite")
        db.execute("insert into t values (3)")
        db.execute("delete from t where x = 1")
        db.close()
        with c.at("two rows") as v:
            ro = v.sqlite("/db.sqlite", readonly=True)
            assert sorted(r[0] for r in ro.execute("select x from t")) == [1, 2]
            ro.close()
        db = c.sqlite("/db.sqlite")
        with pytest.raises(LockedError):        # open connections hold the members
            c.restore("two rows")
        db.close()
        c.restore("two rows")
        db = c.sqlite("/db.sqlite", readonly=True)
        assert sorted(r[0] for r in db.execute("select x from t")) == [1, 2]
        db.close()
        assert c.verify().ok


def test_restore_is_atomic_and_keeps_other_snapshots(tmp_path):
    p = str(tmp_path / "a.cart")
    rng = random.Random(2)
    with cartridge.open(p, "x") as c:
        fill(c, rng)
        a = files_of(c)
        c.snapshot("a")
        fill(c, rng, prefix="/g")
        c.delete("/f4")
        b = files_of(c)
        c.snapshot("b")
        c.write("/f5", b"later")
        c.restore("a")
        assert files_of(c) == a
        c.write("/after-restore", b"x")
        c.restore("b")
        assert files_of(c) == b
        c.restore("a")
        assert files_of(c) == a
        assert state_of(c)[1] == {"a": a, "b": b}
        assert c.verify().ok
        c.delete_snapshot("a")
        assert files_of(c) == a            # the live state keeps what it shares with "a"
        rep = c.verify()
        assert rep.ok, rep.problems
        c.delete_snapshot("b")
        rep = c.verify()
        assert rep.ok and rep.snapshot_pages == 0, rep.problems
        assert files_of(c) == a


def test_restore_after_reopen_with_a_cold_cache(tmp_path):
    p = str(tmp_path / "a.cart")
    rng = random.Random(3)
    with cartridge.open(p, "x") as c:
        fill(c, rng)
        want = files_of(c)
        c.snapshot("s")
        fill(c, rng)                        # every file replaced
        c.delete("/f7")
    with cartridge.open(p, "a", cache_size=0) as c:
        assert [s.name for s in c.snapshots()] == ["s"]
        c.restore("s")
        assert files_of(c) == want
        assert c.verify().ok
    with cartridge.open(p, "r") as r:
        assert files_of(r) == want
        assert r.verify().ok


def test_names_and_errors(tmp_path):
    p = str(tmp_path / "a.cart")
    with cartridge.open(p, "x") as c:
        c.write("/f", b"1")
        c.snapshot("x" * 255)
        c.snapshot("\u00e9t\u00e9 \u2603 with spaces")
        with pytest.raises(AlreadyExistsError):
            c.snapshot("x" * 255)
        for bad in ["", "x" * 256, "tab\there", "nl\n", "\x00", "\ud800"]:
            with pytest.raises(ValueError):
                c.snapshot(bad)
        for bad in [None, 3, b"bytes"]:
            with pytest.raises(TypeError):
                c.snapshot(bad)
        for call in (c.at, c.restore, c.delete_snapshot):
            with pytest.raises(NotFoundError):
                call("missing")
            with pytest.raises(ValueError):
                call("")
        with c.transaction():
            with pytest.raises(CartridgeError):
                c.snapshot("inside")
        assert sorted(s.name for s in c.snapshots()) == sorted(["x" * 255,
                                                                 "\u00e9t\u00e9 \u2603 with spaces"])
        assert c.verify().ok
    with cartridge.open(p, "r") as r:
        with pytest.raises(ReadOnlyError):
            r.snapshot("ro")
        with pytest.raises(ReadOnlyError):
            r.delete_snapshot("x" * 255)
        assert len(r.snapshots()) == 2


def test_a_view_keeps_its_pages_after_the_snapshot_is_deleted(tmp_path):
    p = str(tmp_path / "a.cart")
    rng = random.Random(4)
    with cartridge.open(p, "x") as c:
        fill(c, rng)
        want = files_of(c)
        c.snapshot("s")
        fill(c, rng)
        v = c.at("s")
        c.delete_snapshot("s")
        for _ in range(12):                 # enough commits for pending pages to be reused
            fill(c, rng, n=6, prefix="/churn")
        assert files_of(v) == want
        assert v.verify().ok
        v.close()
        for _ in range(12):
            fill(c, rng, n=6, prefix="/churn")
        rep = c.verify()
        assert rep.ok and rep.snapshot_pages == 0, rep.problems


def test_other_processes_see_snapshots(tmp_path):
    p = str(tmp_path / "a.cart")
    rng = random.Random(5)
    with cartridge.open(p, "x") as c:
        fill(c, rng)
        want = files_of(c)
        c.snapshot("shared")
        c.write("/f0", b"changed after the snapshot")
        code = (
            "import cartridge, hashlib, json, sys\n"
            "with cartridge.open(sys.argv[1], 'r') as c, c.at('shared') as v:\n"
            "    print(json.dumps({i.path: hashlib.sha256(v.read(i.path)).hexdigest()"
            " for i in v.scan('/')}))\n")
        out = subprocess.run([sys.executable, "-c", code, p], capture_output=True, text=True,
                             check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
        import json
        assert json.loads(out.stdout) == want


# -- what the format promises -------------------------------------------------------------------
def test_feature_flag_locks_out_writers_that_do_not_know_snapshots(tmp_path):
    p = str(tmp_path / "a.cart")
    with cartridge.open(p, "x") as c:
        c.write("/f", b"1")
        assert entry0_len(c) == 2 * ALLOC_CHUNK_BYTES
        c.snapshot("s")
        # a 1.1 writer checks len(entry) == 512 for every entry and refuses anything else
        assert entry0_len(c) == 2 * ALLOC_CHUNK_BYTES + 8
    with cartridge.open(p, "a") as c:
        assert entry0_len(c) == 2 * ALLOC_CHUNK_BYTES + 8
        c.delete_snapshot("s")
        assert entry0_len(c) == 2 * ALLOC_CHUNK_BYTES     # no snapshot: older writers may open
        with c.transaction():                              # a flag from a future version
            c.write("/g", b"2")
            H.engine(c).allocator.set_features(1 | 4)
    with pytest.raises(UnsupportedVersionError):
        cartridge.open(p, "a")
    with cartridge.open(p, "r") as r:                      # readers need no flags
        assert r.read("/g") == b"2"


def test_a_rolled_back_snapshot_call_leaves_nothing(tmp_path, monkeypatch):
    p = str(tmp_path / "a.cart")
    with cartridge.open(p, "x") as c:
        fill(c, random.Random(6))
        c.snapshot("keep")
        c.write("/f0", b"x")
        eng = H.engine(c)
        real = eng.commit

        def boom(*a, **k):
            raise OSError(28, "disk full")
        for call, arg in ((c.snapshot, "new"), (c.delete_snapshot, "keep"), (c.restore, "keep")):
            before = state_of(c)
            held = c.info()["held_pages"]
            monkeypatch.setattr(eng, "_write_pages", boom)
            with pytest.raises(OSError):
                call(arg)
            monkeypatch.undo()
            assert eng.commit == real
            assert state_of(c) == before and c.info()["held_pages"] == held
            assert c.verify().ok
        c.delete_snapshot("keep")
        assert c.verify().ok and c.info()["held_pages"] == 0


# -- accounting -----------------------------------------------------------------------------------
def check_accounting(c) -> None:
    """info()'s figures against a fresh accounting by verify()."""
    rep = c.verify(deep=False)
    assert rep.ok, rep.problems
    i = c.info()
    assert i["live_bytes"] == rep.pages_checked * PAGE_SIZE
    assert i["snapshot_bytes"] == rep.snapshot_pages * PAGE_SIZE
    pages = i["pages"]
    assert (i["live_bytes"] + i["snapshot_bytes"] + i["pending_bytes"] + i["free_bytes"]
            == max(i["file_bytes"], pages * PAGE_SIZE))
    assert 0 <= i["fragmentation"] <= 1
    assert 0 <= i["reclaimable_bytes"] <= i["file_bytes"]


@pytest.mark.parametrize("seed", [1, 2])
def test_many_snapshots_under_churn_deleted_in_random_order(tmp_path, seed):
    p = str(tmp_path / "a.cart")
    rng = random.Random(seed)
    paths = [f"/d{i % 3}/f{i}" for i in range(30)]
    with cartridge.open(p, "x", sync="off") as c:
        taken = {}
        for step in range(14):
            for _ in range(8):
                op = rng.random()
                path = rng.choice(paths)
                if op < 0.6:
                    c.write(path, rng.randbytes(rng.choice([5, 2000, 9000, 70 * KIB, 150 * KIB])))
                elif op < 0.8 and c.exists(path):
                    c.delete(path)
                elif c.exists(path):
                    c.rename(path, rng.choice(paths) + "x")
            name = f"s{step}"
            c.snapshot(name)
            taken[name] = files_of(c)
            if step % 4 == 3:
                c.restore(rng.choice(sorted(taken)))
            check_accounting(c)
        names = sorted(taken)
        rng.shuffle(names)
        for name in names:
            with c.at(name) as v:
                assert files_of(v) == taken[name], name
            c.delete_snapshot(name)
            check_accounting(c)
            for other in names[names.index(name) + 1:][:2]:
                with c.at(other) as v:
                    assert files_of(v) == taken[other], other
        assert c.info()["snapshot_bytes"] == 0
        live = files_of(c)
    with cartridge.open(p, "a") as c:       # reopened: the accounting is the same from disk
        check_accounting(c)
        assert files_of(c) == live


def test_space_figures_in_info(tmp_path):
    p = str(tmp_path / "a.cart")
    with cartridge.open(p, "x") as c:
        for i in range(20):
            c.write(f"/f{i}", bytes([i]) * (128 * KIB))
        c.snapshot("s")
        for i in range(10):
            c.delete(f"/f{i}")
        i = c.info()
        assert i["snapshot_bytes"] >= 10 * 128 * KIB          # the deleted files' pages
        assert i["live_bytes"] >= 10 * 128 * KIB
        assert i["snapshots"] == 1
        check_accounting(c)
    with cartridge.open(p, "r") as r:
        j = r.info()
        assert j["snapshot_bytes"] == i["snapshot_bytes"]
        assert j["live_bytes"] == i["live_bytes"]


# -- IAM and the hook -------------------------------------------------------------------------------
def test_principal_needs_cart_snapshot_and_reads_through_at_are_checked(tmp_path):
    p = str(tmp_path / "a.cart")
    with cartridge.open(p, "x") as c:
        c.write("/public/a", b"a")
        c.write("/secret/b", b"b")
        c.snapshot("s")
        c.set_policy("reader", {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["cart:GetObject", "cart:List"], "Resource": "*"},
            {"Effect": "Deny", "Action": "cart:GetObject", "Resource": "/secret/*",
             "Principal": {"CART": "alice"}},
            {"Effect": "Allow", "Action": "cart:Snapshot", "Resource": "/",
             "Principal": {"CART": "admin"}}]})
        alice = c.as_principal("alice")
        for call in (lambda: alice.snapshot("t"), lambda: alice.restore("s"),
                     lambda: alice.delete_snapshot("s")):
            with pytest.raises(AccessDeniedError):
                call()
        assert [s.name for s in alice.snapshots()] == ["s"]
        with alice.at("s") as v:
            assert v.read("/public/a") == b"a"
            with pytest.raises(AccessDeniedError):   # the live policies, not the snapshot's
                v.read("/secret/b")
            with pytest.raises((AccessDeniedError, ReadOnlyError)):   # never written
                v.write("/public/x", b"x")
        admin = c.as_principal("admin")
        admin.snapshot("t")
        admin.restore("s")
        admin.delete_snapshot("t")
        assert [s.name for s in c.snapshots()] == ["s"]


def test_the_hook_sees_every_snapshot_call(tmp_path):
    p = str(tmp_path / "a.cart")
    seen = []
    unsubscribe = H.subscribe(lambda e: seen.append((e.method, e.result, e.action)))
    try:
        with cartridge.open(p, "x") as c:
            c.write("/f", b"1")
            c.snapshot("s")
            c.snapshots()
            c.at("s").close()
            c.restore("s")
            with pytest.raises(NotFoundError):
                c.delete_snapshot("nope")
            c.delete_snapshot("s")
    finally:
        unsubscribe()
    methods = {m: a for m, _, a in seen}
    for name in ("snapshot", "snapshots", "at", "restore", "delete_snapshot"):
        assert name in methods
    for name in ("snapshot", "restore", "delete_snapshot"):
        assert methods[name] == "cart:Snapshot"
    assert ("delete_snapshot", "NotFoundError", "cart:Snapshot") in seen


# -- the crash simulator ----------------------------------------------------------------------------
def crash_check(tmp_path, p, workload, models=None) -> int:
    """Run `workload(c, done)` on a recorded handle (done() after each call returns), then open
    the image at every cut: it must hold exactly the state of the last call that returned, or
    of the one in flight; verify clean; and a writer must go on from it."""
    c = cartridge.open(p, "a")
    rec = CrashRecorder(c)
    marks = [(len(rec.log), state_of(c))]

    def done():
        marks.append((len(rec.log), state_of(c)))
    workload(c, done)
    c.close()
    rec.detach()
    marks.append((len(rec.log), marks[-1][1]))
    img_path = str(tmp_path / "img.cart")
    seen = set()
    checked = 0
    models = models or [("killed", None), ("power", None), ("power", random.Random(1))]
    for model, mrng in models:
        for cut in range(marks[0][0], len(rec.log) + 1):
            img = rec.image(cut, model, mrng)
            if img in seen:
                continue
            seen.add(img)
            with open(img_path, "wb") as f:
                f.write(img)
            k = max(i for i, (m, _) in enumerate(marks) if m <= cut)
            allowed = [marks[k][1]] + ([marks[k + 1][1]] if k + 1 < len(marks) else [])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with cartridge.open(img_path, "r") as r:
                    assert state_of(r) in allowed, (model, cut)
                    rep = r.verify()
                    assert rep.ok, (model, cut, rep.problems)
                with cartridge.open(img_path, "a") as w:
                    w.write("/after-crash", b"x")
                    for s in w.snapshots():
                        w.delete_snapshot(s.name)
                    rep = w.verify()
                    assert rep.ok and rep.snapshot_pages == 0, (model, cut, rep.problems)
            checked += 1
    return checked


def test_every_cut_of_snapshot_restore_and_delete(tmp_path):
    p = str(tmp_path / "a.cart")
    rng = random.Random(7)
    with cartridge.open(p, "x") as c:
        for i in range(4):
            c.write(f"/f{i}", rng.randbytes([100, 3000, 70 * KIB, 20 * KIB][i]))

    def workload(c, done):
        steps = [
            lambda: c.snapshot("s1"),
            lambda: c.write("/f2", rng.randbytes(70 * KIB)),      # frees pages "s1" holds
            lambda: c.delete("/f1"),
            lambda: c.snapshot("s2"),
            lambda: c.rename("/f3", "/g3"),
            lambda: c.vacuum(),                                   # snapshots' pages stay
            lambda: c.restore("s1"),
            lambda: c.delete_snapshot("s2"),
            lambda: c.write("/f0", b"new"),
            lambda: c.delete_snapshot("s1"),
            lambda: c.write("/f4", b"reuse"),
        ]
        for step in steps:
            step()
            done()
    assert crash_check(tmp_path, p, workload) > 20


def test_a_damaged_snapshot_record_is_corruption_not_a_crash(tmp_path):
    """Hostile archives: a snapshot record with impossible fields is reported (snapshots(),
    at(), verify()) and never followed; the live files stay readable."""
    from cartridge import CorruptionError, snapstore
    from cartridge.format import DEFAULT_MODE_FILE, KIND_FILE, STORE_INLINE
    from cartridge.records import Record

    p = str(tmp_path / "a.cart")
    with cartridge.open(p, "x") as c:
        c.write("/f", b"live")
        c.snapshot("good")
        eng = H.engine(c)
        root, created = snapstore.lookup(eng, "good")
        bad = [root.copy() for _ in range(3)]
        bad[0].generation = 10 ** 9                 # from the future
        bad[1].catalog_root = 1 << 47               # outside its page_count
        bad[2].catalog_height = 99                  # impossible height
        for i, r in enumerate(bad):
            payload = snapstore.encode(r, created)
            with c.transaction():
                eng.put(snapstore.snap_key(f"bad{i}"),
                        Record(KIND_FILE, STORE_INLINE, DEFAULT_MODE_FILE, len(payload), 0, 0,
                               0, payload))
    with cartridge.open(p, "r") as r:
        assert r.read("/f") == b"live"
        with pytest.raises(CorruptionError):
            r.snapshots()
        for i in range(3):
            with pytest.raises(CorruptionError):
                r.at(f"bad{i}")
        with r.at("good") as v:
            assert v.read("/f") == b"live"
        rep = r.verify()
        assert not rep.ok and any("malformed snapshot record" in x for x in rep.problems)
    with pytest.raises(CorruptionError):       # a writer cannot know which pages are held
        cartridge.open(p, "a")
