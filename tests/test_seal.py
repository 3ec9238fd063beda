"""Sealed commits (docs/FORMAT.md §2.3, §8): with sync="full" a small commit writes its pages
and a root slot that names them and their xxh3, then syncs once. Open checks the newest seal
and falls back to the commit before a torn one; a writer unseals its root at close. The crash
simulator runs (test_crash_basic, test_sqlite_crash) cut sealed commits at every write."""
from __future__ import annotations

import gzip
import os
import warnings

import pytest

import cartridge
from cartridge import format as F
from cartridge._core.checksum import xxh3_64
from cartridge._handle import engine
from cartridge.pager import Root, make_seal, parse_page0, plan_runs

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


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


def slots(path: str) -> list[Root | None]:
    with open(path, "rb") as f:
        return parse_page0(f.read(4096), path)[1]


def newest(path: str) -> Root:
    return max((r for r in slots(path) if r is not None), key=lambda r: r.generation)


def patch_slot(path: str, root: Root, raw_reserved: bytes | None = None) -> None:
    """Write `root` into its slot; with `raw_reserved`, those seal bytes instead (re-checksummed)."""
    body = bytearray(root.pack())
    if raw_reserved is not None:
        body[104:248] = raw_reserved.ljust(144, b"\0")
        body[248:256] = xxh3_64(bytes(body[:248])).to_bytes(8, "little")
    with open(path, "r+b") as f:
        f.seek(F.SLOT_OFFSETS[root.generation % 2])
        f.write(body)


def damage_page(path: str, pno: int, at: int = 100) -> None:
    with open(path, "r+b") as f:
        f.seek(pno * F.PAGE_SIZE + at)
        b = f.read(1)
        f.seek(pno * F.PAGE_SIZE + at)
        f.write(bytes([b[0] ^ 0xFF]))


def left_sealed(path: str, writes: dict[str, bytes]) -> Root:
    """Commit `writes` one by one with sync="full" and leave the newest root sealed, as a
    writer that never closed (a crash after the last commit returned) leaves it."""
    c = cartridge.open(path, "a", sync="full")
    for p, data in writes.items():
        c.write(p, data)
    root = engine(c).root
    assert root.seal
    engine(c).failed = RuntimeError("abandoned")     # close() skips unsealing
    c.close()
    return root


@pytest.fixture
def path(tmp_path) -> str:
    p = str(tmp_path / "s.cart")
    with cartridge.open(p, "x") as c:
        c.write("/base", b"base" * 1000)
    return p


def test_a_small_full_commit_is_sealed_and_syncs_once(path):
    c = cartridge.open(path, "a", sync="full")
    io = engine(c).pager.io = CountingOS()
    c.write("/a", b"a" * 5000)
    assert io.syncs == 1
    root = newest(path)
    assert root.seal and root.generation == engine(c).root.generation
    with open(path, "rb") as f:
        f.seek(F.SLOT_OFFSETS[root.generation % 2])
        assert f.read(8) == F.SLOT_MAGIC_SEALED
    engine(c).pager.io = os
    c.close()


def test_off_does_not_seal(path):
    with cartridge.open(path, "a", sync="off") as c:
        c.write("/a", b"a")
        assert not newest(path).seal


def test_normal_seals_without_syncing(path):
    """sync="normal" seals its commits too, with no sync at all (tests/test_sync_normal.py
    covers the cumulative seal)."""
    c = cartridge.open(path, "a", sync="normal")
    io = engine(c).pager.io = CountingOS()
    c.write("/a", b"a" * 5000)
    assert io.syncs == 0
    assert newest(path).seal
    engine(c).pager.io = os
    c.close()
    assert not any(r is not None and r.seal for r in slots(path))


def test_what_cannot_be_sealed_is_synced_first(path):
    c = cartridge.open(path, "a", sync="full")
    io = engine(c).pager.io = CountingOS()
    c.write("/big", os.urandom(F.SEAL_MAX_PAGES * F.PAGE_SIZE + 1))      # too many pages
    assert not newest(path).seal and io.syncs == 2
    io.syncs = 0
    c.write("/small", b"s")
    assert newest(path).seal and io.syncs == 1
    engine(c).pager.io = os
    c.close()
    with cartridge.open(path, "r") as r:
        assert r.verify().ok and r.read("/small") == b"s"


