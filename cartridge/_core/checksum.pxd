from libc.stdint cimport uint64_t

cdef extern from "xxhash_impl.h":
    uint64_t XXH3_64bits(const void* data, size_t length) nogil

cdef uint64_t page_checksum(const unsigned char* page, size_t page_size) noexcept nogil
