"""Tests for the page-allocation bitmap kernel (cartridge._core.bitmap)."""

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cartridge._core.bitmap import CHUNK_BITS, CHUNK_BYTES, CHUNK_WORDS, Bitmap

FULL = 0xFFFFFFFFFFFFFFFF


# ---------------------------------------------------------------- naive reference model


class Model:
    """List-of-bools reference implementation (True = used)."""

    def __init__(self, n):
        self.bits = [False] * n

    def set_range(self, s, c):
        self.bits[s : s + c] = [True] * c

    def clear_range(self, s, c):
        self.bits[s : s + c] = [False] * c

    def find_free(self, hint=0):
        n = len(self.bits)
        if hint < 0 or hint >= n:
            hint = 0
        for i in list(range(hint, n)) + list(range(hint)):
            if not self.bits[i]:
                return i
        return -1

    def runs(self):
        out, i, n = [], 0, len(self.bits)
        while i < n:
            if self.bits[i]:
                i += 1
                continue
            j = i
            while j < n and not self.bits[j]:
                j += 1
            out.append((i, j - i))
            i = j
        return out

    def count_free(self):
        return self.bits.count(False)


def first_run_at_or_after(runs, count, lo):
    """First start >= lo of a window of count free bits (uses maximal runs)."""
    for s, ln in runs:
        st_ = max(s, lo)
        if s + ln - st_ >= count:
            return st_
    return -1


# ---------------------------------------------------------------- construction / grow


def test_empty():
    b = Bitmap()
    assert b.n_bits == 0
    assert b.n_chunks == 0
    assert len(b.words) == 0
    assert b.find_free() == -1
    assert b.find_run(1) == -1
    assert b.count_free() == 0 and b.count_used() == 0
    assert b.free_runs() == []
    assert b.largest_runs(5, 3) == []
    assert b.dirty_chunks() == []
    b.set_range(0, 0)
    assert b.is_range_free(0, 0)


def test_new_all_free():
    b = Bitmap(130)
    assert b.n_bits == 130
    assert len(b.words) == 3
    assert b.words.dtype == np.uint64
    assert b.count_free() == 130
    assert b.free_runs() == [(0, 130)]
    assert b.n_chunks == 1
    with pytest.raises(ValueError):
        Bitmap(-1)


def test_words_view_is_read_only_and_current():
    b = Bitmap(200)
    b.set_range(64, 64)
    w = b.words
    assert w[1] == FULL and w[0] == 0 and w[2] == 0
    with pytest.raises(ValueError):
        w[0] = 1


def test_grow_preserves_content_and_amortises():
    b = Bitmap(100)
    b.set_range(10, 50)
    b.set_range(99, 1)
    for n in range(101, 300_000, 977):
        b.grow(n)
        assert b.n_bits == n
    assert b.is_range_used(10, 50)
    assert b.get(99)
    assert b.count_used() == 51
    assert b.find_free(10) == 60
    assert b.free_runs()[-1] == (100, b.n_bits - 100)
    b.grow(b.n_bits)  # same size: no-op
    with pytest.raises(ValueError):
        b.grow(b.n_bits - 1)


def test_grow_from_partial_word_keeps_tail_free():
    b = Bitmap(70)
    b.set_range(0, 70)
    assert b.find_free() == -1
    b.grow(140)
    assert b.find_free() == 70
    assert b.free_runs() == [(70, 70)]
    assert b.find_run(70) == 70


# ---------------------------------------------------------------- get / set / clear


@pytest.mark.parametrize("i", [0, 1, 62, 63, 64, 65, 127, 128, 2047, 2048, 2049, 4095])
def test_single_bits_at_boundaries(i):
    b = Bitmap(5000)
    b.set_range(i, 1)
    assert b.get(i)
    assert b.count_used() == 1
    assert (int(b.words[i >> 6]) >> (i & 63)) & 1 == 1
    assert b.find_free(i) == i + 1
    assert b.free_runs() == ([(0, i)] if i else []) + [(i + 1, 5000 - i - 1)]
    b.clear_range(i, 1)
    assert not b.get(i)
    assert b.count_used() == 0


def test_get_out_of_range():
    b = Bitmap(10)
    with pytest.raises(IndexError):
        b.get(10)
    with pytest.raises(IndexError):
        b.get(-1)


