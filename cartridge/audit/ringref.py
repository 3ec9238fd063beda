"""The pure-Python twin of cartridge._core.ringbuf.Ring: the same bounded multi-producer,
single-consumer ring of fixed-size slots, with a lock and a condition instead of atomics. The
reference the tests hold the C ring to (same tickets, same order, same full/empty answers)."""
from __future__ import annotations

import threading
from collections import deque

DEFAULT_CAPACITY = 8192
DEFAULT_SLOT_SIZE = 240


MAX_SLOT_SIZE = 1 << 16       # bytes in one slot (the C ring's limit too)


class RingRef:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, slot_size: int = DEFAULT_SLOT_SIZE) -> None:
        if type(capacity) is not int or type(slot_size) is not int:
            raise TypeError("capacity and slot_size must be ints")
        if capacity < 2 or capacity > (1 << 24) or capacity & (capacity - 1):
            raise ValueError(f"capacity must be a power of two in 2..2^24, not {capacity}")
        if not 1 <= slot_size <= MAX_SLOT_SIZE:
            raise ValueError(f"slot_size must be 1..{MAX_SLOT_SIZE}, not {slot_size}")
        self.capacity = capacity
        self.slot_size = slot_size
        self.waits = 0
        self._q: deque[tuple[int, bytes]] = deque()
        self._head = 0
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return len(self._q)

    def _check(self, data) -> bytes:
        b = bytes(memoryview(data).cast("B"))
        if len(b) > self.slot_size:
            raise ValueError(f"{len(b)} bytes do not fit a slot of {self.slot_size}")
        return b

    def push(self, data) -> int:
        b = self._check(data)
        with self._cond:
            if len(self._q) >= self.capacity:
                self.waits += 1
                while len(self._q) >= self.capacity:
                    self._cond.wait()
            t = self._head
            self._head += 1
            self._q.append((t, b))
            return t

    def try_push(self, data) -> int | None:
        b = self._check(data)
        with self._cond:
            if len(self._q) >= self.capacity:
                return None
            t = self._head
            self._head += 1
            self._q.append((t, b))
            return t

    def pop(self) -> tuple[int, bytes] | None:
        with self._cond:
            if not self._q:
                return None
            got = self._q.popleft()
            self._cond.notify_all()
            return got

    def drain(self, limit: int = -1) -> list[tuple[int, bytes]]:
        with self._cond:
            n = len(self._q) if limit < 0 else min(limit, len(self._q))
            out = [self._q.popleft() for _ in range(n)]
            if out:
                self._cond.notify_all()
            return out
