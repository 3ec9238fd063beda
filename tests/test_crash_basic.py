"""Fault injection for the commit protocol with cartridge.testing.crash: record every write and
sync, then rebuild the file as a killed process (every write up to the cut survives) or a power
cut (synced writes survive; later ones lost, kept or torn at 512-byte sectors, in any order)
would leave it, at every write/sync boundary. Each image must open, pass verify(), and hold
exactly one committed state: the last durable one, or (where the mode allows) a later one
whole, never a mix.

The engine releases freed pages in batches (RELEASE_BATCH commits); the "eager" runs set the
batch to one commit so that freed pages are reused at the earliest commit the protocol allows,
where a release one commit too early would overwrite pages the other root slot still needs."""
from __future__ import annotations

import bisect
import os
import random
import warnings

import pytest

import cartridge
from cartridge import engine
from cartridge import pager as pager_mod
from cartridge import paths as P
from cartridge._handle import engine as engine_of
from cartridge.format import KIND_DIR, PAGE_SIZE, STORE_CHUNKS, STORE_XMAP
from cartridge.testing.crash import CrashRecorder

pytestmark = pytest.mark.timeout(600)


# Crash images whose only verify() problems were in the previous commit's trees (the other root
# slot): see test_normal_power_cut_keeps_the_fallback_commit_intact.
FALLBACK_DAMAGED: list = []


def only_fallback_damage(problems: list[str]) -> bool:
    return bool(problems) and all("previous" in p for p in problems)


