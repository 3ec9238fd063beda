"""The audit log's ring (cartridge._core.ringbuf.Ring, C11 atomics) and its pure-Python twin
(cartridge.audit.ringref.RingRef): they agree op by op; a full ring makes producers wait
(never drop); 8 threads x 10,000 pushes arrive complete, in strictly increasing ticket order,
each thread's own pushes in the order it made them."""
from __future__ import annotations

import random
import struct
import threading
import time

import pytest

from cartridge._core.ringbuf import Ring
from cartridge.audit.ringref import RingRef

KINDS = [Ring, RingRef]


def test_agrees_with_reference():
    rng = random.Random(3)
    for _ in range(20):
        cap = 1 << rng.randint(1, 6)
        a, b = Ring(cap, 16), RingRef(cap, 16)
        for _ in range(400):
            op = rng.random()
            if op < 0.5:
                data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 16)))
                assert a.try_push(data) == b.try_push(data)
            elif op < 0.8:
                assert a.pop() == b.pop()
            else:
                k = rng.randint(-1, 5)
                assert a.drain(k) == b.drain(k)
            assert len(a) == len(b)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_arguments(kind):
    for cap in (0, 1, 3, 1 << 25):
        with pytest.raises(ValueError):
            kind(cap, 8)
    with pytest.raises(ValueError):
        kind(8, 0)
    with pytest.raises(TypeError):
        kind(8.0, 8)
    r = kind(4, 8)
    with pytest.raises(ValueError):
        r.push(b"x" * 9)
    with pytest.raises(ValueError):
        r.try_push(b"x" * 9)
    with pytest.raises(TypeError):
        r.push("text")
    assert r.push(b"") == 0 and r.pop() == (0, b"")
    assert r.pop() is None and r.drain() == []


@pytest.mark.parametrize("kind", KINDS)
def test_full_ring_blocks_producer_until_drained(kind):
    r = kind(4, 8)
    for i in range(4):
        assert r.push(bytes([i])) == i
    assert r.try_push(b"x") is None                 # full: refused, not dropped
    done = threading.Event()
    got = []

    def producer():
        got.append(r.push(b"late"))                 # must wait for the consumer
        done.set()
    t = threading.Thread(target=producer)
    t.start()
    assert not done.wait(0.3)                       # still waiting: the ring is full
    assert len(r) == 4
    assert r.pop() == (0, b"\x00")                  # free one slot ...
    assert done.wait(10)                            # ... and the producer goes on
    t.join()
    assert got == [4]
    assert r.waits >= 1
    assert r.drain() == [(1, b"\x01"), (2, b"\x02"), (3, b"\x03"), (4, b"late")]


@pytest.mark.parametrize("kind", KINDS)
def test_eight_threads_no_loss_in_order(kind):
    n_threads, per = 8, 10_000
    r = kind(256, 16)                               # small: producers often find it full
    seen: list[tuple[int, bytes]] = []
    stop = threading.Event()

    def consumer():
        while not stop.is_set() or len(r):
            batch = r.drain()
            if batch:
                seen.extend(batch)
            else:
                time.sleep(0.0005)

    def producer(k):
        for i in range(per):
            r.push(struct.pack("<II", k, i))
    c = threading.Thread(target=consumer)
    c.start()
    ps = [threading.Thread(target=producer, args=(k,)) for k in range(n_threads)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    stop.set()
    c.join()
    assert len(seen) == n_threads * per
    assert [t for t, _ in seen] == list(range(n_threads * per))     # strictly increasing, no gap
    last = [-1] * n_threads
    for _, data in seen:
        k, i = struct.unpack("<II", data)
        assert i == last[k] + 1                      # each producer's order kept, none lost
        last[k] = i
    assert last == [per - 1] * n_threads


def test_bench_from_c_counts_every_slot():
    r = Ring(1024, 32)
    r.bench_c(10_000, 32, True)
    assert len(r) == 0
    r.bench_c(100, 32, False)
    items = r.drain()
    assert [t for t, _ in items] == list(range(10_000, 10_100))
    assert [struct.unpack_from("<Q", d)[0] for _, d in items] == list(range(100))
