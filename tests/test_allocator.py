"""The allocation policy (cartridge.allocator.Allocator), driven directly with a fake grow
callback, and through real archives: first-fit single pages, contiguous large runs, the
fragmentation fallback, coalescing, deferred reuse of freed pages, growth by doubling with a
capped step, and inline storage of small files."""
from __future__ import annotations

import os

import numpy as np
import pytest

import cartridge
from cartridge import paths as P
from cartridge._handle import engine
from cartridge.allocator import GROW_MAX_STEP, GROW_MIN_PAGES, LARGE_FILE_PAGES, Allocator
from cartridge.format import CHUNK_PAGES, CHUNK_SIZE, PAGE_SIZE


class FakeFile:
    """The grow callback: records every size the allocator asks for."""

    def __init__(self, n: int):
        self.n = n
        self.calls: list[int] = []

    def __call__(self, n_pages: int) -> None:
        self.calls.append(n_pages)
        self.n = max(self.n, n_pages)


def make(n_pages: int = 64) -> tuple[Allocator, FakeFile]:
    f = FakeFile(n_pages)
    a = Allocator(n_pages, f)
    a.used.set_range(0, 1)          # page 0 (header) as in a real archive
    return a, f


def commit(a: Allocator) -> list:
    """End the transaction; returns its frees (what the engine queues as pending)."""
    return a.end_transaction()


# -- direct: single pages ---------------------------------------------------------------------
def test_single_pages_first_fit():
    a, f = make(64)
    got = [a.alloc_page() for _ in range(10)]
    assert got == list(range(1, 11))
    commit(a)
    a.free(3, 1)
    a.free(7, 1)
    freed = commit(a)
    assert sorted(freed) == [(3, 1), (7, 1)]
    # committed pages freed: pending, not reusable yet
    assert a.alloc_page() == 11
    a.release(freed)
    assert a.alloc_page() == 3          # lowest free page first
    assert a.alloc_page() == 7
    assert a.alloc_page() == 12
    assert f.calls == []


def test_page_freed_in_same_transaction_is_reusable_at_once():
    a, _ = make(64)
    p = a.alloc_page()
    a.free(p, 1)                         # born and freed in this transaction: unreachable
    assert a.alloc_page() == p
    assert a.stats()["pending_pages"] == 0


def test_committed_pages_freed_stay_pending_until_released():
    a, _ = make(64)
    start = a.alloc_run(8)
    commit(a)
    a.free(start, 8)
    assert a.stats()["pending_pages"] == 8
    assert a.used.is_range_used(start, 8)
    nxt = a.alloc_run(8)
    assert nxt >= start + 8 or nxt + 8 <= start          # no overlap with the pending run
    freed = commit(a)
    a.release(freed)
    assert a.stats()["pending_pages"] == 0
    assert a.used.is_range_free(start, 8)


def test_rollback_undoes_allocations_and_frees():
    a, _ = make(64)
    keep = a.alloc_run(4)
    commit(a)
    before = a.stats()
    a.alloc_run(10)
    a.alloc_page()
    a.free(keep, 4)
    a.rollback()
    assert a.stats() == before
    assert a.used.is_range_used(keep, 4)


# -- direct: content runs ---------------------------------------------------------------------
def test_large_content_is_one_contiguous_run_when_possible():
    a, f = make(4096)
    n = 3 * LARGE_FILE_PAGES + 5
    runs = a.alloc_content(n, 5)
    assert runs == [(runs[0][0], n)]
    assert a.used.is_range_used(runs[0][0], n)
    # next-fit: the following large file goes after the previous one
    runs2 = a.alloc_content(n, 5)
    assert len(runs2) == 1 and runs2[0][0] >= runs[0][0] + n
    assert f.calls == []


def test_small_content_first_fit_in_a_hole():
    a, _ = make(1024)
    s1 = a.alloc_run(10)
    s2 = a.alloc_run(10)
    a.alloc_run(10)
    a.free(s2, 10)                       # fresh: free at once
    runs = a.alloc_content(6, 6)
    assert runs == [(s2, 6)]
    assert s1 == 1