def contents(path: str, mode: str = "r", allow_fallback_damage: bool = False) -> dict:
    """Every file's bytes, plus "dir/": None for each explicit directory, after verify()."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cartridge.open(path, mode) as c:
            report = c.verify()
            if allow_fallback_damage and only_fallback_damage(report.problems):
                FALLBACK_DAMAGED.append((path, report.problems))
            else:
                assert report.ok, report.problems
            return state_of(c)


def state_of(c) -> dict:
    out = {i.path: c.read(i.path) for i in c.scan("/")}
    for key, rec in engine_of(c).items(b""):
        if rec.kind == KIND_DIR:
            out[P.stored_path(key) + "/"] = None
    return out


def eager_release(monkeypatch) -> None:
    """Release freed pages after every commit (as soon as the protocol allows)."""
    monkeypatch.setattr(engine, "RELEASE_BATCH", 1)
    monkeypatch.setattr(engine, "RELEASE_PAGES", 1)


def content_pages(c, path: str) -> set[int]:
    eng = engine_of(c)
    rec = eng.get(P.to_key(path))
    assert rec.storage in (STORE_CHUNKS, STORE_XMAP)
    out = set()
    for i, (start, _sum) in enumerate(eng.content.chunk_map(rec, path)):
        n = -(-min(65536, rec.size - i * 65536) // PAGE_SIZE)
        out.update(range(int(start), int(start) + n))
    return out


class Recording:
    """A workload being recorded: the expected state after each commit that returned, and the
    length of the I/O log at that moment."""

    def __init__(self, c, state: dict):
        self.c = c
        self.rec = CrashRecorder(c)
        self.model = dict(state)
        self.states = [dict(state)]
        self.marks = [0]

    def done(self) -> None:
        self.states.append(dict(self.model))
        self.marks.append(len(self.rec.log))

    def commit_of(self, op_index: int) -> int:
        """The commit (1-based, in states/marks numbering) an operation of the log belongs to."""
        return bisect.bisect_right(self.marks, op_index)

    def pages_written(self, commit: int) -> set[int]:
        out = set()
        for op in self.rec.log[self.marks[commit - 1]:self.marks[commit]]:
            if op.kind == "w" and op.offset >= PAGE_SIZE:
                out.update(range(op.offset // PAGE_SIZE, (op.offset + len(op.data) - 1) // PAGE_SIZE + 1))
        return out


# -- workloads --------------------------------------------------------------------------------------
def seed_archive(path: str, rng: random.Random) -> dict:
    """The archive every workload starts from: small files at the low end of the file."""
    with cartridge.open(path, "w") as c:
        c.write("/seed", b"seed")
        for i in range(8):
            c.write(f"/low/{i}", rng.randbytes(rng.choice([3000, 9000])))
        c.mkdir("/kept/empty", parents=True)
        return state_of(c)


def mixed(r: Recording, rng: random.Random) -> None:
    """Small and large writes, overwrites, deletes, a directory rename, a transaction, growth of
    the file and reuse of freed pages."""
    c, m = r.c, r.model
    for i in range(6):
        data = rng.randbytes(rng.choice([50, 3000, 70_000]))
        c.write(f"/d/f{i}", data)
        m[f"/d/f{i}"] = data
        r.done()
    c.write("/d/f1", b"overwritten")
    m["/d/f1"] = b"overwritten"
    r.done()
    c.delete("/d/f2")
    del m["/d/f2"]
    r.done()
    c.rename("/d", "/e")
    for k in [k for k in m if k.startswith("/d/")]:
        m["/e" + k[2:]] = m.pop(k)
    r.done()
    with c.transaction():
        for j in range(40):
            c.write(f"/t/{j}", bytes([j]) * 100)
            m[f"/t/{j}"] = bytes([j]) * 100
        c.delete("/e/f0")
        del m["/e/f0"]
        c.mkdir("/t/sub")
        m["/t/sub/"] = None
    r.done()
    big = rng.randbytes(600_000)          # grows the file
    c.write("/big", big)
    m["/big"] = big
    r.done()
    for _ in range(12):                   # rewrites recycle freed pages
        data = rng.randbytes(5000)
        c.write("/e/f3", data)
        m["/e/f3"] = data
        r.done()


def early_reuse(r: Recording, rng: random.Random) -> None:
    """Free low-numbered pages, then allocate: first-fit puts the new pages exactly where the
    freed ones were, at the first commit that may reuse them."""
    c, m = r.c, r.model
    for rnd in range(4):
        victims = [f"/low/{2 * rnd}", f"/low/{2 * rnd + 1}"]
        for v in victims:
            c.delete(v)
            del m[v]
            r.done()
        for j in range(3):
            k = f"/new/{rnd}/{j}"
            data = rng.randbytes(rng.choice([3000, 9000, 20_000]))
            c.write(k, data)
            m[k] = data
            r.done()
        c.write("/seed", bytes([rnd]) * 700)     # catalog-only commit (inline content)
        m["/seed"] = bytes([rnd]) * 700
        r.done()


def large(r: Recording, rng: random.Random) -> None:
    """Multi-chunk files: overwritten whole, edited in place through "r+b", appended through
    "ab", and overwritten again (onto the pages the first version freed)."""
    c, m = r.c, r.model
    first = rng.randbytes(300 * 1024)
    c.write("/L/big", first)
    m["/L/big"] = first
    r.done()
    second = rng.randbytes(310 * 1024)
    c.write("/L/big", second)
    m["/L/big"] = second
    r.done()
    edit = rng.randbytes(100_000)
    with c.open("/L/big", "r+b") as f:         # spans chunks 1 and 2, size unchanged
        f.seek(70_000)
        f.write(edit)
    m["/L/big"] = m["/L/big"][:70_000] + edit + m["/L/big"][170_000:]
    r.done()
    with c.open("/L/big", "r+b") as f:         # edit that also grows the file
        f.seek(300_000)
        f.write(b"E" * 30_000)
    m["/L/big"] = m["/L/big"][:300_000] + b"E" * 30_000
    r.done()
    tail = rng.randbytes(150_000)
    with c.open("/L/big", "ab") as f:
        f.write(tail)
    m["/L/big"] += tail
    r.done()
    with c.open("/L/log", "ab") as f:          # an append that turns a small file into chunks
        f.write(b"x" * 1000)
    m["/L/log"] = b"x" * 1000
    r.done()
    with c.open("/L/log", "ab") as f:
        f.write(rng.randbytes(140_000))
        f.write(b"end")
    m["/L/log"] = c.read("/L/log")
    r.done()
    for _ in range(3):
        data = rng.randbytes(rng.choice([280 * 1024, 330 * 1024]))
        c.write("/L/big", data)
        m["/L/big"] = data
        r.done()
    c.delete("/L/log")
    del m["/L/log"]
    r.done()


WORKLOADS = {"mixed": mixed, "early_reuse": early_reuse, "large": large}


# sync="normal" syncs every pager.SYNC_EVERY_COMMITS commits; the workloads here make ~20-40
# commits, so they run with a sync every NORMAL_EVERY commits: unsynced runs, syncs, and pages
# freed before a sync recycled after it (tests/test_sync_normal.py runs the default interval)
NORMAL_EVERY = 3


def record(tmp_path, workload: str, sync: str, seed: int = 7,
           normal_every: int = NORMAL_EVERY) -> Recording:
    path = str(tmp_path / "a.cart")
    rng = random.Random(seed)
    state = seed_archive(path, rng)
    saved = pager_mod.SYNC_EVERY_COMMITS
    pager_mod.SYNC_EVERY_COMMITS = normal_every
    try:
        c = cartridge.open(path, "a", sync=sync)
        r = Recording(c, state)
        WORKLOADS[workload](r, rng)
        r.rec.detach()
        c.close()
    finally:
        pager_mod.SYNC_EVERY_COMMITS = saved
    r.c = None
    return r


# -- checking crash images ----------------------------------------------------------------------------
def window(r: Recording, cut: int, model: str, sync: str) -> tuple[int, int]:
    """The committed states an image cut after `cut` operations may hold."""
    returned = bisect.bisect_right(r.marks, cut) - 1          # commits that had returned
    lo = returned
    if model == "power" and sync == "normal":
        # "normal" may lose the commits since the last sync, never one before it: the newest
        # commit that had returned before the last sync of the cut is the oldest state allowed
        lo = synced_commit(r, cut)
    return max(lo, 0), min(returned + 1, len(r.states) - 1)


def synced_commit(r: Recording, cut: int) -> int:
    """The newest commit whose every write precedes a sync among the first `cut` operations."""
    return bisect.bisect_right(r.marks, r.rec.durable_point(cut, "power")) - 1


def put(path: str, img: bytes) -> None:
    """Make the file at `path` hold exactly `img` (rewritten in place: cheaper than
    truncating a large file to nothing each time)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, img, 0)
        os.ftruncate(fd, len(img))
    finally:
        os.close(fd)


