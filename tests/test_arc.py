"""Tests of the byte-bounded ARC and LRU page caches in cartridge._core.arc."""
import gc
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cartridge._core.arc import ARCCache, LRUCache

CACHES = [ARCCache, LRUCache]


def check_invariants(cache):
    """Assert the byte invariants of ``cache`` and the consistency of its internal lists."""
    s = cache.stats()
    c = cache.capacity
    assert cache._check()
    assert s["size_bytes"] == cache.size_bytes == s["t1_bytes"] + s["t2_bytes"]
    assert s["entries"] == len(cache)
    assert cache.size_bytes <= c
    assert s["t1_bytes"] + s["b1_bytes"] <= c
    assert s["t1_bytes"] + s["t2_bytes"] + s["b1_bytes"] + s["b2_bytes"] <= 2 * c
    assert 0 <= cache.p <= c


# ----------------------------------------------------------------------------- basics


@pytest.mark.parametrize("cls", CACHES)
def test_hit_and_miss(cls):
    c = cls(1000)
    assert c.get(1) is None
    assert c.get(1, "dflt") == "dflt"
    c.put(1, "one", 10)
    assert c.get(1) == "one"
    assert 1 in c and 2 not in c
    assert len(c) == 1
    assert (c.hits, c.misses) == (1, 2)
    s = c.stats()
    assert s["hits"] == 1 and s["misses"] == 2
    assert s["hit_ratio"] == pytest.approx(1 / 3)
    assert s["entries"] == 1 and s["size_bytes"] == 10 and s["capacity"] == 1000
    c.reset_stats()
    assert (c.hits, c.misses) == (0, 0)
    assert c.stats()["hit_ratio"] == 0.0
    assert c.get(1) == "one"
    check_invariants(c)


@pytest.mark.parametrize("cls", CACHES)
def test_none_value_and_big_int_keys(cls):
    c = cls(1000)
    k = (123456789123 << 64) | 0xDEADBEEF
    c.put(k, None, 5)
    assert k in c
    sentinel = object()
    assert c.get(k, sentinel) is None
    assert c.get(k + 1, sentinel) is sentinel


@pytest.mark.parametrize("cls", CACHES)
def test_byte_accounting(cls):
    c = cls(100)
    for i in range(50):
        c.put(i, i, 7 + i % 13)
        assert c.size_bytes <= 100
        check_invariants(c)
    assert sum(7 + i % 13 for i in range(50) if i in c) == c.size_bytes


@pytest.mark.parametrize("cls", CACHES)
def test_replace_existing_key_with_other_size(cls):
    c = cls(100)
    c.put(1, "a", 10)
    c.put(2, "b", 20)
    c.put(1, "A", 30)
    assert c.get(1) == "A"
    assert c.size_bytes == 50
    assert len(c) == 2
    c.put(1, "AA", 5)
    assert c.get(1) == "AA" and c.size_bytes == 25
    # Growing an entry evicts others, never itself.
    c.put(1, "big", 95)
    assert c.get(1) == "big"
    assert 2 not in c and c.size_bytes == 95
    check_invariants(c)


@pytest.mark.parametrize("cls", CACHES)
def test_oversize_entry_not_cached_and_drops_old_value(cls):
    c = cls(100)
    c.put(1, "small", 10)
    c.put(2, "other", 10)
    c.put(1, "huge", 101)
    assert 1 not in c and c.get(1) is None
    assert c.get(2) == "other"
    c.put(3, "exact", 100)
    assert c.get(3) == "exact" and c.size_bytes == 100
    check_invariants(c)


@pytest.mark.parametrize("cls", CACHES)
def test_negative_arguments(cls):
    with pytest.raises(ValueError):
        cls(-1)
    c = cls(10)
    with pytest.raises(ValueError):
        c.put(1, "x", -1)
    with pytest.raises(ValueError):
        c.resize(-5)
    assert len(c) == 0 and c.capacity == 10


@pytest.mark.parametrize("cls", CACHES)
def test_zero_size_is_charged_one_byte(cls):
    c = cls(3)
    for i in range(10):
        c.put(i, i, 0)
        check_invariants(c)
    assert len(c) == 3 and c.size_bytes == 3


@pytest.mark.parametrize("cls", CACHES)
def test_capacity_zero_disables(cls):
    c = cls(0)
    c.put(1, "x", 1)
    c.put(2, "y", 0)
    assert len(c) == 0 and c.size_bytes == 0
    assert c.get(1) is None and c.get(2) is None
    assert c.misses == 2 and c.hits == 0
    check_invariants(c)


