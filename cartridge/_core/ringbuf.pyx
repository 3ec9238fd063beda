# cython: language_level=3
"""A bounded multi-producer single-consumer ring of fixed-size binary slots (C11 atomics).

The audit log (cartridge.audit.log) queues the records of reads here: any thread pushes a
record's bytes (`push`, which runs in C without the GIL, waiting while the ring is full), and
one background thread drains them in ticket order (`drain`). Tickets are handed out in one
total order and read back in that order: nothing is dropped, nothing overtakes. The pure-Python
twin `cartridge.audit.ringref.RingRef` has the same behaviour (tests check they agree).
"""
from libc.stdint cimport uint32_t, uint64_t

DEFAULT_CAPACITY = 8192
DEFAULT_SLOT_SIZE = 240


cdef class Ring:
    """Ring(capacity=8192, slot_size=240): `capacity` slots (a power of two, 2..2^24) of
    `slot_size` payload bytes (1..65536) each."""

    def __cinit__(self, capacity=DEFAULT_CAPACITY, slot_size=DEFAULT_SLOT_SIZE):
        self.ready = False
        if type(capacity) is not int or type(slot_size) is not int:
            raise TypeError("capacity and slot_size must be ints")
        if capacity < 2 or capacity > (1 << 24) or capacity & (capacity - 1):
            raise ValueError(f"capacity must be a power of two in 2..2^24, not {capacity}")
        if not 1 <= slot_size <= 65536:
            raise ValueError(f"slot_size must be 1..65536, not {slot_size}")
        if rb_init(&self.ring, capacity, slot_size) != 0:
            raise MemoryError("cannot allocate the ring")
        self.ready = True

    def __dealloc__(self):
        if self.ready:
            rb_free(&self.ring)

    @property
    def capacity(self) -> int:
        return self.ring.capacity

    @property
    def slot_size(self) -> int:
        return self.ring.slot_size

    @property
    def waits(self) -> int:
        """How many pushes found the ring full and waited."""
        return self.ring.waits

    def __len__(self):
        return rb_pending(&self.ring)

    cdef uint64_t push_c(self, const unsigned char *data, uint32_t n) except? 0xFFFFFFFFFFFFFFFF nogil:
        cdef int ok = 0
        cdef uint64_t t = rb_reserve(&self.ring, 1, &ok)
        rb_publish(&self.ring, t, data, n)
        return t

    def push(self, const unsigned char[::1] data not None):
        """Queue `data` (at most slot_size bytes); waits, without the GIL, while the ring is
        full. Returns its ticket."""
        cdef Py_ssize_t n = data.shape[0]
        if <uint64_t>n > self.ring.slot_size:
            raise ValueError(f"{n} bytes do not fit a slot of {self.ring.slot_size}")
        cdef const unsigned char *p = &data[0] if n else <const unsigned char *>""
        cdef uint64_t t
        with nogil:
            t = self.push_c(p, <uint32_t>n)
        return t

    def try_push(self, const unsigned char[::1] data not None):
        """push() that does not wait: None when the ring is full."""
        cdef Py_ssize_t n = data.shape[0]
        if <uint64_t>n > self.ring.slot_size:
            raise ValueError(f"{n} bytes do not fit a slot of {self.ring.slot_size}")
        cdef int ok = 0
        cdef uint64_t t = rb_reserve(&self.ring, 0, &ok)
        if not ok:
            return None
        rb_publish(&self.ring, t, &data[0] if n else <const unsigned char *>"", <uint32_t>n)
        return t

    def pop(self):
        """(ticket, bytes) of the oldest published slot, or None. One consumer only."""
        cdef uint64_t t
        cdef uint32_t n
        cdef const unsigned char *p = rb_peek(&self.ring, &t, &n)
        if p == NULL:
            return None
        out = (t, p[:n])
        rb_release(&self.ring)
        return out

    def drain(self, Py_ssize_t limit=-1):
        """Every published slot in ticket order (at most `limit`), as (ticket, bytes)."""
        cdef list out = []
        cdef uint64_t t
        cdef uint32_t n
        cdef const unsigned char *p
        while limit < 0 or len(out) < limit:
            p = rb_peek(&self.ring, &t, &n)
            if p == NULL:
                break
            out.append((t, p[:n]))
            rb_release(&self.ring)
        return out

    def bench_c(self, uint64_t n, uint32_t nbytes=32, bint consume=True):
        """Push `n` slots of `nbytes` from C in this thread, without the GIL (draining in C
        whenever the ring fills when `consume`): the throughput benchmark of perf/."""
        cdef uint64_t s
        with nogil:
            s = rb_bench(&self.ring, n, nbytes, consume)
        return s