def check_image(path: str, img: bytes, r: Recording, lo: int, hi: int, what,
                allow_fallback_damage: bool = False) -> int:
    put(path, img)
    got = contents(path, allow_fallback_damage=allow_fallback_damage)
    js = [j for j in range(lo, hi + 1) if r.states[j] == got]
    if not js:
        others = [j for j, st in enumerate(r.states) if st == got]
        raise AssertionError(f"{what}: holds committed states {others or 'none'}, expected one "
                             f"of {lo}..{hi}")
    return js[-1]


def check_cuts(tmp_path, r: Recording, sync: str, models, sample: float = 1.0) -> int:
    """Check the image at every cut for each (model, rng); with an rng only a `sample` share
    of the cuts. Images without an rng depend only on their durable point and are checked once
    each. Returns the number of images checked."""
    rec = r.rec
    p = str(tmp_path / "crash.cart")
    known: dict[int, dict] = {}
    checked = 0
    for model, rng in models:
        for cut in rec.cuts():
            if rng is not None and rng.random() >= sample:
                continue
            lo, hi = window(r, cut, model, sync)
            what = (model, cut, rng is not None)
            if rng is None:
                n = rec.durable_point(cut, model)
                if n not in known:
                    put(p, rec.image(cut, model))
                    known[n] = contents(p)
                    checked += 1
                assert any(r.states[j] == known[n] for j in range(lo, hi + 1)), what
            elif any(op.kind != "s" for op in rec.log[rec.durable_point(cut, model):cut]):
                # (with nothing unsynced the image is the rng-less one, checked above)
                check_image(p, rec.image(cut, model, rng), r, lo, hi, what,
                            allow_fallback_damage=sync == "normal")
                checked += 1
    return checked


def models_for(sync: str, seeds=range(3)) -> list:
    """A killed process everywhere; a power cut only where the mode promises to survive one:
    once with every unsynced write lost, and with them lost, kept or torn, reordered."""
    if sync == "off":
        return [("killed", None)]
    return [("killed", None), ("power", None)] + [("power", random.Random(s)) for s in seeds]


CASES = [("mixed", "batched"), ("mixed", "eager"), ("early_reuse", "eager"), ("large", "eager"),
         ("large", "batched")]


@pytest.mark.parametrize("sync", ["full", "normal", "off"])
@pytest.mark.parametrize("workload,release", CASES)
def test_every_cut_leaves_a_committed_state(tmp_path, monkeypatch, workload, release, sync):
    if release == "eager":
        eager_release(monkeypatch)
    r = record(tmp_path, workload, sync)
    log = r.rec.log
    # the workload really recycles pages: some page (not page 0) is written by two commits
    owner: dict[int, int] = {}
    reused = False
    for n in range(1, len(r.marks)):
        for pg in r.pages_written(n):
            reused |= owner.setdefault(pg, n) != n
    assert reused
    checked = check_cuts(tmp_path, r, sync, models_for(sync))
    assert len(log) >= 2 * (len(r.marks) - 1) and checked > len(log)
    print(f"{len(log)} I/O operations, {checked} crash images")


