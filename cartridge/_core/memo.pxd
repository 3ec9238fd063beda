from cpython.object cimport PyObject


cdef class Memo(dict):
    cdef public Py_ssize_t limit
    cdef public Py_ssize_t max_limit
    cdef public Py_ssize_t hits
    cdef public Py_ssize_t misses
    cdef Py_ssize_t small_fills
    cdef dict anc                   # ancestors' records (admit_anc): kept when the memo shrinks

    cdef PyObject* lookup(self, object key) noexcept
    cdef int admit(self, object key, object value) except -1
    cdef int _full(self) except -1
    cdef PyObject* lookup_anc(self, object key) noexcept
    cdef int admit_anc(self, object key, object value) except -1