def test_fragmented_large_content_takes_whole_chunk_runs():
    """No contiguous run is long enough: the file takes several runs, each a whole number of
    64 KiB chunks (except the last), from the free holes before growing the file."""
    a, f = make(2048)
    a.used.set_range(0, 2048)
    holes = [(100, 40), (300, 16), (500, 33), (900, 20), (1500, 70)]   # 179 pages
    for s, n in holes:
        a.used.clear_range(s, n)
    n_pages = 7 * CHUNK_PAGES + 3        # 115 pages: 7 whole chunks and a 3-page tail
    runs = a.alloc_content(n_pages, 3)
    assert sum(c for _, c in runs) == n_pages
    assert len(runs) >= 2
    for s, c in runs[:-1]:
        assert c % CHUNK_PAGES == 0, runs
        assert any(hs <= s and s + c <= hs + hn for hs, hn in holes), runs
    # no page handed out twice, every page marked used
    pages = np.concatenate([np.arange(s, s + c) for s, c in runs])
    assert len(set(pages.tolist())) == n_pages
    for s, c in runs:
        assert a.used.is_range_used(s, c)
    assert f.calls == []                 # the holes were enough


def test_fragmented_large_content_grows_for_the_rest():
    a, f = make(1024)
    a.used.set_range(0, 1024)
    for s in range(10, 1000, 100):       # ten 20-page holes: one chunk each is usable
        a.used.clear_range(s, 20)
    n_pages = 20 * CHUNK_PAGES
    runs = a.alloc_content(n_pages, 0)
    assert sum(c for _, c in runs) == n_pages
    in_holes = sum(c for s, c in runs if s < 1024)
    assert in_holes == 10 * CHUNK_PAGES
    assert f.calls, "the file had to grow"
    assert f.n >= 1024 + n_pages - in_holes


# -- direct: growth -------------------------------------------------------------------------------
def test_growth_doubles():
    a, f = make(GROW_MIN_PAGES)
    for _ in range(300):
        a.alloc_page()
    assert f.calls == [32, 64, 128, 256, 512]
    assert a.n_pages == 512


def test_growth_step_is_capped():
    n = GROW_MAX_STEP
    a, f = make(n)
    a.used.set_range(0, n)
    a.alloc_page()
    assert f.calls == [2 * n]
    a.used.set_range(0, a.n_pages)
    a.alloc_page()
    assert f.calls == [2 * n, 3 * n]     # doubling would give 4n: capped at +GROW_MAX_STEP
    a.used.set_range(0, a.n_pages)
    a.alloc_run(5 * n)                   # a request bigger than the step grows by what it needs
    assert f.calls[-1] >= 3 * n + 5 * n
    assert a.n_pages == f.calls[-1]


def test_growth_uses_free_tail():
    a, f = make(100)
    a.used.set_range(0, 90)              # 10 free pages at the end
    start = a.alloc_run(30)
    assert start == 90                   # the free tail is extended, not skipped
    assert f.calls and f.calls[-1] >= 120


# -- direct: coalescing ---------------------------------------------------------------------------
def test_free_runs_coalesce():
    a, _ = make(256)
    runs = [a.alloc_run(10) for _ in range(6)]
    commit(a)
    a.alloc_run(256 - 61)                # fill the rest: no free tail to merge with
    commit(a)
    base = a.stats()
    assert base["free_runs"] == 0
    a.free(runs[1], 10)
    a.free(runs[3], 10)
    a.release(commit(a))
    s = a.stats()
    assert (s["free_runs"], s["largest_free_run"]) == (2, 10)
    a.free(runs[2], 10)                  # the neighbour between them
    a.release(commit(a))
    s = a.stats()
    assert (s["free_runs"], s["largest_free_run"]) == (1, 30)
    assert s["fragmentation"] == 0.0
    assert a.alloc_run(30) == runs[1]    # the merged run serves a 30-page request


# -- through the archive ----------------------------------------------------------------------------
def chunk_starts(c, path: str) -> list[int]:
    rec = engine(c).get(P.to_key(P.normalize_file(path)))
    return [int(x) for x in engine(c).content.chunk_map(rec, path)[:, 0]]