def test_early_reuse_happens_at_the_first_legal_commit(tmp_path, monkeypatch):
    """With eager release, pages a commit frees are written again two commits later (the
    other root slot needs them until then) - so the crash tests above cover the tightest
    reuse the protocol allows."""
    eager_release(monkeypatch)
    path = str(tmp_path / "a.cart")
    state = seed_archive(path, random.Random(7))
    c = cartridge.open(path, "a", sync="full")
    r = Recording(c, state)
    freed = content_pages(c, "/low/0")
    c.delete("/low/0")
    r.done()                                    # commit 1 frees them (pending)
    c.write("/x/a", b"a" * 9000)
    r.done()                                    # commit 2 may not reuse them
    c.write("/x/b", b"b" * 9000)
    r.done()                                    # commit 3 may, and does (first fit)
    r.rec.detach()
    c.close()
    assert not freed & r.pages_written(2)
    assert freed & r.pages_written(3)


def test_normal_power_cut_keeps_the_fallback_commit_intact(tmp_path, monkeypatch):
    """Under sync="normal" a power cut may lose the newest commit, but both commits left in the
    root slots must stay intact (docs/FORMAT.md 8: nothing reachable from the other slot is
    overwritten), so verify() passes on every crash image."""
    eager_release(monkeypatch)
    r = record(tmp_path, "early_reuse", "normal")
    FALLBACK_DAMAGED.clear()
    check_cuts(tmp_path, r, "normal", [("power", random.Random(s)) for s in range(3)])
    assert not FALLBACK_DAMAGED, FALLBACK_DAMAGED[0]


