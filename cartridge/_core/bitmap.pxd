from libc.stdint cimport uint8_t, uint64_t


cdef class Bitmap:
    cdef object _words_arr      # numpy uint64, capacity _cap_words (a multiple of 32 words = 1 chunk)
    cdef object _summary_arr    # numpy uint64, ceil(_cap_words / 64) words; bit j of k: word 64k+j is full
    cdef object _dirty_arr      # numpy uint8, one flag per chunk of capacity
    cdef uint64_t* _w
    cdef uint64_t* _s
    cdef uint8_t* _d
    cdef Py_ssize_t _dlo            # dirty chunks all lie in [_dlo, _dhi)
    cdef Py_ssize_t _dhi
    cdef Py_ssize_t _n_bits
    cdef Py_ssize_t _n_words
    cdef Py_ssize_t _cap_words

    cdef void _bind(self) except *
    cdef void _alloc(self, Py_ssize_t cap_words) except *
    cdef void _grow(self, Py_ssize_t new_n_bits, bint mark_dirty) except *
    cdef int _check_range(self, Py_ssize_t start, Py_ssize_t count) except -1
    cdef void _mark(self, Py_ssize_t c) noexcept nogil
    cdef void _store(self, Py_ssize_t w, uint64_t v) noexcept nogil
    cdef void _fill(self, Py_ssize_t start, Py_ssize_t count, bint used) noexcept nogil
    cdef Py_ssize_t _find_free_in(self, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil
    cdef Py_ssize_t _find_run_in(self, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t count) noexcept nogil
    cdef Py_ssize_t _collect_runs(self, Py_ssize_t* starts, Py_ssize_t* lens) noexcept nogil
    cdef tuple _runs_arrays(self)

    cpdef bint get(self, Py_ssize_t i) except -1
    cpdef set_range(self, Py_ssize_t start, Py_ssize_t count)
    cpdef clear_range(self, Py_ssize_t start, Py_ssize_t count)
    cpdef bint is_range_free(self, Py_ssize_t start, Py_ssize_t count) except -1
    cpdef bint is_range_used(self, Py_ssize_t start, Py_ssize_t count) except -1
    cpdef Py_ssize_t find_free(self, Py_ssize_t hint=*) except? -2
    cpdef Py_ssize_t find_run(self, Py_ssize_t count, Py_ssize_t hint=*) except? -2
    cpdef Py_ssize_t count_used(self) except? -2
    cpdef Py_ssize_t count_free(self) except? -2
