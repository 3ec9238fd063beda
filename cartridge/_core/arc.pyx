# cython: language_level=3
"""Byte-bounded page caches: ARC (Megiddo & Modha 2003, byte-weighted) and a plain LRU.

Both caches keep a Python dict ``key -> slot index`` and a C array of slots. Each slot sits
on one intrusive doubly linked list (ARC: T1, T2 resident; B1, B2 ghosts that remember the
key and size only). A hit costs one dict lookup and a few pointer updates.

Byte-weighted ARC: every list size, and the target ``p`` for T1, are in bytes. A request
for a key of ``size`` bytes that is in none of the lists first drops B1 ghosts (LRU first)
until ``T1 + B1 + size <= c``, then B2 ghosts until ``T1 + T2 + B1 + B2 + size <= 2c``,
then runs REPLACE (demoting the LRU of T1 to B1 when ``T1 > p``, else the LRU of T2 to B2)
until ``T1 + T2 + size <= c``. A ghost hit in B1 raises ``p`` by
``size * max(1, B2 / B1)``; one in B2 lowers it by ``size * max(1, B1 / B2)``; the entry
then goes to T2. Invariants after every call: ``T1 + T2 <= c``, ``T1 + B1 <= c`` and
``T1 + T2 + B1 + B2 <= 2c``.

Sizes are charged as at least one byte, so zero-sized values still count towards the
budget and the number of remembered keys stays bounded.

Values and keys dropped during a call are released only once the cache is consistent
again (at the end of the call), so a value's ``__del__`` may safely use the cache.
"""
from cpython.dict cimport PyDict_DelItem, PyDict_GetItemWithError, PyDict_SetItem
from cpython.object cimport PyObject
from cpython.ref cimport Py_XDECREF, Py_XINCREF
from libc.stdlib cimport free, malloc, realloc

cdef extern from "Python.h":
    Py_ssize_t PyLong_AsSsize_t(PyObject* o) noexcept


# List ids of a slot.
cdef enum:
    T1 = 0
    T2 = 1
    B1 = 2
    B2 = 3
    FREE = 4
    NLISTS = 4
    INITIAL_SLOTS = 64


cdef struct Slot:
    PyObject* key      # owned reference (NULL when free)
    PyObject* value    # owned reference (NULL for ghosts and free slots)
    Py_ssize_t size    # bytes charged
    Py_ssize_t prev    # towards MRU, -1 at the head
    Py_ssize_t next    # towards LRU (or next free slot), -1 at the tail
    int lst            # T1, T2, B1, B2 or FREE


cdef struct DList:
    Py_ssize_t head    # MRU slot, -1 if empty
    Py_ssize_t tail    # LRU slot, -1 if empty
    Py_ssize_t nbytes
    Py_ssize_t count