def test_power_model_really_tears_and_reorders():
    """The simulator itself: unsynced writes are lost, kept or torn per sector."""
    from cartridge.testing.crash import Op, _apply, _torn

    rng = random.Random(1)
    pieces = _torn(Op("w", 1000, bytes(range(256)) * 8), rng)
    assert pieces and all(p.kind == "w" for p in pieces)
    assert all((p.offset + len(p.data) - 1) // 512 == p.offset // 512 for p in pieces)
    assert len(pieces) < 5                        # some sectors of the 2 KiB write are missing
    img = bytearray(4096)
    for p in pieces:
        _apply(img, p)
    assert any(img[1000:3048]) and not all(img[1000:3048])


def thousand_operation_transaction(tmp_path, sync: str) -> Recording:
    """50 files, then one transaction of 1,000 operations (writes, overwrites, deletes) and a
    directory rename, recorded."""
    path = str(tmp_path / "a.cart")
    rng = random.Random(11)
    with cartridge.open(path, "w") as c:
        for i in range(50):
            c.write(f"/old/{i}", rng.randbytes(rng.choice([40, 5000])))
        old = state_of(c)
    c = cartridge.open(path, "a", sync=sync)
    r = Recording(c, old)
    model = r.model
    with c.transaction():
        for op in range(1000):
            k = f"/new/d{op % 10}/f{op % 300}"
            if op % 7 == 0 and k in model:
                c.delete(k)
                del model[k]
            else:
                data = rng.randbytes(rng.choice([10, 300, 3000, 20_000]))
                c.write(k, data)
                model[k] = data
        c.rename("/old", "/moved")
        for p in [p for p in model if p.startswith("/old/")]:
            model["/moved" + p[4:]] = model.pop(p)
    r.done()
    r.rec.detach()
    c.close()
    return r


@pytest.mark.parametrize("sync", ["full", "normal", "off"])
def test_thousand_operation_transaction_is_all_or_nothing(tmp_path, sync):
    """A 1,000-operation transaction (writes, overwrites, deletes, a directory rename), cut at
    every write/sync boundary of its commit: before the root flip the archive holds the old
    state, after it the new one, never a mix. sync="off" promises this only to a killed
    process."""
    r = thousand_operation_transaction(tmp_path, sync)
    model = r.states[-1]
    assert len(r.rec.log) > 5
    models = models_for(sync, seeds=[1])
    checked = check_cuts(tmp_path, r, sync, models)
    assert checked >= len(r.rec.log)
    with open(str(tmp_path / "end.cart"), "wb") as f:
        f.write(r.rec.image(len(r.rec.log), "killed"))
    assert contents(str(tmp_path / "end.cart")) == model


@pytest.mark.slow
@pytest.mark.parametrize("sync", ["full", "normal"])
def test_torn_and_reordered_states_many_seeds(tmp_path, monkeypatch, sync):
    """The power-cut model with many seeds at every cut of every workload (eager and batched
    release): thousands of distinct torn/reordered images per sync mode."""
    total = 0
    for n, (workload, release) in enumerate(CASES):
        with monkeypatch.context() as mp:
            if release == "eager":
                eager_release(mp)
            d = tmp_path / f"{workload}-{release}"
            d.mkdir()
            r = record(d, workload, sync, seed=100 + n)   # other data than the default tier
        # ("normal" syncs less, so its logs have fewer cuts: more seeds for as many images)
        n_seeds = 40 if sync == "full" else 50
        seeds = [random.Random(f"{sync}:{workload}:{release}:{s}") for s in range(n_seeds)]
        total += check_cuts(d, r, sync, [("power", rng) for rng in seeds])
    print(f"\n{sync}: {total} torn/reordered crash images")
    assert total >= 10_000


@pytest.mark.slow
@pytest.mark.parametrize("sync", ["full", "normal"])
def test_thousand_operation_transaction_many_seeds(tmp_path, sync):
    """The 1,000-operation transaction's commit under many torn/reordered power cuts."""
    r = thousand_operation_transaction(tmp_path, sync)
    seeds = [random.Random(f"{sync}:1000:{s}") for s in range(8)]
    total = check_cuts(tmp_path, r, sync, [("power", rng) for rng in seeds])
    print(f"\n{sync}: {total} torn/reordered crash images")
    assert total >= 8 * (len(r.rec.log) // 2)


def follow_up(c, m: dict, rng: random.Random) -> None:
    """Several commits on a reopened crash image: writes, overwrites, appends, deletes, a
    directory, a transaction, and rewrites that recycle what they free."""
    files = sorted((k for k in m if not k.endswith("/")), key=lambda k: (-len(m[k]), k))
    c.write("/after/small", b"s" * 100)
    m["/after/small"] = b"s" * 100
    big = rng.randbytes(300 * 1024)
    c.write("/after/big", big)
    m["/after/big"] = big
    if files:
        target = files[0]                      # the largest file, overwritten
        m[target] = rng.randbytes(len(m[target]) + 5000)
        c.write(target, m[target])
        victim = files[-1]
        c.delete(victim)
        del m[victim]
    with c.open("/after/big", "ab") as f:
        f.write(b"A" * 70_000)
    m["/after/big"] += b"A" * 70_000
    c.mkdir("/after/dir")
    m["/after/dir/"] = None
    with c.transaction():
        for i in range(20):
            c.write(f"/after/t/{i}", bytes([i]) * 3000)
            m[f"/after/t/{i}"] = bytes([i]) * 3000
        c.delete("/after/small")
        del m["/after/small"]
    for _ in range(4):
        data = rng.randbytes(rng.choice([5000, 200_000]))
        c.write("/after/big", data)
        m["/after/big"] = data


@pytest.mark.parametrize("sync", ["full", "normal", "off"])
def test_crash_images_take_new_commits(tmp_path, monkeypatch, sync):
    """Sampled crash images reopened for writing: several commits on top (eager release, so
    pages left pending by the crashed handle are recycled at once), then closed and reopened:
    verify() passes and the contents are the recovered state plus exactly those changes."""
    eager_release(monkeypatch)
    rng = random.Random(f"reopen:{sync}")
    p = str(tmp_path / "crash.cart")
    n = 0
    for workload in WORKLOADS:
        d = tmp_path / workload
        d.mkdir()
        r = record(d, workload, sync)
        models = models_for(sync)
        cuts = sorted(rng.sample(list(r.rec.cuts()), 8))
        for cut in cuts:
            model, model_rng = models[rng.randrange(len(models))]
            lo, hi = window(r, cut, model, sync)
            j = check_image(p, r.rec.image(cut, model, model_rng), r, lo, hi, (workload, model, cut),
                            allow_fallback_damage=sync == "normal")
            expected = dict(r.states[j])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with cartridge.open(p, "a", sync="off") as c:
                    follow_up(c, expected, rng)
            assert contents(p) == expected, (workload, model, cut)
            assert contents(p, "a") == expected
            n += 1
    assert n == 3 * 8