@pytest.mark.parametrize("cls", CACHES)
def test_pop_resident(cls):
    c = cls(100)
    c.put(1, "a", 10)
    c.put(2, "b", 10)
    c.pop(1)
    c.pop(1)
    c.pop(12345)
    assert 1 not in c and c.get(1) is None
    assert c.size_bytes == 10 and len(c) == 1
    check_invariants(c)


def test_pop_ghost_forgets_it():
    c = ARCCache(10)
    for k in range(5):
        c.put(k, k, 1)
        c.get(k)  # -> T2
    for k in range(10, 20):
        c.put(k, k, 1)  # 10..14 end up as B1 ghosts
    assert c.stats()["b1_bytes"] == 5
    c.pop(10)
    assert c.stats()["b1_bytes"] == 4
    check_invariants(c)
    # A re-put of the popped key is a plain miss (goes to T1, p unchanged).
    p = c.p
    c.put(10, "new", 1)
    assert c.p == p
    assert c.get(10) == "new"
    # Whereas a remaining ghost adapts p.
    c.put(11, "g", 1)
    assert c.p > p
    check_invariants(c)


@pytest.mark.parametrize("cls", CACHES)
def test_clear_keeps_stats(cls):
    c = cls(100)
    for i in range(30):
        c.put(i, i, 9)
        c.get(i)
    c.get(-1)
    hits, misses = c.hits, c.misses
    c.clear()
    assert len(c) == 0 and c.size_bytes == 0
    s = c.stats()
    assert s["b1_bytes"] == s["b2_bytes"] == s["t1_bytes"] == s["t2_bytes"] == 0 and c.p == 0
    assert (c.hits, c.misses) == (hits, misses)
    c.put(1, "again", 10)
    assert c.get(1) == "again"
    check_invariants(c)


@pytest.mark.parametrize("cls", CACHES)
def test_resize(cls):
    c = cls(100)
    for i in range(10):
        c.put(i, i, 10)
        if i % 2:
            c.get(i)
    assert c.size_bytes == 100
    c.resize(45)
    assert c.capacity == 45 and c.size_bytes <= 45
    check_invariants(c)
    c.resize(1000)
    for i in range(100, 150):
        c.put(i, i, 10)
    assert all(i in c for i in range(100, 150))
    assert 500 <= c.size_bytes <= 545
    check_invariants(c)
    c.resize(0)
    assert len(c) == 0 and c.size_bytes == 0
    s = c.stats()
    assert s["b1_bytes"] == s["b2_bytes"] == 0
    c.put(1, 1, 1)
    assert len(c) == 0
    check_invariants(c)


@pytest.mark.parametrize("cls", CACHES)
def test_values_released(cls):
    class V:
        alive = 0

        def __init__(self):
            V.alive += 1

        def __del__(self):
            V.alive -= 1

    c = cls(10)
    for i in range(100):
        c.put(i, V(), 1)
    assert V.alive == 10
    c.pop(99)
    assert V.alive == 9
    c.clear()
    assert V.alive == 0
    for i in range(5):
        c.put(i, V(), 1)
    del c
    gc.collect()
    assert V.alive == 0


@pytest.mark.parametrize("cls", CACHES)
def test_reentrant_del_is_safe(cls):
    c = cls(5)

    class Evil:
        def __del__(self):
            c.put(("evil", id(self)), "x", 1)
            c.get(0)
            c.pop(1)

    for i in range(50):
        c.put(i, Evil(), 1 + i % 3)
        check_invariants(c)
    c.clear()
    check_invariants(c)


def test_docstrings():
    for cls in CACHES:
        for name in ["get", "put", "pop", "clear", "resize", "reset_stats", "stats", "__len__",
                     "__contains__", "capacity", "size_bytes", "hits", "misses", "p"]:
            doc = getattr(cls, name).__doc__
            assert doc and doc.strip() and "\n" not in doc.strip(), (cls, name)


# ----------------------------------------------------------------------------- ARC behaviour


def test_scan_does_not_flush_working_set():
    size = 100
    capacity = 100 * size
    working = list(range(50))
    scan = list(range(10_000, 11_000))

    def run(cache):
        for _ in range(4):
            for k in working:
                if cache.get(k) is None:
                    cache.put(k, k, size)
        for k in scan:
            if cache.get(k) is None:
                cache.put(k, k, size)
        return sum(k in cache for k in working)

    arc_kept = run(ARCCache(capacity))
    lru_kept = run(LRUCache(capacity))
    assert lru_kept == 0
    assert arc_kept > lru_kept
    assert arc_kept == len(working)


