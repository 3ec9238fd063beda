# cython: language_level=3
"""xxh3-64 checksums over buffers and metadata pages (same function as the `xxhash` package)."""
from cpython.buffer cimport PyBuffer_FillInfo
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memcpy, memset

# Metadata pages keep their checksum at META_CHECKSUM_OFFSET; it is hashed as zero.
from cartridge._core.layout cimport META_CHECKSUM_OFFSET as CSUM_OFFSET, PAGE_SIZE


cdef uint64_t page_checksum(const unsigned char* page, size_t page_size) noexcept nogil:
    """xxh3-64 of a metadata page with its 8-byte checksum field taken as zero."""
    cdef unsigned char tmp[8]
    cdef uint64_t h
    memcpy(tmp, page + CSUM_OFFSET, 8)
    memset(<unsigned char*>page + CSUM_OFFSET, 0, 8)
    h = XXH3_64bits(page, page_size)
    memcpy(<unsigned char*>page + CSUM_OFFSET, tmp, 8)
    return h


def xxh3_64(const unsigned char[::1] data not None) -> int:
    """xxh3-64 of a bytes-like object."""
    if data.shape[0] == 0:
        return XXH3_64bits(NULL, 0)
    return XXH3_64bits(&data[0], data.shape[0])


def seal_page(unsigned char[::1] page not None) -> int:
    """Compute a metadata page's checksum and store it at its checksum field; return it."""
    cdef uint64_t h = page_checksum(&page[0], page.shape[0])
    memcpy(&page[CSUM_OFFSET], &h, 8)
    return h


def page_ok(const unsigned char[::1] page not None) -> bool:
    """True when a metadata page's stored checksum matches its contents."""
    cdef uint64_t stored
    cdef uint64_t h
    cdef unsigned char tmp[PAGE_SIZE]
    cdef Py_ssize_t n = page.shape[0]
    if n < CSUM_OFFSET + 8:
        return False
    memcpy(&stored, &page[CSUM_OFFSET], 8)
    if n <= PAGE_SIZE:
        memcpy(tmp, &page[0], n)
        (<uint64_t*>(tmp + CSUM_OFFSET))[0] = 0
        h = XXH3_64bits(tmp, n)
    else:
        raise ValueError("metadata pages are at most 4096 bytes")
    return h == stored


def chunk_checksums(const unsigned char[::1] data not None, Py_ssize_t chunk, uint64_t[::1] out not None):
    """Fill out[i] with xxh3-64 of data[i*chunk:(i+1)*chunk] (the last chunk may be short)."""
    cdef Py_ssize_t n = data.shape[0]
    cdef Py_ssize_t i = 0, off = 0, ln
    with nogil:
        while off < n:
            ln = chunk if n - off > chunk else n - off
            out[i] = XXH3_64bits(&data[off], ln)
            off += ln
            i += 1
    return i


cdef class _Filler:
    """A writable buffer over a bytes object that is still being filled (keeps it alive)."""
    cdef bytes b

    def __getbuffer__(self, Py_buffer* view, int flags):
        PyBuffer_FillInfo(view, self, PyBytes_AS_STRING(self.b), PyBytes_GET_SIZE(self.b), 0, flags)

    def __releasebuffer__(self, Py_buffer* view):
        pass


def uninit_bytes(Py_ssize_t n):
    """(b, view): a new bytes object of n bytes, not yet filled, and a writable memoryview of
    its memory, so that a read can fill it in place (one pass instead of a bytearray, a fill and
    a bytes() copy). Only for the code that made it, before anyone else sees `b`; release the
    view once filled."""
    cdef bytes b = PyBytes_FromStringAndSize(NULL, n)
    cdef _Filler f = _Filler.__new__(_Filler)
    f.b = b
    return b, memoryview(f)
