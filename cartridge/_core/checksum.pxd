from libc.stdint cimport uint64_t

cdef extern from "xxhash_impl.h":
    # XXH3_64bits with the long-input kernel picked at run time (AVX2 when available)
    uint64_t XXH3_64bits "cart_xxh3_64" (const void* data, size_t length) nogil

cdef uint64_t page_checksum(const unsigned char* page, size_t page_size) noexcept nogil