def test_ghost_hits_adapt_p():
    c = ARCCache(10)
    for k in range(5):
        c.put(k, k, 1)
        assert c.get(k) == k  # T2 = 0..4
    for k in range(10, 20):
        c.put(k, k, 1)  # T1 = 15..19, B1 = 10..14
    s = c.stats()
    assert (s["t1_bytes"], s["t2_bytes"], s["b1_bytes"], s["b2_bytes"], s["p"]) == (5, 5, 5, 0, 0)
    # A B1 ghost hit (recency list was too small) grows p and lands in T2.
    c.put(10, "ten", 1)
    assert c.p == 1
    assert c.stats()["t2_bytes"] == 6
    c.put(11, "eleven", 1)
    c.put(12, "twelve", 1)
    assert c.p == 3
    check_invariants(c)
    # With T1 no longer above p, REPLACE demoted T2's LRU (key 0) to B2.
    assert 0 not in c and c.stats()["b2_bytes"] == 1
    # A B2 ghost hit (frequency list was too small) shrinks p.
    before = c.p
    c.put(0, "zero", 1)
    assert c.p < before
    assert c.get(0) == "zero"
    check_invariants(c)


def test_ghost_hit_step_scales_with_size_and_ratio():
    c = ARCCache(1000)
    for k in range(5):
        c.put(k, k, 100)
        c.get(k)  # T2: 500 bytes
    for k in range(10, 20):
        c.put(k, k, 50)  # T1 gets 10 x 50 = 500 bytes, full
    for k in range(20, 25):
        c.put(k, k, 50)  # demotes 10..14 to B1
    assert c.stats()["b1_bytes"] == 250 and c.p == 0
    c.put(10, "x", 80)  # B1 hit, |B1| >= |B2| -> p += size
    assert c.p == 80
    check_invariants(c)


def zipf_trace(n_keys, length, s, seed):
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, n_keys + 1, dtype=np.float64)
    prob = ranks ** -s
    prob /= prob.sum()
    perm = rng.permutation(n_keys)  # popularity unrelated to key order
    return perm[rng.choice(n_keys, size=length, p=prob)]


def hit_ratio(cache, trace, sizes):
    for k in trace.tolist():
        if cache.get(k) is None:
            cache.put(k, k, sizes[k])
    return cache.stats()["hit_ratio"]


def test_zipf_hit_ratio_not_worse_than_lru():
    n_keys = 20_000
    rng = np.random.default_rng(7)
    sizes = rng.integers(1024, 8193, size=n_keys).tolist()
    capacity = sum(sizes) // 10  # key space = 10x the capacity
    trace = zipf_trace(n_keys, 200_000, 0.99, seed=1234)
    arc = hit_ratio(ARCCache(capacity), trace, sizes)
    lru = hit_ratio(LRUCache(capacity), trace, sizes)
    print(f"zipf(0.99) hit ratio: ARC {arc:.4f} vs LRU {lru:.4f}")
    assert arc >= lru


# ----------------------------------------------------------------------------- properties


class CacheMachine(RuleBasedStateMachine):
    """Random put/get/pop/resize/clear sequences against a model of what may be served."""

    cls = ARCCache

    def __init__(self):
        super().__init__()
        self.cache = self.cls(64)
        self.live = {}  # key -> value that a hit must return (until evicted / popped)
        self.version = 0

    keys = st.integers(0, 40)

    @rule(key=keys, size=st.integers(0, 80))
    def put(self, key, size):
        self.version += 1
        value = (key, self.version)
        self.cache.put(key, value, size)
        if max(size, 1) <= self.cache.capacity:
            self.live[key] = value
            assert key in self.cache
            assert self.cache.get(key) == value
        else:
            self.live.pop(key, None)
            assert key not in self.cache

    @rule(key=keys)
    def get(self, key):
        hits = self.cache.hits
        got = self.cache.get(key, "MISS")
        if got == "MISS":
            self.live.pop(key, None)  # evicted: it must never come back without a put
            assert key not in self.cache
        else:
            assert self.cache.hits == hits + 1
            assert key in self.live and got == self.live[key]

    @rule(key=keys)
    def contains(self, key):
        if key in self.cache:
            assert key in self.live
        else:
            self.live.pop(key, None)

    @rule(key=keys)
    def pop(self, key):
        self.cache.pop(key)
        self.live.pop(key, None)
        assert key not in self.cache

    @rule(capacity=st.integers(0, 200))
    def resize(self, capacity):
        self.cache.resize(capacity)

    @precondition(lambda self: self.version % 7 == 3)
    @rule()
    def clear(self):
        self.cache.clear()
        self.live.clear()

    @invariant()
    def invariants(self):
        check_invariants(self.cache)
        assert len(self.cache) <= len(self.live)
        for k in range(41):
            if k in self.cache:
                assert k in self.live


