"""sync="normal" without a barrier per commit (docs/FORMAT.md §8, "normal"): every commit is
sealed with every page written since the last sync (a cumulative seal, §2.3), a sync comes every
pager.SYNC_EVERY_COMMITS commits or SYNC_EVERY_NS, at commit() and at close(); unsynced commits
never write the root slot open falls back to, and pages they free are not reused before a sync
made the freeing commit durable in both slots.

The power-cut images (cartridge.testing.crash: unsynced writes lost, kept or torn per 512-byte
sector, in any order) must each open consistent, pass verify() (every reachable page and content
checksum, and the fallback commit's pages still in place) and hold a committed state no older
than the last synced commit."""
from __future__ import annotations

import bisect
import os
import random
import warnings

import pytest

import cartridge
from cartridge import engine as engine_mod
from cartridge import pager as pager_mod
from cartridge._handle import engine
from cartridge.format import PAGE_SIZE, SLOT_OFFSETS
from cartridge.pager import extend_seal, parse_page0
from cartridge.testing.crash import CrashRecorder

pytestmark = pytest.mark.timeout(900)


class CountingOS:
    """The os module, counting fdatasync and fsync calls."""

    def __init__(self):
        self.syncs = 0

    def __getattr__(self, name):
        return getattr(os, name)

    def fdatasync(self, fd):
        self.syncs += 1
        return os.fdatasync(fd)

    def fsync(self, fd):
        self.syncs += 1
        return os.fsync(fd)


def slots(path: str):
    with open(path, "rb") as f:
        return parse_page0(f.read(PAGE_SIZE), path)[1]


def roomy(path: str) -> None:
    """An archive with a free tail (no commit below grows the file, which would sync)."""
    with cartridge.open(path, "x") as c:
        c.write("/seed", b"seed")
        c.write("/room", bytes(4 << 20))
        c.delete("/room")


@pytest.fixture
def path(tmp_path) -> str:
    p = str(tmp_path / "n.cart")
    roomy(p)
    return p


def counted(c) -> CountingOS:
    io = engine(c).pager.io = CountingOS()
    return io


# -- the protocol, observed ---------------------------------------------------------------------
def test_unsynced_commits_are_sealed_cumulatively_and_keep_the_fallback_slot(path):
    c = cartridge.open(path, "a", sync="normal")
    eng = engine(c)
    opened = eng.root.generation
    fallback = SLOT_OFFSETS[opened % 2]
    with open(path, "rb") as f:
        f.seek(fallback)
        fallback_bytes = f.read(256)
    io = counted(c)
    gens = []
    for i in range(20):
        c.write(f"/f{i}", os.urandom(5000))
        gens.append(eng.root.generation)
    assert io.syncs == 0
    # every unsynced commit goes to the other slot: generations step by 2 after the first
    assert gens[0] == opened + 1 and all(b - a == 2 for a, b in zip(gens, gens[1:]))
    with open(path, "rb") as f:
        f.seek(fallback)
        assert f.read(256) == fallback_bytes          # the fallback root was never rewritten
    newest = max((r for r in slots(path) if r is not None), key=lambda r: r.generation)
    assert newest.generation == gens[-1] and newest.seal
    covered = {p for s, n in newest.seal for p in range(s, s + n)}
    # the seal names the pages of all 20 commits (each wrote a content page at least)
    assert sum(n for _, n in newest.seal) >= 20
    assert eng.pager.seal_holds(newest)
    for i in range(20):
        rec = eng.get(f"/f{i}".encode())
        start = int.from_bytes(rec.payload[:8], "little")
        assert set(range(start, start + 2)) <= covered
    c.close()
    assert io.syncs >= 1
    assert not any(r is not None and r.seal for r in slots(path))   # close unseals
    with cartridge.open(path, "r") as r:
        assert len(r.listdir("/")) == 21 and r.verify().ok


def test_a_sync_every_n_commits(path, monkeypatch):
    monkeypatch.setattr(pager_mod, "SYNC_EVERY_COMMITS", 5)
    c = cartridge.open(path, "a", sync="normal")
    eng = engine(c)
    io = counted(c)
    durable = []
    for i in range(20):
        c.write(f"/f{i}", b"x" * 3000)
        durable.append(eng.pager.dirty)
    assert io.syncs == 4
    assert durable == [True, True, True, True, False] * 4     # every fifth commit synced
    eng.pager.io = os
    c.close()


