# cython: language_level=3
"""Page-allocation bitmap: word-level scans over numpy uint64 words, a full-word summary, dirty chunks.

Bit i (page i) lives in word i >> 6 at bit position i & 63, least-significant bit first; 1 = used.
Summary word k has bit j set when word 64*k + j is completely full, so scans skip 4096 used pages
per summary word. The persisted form is cut into chunks of CHUNK_BITS pages (CHUNK_WORDS words,
CHUNK_BYTES little-endian bytes); any word that changes marks its chunk dirty.

Invariant: bits at or beyond n_bits are always zero in memory (and in chunk_bytes()).
"""
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memset
from cpython.pyport cimport PY_SSIZE_T_MAX

import numpy as np

cdef extern from *:
    """
    #include <stdint.h>
    static inline int cart_ctz64(uint64_t x) { return __builtin_ctzll((unsigned long long)x); }
    static inline int cart_clz64(uint64_t x) { return __builtin_clzll((unsigned long long)x); }
    static inline int cart_popcount64(uint64_t x) { return __builtin_popcountll((unsigned long long)x); }
    #define CART_ALL ((uint64_t)0xFFFFFFFFFFFFFFFFULL)
    """
    const uint64_t CART_ALL               # all 64 bits set (a macro, so it constant-folds)
    int cart_ctz64(uint64_t x) nogil      # undefined for x == 0
    int cart_clz64(uint64_t x) nogil      # undefined for x == 0
    int cart_popcount64(uint64_t x) nogil

from cartridge._core.layout cimport (ALLOC_CHUNK_BITS as _CHUNK_BITS,
                                     ALLOC_CHUNK_BYTES as _CHUNK_BYTES,
                                     ALLOC_CHUNK_WORDS as _CHUNK_WORDS)

CHUNK_BITS = _CHUNK_BITS      # one allocation-map entry (docs/FORMAT.md §6)
CHUNK_WORDS = _CHUNK_WORDS
CHUNK_BYTES = _CHUNK_BYTES

cdef enum:
    _CHUNK_SHIFT = 5          # word index >> 5 = chunk index (_CHUNK_WORDS == 1 << 5)



cdef inline uint64_t _mask_from(Py_ssize_t b) noexcept nogil:
    """Bits b..63 set (0 <= b < 64)."""
    return CART_ALL << b


cdef inline uint64_t _mask_upto(Py_ssize_t b) noexcept nogil:
    """Bits 0..b set, inclusive (0 <= b < 64)."""
    return CART_ALL >> (63 - b)


cdef inline uint64_t _range_mask(Py_ssize_t w, Py_ssize_t w0, Py_ssize_t w1,
                                 Py_ssize_t start, Py_ssize_t last_bit) noexcept nogil:
    """Mask of the bits of word w inside [start, last_bit] where w0/w1 are the first/last words."""
    cdef uint64_t m = CART_ALL
    if w == w0:
        m &= _mask_from(start & 63)
    if w == w1:
        m &= _mask_upto(last_bit & 63)
    return m


