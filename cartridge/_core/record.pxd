from cartridge._core.memo cimport Memo


cdef class Record:
    cdef int _kind
    cdef int _storage
    cdef unsigned int _mode
    cdef unsigned long long _size
    cdef long long _ctime_ns
    cdef long long _mtime_ns
    cdef unsigned long long _checksum
    cdef public object payload
    cdef public object chunk_key
    cdef public object info


cdef Record decode_at(const unsigned char* v, Py_ssize_t n, object where)
cpdef object get_record(Memo records, object catalog, bytes key, object name)
cdef object fetch_record(Memo records, object catalog, bytes key, object name)
