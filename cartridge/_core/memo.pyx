# cython: language_level=3
"""Memo: the bounded per-path dict of the read path (path keys, catalog records)."""
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.object cimport PyObject

cdef enum:
    MEMO_SMALL = 4096       # entries a memo keeps while its lookups mostly miss
    MEMO_RETRY = 1024       # small fills before the full size is tried again
    ANC_MAX = 65536         # ancestor entries kept (cleared when full)


cdef class Memo(dict):
    """A dict of per-path results bounded at `limit` entries, which forgets its older half when
    full. When under a third of the lookups since the last fill hit, a memo this large only
    costs (it evicts the CPU caches the B-tree descent needs; a uniform spread over millions of
    paths), so it shrinks to a few thousand entries, and tries its full size again later.

    Ancestors' records (the directories above the paths looked up: few, and asked about at
    every miss) go to a side table (admit_anc / lookup_anc) that the shrinking and forgetting
    leave alone; every change through the dict interface (d[k] = v, del d[k], pop, clear)
    drops the key from it too, so that it never holds what the memo no longer would."""

    def __init__(self, Py_ssize_t limit):
        dict.__init__(self)
        self.limit = self.max_limit = max(limit, 2)
        self.hits = self.misses = self.small_fills = 0
        self.anc = {}

    def __setitem__(self, key, value):
        dict.__setitem__(self, key, value)
        if self.anc:
            self.anc.pop(key, None)

    def __delitem__(self, key):
        if self.anc:
            self.anc.pop(key, None)
        dict.__delitem__(self, key)

    def pop(self, key, *default):
        if self.anc:
            self.anc.pop(key, None)
        return dict.pop(self, key, *default)

    def clear(self):
        self.anc.clear()
        dict.clear(self)

    cdef PyObject* lookup_anc(self, object key) noexcept:
        """The memoised value of an ancestor key (borrowed; the memo first, then the side
        table), or NULL; not counted as a hit or a miss."""
        cdef PyObject* hit = PyDict_GetItem(self, key)
        if hit == NULL:
            hit = PyDict_GetItem(self.anc, key)
        return hit

    cdef int admit_anc(self, object key, object value) except -1:
        if len(self.anc) >= ANC_MAX:
            self.anc.clear()
        PyDict_SetItem(self.anc, key, value)
        return 0

    cdef PyObject* lookup(self, object key) noexcept:
        """The memoised value (borrowed), or NULL when there is none (counted as a hit or a
        miss)."""
        cdef PyObject* hit = PyDict_GetItem(self, key)
        if hit == NULL:
            self.misses += 1
        else:
            self.hits += 1
        return hit

    cdef int admit(self, object key, object value) except -1:
        if len(self) >= self.limit:
            self._full()
        PyDict_SetItem(self, key, value)
        return 0

    cdef int _full(self) except -1:
        cdef bint poor = self.hits * 2 < self.misses
        if self.limit == self.max_limit and poor and self.max_limit > MEMO_SMALL:
            self.limit = MEMO_SMALL
            self.small_fills = 0
            dict.clear(self)            # (the ancestors stay)
        elif self.limit < self.max_limit:
            self.small_fills += 1
            if not poor or self.small_fills >= MEMO_RETRY:
                self.limit = self.max_limit
            _forget_half(self, len(self) // 2)
        else:
            _forget_half(self, self.limit // 2)
        self.hits = self.misses = 0
        return 0


cdef int _forget_half(dict d, Py_ssize_t n) except -1:
    """Drop the n oldest entries (insertion order)."""
    cdef list old = []
    for k in d:
        if len(old) >= n:
            break
        old.append(k)
    for k in old:
        del d[k]
    return 0