cdef class Bitmap:
    """Page-allocation bitmap (1 = used) with a full-word summary level and dirty-chunk tracking."""

    def __cinit__(self):
        """Start unbound; __init__ or copy() allocates the arrays."""
        self._w = NULL
        self._s = NULL
        self._d = NULL
        self._dlo = PY_SSIZE_T_MAX
        self._dhi = 0
        self._n_bits = 0
        self._n_words = 0
        self._cap_words = 0

    def __init__(self, Py_ssize_t n_bits=0):
        """Create a bitmap of n_bits pages, all free, with capacity for at least one chunk."""
        if n_bits < 0:
            raise ValueError("n_bits must be >= 0")
        self._alloc(_CHUNK_WORDS)
        self._grow(n_bits, False)

    # ------------------------------------------------------------------ storage management

    cdef void _bind(self) except *:
        """Refresh the raw pointers after the numpy arrays were (re)allocated."""
        cdef uint64_t[::1] wv = self._words_arr
        cdef uint64_t[::1] sv = self._summary_arr
        cdef uint8_t[::1] dv = self._dirty_arr
        self._w = &wv[0]
        self._s = &sv[0]
        self._d = &dv[0]

    cdef void _alloc(self, Py_ssize_t cap_words) except *:
        """Reallocate to cap_words words (a multiple of 32), keeping words, summary and dirty flags."""
        cdef Py_ssize_t n_sum = (cap_words + 63) >> 6
        cdef Py_ssize_t n_chunks = cap_words >> _CHUNK_SHIFT
        words = np.zeros(cap_words, dtype=np.uint64)
        summary = np.zeros(n_sum, dtype=np.uint64)
        dirty = np.zeros(n_chunks, dtype=np.uint8)
        if self._words_arr is not None:
            words[: self._cap_words] = self._words_arr
            summary[: self._summary_arr.shape[0]] = self._summary_arr
            dirty[: self._dirty_arr.shape[0]] = self._dirty_arr
        self._words_arr = words
        self._summary_arr = summary
        self._dirty_arr = dirty
        self._cap_words = cap_words
        self._bind()

    cdef void _grow(self, Py_ssize_t new_n_bits, bint mark_dirty) except *:
        """Extend to new_n_bits free pages, doubling capacity when needed; optionally dirty new chunks."""
        cdef Py_ssize_t new_words = (new_n_bits + 63) >> 6
        cdef Py_ssize_t cap
        cdef Py_ssize_t old_chunks = (self._n_bits + _CHUNK_BITS - 1) // _CHUNK_BITS
        cdef Py_ssize_t new_chunks = (new_n_bits + _CHUNK_BITS - 1) // _CHUNK_BITS
        cdef Py_ssize_t c
        if new_n_bits < self._n_bits:
            raise ValueError("Bitmap cannot shrink")
        if new_words > self._cap_words:
            cap = (new_words + _CHUNK_WORDS - 1) & ~(<Py_ssize_t>_CHUNK_WORDS - 1)
            if cap < 2 * self._cap_words:
                cap = 2 * self._cap_words
            self._alloc(cap)
        self._n_bits = new_n_bits
        self._n_words = new_words
        if mark_dirty:
            for c in range(old_chunks, new_chunks):
                self._d[c] = 1
                self._mark(c)

    cdef int _check_range(self, Py_ssize_t start, Py_ssize_t count) except -1:
        """Raise ValueError unless 0 <= start, 0 <= count and start + count <= n_bits."""
        if start < 0 or count < 0 or start > self._n_bits - count:
            raise ValueError(
                f"range start={start} count={count} outside bitmap of {self._n_bits} bits"
            )
        return 0

    cdef void _mark(self, Py_ssize_t c) noexcept nogil:
        """Widen the dirty window to include chunk c."""
        if c < self._dlo:
            self._dlo = c
        if c >= self._dhi:
            self._dhi = c + 1

    cdef inline void _store(self, Py_ssize_t w, uint64_t v) noexcept nogil:
        """Write word w if it changes, keeping the summary bit and the chunk's dirty flag in sync."""
        cdef uint64_t bit
        if self._w[w] == v:
            return
        self._w[w] = v
        self._d[w >> _CHUNK_SHIFT] = 1
        self._mark(w >> _CHUNK_SHIFT)
        bit = (<uint64_t>1) << (w & 63)
        if v == CART_ALL:
            self._s[w >> 6] |= bit
        else:
            self._s[w >> 6] &= ~bit

    cdef void _fill(self, Py_ssize_t start, Py_ssize_t count, bint used) noexcept nogil:
        """Set (used) or clear a validated range, whole words at a time in the middle."""
        cdef Py_ssize_t last_bit, w0, w1, w
        cdef uint64_t m
        if count == 0:
            return
        last_bit = start + count - 1
        w0 = start >> 6
        w1 = last_bit >> 6
        if w0 == w1:
            m = _range_mask(w0, w0, w1, start, last_bit)
            self._store(w0, (self._w[w0] | m) if used else (self._w[w0] & ~m))
            return
        m = _mask_from(start & 63)
        self._store(w0, (self._w[w0] | m) if used else (self._w[w0] & ~m))
        for w in range(w0 + 1, w1):
            self._store(w, CART_ALL if used else 0)
        m = _mask_upto(last_bit & 63)
        self._store(w1, (self._w[w1] | m) if used else (self._w[w1] & ~m))

    # ------------------------------------------------------------------ properties

    @property
    def n_bits(self):
        """Current size in pages."""
        return self._n_bits

    @property
    def n_chunks(self):
        """Number of persisted chunks: ceil(n_bits / CHUNK_BITS)."""
        return (self._n_bits + _CHUNK_BITS - 1) // _CHUNK_BITS

    @property
    def words(self):
        """Read-only numpy uint64 view of the first ceil(n_bits/64) words (stale after a reallocating grow)."""
        v = self._words_arr[: self._n_words]
        v.flags.writeable = False
        return v

    def grow(self, Py_ssize_t new_n_bits):
        """Extend to new_n_bits pages (new pages free, new chunks marked dirty); shrinking raises ValueError."""
        self._grow(new_n_bits, True)

    # ------------------------------------------------------------------ point / range queries

    cpdef bint get(self, Py_ssize_t i) except -1:
        """True when page i is used; IndexError outside [0, n_bits)."""
        if i < 0 or i >= self._n_bits:
            raise IndexError(f"bit {i} outside bitmap of {self._n_bits} bits")
        return (self._w[i >> 6] >> (i & 63)) & 1

    cpdef set_range(self, Py_ssize_t start, Py_ssize_t count):
        """Mark pages [start, start+count) used (word-level); ValueError for an invalid range."""
        self._check_range(start, count)
        self._fill(start, count, True)

    cpdef clear_range(self, Py_ssize_t start, Py_ssize_t count):
        """Mark pages [start, start+count) free (word-level); ValueError for an invalid range."""
        self._check_range(start, count)
        self._fill(start, count, False)

    cpdef bint is_range_free(self, Py_ssize_t start, Py_ssize_t count) except -1:
        """True when every page in [start, start+count) is free (empty range: True); ValueError if invalid."""
        cdef Py_ssize_t last_bit, w0, w1, w
        self._check_range(start, count)
        if count == 0:
            return True
        last_bit = start + count - 1
        w0 = start >> 6
        w1 = last_bit >> 6
        for w in range(w0, w1 + 1):
            if self._w[w] & _range_mask(w, w0, w1, start, last_bit):
                return False
        return True

    cpdef bint is_range_used(self, Py_ssize_t start, Py_ssize_t count) except -1:
        """True when every page in [start, start+count) is used (empty range: True); ValueError if invalid."""
        cdef Py_ssize_t last_bit, w0, w1, w
        cdef uint64_t m
        self._check_range(start, count)
        if count == 0:
            return True
        last_bit = start + count - 1
        w0 = start >> 6
        w1 = last_bit >> 6
        for w in range(w0, w1 + 1):
            m = _range_mask(w, w0, w1, start, last_bit)
            if (self._w[w] & m) != m:
                return False
        return True

    # ------------------------------------------------------------------ searches

    cdef Py_ssize_t _find_free_in(self, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
        """First free bit in [lo, hi) or -1; full words are skipped 64 at a time through the summary."""
        cdef Py_ssize_t w, last, k, r
        cdef uint64_t x, sm
        if lo >= hi:
            return -1
        w = lo >> 6
        last = (hi - 1) >> 6
        x = ~self._w[w] & _mask_from(lo & 63)
        if x:
            r = (w << 6) + cart_ctz64(x)
            return r if r < hi else -1
        w += 1
        while w <= last:
            k = w >> 6
            sm = ~self._s[k] & _mask_from(w & 63)
            if sm == 0:
                w = (k + 1) << 6
                continue
            w = (k << 6) + cart_ctz64(sm)
            if w > last:
                return -1
            # The summary says word w is not full, so it has a free bit.
            r = (w << 6) + cart_ctz64(~self._w[w])
            return r if r < hi else -1
        return -1

    cpdef Py_ssize_t find_free(self, Py_ssize_t hint=0) except? -2:
        """First free page at or after hint, wrapping to 0 once; -1 when full. Out-of-range hint means 0."""
        cdef Py_ssize_t r
        if hint < 0 or hint >= self._n_bits:
            hint = 0
        r = self._find_free_in(hint, self._n_bits)
        if r < 0 and hint > 0:
            r = self._find_free_in(0, hint)
        return r

    cdef Py_ssize_t _find_run_in(self, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t count) noexcept nogil:
        """Start of the first run of >= count free bits lying inside [lo, hi), or -1 (word-level)."""
        cdef Py_ssize_t w, last, w_lo, k, t, top, have, s
        cdef Py_ssize_t run_start = 0, run_len = 0
        cdef uint64_t free, m, sm
        if count <= 0 or hi - lo < count:
            return -1
        w_lo = lo >> 6
        w = w_lo
        last = (hi - 1) >> 6
        while w <= last:
            free = ~self._w[w]
            if w == w_lo:
                free &= _mask_from(lo & 63)
            if w == last:
                free &= _mask_upto((hi - 1) & 63)
            if free == 0:
                # Used (or out-of-range) word: the run breaks; jump to the next non-full word.
                run_len = 0
                w += 1
                while w <= last:
                    k = w >> 6
                    sm = ~self._s[k] & _mask_from(w & 63)
                    if sm:
                        w = (k << 6) + cart_ctz64(sm)
                        break
                    w = (k + 1) << 6
                continue
            if free == CART_ALL:
                if run_len == 0:
                    run_start = w << 6
                run_len += 64
                if run_len >= count:
                    return run_start
                w += 1
                continue
            # Partial word: trailing free bits continue the carried run.
            t = cart_ctz64(~free)
            if t:
                if run_len == 0:
                    run_start = w << 6
                run_len += t
                if run_len >= count:
                    return run_start
            # A run wholly inside this word (only possible for count < 64): m bit i set
            # iff free bits i .. i+count-1 are all set (shift-and doubling, O(log count)).
            if count < 64:
                m = free
                have = 1
                while have < count and m:
                    s = have if have <= count - have else count - have
                    m &= m >> s
                    have += s
                if m:
                    return (w << 6) + cart_ctz64(m)
            # Leading (high) free bits start a new carried run.
            top = cart_clz64(~free)
            if top:
                run_start = (w << 6) + 64 - top
                run_len = top
            else:
                run_len = 0
            w += 1
        return -1

    cpdef Py_ssize_t find_run(self, Py_ssize_t count, Py_ssize_t hint=0) except? -2:
        """Start of the first run of >= count free pages at or after hint, then from 0 (wrap); -1 if none."""
        cdef Py_ssize_t r, hi
        if count <= 0:
            raise ValueError("count must be >= 1")
        if hint < 0 or hint >= self._n_bits:
            hint = 0
        r = self._find_run_in(hint, self._n_bits, count)
        if r < 0 and hint > 0:
            # Runs starting before hint (they may extend past it).
            hi = hint + count - 1
            if hi > self._n_bits:
                hi = self._n_bits
            r = self._find_run_in(0, hi, count)
        return r

    cdef Py_ssize_t _collect_runs(self, Py_ssize_t* starts, Py_ssize_t* lens) noexcept nogil:
        """Enumerate maximal free runs in order into starts/lens (NULL: only count); returns how many."""
        cdef Py_ssize_t n = 0, w = 0, last = self._n_words - 1, k, b, e, rs = 0, base
        cdef bint is_open = False
        cdef uint64_t free, x, rest, sm
        cdef uint64_t tail = CART_ALL if (self._n_bits & 63) == 0 else _mask_upto((self._n_bits & 63) - 1)
        while w <= last:
            free = ~self._w[w]
            if w == last:
                free &= tail
            base = w << 6
            if free == 0:
                if is_open:
                    if starts != NULL:
                        starts[n] = rs
                        lens[n] = base - rs
                    n += 1
                    is_open = False
                w += 1
                while w <= last:
                    k = w >> 6
                    sm = ~self._s[k] & _mask_from(w & 63)
                    if sm:
                        w = (k << 6) + cart_ctz64(sm)
                        break
                    w = (k + 1) << 6
                continue
            if free == CART_ALL:
                if not is_open:
                    rs = base
                    is_open = True
                w += 1
                continue
            x = free
            while x:
                b = cart_ctz64(x)
                if b != 0 or not is_open:
                    if is_open:
                        # Bit 0 of this word is used: the carried run ended at base.
                        if starts != NULL:
                            starts[n] = rs
                            lens[n] = base - rs
                        n += 1
                    rs = base + b
                    is_open = True
                rest = ~x & _mask_from(b)
                if rest == 0:
                    x = 0       # the run reaches bit 63 and stays open
                else:
                    e = cart_ctz64(rest)
                    if starts != NULL:
                        starts[n] = rs
                        lens[n] = base + e - rs
                    n += 1
                    is_open = False
                    x &= _mask_from(e)
            w += 1
        if is_open:
            if starts != NULL:
                starts[n] = rs
                lens[n] = self._n_bits - rs
            n += 1
        return n

    cdef tuple _runs_arrays(self):
        """All maximal free runs as two numpy intp arrays (starts, lengths), in address order."""
        cdef Py_ssize_t n
        cdef Py_ssize_t[::1] sv
        cdef Py_ssize_t[::1] lv
        with nogil:
            n = self._collect_runs(NULL, NULL)
        starts = np.empty(n + 1, dtype=np.intp)
        lens = np.empty(n + 1, dtype=np.intp)
        sv = starts
        lv = lens
        with nogil:
            self._collect_runs(&sv[0], &lv[0])
        return starts[:n], lens[:n]

    def free_runs(self):
        """Every maximal free run as (start, length), in address order (verify / fragmentation stats)."""
        starts, lens = self._runs_arrays()
        return list(zip(starts.tolist(), lens.tolist()))

    def largest_runs(self, Py_ssize_t count, Py_ssize_t max_runs):
        """Fragmentation fallback: up to max_runs free runs (start, length), largest first (ties: lowest
        start), stopping once their lengths sum to >= count; if they cannot reach count, all it took."""
        cdef Py_ssize_t n, i, acc
        if max_runs <= 0 or count <= 0:
            return []
        starts, lens = self._runs_arrays()
        n = starts.shape[0]
        if n == 0:
            return []
        if n > max_runs:
            # Keep only candidates at least as long as the max_runs-th longest, then sort those.
            kth = np.partition(lens, n - max_runs)[n - max_runs]
            idx = np.flatnonzero(lens >= kth)
            starts = starts[idx]
            lens = lens[idx]
        order = np.lexsort((starts, -lens))[:max_runs]
        out = []
        acc = 0
        for i in order.tolist():
            out.append((int(starts[i]), int(lens[i])))
            acc += lens[i]
            if acc >= count:
                break
        return out

    # ------------------------------------------------------------------ counting

    cpdef Py_ssize_t count_used(self) except? -2:
        """Number of used pages (popcount over the words)."""
        cdef Py_ssize_t w, n = 0
        with nogil:
            for w in range(self._n_words):
                n += cart_popcount64(self._w[w])
        return n

    cpdef Py_ssize_t count_free(self) except? -2:
        """Number of free pages."""
        return self._n_bits - self.count_used()

    # ------------------------------------------------------------------ persistence

    def load_chunk(self, Py_ssize_t chunk_index, data):
        """Overwrite chunk chunk_index from 256 LE bytes (grows to cover a chunk beyond n_chunks; bits
        past n_bits dropped); rebuilds the summary for its words and does not mark it dirty."""
        cdef Py_ssize_t w0, w, end_w
        cdef uint64_t v, bit
        cdef uint64_t[::1] src
        if chunk_index < 0:
            raise ValueError("chunk_index must be >= 0")
        if len(data) != _CHUNK_BYTES:
            raise ValueError(f"chunk data must be {_CHUNK_BYTES} bytes, got {len(data)}")
        if chunk_index >= (self._n_bits + _CHUNK_BITS - 1) // _CHUNK_BITS:
            self._grow((chunk_index + 1) * _CHUNK_BITS, False)
        src = np.frombuffer(data, dtype="<u8").astype(np.uint64)   # native-order copy
        w0 = chunk_index * _CHUNK_WORDS
        end_w = w0 + _CHUNK_WORDS
        for w in range(w0, end_w):
            if w < self._n_words:
                v = src[w - w0]
                if w == self._n_words - 1 and (self._n_bits & 63):
                    v &= _mask_upto((self._n_bits & 63) - 1)
            else:
                v = 0
            self._w[w] = v
            bit = (<uint64_t>1) << (w & 63)
            if v == CART_ALL:
                self._s[w >> 6] |= bit
            else:
                self._s[w >> 6] &= ~bit

    def chunk_bytes(self, Py_ssize_t chunk_index):
        """The 256 little-endian bytes of chunk chunk_index (zero beyond n_bits), for persisting it."""
        if chunk_index < 0 or chunk_index >= (self._n_bits + _CHUNK_BITS - 1) // _CHUNK_BITS:
            raise ValueError(f"chunk {chunk_index} outside bitmap of {self.n_chunks} chunks")
        w0 = chunk_index * _CHUNK_WORDS
        return self._words_arr[w0: w0 + _CHUNK_WORDS].astype("<u8", copy=False).tobytes()

    def dirty_chunks(self):
        """Sorted indices of chunks changed since the last clear_dirty() (to persist them)."""
        cdef list out = []
        cdef Py_ssize_t c
        for c in range(self._dlo, self._dhi):
            if self._d[c]:
                out.append(c)
        return out

    def clear_dirty(self):
        """Forget all dirty flags (after the dirty chunks were persisted)."""
        memset(self._d, 0, self._cap_words >> _CHUNK_SHIFT)
        self._dlo = PY_SSIZE_T_MAX
        self._dhi = 0

    def copy(self):
        """Deep copy (words, summary, size, dirty flags) via numpy copies, e.g. a rollback snapshot."""
        cdef Bitmap b = Bitmap.__new__(Bitmap)
        b._words_arr = self._words_arr.copy()
        b._summary_arr = self._summary_arr.copy()
        b._dirty_arr = self._dirty_arr.copy()
        b._dlo = self._dlo
        b._dhi = self._dhi
        b._cap_words = self._cap_words
        b._n_bits = self._n_bits
        b._n_words = self._n_words
        b._bind()
        return b

    def __len__(self):
        """Size in pages (same as n_bits)."""
        return self._n_bits

    def __repr__(self):
        """Short summary: size and used count."""
        return f"Bitmap(n_bits={self._n_bits}, used={self.count_used()})"