@pytest.mark.parametrize("start,count", [(-1, 1), (0, -1), (0, 11), (10, 1), (5, 6), (11, 0)])
def test_range_validation(start, count):
    b = Bitmap(10)
    for fn in (b.set_range, b.clear_range, b.is_range_free, b.is_range_used):
        with pytest.raises(ValueError):
            fn(start, count)


def test_set_range_spanning_words():
    b = Bitmap(4096)
    b.set_range(60, 200)  # words 0..4, partial ends
    w = b.words
    assert int(w[0]) == FULL ^ ((1 << 60) - 1)
    assert w[1] == FULL and w[2] == FULL and w[3] == FULL
    assert int(w[4]) == (1 << 4) - 1  # bits 256..259
    assert b.count_used() == 200
    assert b.is_range_used(60, 200)
    assert not b.is_range_used(59, 2)
    assert not b.is_range_used(259, 2)
    assert b.is_range_free(0, 60)
    assert b.is_range_free(260, 4096 - 260)
    assert not b.is_range_free(0, 61)
    b.clear_range(64, 128)
    assert b.count_used() == 72
    assert b.free_runs() == [(0, 60), (64, 128), (260, 4096 - 260)]


def test_whole_words_and_exact_boundaries():
    b = Bitmap(256)
    b.set_range(64, 64)
    assert b.words[1] == FULL and b.words[0] == 0 and b.words[2] == 0
    assert b.is_range_used(64, 64) and not b.is_range_used(63, 64) and not b.is_range_used(65, 64)
    b.set_range(0, 256)
    assert b.count_free() == 0 and b.is_range_used(0, 256)
    b.clear_range(63, 2)
    assert b.free_runs() == [(63, 2)]


# ---------------------------------------------------------------- find_free


def test_find_free_basic_and_hint():
    b = Bitmap(300)
    b.set_range(0, 300)
    assert b.find_free() == -1
    b.clear_range(5, 1)
    b.clear_range(200, 1)
    assert b.find_free() == 5
    assert b.find_free(5) == 5
    assert b.find_free(6) == 200
    assert b.find_free(201) == 5  # wraps around
    assert b.find_free(299) == 5
    assert b.find_free(10_000) == 5  # out-of-range hint = 0
    assert b.find_free(-3) == 5
    assert b.get(5) is False  # find_free does not modify


def test_find_free_skips_full_regions_via_summary():
    n = 64 * 64 * 5 + 17  # several summary words, partial tail word
    b = Bitmap(n)
    b.set_range(0, n)
    assert b.find_free() == -1
    b.clear_range(n - 1, 1)
    assert b.find_free() == n - 1
    assert b.find_free(n - 1) == n - 1
    b.set_range(n - 1, 1)
    b.clear_range(4096 * 3 + 64 * 7 + 5, 1)
    assert b.find_free(1) == 4096 * 3 + 64 * 7 + 5
    assert b.find_free(4096 * 3 + 64 * 7 + 6) == 4096 * 3 + 64 * 7 + 5  # via wrap


def test_find_free_ignores_bits_beyond_n_bits():
    b = Bitmap(70)
    b.set_range(0, 70)
    assert b.find_free() == -1
    assert b.find_free(69) == -1


# ---------------------------------------------------------------- find_run


def test_find_run_basic():
    b = Bitmap(1000)
    assert b.find_run(1000) == 0
    assert b.find_run(1001) == -1
    b.set_range(0, 1000)
    assert b.find_run(1) == -1
    b.clear_range(100, 10)
    b.clear_range(500, 300)
    assert b.find_run(10) == 100
    assert b.find_run(11) == 500
    assert b.find_run(300) == 500
    assert b.find_run(301) == -1
    assert b.find_run(5, hint=103) == 103
    assert b.find_run(8, hint=103) == 500
    assert b.find_run(10, hint=801) == 100  # wrap
    with pytest.raises(ValueError):
        b.find_run(0)


def test_find_run_spanning_words_and_chunks():
    b = Bitmap(8192)
    b.set_range(0, 8192)
    b.clear_range(2040, 20)  # spans the chunk boundary 2047/2048 and words 31/32
    assert b.find_run(20) == 2040
    assert b.find_run(21) == -1
    b.clear_range(60, 8)  # crosses bit 63/64
    assert b.find_run(8) == 60
    assert b.find_run(9) == 2040
    b.clear_range(4000, 1000)  # several whole zero words
    assert b.find_run(1000) == 4000
    assert b.find_run(999, hint=4001) == 4001
    assert b.find_run(1000, hint=4001) == 4000  # wraps to a run starting before the hint


