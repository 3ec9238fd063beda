"""Incremental compaction, vacuum, shrinking the file and freeze (issue 14 items 3-4,
docs/FORMAT.md §12.5-§12.6)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import subprocess
import sys
import time
import warnings

import pytest

import cartridge
from cartridge import AccessDeniedError, CartridgeError, ReadOnlyError
from cartridge import _handle as H
from cartridge.format import PAGE_SIZE
from cartridge.testing.crash import CrashRecorder

KIB, MIB = 1024, 1024 * 1024
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def files_of(c) -> dict[str, str]:
    return {i.path: hashlib.sha256(c.read(i.path)).hexdigest() for i in c.scan("/")}


def build(p, n=120, size=100 * KIB, keep_every=10, seed=1, **kw):
    """n files, then all but every keep_every-th deleted: a file mostly free."""
    rng = random.Random(seed)
    with cartridge.open(p, "x", **kw) as c:
        for i in range(n):
            c.write(f"/d{i % 7}/f{i}", rng.randbytes(rng.choice([size, size // 3, 5000, 300])))
        c.write("/tail-small", b"small")
        for i in range(n):
            if i % keep_every:
                c.delete(f"/d{i % 7}/f{i}")
        return files_of(c)


def test_compact_moves_the_tail_down_and_shrinks_the_file(tmp_path):
    p = str(tmp_path / "a.cart")
    want = build(p)
    with cartridge.open(p, "a") as c:
        size0 = os.path.getsize(p)
        st = c.compact(max_pages=50)
        assert 0 < st.pages_moved <= 50 + 16     # a chunk (16 pages) is moved whole
        assert st.file_bytes == os.path.getsize(p)
        assert files_of(c) == want and c.verify().ok
        cycles = 0
        while not st.done:
            st = c.compact(max_pages=50)
            cycles += 1
            assert cycles < 500
            assert c.verify(deep=False).ok
        assert files_of(c) == want
        info = c.info()
        assert info["file_bytes"] < size0 // 4
        assert info["file_bytes"] <= 1.10 * info["live_bytes"] + 64 * PAGE_SIZE
        assert c.compact().done                 # nothing left: a no-op
    with cartridge.open(p, "r") as r:
        assert files_of(r) == want and r.verify().ok


def test_vacuum_runs_to_completion(tmp_path):
    p = str(tmp_path / "a.cart")
    want = build(p, seed=2)
    with cartridge.open(p, "a") as c:
        before = os.path.getsize(p)
        st = c.vacuum()
        assert st.done and st.pages_moved > 0
        assert st.bytes_freed == before - os.path.getsize(p) > 0
        assert files_of(c) == want and c.verify().ok
        c.write("/after", b"x" * 100_000)      # and the archive goes on growing normally
        assert c.verify().ok


def test_bad_arguments_and_handles(tmp_path):
    p = str(tmp_path / "a.cart")
    build(p, n=10)
    with cartridge.open(p, "a") as c:
        for bad in (0, -1):
            with pytest.raises(ValueError):
                c.compact(bad)
        for bad in ("10", 1.5, True):
            with pytest.raises(TypeError):
                c.compact(bad)
        with c.transaction():
            with pytest.raises(CartridgeError):
                c.compact()
            with pytest.raises(CartridgeError):
                c.freeze()
        with pytest.raises(TypeError):
            c.freeze(compact="yes")
    with cartridge.open(p, "r") as r:
        with pytest.raises(ReadOnlyError):
            r.compact()
        with pytest.raises(ReadOnlyError):
            r.freeze()
    with pytest.raises(ValueError):
        cartridge.open(p, "r", auto_compact=True)
    with pytest.raises(TypeError):
        cartridge.open(p, "a", auto_compact=1)


def test_snapshot_pages_never_move(tmp_path):
    p = str(tmp_path / "a.cart")
    rng = random.Random(3)
    with cartridge.open(p, "x") as c:
        for i in range(60):
            c.write(f"/f{i}", rng.randbytes(80 * KIB))
        c.snapshot("s")
        snap = files_of(c)
        for i in range(60):
            if i % 4:
                c.delete(f"/f{i}")
        live = files_of(c)
        eng = H.engine(c)
        reach = eng.allocator.reach.copy()
        c.vacuum()
        with c.at("s") as v:
            assert files_of(v) == snap and v.verify().ok
        assert files_of(c) == live
        rep = c.verify()
        assert rep.ok, rep.problems
        # the file cannot shrink below the last page the snapshot reaches
        last = int(reach.nonzero()[0][-1])
        assert os.path.getsize(p) >= (last + 1) * PAGE_SIZE
        small = os.path.getsize(p)
        c.delete_snapshot("s")
        c.vacuum()
        assert os.path.getsize(p) < small
        assert files_of(c) == live and c.verify().ok


def test_open_read_streams_keep_reading_through_compaction(tmp_path):
    p = str(tmp_path / "a.cart")
    build(p, seed=4)
    with cartridge.open(p, "a") as c:
        names = [i.path for i in c.scan("/") if i.size > 10 * KIB][:4]
        want = {n: c.read(n) for n in names}
        streams = {n: c.open(n, "rb") for n in names}
        for f in streams.values():
            f.read(1000)
        c.vacuum()
        for n, f in streams.items():
            f.seek(0)
            assert f.read() == want[n]
            f.close()
        assert c.verify().ok


def test_a_reader_in_another_process_reads_throughout(tmp_path):
    p = str(tmp_path / "a.cart")
    want = build(p, n=160, seed=5)
    stop = str(tmp_path / "stop")
    code = (
        "import cartridge, hashlib, json, os, sys\n"
        "want = json.loads(sys.argv[2]); reads = bad = 0\n"
        "with cartridge.open(sys.argv[1], 'r') as c:\n"
        "    while not os.path.exists(sys.argv[3]) or reads == 0:\n"
        "        for path, digest in want.items():\n"
        "            if hashlib.sha256(c.read(path)).hexdigest() != digest:\n"
        "                bad += 1\n"
        "            reads += 1\n"
        "print(json.dumps({'reads': reads, 'bad': bad}))\n")
    child = subprocess.Popen([sys.executable, "-c", code, p, json.dumps(want), stop],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        with cartridge.open(p, "a") as c:
            time.sleep(0.3)
            st = c.compact(max_pages=40)
            moved = st.pages_moved
            for _ in range(200):
                if st.done:
                    break
                st = c.compact(max_pages=40)
                moved += st.pages_moved
            assert moved > 0
            assert files_of(c) == want and c.verify().ok
    finally:
        open(stop, "w").close()
        out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    result = json.loads(out)
    assert result["reads"] > 0 and result["bad"] == 0


def test_every_cut_of_compaction_and_shrink(tmp_path):
    p = str(tmp_path / "a.cart")
    want = build(p, n=40, size=70 * KIB, seed=6)
    c = cartridge.open(p, "a")
    rec = CrashRecorder(c)
    start = len(rec.log)
    c.compact(max_pages=20)
    c.vacuum()
    c.close()
    rec.detach()
    assert os.path.getsize(p) < rec.image(start, "killed").__len__()
    img_path = str(tmp_path / "img.cart")
    seen = set()
    models = [("killed", None), ("power", None), ("power", random.Random(1))]
    n = 0
    for model, mrng in models:
        for cut in range(start, len(rec.log) + 1):
            img = rec.image(cut, model, mrng)
            if img in seen:
                continue
            seen.add(img)
            with open(img_path, "wb") as f:
                f.write(img)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with cartridge.open(img_path, "r") as r:
                    assert files_of(r) == want, (model, cut)
                    rep = r.verify()
                    assert rep.ok, (model, cut, rep.problems)
                with cartridge.open(img_path, "a") as w:
                    w.vacuum()
                    w.write("/after", b"x")
                    assert w.verify().ok, (model, cut)
            n += 1
    assert n > 20


@pytest.mark.parametrize("layout", ["holes", "xmap"])
def test_every_cut_of_unsealable_cycles_and_a_moved_chunk_map(tmp_path, monkeypatch, layout):
    """"holes": cycles whose moved pages land in many 1-page holes (more runs than a seal
    names, so the commit takes its barrier); "xmap": a cycle that moves a file's XMAP chunk map
    (written anew). Every cut opens at one committed state with verify clean."""
    from cartridge import packs
    from cartridge import pager as pager_mod
    from cartridge.records import decode

    # the layout is one page per 4 KiB file: files written in a transaction are not packed
    # here (packs, FORMAT §14, would put them side by side and leave no 1-page holes)
    monkeypatch.setattr(packs, "PACK_MAX", 0)
    p = str(tmp_path / "a.cart")
    rng = random.Random(23)
    with cartridge.open(p, "x") as c:
        with c.transaction():
            for i in range(120):
                c.write(f"/s{i:03d}", rng.randbytes(4096))
        c.write("/xmap", rng.randbytes(9 * MIB + 5))       # chunk map on its own pages
        if layout == "holes":
            with c.transaction():
                for i in range(60):                        # single pages past the boundary
                    c.write(f"/t{i:03d}", rng.randbytes(4096))
        with c.transaction():
            for i in range(0, 120, 2):
                c.delete(f"/s{i:03d}")                     # 1-page holes below it
        want = files_of(c)
        xref = decode(H.engine(c).catalog.get(b"/xmap"), "/xmap").payload
    seals: list[bool] = []
    real_seal = pager_mod.make_seal

    def make_seal(runs, in_use):
        got = real_seal(runs, in_use)
        seals.append(got is not None)
        return got

    monkeypatch.setattr(pager_mod, "make_seal", make_seal)
    c = cartridge.open(p, "a")
    rec = CrashRecorder(c)
    start = len(rec.log)
    for _ in range(2):
        c.compact(max_pages=40)
    moved_xmap = decode(H.engine(c).catalog.get(b"/xmap"), "/xmap").payload != xref
    c.close()
    rec.detach()
    if layout == "holes":
        assert not all(seals)              # the premise: some cycle did not fit a seal
    else:
        assert moved_xmap                  # the premise: the chunk map moved
    img_path = str(tmp_path / "img.cart")
    seen = set()
    for model, mrng in [("killed", None), ("power", random.Random(2))]:
        for cut in range(start, len(rec.log) + 1):
            img = rec.image(cut, model, mrng)
            if img in seen:
                continue
            seen.add(img)
            with open(img_path, "wb") as f:
                f.write(img)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with cartridge.open(img_path, "r") as r:
                    assert files_of(r) == want, (model, cut)
                    rep = r.verify()
                    assert rep.ok, (model, cut, rep.problems)
    assert len(seen) > 5


def test_auto_compact_shrinks_in_the_background(tmp_path, monkeypatch):
    from cartridge import archive

    monkeypatch.setattr(archive, "AUTO_COMPACT_INTERVAL", 0.02)
    monkeypatch.setattr(archive, "AUTO_COMPACT_BYTES", 1 * MIB)
    p = str(tmp_path / "a.cart")
    want = build(p, n=100, seed=7)
    before = os.path.getsize(p)
    with cartridge.open(p, "a", auto_compact=True) as c:
        deadline = time.monotonic() + 30
        while os.path.getsize(p) > before // 2 and time.monotonic() < deadline:
            with c.transaction():              # the thread never runs inside one
                c.write("/busy", b"b")
            time.sleep(0.05)
        assert os.path.getsize(p) <= before // 2
        assert files_of(c) == dict(want, **{"/busy": hashlib.sha256(b"b").hexdigest()})
        assert c.verify().ok
    assert not [t for t in __import__("threading").enumerate() if "cartridge-compact" in t.name]


def test_auto_compact_takes_the_lock_for_one_cycle_at_a_time(tmp_path, monkeypatch):
    """The background thread holds the handle's lock for one cycle (one compactor.cycle call
    of at most AUTO_COMPACT_PAGES pages), never while the handle is inside a transaction, and
    stops with close() even when it is between cycles."""
    import threading

    from cartridge import archive, compactor

    monkeypatch.setattr(archive, "AUTO_COMPACT_INTERVAL", 0.01)
    monkeypatch.setattr(archive, "AUTO_COMPACT_BYTES", 1 * MIB)
    monkeypatch.setattr(archive, "AUTO_COMPACT_PAGES", 7)
    p = str(tmp_path / "a.cart")
    want = build(p, n=100, seed=17)
    calls: list[tuple[str, int, bool]] = []     # thread, max_pages, inside a transaction
    real_cycle = compactor.cycle

    def cycle(eng, max_pages, skip=None):
        calls.append((threading.current_thread().name, max_pages,
                      H.in_transaction(handles[0])))
        return real_cycle(eng, max_pages, skip)

    monkeypatch.setattr(compactor, "cycle", cycle)
    handles: list = []
    c = cartridge.open(p, "a", auto_compact=True)
    handles.append(c)
    deadline = time.monotonic() + 30
    while len(calls) < 5 and time.monotonic() < deadline:
        with c.transaction():                  # the thread waits for the block to end
            c.write("/busy", b"b")
            time.sleep(0.02)
        time.sleep(0.01)
    c.close()
    n = len(calls)
    time.sleep(0.1)
    assert n >= 5 and len(calls) == n          # nothing after close
    assert all(name.startswith("cartridge-compact") for name, *_ in calls)
    assert all(mp == 7 for _, mp, _ in calls)      # one small cycle per lock hold
    assert not any(in_txn for *_, in_txn in calls)
    assert not [t for t in threading.enumerate() if t.name.startswith("cartridge-compact")]
    with cartridge.open(p) as r:
        assert files_of(r) == dict(want, **{"/busy": hashlib.sha256(b"b").hexdigest()})
        assert r.verify().ok


@pytest.mark.slow
def test_200_mib_delete_90_percent_then_compact(tmp_path):
    p = str(tmp_path / "a.cart")
    rng = random.Random(8)
    with cartridge.open(p, "x", sync="off") as c:
        blob = rng.randbytes(MIB)
        for i in range(200):
            c.write(f"/f{i:03d}", blob[i:] + blob[:i])
        for i in range(200):
            if i % 10:
                c.delete(f"/f{i:03d}")
        want = files_of(c)
        st = c.compact()
        assert st.done
        info = c.info()
        assert info["file_bytes"] <= 1.10 * info["live_bytes"] + 64 * PAGE_SIZE
        assert files_of(c) == want and c.verify().ok


def test_the_same_at_20_mib(tmp_path):
    p = str(tmp_path / "a.cart")
    rng = random.Random(9)
    with cartridge.open(p, "x", sync="off") as c:
        blob = rng.randbytes(MIB)
        for i in range(20):
            c.write(f"/f{i:03d}", blob[i:] + blob[:i])
        for i in range(20):
            if i % 10:
                c.delete(f"/f{i:03d}")
        want = files_of(c)
        assert c.compact().done
        info = c.info()
        assert info["file_bytes"] <= 1.10 * info["live_bytes"] + 64 * PAGE_SIZE
        assert files_of(c) == want and c.verify().ok


# -- freeze ------------------------------------------------------------------------------------
def test_freeze_makes_the_archive_permanently_read_only(tmp_path):
    p = str(tmp_path / "a.cart")
    want = build(p, seed=10)
    with cartridge.open(p, "a") as c:
        before = os.path.getsize(p)
        c.freeze()
        assert os.path.getsize(p) < before          # vacuumed first
        with pytest.raises(ReadOnlyError):
            c.write("/x", b"1")
        with pytest.raises(ReadOnlyError):
            c.snapshot("s")
        assert files_of(c) == want
    raw = open(p, "rb").read()
    for mode in ("a", "w", "x"):
        with pytest.raises(ReadOnlyError):
            cartridge.open(p, mode)
    assert open(p, "rb").read() == raw                # "w" did not truncate or replace it
    with cartridge.open(p, "r") as r:
        assert files_of(r) == want and r.verify().ok


def test_freeze_without_compacting(tmp_path):
    p = str(tmp_path / "a.cart")
    want = build(p, seed=11)
    with cartridge.open(p, "a") as c:
        before = os.path.getsize(p)
        c.snapshot("kept")
        c.freeze(compact=False)
        assert os.path.getsize(p) == before
    with cartridge.open(p, "r") as r:
        assert files_of(r) == want
        with r.at("kept") as v:
            assert files_of(v) == want
        assert r.verify().ok


def test_every_cut_of_freeze(tmp_path):
    p = str(tmp_path / "a.cart")
    want = build(p, n=20, seed=12)
    c = cartridge.open(p, "a")
    rec = CrashRecorder(c)
    start = len(rec.log)
    c.freeze(compact=False)
    c.close()
    rec.detach()
    img_path = str(tmp_path / "img.cart")
    frozen_seen = set()
    for cut in range(start, len(rec.log) + 1):
        with open(img_path, "wb") as f:
            f.write(rec.image(cut, "power", random.Random(cut)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with cartridge.open(img_path, "r") as r:
                assert files_of(r) == want and r.verify().ok
            try:
                with cartridge.open(img_path, "a") as w:
                    w.write("/x", b"1")
                frozen_seen.add(False)
            except ReadOnlyError:
                frozen_seen.add(True)
    assert frozen_seen == {False, True}


def test_principals_need_compact_and_freeze(tmp_path):
    p = str(tmp_path / "a.cart")
    build(p, n=10)
    with cartridge.open(p, "a") as c:
        c.set_policy("p", {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["cart:GetObject", "cart:List", "cart:PutObject"],
             "Resource": "*"},
            {"Effect": "Allow", "Action": ["cart:Compact", "cart:Freeze"], "Resource": "/",
             "Principal": {"CART": "admin"}}]})
        bob = c.as_principal("bob")
        for call in (bob.compact, bob.vacuum, bob.freeze):
            with pytest.raises(AccessDeniedError):
                call()
        admin = c.as_principal("admin")
        admin.compact(10)
        admin.vacuum()
        admin.freeze()
    with pytest.raises(ReadOnlyError):
        cartridge.open(p, "a")


def test_auto_compact_of_a_principal_handle_is_checked(tmp_path, monkeypatch):
    """open(..., principal=P, auto_compact=True) compacts as P: without cart:Compact the open
    is refused (and leaves the archive closed); with it, every background cycle goes through
    P's handle (checked and reported with P's name)."""
    import threading

    from cartridge import archive

    monkeypatch.setattr(archive, "AUTO_COMPACT_INTERVAL", 0.01)
    monkeypatch.setattr(archive, "AUTO_COMPACT_BYTES", 1 * MIB)
    p = str(tmp_path / "a.cart")
    want = build(p, n=100, seed=19)
    with cartridge.open(p, "a") as c:
        c.set_policy("p", {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["cart:GetObject", "cart:List", "cart:PutObject"],
             "Resource": "*"},
            {"Effect": "Allow", "Action": "cart:Compact", "Resource": "/",
             "Principal": {"CART": "admin"}}]})
    before = os.path.getsize(p)
    with pytest.raises(AccessDeniedError):
        cartridge.open(p, "a", principal="bob", auto_compact=True)
    assert not [t for t in threading.enumerate() if t.name.startswith("cartridge-compact")]
    with cartridge.open(p, "a") as c:               # the refused open let the archive go
        assert files_of(c) == want
    assert os.path.getsize(p) == before
    with pytest.raises(ValueError):
        cartridge.open(p, "r", principal="admin", auto_compact=True)
    with pytest.raises(TypeError):
        cartridge.open(p, "a", principal="admin", auto_compact=1)
    seen: list = []
    unsubscribe = H.subscribe(lambda e: seen.append((e.method, e.principal, e.result)))
    try:
        with cartridge.open(p, "a", principal="admin", auto_compact=True) as admin:
            deadline = time.monotonic() + 30
            while os.path.getsize(p) > before // 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert os.path.getsize(p) <= before // 2
            assert files_of(admin) == want
    finally:
        unsubscribe()
    compacts = [e for e in seen if e[0] == "compact"]
    assert compacts and all(e[1:] == ("admin", "ok") for e in compacts)
    assert not [t for t in threading.enumerate() if t.name.startswith("cartridge-compact")]


def test_the_hook_sees_compaction_and_freeze(tmp_path):
    p = str(tmp_path / "a.cart")
    build(p, n=10)
    seen = []
    unsubscribe = H.subscribe(lambda e: seen.append((e.method, e.action, e.result)))
    try:
        with cartridge.open(p, "a") as c:
            c.compact(5)
            c.vacuum()
            c.freeze()
    finally:
        unsubscribe()
    assert {("compact", "cart:Compact", "ok"), ("vacuum", "cart:Compact", "ok"),
            ("freeze", "cart:Freeze", "ok")} <= set(seen)


def test_an_open_sqlite_database_is_left_in_place(tmp_path):
    pytest.importorskip("apsw")
    p = str(tmp_path / "a.cart")
    rng = random.Random(13)
    with cartridge.open(p, "x") as c:
        for i in range(40):
            c.write(f"/pad{i}", rng.randbytes(100 * KIB))
        db = c.sqlite("/db.sqlite")
        db.execute("create table t(x)")
        db.execute("insert into t values (?)", (b"x" * 200_000,))
        for i in range(40):
            c.delete(f"/pad{i}")
        before = c.stat("/db.sqlite").checksum
        key = b"/db.sqlite"
        cmap_before = H.engine(c).get(key).payload
        from cartridge import compactor
        starts = [int.from_bytes(cmap_before[i:i + 8], "little")
                  for i in range(0, len(cmap_before), 16)]
        assert max(starts) >= compactor.boundary(H.engine(c))  # it lies where pages move from
        c.vacuum()
        assert H.engine(c).get(key).payload == cmap_before     # its pages did not move
        db.execute("insert into t values (2)")                   # and it goes on working
        db.close()
        assert c.stat("/db.sqlite").checksum != before
        assert c.verify().ok
        c.vacuum()
        ro = c.sqlite("/db.sqlite", readonly=True)
        assert ro.execute("select count(*) from t").fetchone()[0] == 2
        ro.close()
        assert c.verify().ok


def test_the_core_picks_the_same_owner_cells_as_a_plain_scan(tmp_path):
    """Node.content_cells_from (the compaction walk's filter in the Cython core) returns exactly
    the cells a record-by-record check in Python would look at: XMAP records, and chunk maps
    with a chunk reaching the given page; never directories, empty or inline files, or maps
    wholly below it."""
    import numpy as np

    from cartridge.format import (
        CHUNK_ENTRY,
        CHUNK_PAGES,
        KIND_FILE,
        RECORD,
        STORE_CHUNKS,
        STORE_XMAP,
    )

    p = str(tmp_path / "a.cart")
    rng = random.Random(21)
    with cartridge.open(p, "x") as c:
        for i in range(300):
            size = rng.choice([0, 10, 3000, 5000, 70 * KIB, 300 * KIB])
            c.write(f"/d{i % 5}/f{i}", rng.randbytes(size))
        c.write("/big", rng.randbytes(9 * MIB))          # a chunk map too long for the record
        c.mkdir("/empty/dir", parents=True)
        eng = H.engine(c)
        leaves = []

        def collect(pno):
            node = eng.catalog.store.load(pno)
            if node.is_leaf:
                leaves.append(node)
            else:
                for i in range(node.nkeys + 1):
                    collect(node.child(i))
        collect(eng.catalog.root)
        kinds = set()
        for lo in [0, 1, 17, 200, 1000, 2500, 10 ** 6]:
            for node in leaves:
                want = []
                for i in range(node.nkeys):
                    v = node.value(i)
                    if len(v) < 2 or v[0] != KIND_FILE:
                        continue
                    kinds.add(v[1])
                    if v[1] == STORE_XMAP:
                        want.append(i)
                    elif v[1] == STORE_CHUNKS:
                        starts = np.frombuffer(v, "<u8", offset=RECORD.size)[::2]
                        assert (len(v) - RECORD.size) % CHUNK_ENTRY.size == 0
                        if any(int(s) + CHUNK_PAGES > lo for s in starts):
                            want.append(i)
                assert node.content_cells_from(lo) == want, (lo, node.page_no)
        assert {STORE_CHUNKS, STORE_XMAP} <= kinds


def test_vacuum_reaches_a_fixed_point_on_the_demo_archive(tmp_path, monkeypatch):
    """A regression: on the guided tour's archive (policies, an SQLite member, a deleted
    snapshot) vacuum() swapped the allocation-map copy and a catalog node around the boundary
    for ever, each cycle 'moving' 1-2 pages. Cycles must stop, and a second vacuum is a no-op."""
    from cartridge import compactor
    from cartridge import demo as D

    cycles = []
    real = compactor.cycle

    def counted(eng, max_pages, skip=None):
        cycles.append(1)
        assert len(cycles) < 200, "vacuum does not converge"
        return real(eng, max_pages, skip)

    monkeypatch.setattr(compactor, "cycle", counted)
    steps = [s for s in D.STEPS if s.title not in ("engram", "read-only")]
    D.run_demo(str(tmp_path / "tour.cart"), out=io.StringIO(), steps=steps)
    with cartridge.open(str(tmp_path / "tour.cart"), "a") as c:
        first = c.vacuum()
        cycles.clear()
        again = c.vacuum()
        assert again.done and again.pages_moved == 0 and again.bytes_freed == 0, again
        assert len(cycles) <= 2
        assert first.file_bytes == again.file_bytes
        assert c.verify().ok