cdef class _SlotCache:
    """Shared storage of ARCCache and LRUCache: key map, slot array, linked lists, stats."""

    cdef dict _map
    cdef Slot* _slots
    cdef Py_ssize_t _nslots
    cdef Py_ssize_t _free           # head of the free-slot chain, -1 if none
    cdef PyObject** _pend           # references to release at the end of the call
    cdef Py_ssize_t _npend
    cdef Py_ssize_t _cpend
    cdef DList _lists[NLISTS]
    cdef Py_ssize_t _c              # capacity in bytes
    cdef Py_ssize_t _p              # ARC target for T1 in bytes (0 for LRU)
    cdef unsigned long long _hits
    cdef unsigned long long _misses

    def __cinit__(self, *args, **kwargs):
        """Allocate the slot array and empty lists."""
        cdef int k
        self._map = {}
        self._slots = NULL
        self._nslots = 0
        self._free = -1
        self._pend = NULL
        self._npend = 0
        self._cpend = 0
        for k in range(NLISTS):
            self._lists[k].head = -1
            self._lists[k].tail = -1
            self._lists[k].nbytes = 0
            self._lists[k].count = 0
        self._c = 0
        self._p = 0
        self._hits = 0
        self._misses = 0

    def __init__(self, Py_ssize_t capacity_bytes):
        """Create an empty cache holding at most ``capacity_bytes`` bytes (0 disables caching)."""
        if capacity_bytes < 0:
            raise ValueError("capacity_bytes must be >= 0")
        self._c = capacity_bytes

    def __dealloc__(self):
        """Release every key and value still referenced by the slots."""
        cdef Py_ssize_t i
        if self._slots is not NULL:
            for i in range(self._nslots):
                Py_XDECREF(self._slots[i].key)
                Py_XDECREF(self._slots[i].value)
            free(self._slots)
            self._slots = NULL
        if self._pend is not NULL:
            while self._npend > 0:
                self._npend -= 1
                Py_XDECREF(self._pend[self._npend])
            free(self._pend)
            self._pend = NULL

    # ---------------------------------------------------------------- internals

    cdef inline Py_ssize_t _lookup(self, key) except -2:
        """Slot index of ``key`` (resident or ghost), or -1."""
        cdef PyObject* o = PyDict_GetItemWithError(self._map, key)
        if o is NULL:
            return -1
        return PyLong_AsSsize_t(o)

    cdef inline void _unlink(self, Py_ssize_t i) noexcept:
        """Take slot ``i`` off its list."""
        cdef Slot* s = self._slots
        cdef Slot* e = &s[i]
        cdef DList* lst = &self._lists[e.lst]
        if e.prev >= 0:
            s[e.prev].next = e.next
        else:
            lst.head = e.next
        if e.next >= 0:
            s[e.next].prev = e.prev
        else:
            lst.tail = e.prev
        lst.nbytes -= e.size
        lst.count -= 1

    cdef inline void _link(self, Py_ssize_t i, int which) noexcept:
        """Put (unlinked) slot ``i`` at the MRU end of list ``which``."""
        cdef Slot* s = self._slots
        cdef Slot* e = &s[i]
        cdef DList* lst = &self._lists[which]
        e.lst = which
        e.prev = -1
        e.next = lst.head
        if lst.head >= 0:
            s[lst.head].prev = i
        else:
            lst.tail = i
        lst.head = i
        lst.nbytes += e.size
        lst.count += 1

    cdef int _defer(self, PyObject* o) except -1:
        """Queue a reference to be released by ``_flush`` (steals it)."""
        cdef PyObject** grown
        cdef Py_ssize_t cap
        if o is NULL:
            return 0
        if self._npend == self._cpend:
            cap = self._cpend * 2 if self._cpend else 16
            grown = <PyObject**>realloc(self._pend, cap * sizeof(PyObject*))
            if grown is NULL:
                # Cannot defer: release now rather than leak.
                Py_XDECREF(o)
                raise MemoryError()
            self._pend = grown
            self._cpend = cap
        self._pend[self._npend] = o
        self._npend += 1
        return 0

    cdef void _flush(self) noexcept:
        """Release the references queued during this call (may run arbitrary __del__)."""
        cdef PyObject* o
        while self._npend > 0:
            self._npend -= 1
            o = self._pend[self._npend]
            Py_XDECREF(o)

    cdef Py_ssize_t _alloc(self, key, value, Py_ssize_t size) except -1:
        """Take a free slot for ``key`` (not in the map yet), register it in the map, return it."""
        cdef Py_ssize_t i, n
        cdef Slot* grown
        cdef Slot* e
        if self._free < 0:
            n = self._nslots * 2 if self._nslots else INITIAL_SLOTS
            grown = <Slot*>realloc(self._slots, n * sizeof(Slot))
            if grown is NULL:
                raise MemoryError()
            self._slots = grown
            for i in range(n - 1, self._nslots - 1, -1):
                grown[i].key = NULL
                grown[i].value = NULL
                grown[i].size = 0
                grown[i].prev = -1
                grown[i].next = self._free
                grown[i].lst = FREE
                self._free = i
            self._nslots = n
        i = self._free
        PyDict_SetItem(self._map, key, i)
        self._free = self._slots[i].next
        e = &self._slots[i]
        Py_XINCREF(<PyObject*>key)
        e.key = <PyObject*>key
        Py_XINCREF(<PyObject*>value)
        e.value = <PyObject*>value
        e.size = size
        e.prev = -1
        e.next = -1
        return i

    cdef int _release(self, Py_ssize_t i) except -1:
        """Forget (unlinked) slot ``i``: remove its key from the map and free the slot."""
        cdef Slot* e = &self._slots[i]
        cdef PyObject* k = e.key
        cdef PyObject* v = e.value
        PyDict_DelItem(self._map, <object>k)
        e = &self._slots[i]
        e.key = NULL
        e.value = NULL
        e.size = 0
        e.lst = FREE
        e.prev = -1
        e.next = self._free
        self._free = i
        self._defer(k)
        self._defer(v)
        return 0

    cdef int _drop_lru(self, int which) except -1:
        """Remove the LRU slot of list ``which`` from the cache entirely."""
        cdef Py_ssize_t i = self._lists[which].tail
        self._unlink(i)
        self._release(i)
        return 0

    cdef int _demote_lru(self, int src, int dst) except -1:
        """Move the LRU entry of resident list ``src`` to the MRU end of ghost list ``dst``."""
        cdef Py_ssize_t i = self._lists[src].tail
        cdef PyObject* v = self._slots[i].value
        self._unlink(i)
        self._slots[i].value = NULL
        self._link(i, dst)
        self._defer(v)
        return 0

    cdef int _set_value(self, Py_ssize_t i, value, Py_ssize_t size) except -1:
        """Store ``value`` / ``size`` in (unlinked) slot ``i``, deferring the old value's release."""
        cdef PyObject* old = self._slots[i].value
        Py_XINCREF(<PyObject*>value)
        self._slots[i].value = <PyObject*>value
        self._slots[i].size = size
        self._defer(old)
        return 0

    cdef int _discard(self, key) except -1:
        """Drop ``key`` (resident or ghost) if present."""
        cdef Py_ssize_t i = self._lookup(key)
        if i >= 0:
            self._unlink(i)
            self._release(i)
        return 0

    @staticmethod
    cdef Py_ssize_t _charge(Py_ssize_t size) except -1:
        """Bytes charged for an entry of ``size`` bytes (ValueError if negative, at least 1)."""
        if size < 0:
            raise ValueError("size must be >= 0")
        return size if size > 0 else 1

    # ---------------------------------------------------------------- public API

    def pop(self, key):
        """Drop ``key`` from the cache entirely (resident value and ghost); no error if absent."""
        try:
            self._discard(key)
        finally:
            self._flush()

    def clear(self):
        """Drop every entry and ghost (the hit/miss counters are kept)."""
        cdef int k
        try:
            for k in range(NLISTS):
                while self._lists[k].count:
                    self._drop_lru(k)
            self._p = 0
        finally:
            self._flush()

    def __contains__(self, key):
        """True if ``key`` has a resident value (ghosts do not count); does not touch recency."""
        cdef Py_ssize_t i = self._lookup(key)
        return i >= 0 and self._slots[i].lst <= T2

    def __len__(self):
        """Number of resident entries."""
        return self._lists[T1].count + self._lists[T2].count

    @property
    def capacity(self):
        """Budget in bytes."""
        return self._c

    @property
    def size_bytes(self):
        """Bytes held by resident entries."""
        return self._lists[T1].nbytes + self._lists[T2].nbytes

    @property
    def hits(self):
        """Number of ``get`` calls that found a resident value."""
        return self._hits

    @property
    def misses(self):
        """Number of ``get`` calls that did not."""
        return self._misses

    @property
    def p(self):
        """ARC's current target size of T1 in bytes (always 0 for the LRU)."""
        return self._p

    def reset_stats(self):
        """Zero the hit and miss counters."""
        self._hits = 0
        self._misses = 0

    def stats(self):
        """Counters and list sizes as a dict."""
        cdef unsigned long long total = self._hits + self._misses
        return {
            "hits": self._hits,
            "misses": self._misses,
            "hit_ratio": (<double>self._hits / total) if total else 0.0,
            "entries": self._lists[T1].count + self._lists[T2].count,
            "size_bytes": self._lists[T1].nbytes + self._lists[T2].nbytes,
            "capacity": self._c,
            "t1_bytes": self._lists[T1].nbytes,
            "t2_bytes": self._lists[T2].nbytes,
            "b1_bytes": self._lists[B1].nbytes,
            "b2_bytes": self._lists[B2].nbytes,
            "ghost_entries": self._lists[B1].count + self._lists[B2].count,
            "p": self._p,
        }

    def __repr__(self):
        """Short description with capacity, resident bytes and entry count."""
        return (f"{type(self).__name__}(capacity={self._c}, size_bytes={self.size_bytes}, "
                f"entries={len(self)})")

    def _check(self):
        """Walk every list and verify links, byte counts and the map (for tests); return True."""
        cdef int k
        cdef Py_ssize_t i, prev, n, nb, total = 0
        cdef Slot* e
        for k in range(NLISTS):
            i = self._lists[k].head
            prev = -1
            n = 0
            nb = 0
            while i >= 0:
                e = &self._slots[i]
                assert e.lst == k, (i, e.lst, k)
                assert e.prev == prev
                assert e.key is not NULL
                assert (e.value is not NULL) == (k <= T2)
                assert self._map[<object>e.key] == i
                nb += e.size
                n += 1
                prev = i
                i = e.next
            assert self._lists[k].tail == prev
            assert self._lists[k].count == n, (k, n, self._lists[k].count)
            assert self._lists[k].nbytes == nb
            total += n
        assert len(self._map) == total
        return True