def test_a_sync_once_the_interval_has_passed(path, monkeypatch):
    monkeypatch.setattr(pager_mod, "SYNC_EVERY_NS", 0)
    c = cartridge.open(path, "a", sync="normal")
    io = counted(c)
    for i in range(6):
        c.write(f"/f{i}", b"x" * 3000)
    assert io.syncs == 6
    engine(c).pager.io = os
    c.close()


def test_commit_makes_everything_durable(path):
    c = cartridge.open(path, "a", sync="normal")
    eng = engine(c)
    io = counted(c)
    for i in range(3):
        c.write(f"/f{i}", b"x" * 3000)
    assert io.syncs == 0 and eng.pager.dirty
    c.commit()
    assert io.syncs == 1 and not eng.pager.dirty
    assert eng.pager.slot_durable == eng.pager.slot_gen
    eng.pager.io = os
    c.close()


def test_what_does_not_fit_one_seal_takes_a_barrier_first(path):
    c = cartridge.open(path, "a", sync="normal")
    eng = engine(c)
    c.write("/small", b"s" * 3000)                 # unsynced, sealed
    io = counted(c)
    c.write("/big", os.urandom(2 << 20))           # 512 pages: more than one seal holds
    assert io.syncs == 1
    newest = max((r for r in slots(path) if r is not None), key=lambda r: r.generation)
    assert not newest.seal                         # its pages were durable before its root
    # the barrier made the small commit durable: the big one goes to the other slot (+1)
    assert newest.generation == eng.root.generation
    eng.pager.io = os
    c.close()
    with cartridge.open(path, "r") as r:
        assert r.read("/small") == b"s" * 3000 and r.verify().ok