def test_a_commit_that_grows_the_file_is_not_sealed(tmp_path):
    p = str(tmp_path / "g.cart")
    c = cartridge.open(p, "x", sync="full")
    pages = engine(c).pager.file_pages
    io = engine(c).pager.io = CountingOS()
    c.write("/grow", os.urandom(pages * F.PAGE_SIZE))     # well under a seal's limit
    assert engine(c).pager.file_pages > pages
    assert not newest(p).seal and io.syncs == 2
    engine(c).pager.io = os
    c.close()


def test_close_unseals_the_same_generation(path):
    c = cartridge.open(path, "a", sync="full")
    c.write("/a", b"a")
    c.write("/b", b"b")
    sealed = newest(path)
    assert sealed.seal and all(r.seal for r in slots(path))
    c.close()
    assert not any(r.seal for r in slots(path))         # a closed archive holds no seal
    after = newest(path)
    assert not after.seal and after.generation == sealed.generation
    assert (after.catalog_root, after.allocmap_root, after.page_count, after.file_count) == (
        sealed.catalog_root, sealed.allocmap_root, sealed.page_count, sealed.file_count)
    with cartridge.open(path, "r") as r:
        assert r.read("/a") == b"a" and r.verify().ok


def test_a_torn_unseal_after_a_fallback_still_opens(path):
    """Sealed g and g+1, g+1 torn: the writer that falls back to g unseals it into g+1's slot,
    so even if that write tears, g (sealed, intact) still opens."""
    left_sealed(path, {"/one": b"1" * 3000})
    c = cartridge.open(path, "a", sync="full")
    c.write("/two", b"2" * 3000)
    g = engine(c).root
    c.write("/three", b"3" * 3000)
    torn = engine(c).root
    engine(c).failed = RuntimeError("abandoned")
    c.close()
    damage_page(path, torn.seal[0][0])
    with open(path, "rb") as f:
        before = f.read(4096)
    with pytest.warns(RuntimeWarning, match="incomplete"):
        w = cartridge.open(path, "a")
    assert engine(w).root.generation == torn.generation and not engine(w).root.seal
    engine(w).failed = RuntimeError("abandoned")
    w.close()
    with open(path, "rb") as f:
        after = f.read(4096)
    off = F.SLOT_OFFSETS[torn.generation % 2]
    assert after[F.SLOT_OFFSETS[g.generation % 2]:][:256] == before[F.SLOT_OFFSETS[g.generation % 2]:][:256]
    with open(path, "r+b") as f:                # that unseal write torn: only its magic landed
        f.seek(off)
        f.write(after[off:off + 8])
        f.write(before[off + 8:off + 256])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cartridge.open(path, "r") as r:
            assert engine(r).root.generation == g.generation
            assert r.read("/two") == b"2" * 3000 and not r.exists("/three")


def test_a_reader_sees_commits_after_a_torn_one(path):
    """A reader that fell back from a torn g+1 (slot B) sees what a writer commits after it."""
    c = cartridge.open(path, "a", sync="off")      # unsealed commits, generations + 1
    c.write("/one", b"1")
    if engine(c).root.generation % 2 == 1:
        c.write("/one", b"1")                       # the torn one (next) goes to slot B (odd)
    c.close()
    left_sealed(path, {"/two": b"2" * 3000})
    torn = newest(path)
    assert torn.generation % 2 == 1
    damage_page(path, torn.seal[0][0])
    with pytest.warns(RuntimeWarning, match="incomplete"):
        r = cartridge.open(path, "r")
    assert not r.exists("/two")
    with pytest.warns(RuntimeWarning, match="incomplete"):
        w = cartridge.open(path, "a", sync="full")
    w.write("/new", b"n")                            # sealed too: the same magic
    assert r.read("/new") == b"n"
    # readers poll both whole slots, so even a change that kept a slot's magic and generation
    # would be seen
    assert len(engine(r).pager.read_slots()) == F.SLOT_OFFSETS[1] + F.ROOT_SLOT.size - F.SLOT_OFFSETS[0]
    r.close()
    w.close()