def test_find_run_inside_a_word():
    b = Bitmap(128)
    b.set_range(0, 128)
    b.clear_range(3, 5)
    b.clear_range(20, 30)
    b.clear_range(70, 2)
    assert b.find_run(5) == 3
    assert b.find_run(6) == 20
    assert b.find_run(30) == 20
    assert b.find_run(31) == -1
    assert b.find_run(2, hint=50) == 70
    assert b.find_run(3, hint=50) == 3


def test_find_run_top_of_word_carried():
    b = Bitmap(256)
    b.set_range(0, 256)
    b.clear_range(50, 14)  # bits 50..63 (top of word 0)
    b.clear_range(64, 3)  # continues into word 1
    assert b.find_run(17) == 50
    assert b.find_run(18) == -1


def test_find_run_wrap_run_crossing_hint():
    b = Bitmap(200)
    b.set_range(0, 200)
    b.clear_range(10, 50)
    assert b.find_run(50, hint=30) == 10
    assert b.find_run(30, hint=30) == 30


# ---------------------------------------------------------------- runs / counts


def test_free_runs_and_largest_runs():
    b = Bitmap(1000)
    b.set_range(0, 1000)
    for s, c in [(10, 5), (100, 50), (300, 20), (500, 50), (990, 10)]:
        b.clear_range(s, c)
    assert b.free_runs() == [(10, 5), (100, 50), (300, 20), (500, 50), (990, 10)]
    assert b.largest_runs(60, 10) == [(100, 50), (500, 50)]
    assert b.largest_runs(50, 10) == [(100, 50)]
    assert b.largest_runs(120, 10) == [(100, 50), (500, 50), (300, 20)]
    assert b.largest_runs(10_000, 10) == [(100, 50), (500, 50), (300, 20), (990, 10), (10, 5)]
    assert b.largest_runs(10_000, 2) == [(100, 50), (500, 50)]
    assert b.largest_runs(10, 0) == []
    b.set_range(0, 1000)
    assert b.largest_runs(10, 5) == []
    assert b.free_runs() == []


def test_counts():
    b = Bitmap(3000)
    b.set_range(1, 2047)
    assert b.count_used() == 2047
    assert b.count_free() == 953


# ---------------------------------------------------------------- chunks / dirty


def test_chunk_round_trip():
    rng = random.Random(7)
    n = CHUNK_BITS * 3 + 1000  # last chunk partial
    b = Bitmap(n)
    for _ in range(200):
        s = rng.randrange(n)
        b.set_range(s, rng.randrange(min(300, n - s) + 1))
    assert b.n_chunks == 4
    fresh = Bitmap(n)
    for c in range(b.n_chunks):
        data = b.chunk_bytes(c)
        assert isinstance(data, bytes) and len(data) == CHUNK_BYTES
        fresh.load_chunk(c, data)
    assert np.array_equal(fresh.words, b.words)
    assert fresh.free_runs() == b.free_runs()
    assert fresh.count_used() == b.count_used()
    assert fresh.dirty_chunks() == []  # loading does not dirty
    assert fresh.find_run(50) == b.find_run(50)


def test_chunk_bytes_little_endian_and_padding():
    b = Bitmap(100)
    b.set_range(0, 1)
    b.set_range(99, 1)
    data = b.chunk_bytes(0)
    assert data[0] == 1
    assert int.from_bytes(data[8:16], "little") == 1 << (99 - 64)
    assert data[16:] == bytes(CHUNK_BYTES - 16)
    with pytest.raises(ValueError):
        b.chunk_bytes(1)
    with pytest.raises(ValueError):
        b.chunk_bytes(-1)


def test_load_chunk_masks_bits_beyond_n_bits_and_rebuilds_summary():
    b = Bitmap(100)
    b.load_chunk(0, b"\xff" * CHUNK_BYTES)
    assert b.n_bits == 100
    assert b.count_used() == 100
    assert b.find_free() == -1
    assert b.chunk_bytes(0) == b"\xff" * 12 + b"\x0f" + bytes(CHUNK_BYTES - 13)
    b.grow(200)
    assert b.find_free() == 100
    assert b.free_runs() == [(100, 100)]
    # overwrite with zeros clears the summary too
    b.load_chunk(0, bytes(CHUNK_BYTES))
    assert b.count_used() == 0 and b.find_run(200) == 0