cdef class ARCCache(_SlotCache):
    """Adaptive Replacement Cache bounded by a byte budget (see the module docstring)."""

    def get(self, key, default=None):
        """Value for ``key`` on a hit (promoted to the MRU end of T2), else ``default``."""
        cdef PyObject* o = PyDict_GetItemWithError(self._map, key)
        cdef Py_ssize_t i
        cdef Slot* e
        if o is not NULL:
            i = PyLong_AsSsize_t(o)
            e = &self._slots[i]
            if e.lst <= T2:
                if self._lists[T2].head != i:
                    self._unlink(i)
                    self._link(i, T2)
                self._hits += 1
                return <object>e.value
        self._misses += 1
        return default

    cdef int _replace(self, Py_ssize_t size, bint in_b2) except -1:
        """ARC's REPLACE, repeated until ``size`` more bytes fit among the resident ones."""
        cdef Py_ssize_t t1
        while self._lists[T1].nbytes + self._lists[T2].nbytes + size > self._c:
            t1 = self._lists[T1].nbytes
            if t1 > 0 and (t1 > self._p or (in_b2 and t1 == self._p) or self._lists[T2].count == 0):
                self._demote_lru(T1, B1)
            else:
                self._demote_lru(T2, B2)
        return 0

    cdef int _trim_ghosts(self) except -1:
        """Drop LRU ghosts until T1 + B1 <= c and T1 + T2 + B1 + B2 <= 2c."""
        cdef Py_ssize_t c = self._c
        while self._lists[B1].count and self._lists[T1].nbytes + self._lists[B1].nbytes > c:
            self._drop_lru(B1)
        while (self._lists[T1].nbytes + self._lists[T2].nbytes
               + self._lists[B1].nbytes + self._lists[B2].nbytes) > 2 * c:
            if self._lists[B2].count:
                self._drop_lru(B2)
            elif self._lists[B1].count:
                self._drop_lru(B1)
            else:
                break
        return 0

    cdef int _put(self, key, value, Py_ssize_t size) except -1:
        """Body of ``put``; releases are deferred to the caller's ``_flush``."""
        cdef Py_ssize_t c = self._c
        cdef Py_ssize_t i, b1, b2, delta
        cdef int where
        if size > c:
            self._discard(key)
            return 0
        i = self._lookup(key)
        if i >= 0:
            where = self._slots[i].lst
            if where == B1:
                b1 = self._lists[B1].nbytes
                b2 = self._lists[B2].nbytes
                delta = size if b1 >= b2 else <Py_ssize_t>(size * (<double>b2 / b1))
                self._p = min(c, self._p + delta)
            elif where == B2:
                b1 = self._lists[B1].nbytes
                b2 = self._lists[B2].nbytes
                delta = size if b2 >= b1 else <Py_ssize_t>(size * (<double>b1 / b2))
                self._p = max(0, self._p - delta)
            self._unlink(i)
            self._set_value(i, value, size)
            self._replace(size, where == B2)
            self._link(i, T2)
            self._trim_ghosts()
            return 0
        # Case IV: key in none of the lists.
        while self._lists[B1].count and self._lists[T1].nbytes + self._lists[B1].nbytes + size > c:
            self._drop_lru(B1)
        while self._lists[T1].nbytes + size > c:
            self._drop_lru(T1)
        while self._lists[B2].count and (self._lists[T1].nbytes + self._lists[T2].nbytes
                                         + self._lists[B1].nbytes + self._lists[B2].nbytes
                                         + size) > 2 * c:
            self._drop_lru(B2)
        self._replace(size, False)
        i = self._alloc(key, value, size)
        self._link(i, T1)
        return 0

    def put(self, key, value, Py_ssize_t size):
        """Insert or replace ``key`` -> ``value`` charged ``size`` bytes, evicting per ARC."""
        size = _SlotCache._charge(size)
        try:
            self._put(key, value, size)
        finally:
            self._flush()

    def resize(self, Py_ssize_t capacity_bytes):
        """Change the byte budget, evicting (and forgetting ghosts) as needed."""
        if capacity_bytes < 0:
            raise ValueError("capacity_bytes must be >= 0")
        try:
            self._c = capacity_bytes
            if self._p > capacity_bytes:
                self._p = capacity_bytes
            self._replace(0, False)
            self._trim_ghosts()
        finally:
            self._flush()