def test_a_torn_sealed_commit_opens_the_one_before(path):
    root = left_sealed(path, {"/first": b"1" * 3000, "/second": b"2" * 3000})
    page = root.seal[0][0]
    damage_page(path, page)
    for mode in ("r", "a"):
        with pytest.warns(RuntimeWarning, match="incomplete"):
            c = cartridge.open(path, mode)
        # "a": the commit before was sealed too; the writer unseals it by writing an unsealed
        # copy into the torn commit's slot (generation + 1), never in place over the only
        # good root
        assert engine(c).root.generation == root.generation - (mode == "r")
        assert not engine(c).root.seal or mode == "r"
        assert c.read("/first") == b"1" * 3000 and not c.exists("/second")
        assert any("incomplete" in w for w in engine(c).warnings)
        rep = c.verify()
        assert rep.ok and any("incomplete" in w for w in rep.warnings)
        if mode == "a":
            c.write("/third", b"3")         # overwrites the torn slot: the archive is whole again
        c.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with cartridge.open(path, "r") as c:
            assert sorted(i.path for i in c.scan("/")) == ["/base", "/first", "/third"]
            rep = c.verify()
            assert rep.ok and not rep.warnings


def test_a_seal_past_the_end_of_the_file_does_not_hold(path):
    root = left_sealed(path, {"/x": b"x" * 3000})
    with cartridge.open(path, "r") as c:
        pager = engine(c).pager
        assert pager.seal_holds(root)
        past = Root(generation=root.generation, page_count=pager.file_pages + 1,
                    seal=((pager.file_pages, 1),), seal_checksum=xxh3_64(bytes(F.PAGE_SIZE)))
        assert not pager.seal_holds(past)