def test_load_chunk_grows_and_validates():
    b = Bitmap()
    b.load_chunk(2, b"\xff" * CHUNK_BYTES)
    assert b.n_bits == 3 * CHUNK_BITS
    assert b.count_used() == CHUNK_BITS
    assert b.find_free(2 * CHUNK_BITS) == 0
    assert b.find_run(2 * CHUNK_BITS) == 0
    assert b.find_run(2 * CHUNK_BITS + 1) == -1
    assert b.dirty_chunks() == []
    with pytest.raises(ValueError):
        b.load_chunk(0, b"\x00" * 10)
    with pytest.raises(ValueError):
        b.load_chunk(-1, bytes(CHUNK_BYTES))


def test_dirty_tracking():
    b = Bitmap(CHUNK_BITS * 4)
    assert b.dirty_chunks() == []  # construction does not dirty (the engine loads or persists itself)
    b.set_range(2047, 2)  # straddles chunks 0 and 1
    assert b.dirty_chunks() == [0, 1]
    b.clear_dirty()
    b.set_range(2047, 2)  # no change: nothing dirty
    assert b.dirty_chunks() == []
    b.clear_range(CHUNK_BITS * 3 + 5, 1)  # already free: no change
    assert b.dirty_chunks() == []
    b.set_range(CHUNK_BITS * 3 + 5, 1)
    assert b.dirty_chunks() == [3]
    b.clear_dirty()
    b.set_range(0, CHUNK_BITS * 4)
    assert b.dirty_chunks() == [0, 1, 2, 3]
    b.clear_dirty()
    b.find_free()
    b.find_run(3)
    b.free_runs()
    b.chunk_bytes(1)
    assert b.dirty_chunks() == []
    b.grow(CHUNK_BITS * 4 + 1)
    assert b.dirty_chunks() == [4]
    assert CHUNK_WORDS * 64 == CHUNK_BITS


def test_copy_is_deep():
    b = Bitmap(5000)
    b.set_range(100, 200)
    b.set_range(2100, 10)
    b.clear_range(2100, 10)
    b.set_range(4200, 1)
    b.clear_range(4200, 1)
    snap = b.copy()
    assert snap.n_bits == b.n_bits
    assert snap.dirty_chunks() == b.dirty_chunks()
    b.clear_dirty()
    b.set_range(3000, 10)
    b.clear_range(100, 200)
    b.grow(100_000)
    assert snap.n_bits == 5000
    assert snap.is_range_used(100, 200)
    assert snap.count_used() == 200
    assert snap.find_free(100) == 300
    assert snap.dirty_chunks() == [0, 1, 2]
    snap.set_range(0, 1)
    assert not b.get(0)


# ---------------------------------------------------------------- property-based vs model

SIZES = st.sampled_from([1, 63, 64, 65, 127, 200, 2047, 2048, 2049, 4500, 64 * 64 + 3])