cdef class LRUCache(_SlotCache):
    """Plain least-recently-used cache bounded by a byte budget (same API as ARCCache)."""

    def get(self, key, default=None):
        """Value for ``key`` on a hit (moved to the MRU end), else ``default``."""
        cdef PyObject* o = PyDict_GetItemWithError(self._map, key)
        cdef Py_ssize_t i
        if o is not NULL:
            i = PyLong_AsSsize_t(o)
            if self._lists[T1].head != i:
                self._unlink(i)
                self._link(i, T1)
            self._hits += 1
            return <object>self._slots[i].value
        self._misses += 1
        return default

    cdef int _evict_to(self, Py_ssize_t limit) except -1:
        """Evict LRU entries until the resident bytes are at most ``limit``."""
        while self._lists[T1].count and self._lists[T1].nbytes > limit:
            self._drop_lru(T1)
        return 0

    cdef int _put(self, key, value, Py_ssize_t size) except -1:
        """Body of ``put``; releases are deferred to the caller's ``_flush``."""
        cdef Py_ssize_t i
        if size > self._c:
            self._discard(key)
            return 0
        i = self._lookup(key)
        if i >= 0:
            self._unlink(i)
            self._set_value(i, value, size)
            self._evict_to(self._c - size)
            self._link(i, T1)
            return 0
        self._evict_to(self._c - size)
        i = self._alloc(key, value, size)
        self._link(i, T1)
        return 0

    def put(self, key, value, Py_ssize_t size):
        """Insert or replace ``key`` -> ``value`` charged ``size`` bytes, evicting LRU entries."""
        size = _SlotCache._charge(size)
        try:
            self._put(key, value, size)
        finally:
            self._flush()

    def resize(self, Py_ssize_t capacity_bytes):
        """Change the byte budget, evicting LRU entries as needed."""
        if capacity_bytes < 0:
            raise ValueError("capacity_bytes must be >= 0")
        try:
            self._c = capacity_bytes
            self._evict_to(capacity_bytes)
        finally:
            self._flush()