def test_the_only_root_torn_is_corruption(path):
    root = left_sealed(path, {"/x": b"x" * 3000})
    with open(path, "r+b") as f:          # the other slot gone
        f.seek(F.SLOT_OFFSETS[(root.generation + 1) % 2])
        f.write(bytes(F.ROOT_SLOT.size))
    damage_page(path, root.seal[0][0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(cartridge.CorruptionError, match="do not match its seal"):
            cartridge.open(path, "r")


def _seal_bytes(n, zero, csum, extents) -> bytes:
    return F.SEAL_HEAD.pack(n, zero, csum) + b"".join(
        F.SEAL_EXTENT.pack(s | c << F.SEAL_START_BITS) for s, c in extents)


@pytest.mark.parametrize("case", ["no extents", "too many", "start 0", "count 0", "past the end",
                                  "too many pages", "reserved set", "tail set", "out of order",
                                  "overlapping"])
def test_a_malformed_seal_makes_the_slot_damaged(path, case):
    root = left_sealed(path, {"/x": b"x" * 3000})
    ext = list(root.seal)
    csum = root.seal_checksum
    raw = {
        "no extents": _seal_bytes(0, 0, csum, []),
        "too many": _seal_bytes(F.SEAL_MAX_EXTENTS + 1, 0, csum, ext),
        "start 0": _seal_bytes(1, 0, csum, [(0, 1)]),
        "count 0": _seal_bytes(1, 0, csum, [(ext[0][0], 0)]),
        "past the end": _seal_bytes(1, 0, csum, [(root.page_count - 1, 2)]),
        "too many pages": _seal_bytes(1, 0, csum, [(1, F.SEAL_MAX_PAGES + 1)]),
        "reserved set": _seal_bytes(len(ext), 7, csum, ext),
        "tail set": _seal_bytes(len(ext), 0, csum, ext).ljust(143, b"\0") + b"\1",
        "out of order": _seal_bytes(2, 0, csum, [(5, 1), (3, 1)]),
        "overlapping": _seal_bytes(2, 0, csum, [(3, 3), (5, 1)]),
    }[case]
    if case == "too many pages":
        root.page_count = max(root.page_count, F.SEAL_MAX_PAGES + 2)
    patch_slot(path, root, raw)
    assert slots(path)[root.generation % 2] is None
    with pytest.warns(RuntimeWarning, match="damaged"):
        with cartridge.open(path, "r") as c:
            assert engine(c).root.generation == root.generation - 1
            assert not c.verify().ok           # a damaged slot is a problem, as before


def test_seal_round_trip_and_checksum():
    pages = {5: b"a" * 4096, 6: b"b" * 100, 9: b"c" * 8192}
    runs = plan_runs(pages, pad=True)
    assert [(s, sum(map(len, b))) for s, b in runs] == [(5, 8192), (9, 8192)]
    extents, csum = make_seal(runs, lambda s, n: True)
    assert extents == ((5, 2), (9, 2))
    assert csum == xxh3_64(b"a" * 4096 + b"b" * 100 + bytes(3996) + b"c" * 8192)
    assert make_seal(runs, lambda s, n: s != 9) is None            # a page not in use
    root = Root(generation=7, page_count=20, seal=extents, seal_checksum=csum)
    raw = root.pack()
    assert raw[:8] == F.SLOT_MAGIC_SEALED
    back = Root.unpack(raw)
    assert back.seal == extents and back.seal_checksum == csum and back.generation == 7
    root.seal = ()
    assert Root.unpack(root.pack()).seal == ()


def test_a_reader_follows_sealed_commits(path):
    w = cartridge.open(path, "a", sync="full")
    with cartridge.open(path, "r") as r:
        sealed = 0
        for i in range(20):
            w.write(f"/f{i}", b"%d" % i * 500)
            sealed += bool(newest(path).seal)   # (not the ones that grow the file)
            assert r.read(f"/f{i}") == b"%d" % i * 500
        assert sealed >= 15 and not engine(r).warnings
    w.close()


def test_a_reader_looks_again_when_a_seal_fails_while_a_writer_moves_on(path, monkeypatch):
    """A reader that catches a seal mismatch re-reads page 0; if the slots changed meanwhile
    (a writer committed and may have reused the pages), it settles again instead of falling
    back."""
    w = cartridge.open(path, "a", sync="full")
    w.write("/one", b"1")
    r = cartridge.open(path, "r")
    w.write("/two", b"2")
    pager = engine(r).pager
    real = pager.seal_holds
    calls = []

    def flaky(root):
        calls.append(root.generation)
        if len(calls) == 1:
            w.write("/three", b"3")         # the writer moves on between the reads
            return False
        return real(root)

    monkeypatch.setattr(pager, "seal_holds", flaky)
    assert r.read("/two") == b"2" and r.read("/three") == b"3"
    assert not engine(r).warnings and len(calls) >= 2
    r.close()
    w.close()


def test_the_sealed_fixture_reads_and_takes_commits(tmp_path):
    src = os.path.join(FIXTURES, "v1_1_small.cart.gz")
    p = str(tmp_path / "f.cart")
    with gzip.open(src) as f, open(p, "wb") as g:
        g.write(f.read())
    assert newest(p).seal
    with cartridge.open(p, "r") as c:
        assert c.read("/sealed.txt").startswith(b"the newest commit")
        assert c.verify().ok
    with cartridge.open(p, "a") as c:          # a writer that finds a sealed root unseals it
        assert c.verify().ok
    assert not newest(p).seal
    with cartridge.open(p, "r") as c:
        assert c.verify().ok and c.exists("/sealed.txt")


def test_verify_reports_a_seal_broken_under_an_open_handle(path):
    c = cartridge.open(path, "a", sync="full")
    c.write("/x", b"x" * 3000)
    root = engine(c).root
    damage_page(path, root.seal[-1][0], at=4000)
    rep = c.verify(deep=False)
    assert not rep.ok and any("seal" in p for p in rep.problems)
    engine(c).failed = RuntimeError("abandoned")
    c.close()


def test_a_writer_unseals_at_open(path):
    root = left_sealed(path, {"/x": b"x" * 3000})
    c = cartridge.open(path, "a")
    now = newest(path)                        # before any commit of this handle
    assert not now.seal and now.generation == root.generation
    assert now.catalog_root == root.catalog_root
    c.close()


def test_both_seals_broken_is_corruption(path):
    c = cartridge.open(path, "a", sync="full")
    c.write("/one", b"1" * 3000)
    older = engine(c).root
    c.write("/two", b"2" * 3000)
    newer = engine(c).root
    assert older.seal and newer.seal
    engine(c).failed = RuntimeError("abandoned")
    c.close()
    damage_page(path, newer.seal[0][0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cartridge.open(path, "r") as r:   # the older seal still holds
            assert engine(r).root.generation == older.generation and r.read("/one") == b"1" * 3000
    damage_page(path, older.seal[-1][0], at=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(cartridge.CorruptionError, match="both commits"):
            cartridge.open(path, "r")


def test_pages_of_an_open_write_stream_are_never_sealed(tmp_path):
    """A write stream's staged pages are saved as free (a crash never leaks them) and are free
    at once if the stream is discarded, so a commit made while a stream is open must not seal
    them: the next commit may reuse them while the sealed root is still the newest. Every cut
    of the commit after the discard (killed process, power cut) opens the commit before it or
    that commit, never an older one, never a CorruptionError."""
    import random

    from cartridge.testing.crash import CrashRecorder

    p = str(tmp_path / "st.cart")
    with cartridge.open(p, "x") as c:
        c.write("/pad", os.urandom(4 << 20))   # grow the file once: later commits do not
        c.delete("/pad")
        for i in range(10):
            c.write(f"/n{i}", b"n")             # the frees are released
    c = cartridge.open(p, "a", sync="full")
    s = c.open("/stream", "wb")
    for _ in range(17):
        s.write(os.urandom(64 * 1024))         # chunks staged as detached pages
    held = engine(c).allocator.detached[s]
    c.write("/small", b"x" * 100)
    small = engine(c).root
    assert not any(a < st + n and st < a + m for a, m in small.seal for st, n in held)
    s._discard()
    rec = CrashRecorder(c)
    c.write("/big", os.urandom(40 * 1024))
    rec.detach()
    engine(c).failed = RuntimeError("abandoned")
    c.close()
    q = str(tmp_path / "img.cart")
    images = [rec.image(cut, "killed") for cut in rec.cuts()]
    images += [rec.image(len(rec.log) - 1, "power", random.Random(i)) for i in range(60)]
    for img in images:
        with open(q, "wb") as f:
            f.write(img)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with cartridge.open(q, "r") as r:
                assert engine(r).root.generation >= small.generation
                assert r.read("/small") == b"x" * 100 and r.verify().ok


def test_write_many_under_full_is_synced_or_sealed_whole(path):
    """write_many writes packed runs straight to the file (not staged), so its commit is not
    sealed; a later small commit is."""
    c = cartridge.open(path, "a", sync="full")
    c.write("/pad", os.urandom(4 << 20))       # grow the file once: the batch does not
    c.delete("/pad")
    for i in range(10):
        c.write(f"/n{i}", b"n")                 # the frees are released
    pages = engine(c).pager.file_pages
    c.write_many((f"/m/{i}", bytes([i]) * 3000) for i in range(40))   # not inline
    assert engine(c).pager.file_pages == pages
    assert not newest(path).seal
    c.write("/after", b"a")
    assert newest(path).seal
    c.close()
    with cartridge.open(path, "r") as r:
        assert r.read("/m/7") == bytes([7]) * 3000 and r.verify().ok


def test_a_writer_replaces_a_torn_commit_even_over_an_unsealed_root(path):
    """Unsealed g (a sync="normal" commit, unsealed at close) and a sealed g+1 cut off by a
    crash: a writer that
    opens falls back to g and replaces the torn slot at once, so that closing without a
    commit leaves no sealed slot (a 1.0 build reads it as before)."""
    with cartridge.open(path, "a", sync="normal") as c:
        c.write("/one", b"1")
    g = newest(path)
    assert not g.seal
    torn = left_sealed(path, {"/two": b"2" * 3000})
    damage_page(path, torn.seal[0][0])
    with pytest.warns(RuntimeWarning, match="incomplete"):
        w = cartridge.open(path, "a")
    assert engine(w).root.generation == torn.generation and not w.exists("/two")
    w.close()
    assert not any(r is None or r.seal for r in slots(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with cartridge.open(path, "r") as r:
            assert r.read("/one") == b"1" and not r.exists("/two") and r.verify().ok