@st.composite
def scenarios(draw):
    n = draw(SIZES)
    ops = []
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(["set", "clear", "free", "run", "count", "grow"]))
        if kind in ("set", "clear"):
            s = draw(st.integers(0, n))
            c = draw(st.integers(0, n - s))
            ops.append((kind, s, c))
        elif kind == "free":
            ops.append((kind, draw(st.integers(-1, n + 5))))
        elif kind == "run":
            ops.append((kind, draw(st.integers(1, 300)), draw(st.integers(0, n))))
        elif kind == "grow":
            ops.append((kind, draw(st.integers(0, 200))))
        else:
            ops.append((kind,))
    return n, ops


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_against_model(sc):
    n, ops = sc
    b, m = Bitmap(n), Model(n)
    for op in ops:
        kind = op[0]
        if kind == "set":
            b.set_range(op[1], op[2])
            m.set_range(op[1], op[2])
        elif kind == "clear":
            b.clear_range(op[1], op[2])
            m.clear_range(op[1], op[2])
        elif kind == "free":
            assert b.find_free(op[1]) == m.find_free(op[1])
        elif kind == "run":
            count, hint = op[1], op[2]
            runs = m.runs()
            got = b.find_run(count, hint)
            h = hint if 0 <= hint < len(m.bits) else 0
            want = first_run_at_or_after(runs, count, h)
            if want < 0 or want + count > len(m.bits):
                want = first_run_at_or_after(runs, count, 0)
            assert got == want, (count, hint)
        elif kind == "grow":
            b.grow(b.n_bits + op[1])
            m.bits.extend([False] * op[1])
        else:
            assert b.count_free() == m.count_free()
            assert b.count_used() == len(m.bits) - m.count_free()
    # final full comparison
    assert b.n_bits == len(m.bits)
    assert [b.get(i) for i in range(b.n_bits)] == m.bits
    assert b.free_runs() == m.runs()
    assert b.count_free() == m.count_free()
    words = b.words
    expect = np.zeros(len(words), dtype=np.uint64)
    for i, used in enumerate(m.bits):
        if used:
            expect[i >> 6] |= np.uint64(1 << (i & 63))
    assert np.array_equal(words, expect)
    # summary consistency, checked through find_free from every word start
    for w in range(0, b.n_bits, 64):
        assert b.find_free(w) == m.find_free(w)
    # largest_runs: largest first, sums to target when possible
    runs = m.runs()
    total = sum(ln for _, ln in runs)
    target = max(1, total // 2)
    got = b.largest_runs(target, 4)
    lens = [ln for _, ln in got]
    assert lens == sorted(lens, reverse=True)
    assert set(got) <= set(runs)
    best = sorted((ln for _, ln in runs), reverse=True)[:4]
    assert lens == best[: len(lens)]
    if sum(best) >= target:
        assert sum(lens) >= target and sum(lens[:-1]) < target
    else:
        assert lens == best


def test_model_find_run_helper_consistency():
    """Cross-check the test's own find_run expectation against the brute-force model."""
    rng = random.Random(3)
    for _ in range(200):
        n = rng.randrange(1, 300)
        m = Model(n)
        b = Bitmap(n)
        for _ in range(10):
            s = rng.randrange(n)
            c = rng.randrange(n - s + 1)
            m.set_range(s, c)
            b.set_range(s, c)
            s = rng.randrange(n)
            c = rng.randrange(n - s + 1)
            m.clear_range(s, c)
            b.clear_range(s, c)
        count = rng.randrange(1, 80)
        hint = rng.randrange(n)
        # brute force: first start in [hint, n) with a window, else first in [0, hint)
        want = -1
        for s in list(range(hint, n)) + list(range(hint)):
            if s + count <= n and not any(m.bits[s : s + count]):
                want = s
                break
        assert b.find_run(count, hint) == want


# ---------------------------------------------------------------- scale


@pytest.mark.slow
def test_large_bitmap_fragmented():
    n = 16 * 1024 * 1024
    rng = np.random.default_rng(12345)
    b = Bitmap(n)
    b.set_range(0, n)
    # Free ~20k random holes of length 1..200 (numpy model kept alongside).
    used = np.ones(n, dtype=bool)
    starts = rng.integers(0, n - 256, size=20_000)
    lens = rng.integers(1, 200, size=20_000)
    for s, ln in zip(starts.tolist(), lens.tolist()):
        b.clear_range(s, ln)
        used[s : s + ln] = False
    # One big hole near the end.
    big = n - 100_000
    b.clear_range(big, 5000)
    used[big : big + 5000] = False

    assert b.count_free() == int((~used).sum())
    # Runs computed from the numpy model.
    edges = np.diff(np.concatenate(([1], used.view(np.int8), [1])).astype(np.int8))
    r_starts = np.flatnonzero(edges == -1)
    r_ends = np.flatnonzero(edges == 1)
    model_runs = list(zip(r_starts.tolist(), (r_ends - r_starts).tolist()))
    assert b.free_runs() == model_runs

    longest = max(ln for _, ln in model_runs)
    assert longest >= 5000
    first_big = next(s for s, ln in model_runs if ln >= longest)
    assert b.find_run(longest) == first_big
    assert b.find_run(longest + 1) == -1
    assert b.find_run(150, hint=n // 2) == next(
        max(s, n // 2) for s, ln in model_runs if s + ln - max(s, n // 2) >= 150
    )
    assert b.find_free() == model_runs[0][0]

    got = b.largest_runs(20_000, 64)
    sorted_lens = sorted((ln for _, ln in model_runs), reverse=True)
    assert [ln for _, ln in got] == sorted_lens[: len(got)]
    assert sum(ln for _, ln in got) >= 20_000
    assert set(got) <= set(model_runs)

    # Snapshot + chunk round trip at scale.
    snap = b.copy()
    fresh = Bitmap(n)
    for c in range(b.n_chunks):
        fresh.load_chunk(c, b.chunk_bytes(c))
    assert np.array_equal(fresh.words, snap.words)
    assert fresh.find_run(longest) == first_big