def file_pages(c, path: str) -> set[int]:
    """Every content page of a chunked file."""
    rec = engine(c).get(P.to_key(P.normalize_file(path)))
    cmap = engine(c).content.chunk_map(rec, path)
    out = set()
    for i, start in enumerate(cmap[:, 0]):
        ln = min(CHUNK_SIZE, rec.size - i * CHUNK_SIZE)
        out.update(range(int(start), int(start) + -(-ln // PAGE_SIZE)))
    return out


def extents(pages: set[int]) -> list[tuple[int, int]]:
    out = []
    for p in sorted(pages):
        if out and out[-1][0] + out[-1][1] == p:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((p, 1))
    return out


def settle(c, max_commits: int = 40) -> int:
    """Commit trivial changes until the pending frees are (nearly all) released; the engine
    releases in batches, so this may take several commits. Returns the commits made."""
    for k in range(max_commits):
        if c.info()["pending_pages"] < 20:
            return k
        c.write("/tick", b"%d" % k)
    raise AssertionError(f"pending frees never released: {c.info()}")


def test_freed_pages_not_reused_by_next_commit(tmp_path):
    with cartridge.open(str(tmp_path / "a.cart"), "x", sync="off") as c:
        c.write("/A", b"1" * 100_000)
        v1 = file_pages(c, "/A")
        c.write("/A", b"2" * 100_000)            # commit f frees v1's pages
        v2 = file_pages(c, "/A")
        assert not v1 & v2
        c.write("/B", b"3" * 100_000)            # commit f+1: v1 may still be read (root f-1)
        assert not v1 & file_pages(c, "/B")
        for p in v1:                             # ... and they are still reserved
            assert engine(c).allocator.used.get(p)
        alloc = engine(c).allocator
        for k in range(40):                      # released after some later commits (batched)
            if not any(alloc.pending.get(p) for p in v1):
                break
            c.write("/tick", b"%d" % k)
        assert not any(alloc.pending.get(p) for p in v1), "v1 never released"
        print(f"\nv1 released after {k + 1} commits past the one that freed it")
        c.write("/C", b"4" * 100_000)
        c.write("/D", b"5" * 100_000)
        assert v1 & (file_pages(c, "/C") | file_pages(c, "/D")), "freed pages never reused"
        assert c.read("/A") == b"2" * 100_000
        assert c.verify().ok


def test_pages_replaced_within_one_transaction_are_reused_at_once(tmp_path):
    with cartridge.open(str(tmp_path / "a.cart"), "x", sync="off") as c:
        c.write("/pad", b"p" * 50_000)
        with c.transaction():
            c.write("/A", b"1" * 100_000)
            first = file_pages(c, "/A")
            c.write("/A", b"2" * 100_000)        # the first version was never committed
            c.write("/B", b"3" * 100_000)
            assert first & (file_pages(c, "/A") | file_pages(c, "/B"))
        assert c.read("/A") == b"2" * 100_000
        assert c.verify().ok


def test_large_file_is_contiguous_in_fresh_archive(tmp_path):
    with cartridge.open(str(tmp_path / "a.cart"), "x", sync="off") as c:
        data = os.urandom(3 << 20)
        c.write("/big", data)
        ext = extents(file_pages(c, "/big"))
        assert len(ext) == 1, ext
        assert c.read("/big") == data


def _fragmented(c) -> dict:
    """Fill `c` with 400 files of 80 KiB, delete every other one and plug the free tail: free
    space is then ~200 holes of 20 pages (each holds one whole 64 KiB chunk). Returns info()."""
    with c.transaction():
        for i in range(400):
            c.write(f"/small/{i:04d}", bytes([i % 256]) * PIECE)
    with c.transaction():
        for i in range(0, 400, 2):
            c.delete(f"/small/{i:04d}")
    settle(c)                                    # the deletes' frees are released
    # plug the free tail (growth leaves one) with files too big for the 20-page holes
    with c.transaction():
        k = 0
        while c.info()["largest_free_run"] > 48:
            n = min(c.info()["largest_free_run"] - 2, LARGE_FILE_PAGES - 4)
            c.write(f"/plug/{k}", b"p" * (n * PAGE_SIZE))
            k += 1
    settle(c)
    before = c.info()
    assert before["largest_free_run"] < 64, before
    assert before["free_pages"] >= 200 * 16, before
    return before


PIECE = 80 * 1024                                # 20 pages: one whole chunk + a 4-page tail


def test_fragmentation_fallback_uses_holes(tmp_path):
    """Only small holes left: a several-MiB file still gets written, across many extents taken
    from the holes, reads back exactly and verifies."""
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "x", sync="off") as c:
        before = _fragmented(c)
        data = os.urandom(4 << 20)               # 1024 pages, 64 chunks
        c.write("/big", data)
        after = c.info()
        pages = file_pages(c, "/big")
        ext = extents(pages)
        in_old_space = sum(1 for p in pages if p < before["pages"])
        print(f"\nbefore: {before['free_runs']} free runs, largest {before['largest_free_run']}, "
              f"{before['free_pages']} free pages, file {before['file_size']} B; big file: "
              f"{len(ext)} extents, {in_old_space} of {len(pages)} pages in old holes; after: "
              f"{after['free_runs']} free runs, {after['free_pages']} free pages, "
              f"file {after['file_size']} B")
        assert len(ext) > 10, ext                # many extents, not one
        assert in_old_space >= 512, "the holes were not used"
        assert c.read("/big") == data
        rep = c.verify()
        assert rep.ok, rep.problems
        for i in range(1, 400, 2):
            assert c.read(f"/small/{i:04d}") == bytes([i % 256]) * PIECE
    with cartridge.open(path, "r") as c:
        assert c.read("/big") == data
        assert c.verify(deep=True).ok


def test_fragmentation_fallback_does_not_grow_when_holes_suffice(tmp_path):
    with cartridge.open(str(tmp_path / "a.cart"), "x", sync="off") as c:
        before = _fragmented(c)
        data = os.urandom(4 << 20)               # 1024 pages: ~64 of the ~200 holes suffice
        c.write("/big", data)
        grew = c.info()["file_size"] - before["file_size"]
        assert grew < len(data) // 2, f"file grew by {grew} bytes"


def test_fragmented_fallback_takes_enough_holes_before_growing():
    a, f = make(4096)
    a.used.set_range(0, 4096)
    for s in range(10, 3000, 100):               # 30 holes of 20 pages: one chunk each
        a.used.clear_range(s, 20)
    runs = a.alloc_content(20 * CHUNK_PAGES, 0)  # 20 chunks: 20 of the 30 holes suffice
    assert sum(c for _, c in runs) == 20 * CHUNK_PAGES
    assert f.calls == [], f"grew to {f.calls} with {len(runs)} runs {runs[-2:]}"


def test_coalescing_through_archive(tmp_path):
    """Deleting three neighbouring files leaves one free run once the frees are released."""
    with cartridge.open(str(tmp_path / "a.cart"), "x", sync="off") as c:
        size = 40 * PAGE_SIZE                    # 40 pages: 2 chunks + an 8-page tail
        for name in "ABCDE":
            c.write(f"/{name}", name.encode() * size)
        pages = {n: file_pages(c, f"/{n}") for n in "ABCDE"}
        for x, y in ("AB", "BC"):                # neighbours, at most a few metadata pages apart
            assert 0 <= min(pages[y]) - max(pages[x]) - 1 <= 4, (extents(pages[x]), extents(pages[y]))
        alloc = engine(c).allocator

        def free_run_at(p: int) -> tuple[int, int]:
            """(first, last) page of the free run containing p; (0, -1) if p is not free."""
            if alloc.used.get(p):
                return 0, -1
            lo = hi = p
            while lo > 0 and not alloc.used.get(lo - 1):
                lo -= 1
            while hi + 1 < alloc.n_pages and not alloc.used.get(hi + 1):
                hi += 1
            return lo, hi

        def settle_pages(ps) -> int:
            for k in range(40):
                if not any(alloc.pending.get(p) for p in ps):
                    return k
                c.write("/tick", b"%d" % k)
            raise AssertionError("frees never released")

        c.delete("/A")
        c.delete("/C")
        settle_pages(pages["A"] | pages["C"])
        two_holes = c.info()
        ra, rc = free_run_at(max(pages["A"])), free_run_at(min(pages["C"]))
        assert ra[1] < min(pages["B"]) and rc[0] > max(pages["B"]), (ra, rc)
        c.delete("/B")
        c.write("/tick", b"next")
        assert free_run_at(min(pages["B"])) == (0, -1)   # still pending in the next commit
        n = settle_pages(pages["B"])
        merged = free_run_at(min(pages["B"]))
        after = c.info()
        print(f"\nfree runs: {two_holes['free_runs']} with two holes, {after['free_runs']} after the "
              f"middle file went ({n} commits to release); merged run {merged}")
        assert merged[0] <= max(pages["A"]) and merged[1] >= max(pages["C"]), (merged, ra, rc)
        assert merged[1] - merged[0] + 1 >= 100
        assert after["free_runs"] < two_holes["free_runs"] or after["largest_free_run"] > max(
            two_holes["largest_free_run"], ra[1] - ra[0] + 1, rc[1] - rc[0] + 1)
        assert after["largest_free_run"] >= merged[1] - merged[0] + 1
        assert c.verify().ok


def test_growth_by_doubling_through_archive(tmp_path):
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "x", sync="off") as c:
        sizes = [os.path.getsize(path)]
        for i in range(600):
            c.write(f"/f{i}", b"z" * 5000)       # 2 pages each
            s = os.path.getsize(path)
            if s != sizes[-1]:
                sizes.append(s)
        assert c.info()["file_size"] == sizes[-1]
    print("\nfile sizes:", sizes)
    assert sizes[0] == GROW_MIN_PAGES * PAGE_SIZE
    assert len(sizes) >= 5
    for prev, nxt in zip(sizes, sizes[1:]):
        assert nxt == 2 * prev, sizes


@pytest.mark.slow
def test_growth_step_capped_through_archive(tmp_path):
    """Past 64 MiB the file grows by at most GROW_MAX_STEP pages at a time (small writes)."""
    path = str(tmp_path / "a.cart")
    step = GROW_MAX_STEP * PAGE_SIZE
    with cartridge.open(path, "x", sync="off") as c:
        sizes = [os.path.getsize(path)]
        blob = os.urandom(200_000)
        i = 0
        while sizes[-1] < 3 * step + 1:
            c.write(f"/f{i}", blob)
            i += 1
            s = os.path.getsize(path)
            if s != sizes[-1]:
                sizes.append(s)
        assert c.verify(deep=False).ok
    print("\nfile sizes (MiB):", [s / 2**20 for s in sizes])
    big = [s for s in sizes if s >= 1 << 20]     # past the first writes (200 KB > the file)
    for prev, nxt in zip(big, big[1:]):
        assert nxt == min(2 * prev, prev + step), sizes
    assert big[-1] - big[-2] == step


def test_small_files_are_packed(tmp_path):
    """10,000 files of 100 bytes: far below a page each (they live inline in the catalog)."""
    path = str(tmp_path / "a.cart")
    n = 10_000
    with cartridge.open(path, "x", sync="off") as c:
        with c.transaction():
            for i in range(n):
                c.write(f"/d{i % 10}/f{i:05d}", bytes([i % 256]) * 100)
        info = c.info()
    size = os.path.getsize(path)
    per_file = size / n
    print(f"\n{n} files of 100 B: file {size} B ({per_file:.0f} B/file), used pages "
          f"{info['used_pages']}, catalog height {info['catalog_height']}")
    assert per_file < 1024
    assert info["used_pages"] * PAGE_SIZE / n < 600
    with cartridge.open(path, "r") as c:
        assert c.read("/d7/f01237") == bytes([1237 % 256]) * 100
        assert c.verify().ok


def test_small_files_packed_after_many_commits(tmp_path):
    """The same, one commit per file: old metadata pages are recycled, not accumulated."""
    path = str(tmp_path / "a.cart")
    n = 2000
    with cartridge.open(path, "x", sync="off") as c:
        for i in range(n):
            c.write(f"/f{i:05d}", b"y" * 100)
        info = c.info()
    size = os.path.getsize(path)
    print(f"\n{n} single commits: file {size} B, used {info['used_pages']} pages, "
          f"free {info['free_pages']}")
    assert size / n < 1024


def _ref_runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True, the slow obvious way."""
    out: list[tuple[int, int]] = []
    for i, f in enumerate(flags.tolist()):
        if f:
            if out and out[-1][0] + out[-1][1] == i:
                out[-1] = (out[-1][0], out[-1][1] + 1)
            else:
                out.append((i, 1))
    return out


@pytest.mark.parametrize("n", [1, 63, 64, 65, 130, 2048, 5000])
def test_set_runs_and_drop_held_agree_with_a_plain_scan(n):
    """set_runs and drop_held find set bits through the bitmap's nonzero words: the same runs
    as a bit-by-bit scan, at word edges and at the map's end, with and without a keep array
    (shorter or longer than the map)."""
    from cartridge.allocator import set_runs

    rng = np.random.default_rng(n)
    for trial in range(30):
        a = Allocator(n, FakeFile(n))
        held = np.zeros(n, dtype=bool)
        for _ in range(int(rng.integers(0, 6))):
            s = int(rng.integers(0, n))
            c = int(rng.integers(1, n - s + 1))
            held[s:s + c] = True
        for s, c in _ref_runs(held):
            a._hold(s, c)
        assert set_runs(a.held) == _ref_runs(held)
        keep = None if trial % 3 == 0 else rng.random(int(rng.integers(0, n + 70))) < 0.5
        expect = held.copy()
        if keep is not None:
            m = min(len(keep), n)
            expect[:m] &= ~keep[:m]
        freed = a.drop_held(keep)
        assert freed == int(expect.sum())
        assert set_runs(a.pending) == _ref_runs(expect)
        assert set_runs(a.held) == _ref_runs(held & ~expect)
        assert a.held_count == int((held & ~expect).sum())