def test_writer_syncs_at_open_before_writing(path, monkeypatch):
    """An earlier writer may have left commits the disk does not have yet (a killed process):
    a writer makes the file durable before it writes anything over it."""
    order = []
    real_fsync, real_fdatasync, real_pwrite = os.fsync, os.fdatasync, os.pwrite
    monkeypatch.setattr(os, "fsync", lambda fd: (order.append("sync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "fdatasync",
                        lambda fd: (order.append("sync"), real_fdatasync(fd))[1])
    monkeypatch.setattr(os, "pwrite", lambda fd, d, o: (order.append("write"),
                                                        real_pwrite(fd, d, o))[1])
    c = cartridge.open(path, "a", sync="normal")
    c.write("/x", b"x" * 3000)
    monkeypatch.undo()
    c.close()
    assert order and order[0] == "sync"


def test_a_reader_follows_unsynced_commits(path):
    w = cartridge.open(path, "a", sync="normal")
    with cartridge.open(path, "r") as r:
        for i in range(12):
            w.write("/x", b"%d" % i * 1000)
            assert r.read("/x") == b"%d" % i * 1000
            assert engine(r).root.generation == engine(w).root.generation
        assert r.verify().ok
    w.close()


def test_extend_seal_rules():
    def buf(n):
        return [bytes([n]) * PAGE_SIZE]

    def anything(start, count):
        return True

    acc = ((), None, 0)
    acc = extend_seal(acc, [(10, buf(1)), (11, buf(2))], anything)
    assert acc[0] == ((10, 2),) and acc[2] == 2
    acc2 = extend_seal(acc, [(12, buf(3)), (20, buf(4))], anything)
    assert acc2[0] == ((10, 3), (20, 1))
    import xxhash
    assert acc2[1].intdigest() == xxhash.xxh3_64_intdigest(
        b"".join(bytes([n]) * PAGE_SIZE for n in (1, 2, 3, 4)))
    assert acc[1].intdigest() == xxhash.xxh3_64_intdigest(bytes([1]) * PAGE_SIZE + bytes([2]) * PAGE_SIZE)
    assert extend_seal(acc2, [(5, buf(5))], anything) is None           # below: out of order
    assert extend_seal(acc2, [(12, buf(5))], anything) is None          # overlapping
    assert extend_seal(acc2, [(30, buf(5))], lambda s, n: s != 20) is None   # no longer in use
    many = acc2
    for k in range(14):
        many = extend_seal(many, [(100 + 2 * k, buf(k))], anything)
    assert len(many[0]) == 16
    assert extend_seal(many, [(500, buf(9))], anything) is None         # a 17th extent
    assert extend_seal(many, [(100 + 27, buf(9))], anything) is not None  # merges instead
    big = [(1000, [bytes(PAGE_SIZE)] * 253)]
    assert extend_seal(acc2, big, anything) is None                     # 257 pages
    assert extend_seal(acc, [], anything) == acc


# -- power cuts ---------------------------------------------------------------------------------
class Run:
    """A recorded workload: the state after each commit that returned and the I/O log length
    at that moment."""

    def __init__(self, c, state):
        self.c = c
        self.rec = CrashRecorder(c)
        self.model = dict(state)
        self.states = [dict(state)]
        self.marks = [0]

    def done(self):
        self.states.append(dict(self.model))
        self.marks.append(len(self.rec.log))

    def synced(self, cut: int) -> int:
        """The newest commit all of whose writes precede a sync among the first `cut` ops."""
        return bisect.bisect_right(self.marks, self.rec.durable_point(cut, "power")) - 1

    def returned(self, cut: int) -> int:
        return bisect.bisect_right(self.marks, cut) - 1


def state_of(c) -> dict:
    return {i.path: c.read(i.path) for i in c.scan("/")}


def workload(r: Run, rng: random.Random, n: int) -> None:
    """Small and mid-size writes, overwrites, deletes, a transaction, a large write (which takes
    a barrier) and rewrites that recycle what earlier commits freed."""
    c, m = r.c, r.model
    for _ in range(n):
        k = rng.randrange(8)
        p = f"/d/{rng.randrange(12)}"
        if k < 5:
            data = rng.randbytes(rng.choice([40, 3000, 9000, 30_000]))
            c.write(p, data)
            m[p] = data
        elif k == 5 and p in m:
            c.delete(p)
            del m[p]
        elif k == 6:
            with c.transaction():
                for _ in range(rng.randrange(1, 6)):
                    q = f"/t/{rng.randrange(20)}"
                    data = rng.randbytes(rng.choice([10, 5000]))
                    c.write(q, data)
                    m[q] = data
        else:
            data = rng.randbytes(rng.choice([70_000, 400_000]))
            c.write("/big", data)
            m["/big"] = data
        r.done()


def record(tmp_path, seed: int, n: int, every: int | None, monkeypatch, eager=True) -> Run:
    p = str(tmp_path / "a.cart")
    roomy(p)
    if eager:       # release freed pages as soon as the rules allow: the tightest reuse
        monkeypatch.setattr(engine_mod, "RELEASE_BATCH", 1)
        monkeypatch.setattr(engine_mod, "RELEASE_PAGES", 1)
    if every is not None:
        monkeypatch.setattr(pager_mod, "SYNC_EVERY_COMMITS", every)
    c = cartridge.open(p, "a", sync="normal")
    with cartridge.open(p, "r") as r0:
        start = state_of(r0)
    r = Run(c, start)
    workload(r, random.Random(seed), n)
    r.rec.detach()
    c.close()
    monkeypatch.setattr(pager_mod, "SYNC_EVERY_COMMITS", pager_mod.SYNC_EVERY_COMMITS)
    return r


def check(tmp_path, r: Run, rngs, sample: float = 1.0, seen=None) -> dict:
    """Every cut (or a `sample` share) under each power-cut rng: the image opens, verifies and
    holds a state j with synced(cut) <= j <= returned(cut) + 1. Returns counts of what was
    recovered relative to the last synced commit."""
    img_path = str(tmp_path / "img.cart")
    out = {"images": 0, "newer_than_synced": 0, "synced": 0, "unsynced_pending": 0}
    pick = random.Random(5)
    for rng in rngs:
        for cut in r.rec.cuts():
            if sample < 1.0 and pick.random() >= sample:
                continue
            lo, hi = r.synced(cut), min(r.returned(cut) + 1, len(r.states) - 1)
            img = r.rec.image(cut, "power", rng)
            with open(img_path, "wb") as f:
                f.write(img)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with cartridge.open(img_path, "r") as c:
                    rep = c.verify()
                    assert rep.ok, (cut, rep.problems)
                    got = state_of(c)
            js = [j for j in range(lo, hi + 1) if r.states[j] == got]
            assert js, (cut, lo, hi, [j for j, s in enumerate(r.states) if s == got])
            out["images"] += 1
            if r.returned(cut) > lo:
                out["unsynced_pending"] += 1
                if js[-1] > lo:
                    out["newer_than_synced"] += 1
                elif js[-1] == lo:
                    out["synced"] += 1
    return out


@pytest.mark.parametrize("mode", ["w", "x"])
def test_a_new_archive_survives_power_cuts(tmp_path, mode):
    """An archive created by a "normal" handle: its first root is the fallback of the first
    unsynced commits (a regression: the slot of generation 1 was overwritten unsynced)."""
    p = str(tmp_path / "new.cart")
    c = cartridge.open(p, mode, sync="normal")
    r = Run(c, {})
    for i in range(6):
        c.write(f"/f{i}", os.urandom(5000))
        r.model[f"/f{i}"] = c.read(f"/f{i}")
        r.done()
    r.rec.detach()
    engine(c).failed = RuntimeError("abandoned")     # a crash: no close, no sync
    c.close()
    got = check(tmp_path, r, [None] + [random.Random(s) for s in range(4)])
    assert got["images"] > 0


@pytest.mark.parametrize("mode", ["w", "x"])
def test_a_new_archive_keeps_its_first_root_until_a_sync(tmp_path, mode):
    """(The crash recorder syncs when it attaches, so the sweep above cannot see this.)"""
    p = str(tmp_path / "new.cart")
    c = cartridge.open(p, mode, sync="normal")
    first = engine(c).root.generation
    with open(p, "rb") as f:
        f.seek(SLOT_OFFSETS[first % 2])
        slot = f.read(256)
    io = counted(c)
    for i in range(4):
        c.write(f"/f{i}", os.urandom(100))       # inline: the new file does not grow (a sync)
    assert io.syncs == 0
    with open(p, "rb") as f:
        f.seek(SLOT_OFFSETS[first % 2])
        assert f.read(256) == slot
    c.close()


@pytest.mark.parametrize("every", [4, None])
def test_power_cuts_recover_a_state_no_older_than_the_last_sync(tmp_path, monkeypatch, every):
    """With a sync every 4 commits (so that pages freed before a sync are recycled after it)
    and at the default interval (one long unsynced run): every cut, three torn/reordered
    power-cut models."""
    r = record(tmp_path, seed=1, n=40, every=every, monkeypatch=monkeypatch)
    syncs = sum(op.kind == "s" for op in r.rec.log)
    assert syncs < len(r.marks) - 1                  # fewer syncs than commits
    got = check(tmp_path, r, [random.Random(s) for s in range(3)])
    # both outcomes of an unsynced run happen: a newer commit whose seal held, and the
    # fallback to the last synced one
    assert got["newer_than_synced"] > 0 and got["synced"] > 0, got
    print(got)


def test_crash_images_take_new_commits(tmp_path, monkeypatch):
    """A recovered image is a good archive to go on with: a writer commits on top (reusing
    what the crashed writer left pending), and reopening finds exactly that."""
    r = record(tmp_path, seed=2, n=25, every=5, monkeypatch=monkeypatch)
    img_path = str(tmp_path / "img.cart")
    rng = random.Random(9)
    for cut in sorted(rng.sample(list(r.rec.cuts()), 10)):
        with open(img_path, "wb") as f:
            f.write(r.rec.image(cut, "power", random.Random(cut)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with cartridge.open(img_path, "a", sync="normal") as c:
                want = state_of(c)
                for i in range(12):
                    data = rng.randbytes(rng.choice([100, 5000, 80_000]))
                    c.write(f"/after/{i % 5}", data)
                    want[f"/after/{i % 5}"] = data
        with cartridge.open(img_path, "r") as c:
            assert c.verify().ok and state_of(c) == want


@pytest.mark.slow
@pytest.mark.parametrize("every", [2, 7, None])
def test_power_cuts_many_seeds(tmp_path, monkeypatch, every):
    """Longer workloads, many torn/reordered power-cut models per cut."""
    r = record(tmp_path, seed=100 + (every or 0), n=120, every=every, monkeypatch=monkeypatch)
    got = check(tmp_path, r, [random.Random(f"n:{every}:{s}") for s in range(12)], sample=0.5)
    assert got["images"] >= 1000 and got["newer_than_synced"] > 0 and got["synced"] > 0, got
    print(got)


@pytest.mark.slow
def test_power_cuts_with_batched_release(tmp_path, monkeypatch):
    """The engine's default batched release (not eager) under the same checks."""
    r = record(tmp_path, seed=7, n=120, every=6, monkeypatch=monkeypatch, eager=False)
    got = check(tmp_path, r, [random.Random(f"b:{s}") for s in range(8)], sample=0.5)
    assert got["images"] >= 500, got