class LRUCacheMachine(CacheMachine):
    cls = LRUCache


TestARCMachine = CacheMachine.TestCase
TestARCMachine.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
TestLRUMachine = LRUCacheMachine.TestCase
TestLRUMachine.settings = settings(max_examples=100, stateful_step_count=60, deadline=None)


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(0, 5000),
    ops=st.lists(st.tuples(st.sampled_from("pgx"), st.integers(0, 300), st.integers(0, 1200)),
                 max_size=400),
)
def test_random_ops_keep_invariants(capacity, ops):
    cache = ARCCache(capacity)
    live = {}
    for op, key, size in ops:
        if op == "p":
            cache.put(key, (key, size), size)
            if max(size, 1) <= capacity:
                live[key] = (key, size)
            else:
                live.pop(key, None)
        elif op == "g":
            got = cache.get(key)
            if got is None:
                live.pop(key, None)
            else:
                assert got == live[key]
        else:
            cache.pop(key)
            live.pop(key, None)
        s = cache.stats()
        assert s["size_bytes"] <= capacity
        assert s["t1_bytes"] + s["b1_bytes"] <= capacity
        assert s["t1_bytes"] + s["t2_bytes"] + s["b1_bytes"] + s["b2_bytes"] <= 2 * capacity
    check_invariants(cache)


class PaperARC:
    """Reference ARC(c) of Megiddo & Modha (2003, Fig. 4) with unit-size pages and integer p."""

    def __init__(self, c):
        self.c, self.p = c, 0
        self.t1, self.t2, self.b1, self.b2 = OrderedDict(), OrderedDict(), OrderedDict(), OrderedDict()

    def _replace(self, in_b2):
        if self.t1 and (len(self.t1) > self.p or (in_b2 and len(self.t1) == self.p)):
            k, _ = self.t1.popitem(last=False)
            self.b1[k] = None
        else:
            k, _ = self.t2.popitem(last=False)
            self.b2[k] = None

    def request(self, x):
        """Reference one page; return True on a hit."""
        c = self.c
        if x in self.t1 or x in self.t2:
            (self.t1 if x in self.t1 else self.t2).pop(x)
            self.t2[x] = None
            return True
        if x in self.b1:
            self.p = min(c, self.p + max(1, len(self.b2) // len(self.b1)))
            self._replace(False)
            del self.b1[x]
            self.t2[x] = None
        elif x in self.b2:
            self.p = max(0, self.p - max(1, len(self.b1) // len(self.b2)))
            self._replace(True)
            del self.b2[x]
            self.t2[x] = None
        else:
            l1 = len(self.t1) + len(self.b1)
            total = l1 + len(self.t2) + len(self.b2)
            if l1 == c:
                if len(self.t1) < c:
                    self.b1.popitem(last=False)
                    self._replace(False)
                else:
                    self.t1.popitem(last=False)
            elif total >= c:
                if total == 2 * c:
                    self.b2.popitem(last=False)
                self._replace(False)
            self.t1[x] = None
        return False


@settings(max_examples=100, deadline=None)
@given(c=st.integers(1, 12), trace=st.lists(st.integers(0, 30), max_size=300))
def test_unit_sizes_match_paper_arc(c, trace):
    ref = PaperARC(c)
    arc = ARCCache(c)
    for x in trace:
        hit = arc.get(x) is not None
        if not hit:
            arc.put(x, x, 1)
        assert hit == ref.request(x)
        assert arc.p == ref.p
        s = arc.stats()
        assert (s["t1_bytes"], s["t2_bytes"], s["b1_bytes"], s["b2_bytes"]) == (
            len(ref.t1), len(ref.t2), len(ref.b1), len(ref.b2))
    assert {k for k in range(31) if k in arc} == set(ref.t1) | set(ref.t2)
