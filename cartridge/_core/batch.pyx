# cython: language_level=3
"""Kernels of the batched write path (Cartridge.write_many): many small files packed onto
consecutive pages with their checksums, and their catalog records, in one C loop each."""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from cartridge._core.bitmap cimport Bitmap
from cartridge._core.checksum cimport XXH3_64bits
from cartridge._core.layout cimport (ALLOC_CHUNK_BITS, ALLOC_CHUNK_BYTES, ALLOC_CHUNK_WORDS,
                                     PAGE_SIZE, RECORD_SIZE, STORE_EMPTY, ChunkEntry,
                                     PackRef, RecordHeader)

import sys

if sys.byteorder != "little":     # records and map entries are copied as native words
    raise ImportError("cartridge needs a little-endian host")

cdef inline void fill_header(RecordHeader* r, int kind, int storage, uint32_t mode,
                             uint64_t size, int64_t ctime_ns, int64_t mtime_ns,
                             uint64_t checksum) noexcept nogil:
    """A catalog record's 40-byte header (FORMAT §5.1), the part every record kind shares."""
    r.kind = <uint8_t>kind
    r.storage = <uint8_t>storage
    r.reserved = 0
    r.mode = mode
    r.size = size
    r.ctime_ns = ctime_ns
    r.mtime_ns = mtime_ns
    r.checksum = checksum


ctypedef packed struct OneChunkRecord:     # the catalog record of a one-chunk file (FORMAT §5)
    RecordHeader rec
    ChunkEntry chunk                        # its one chunk-map entry


def pack_pages(list datas, Py_ssize_t[::1] which, unsigned char[::1] out not None,
               uint64_t[::1] sums not None) -> int:
    """Copy datas[which[k]] (bytes-like, C-contiguous) into `out` one after another, each from
    a page boundary with its last page zero-padded, and set sums[k] to its xxh3-64. Returns the
    number of pages filled."""
    cdef Py_ssize_t k, off = 0, n, pad
    cdef Py_buffer buf
    cdef object obj
    for k in range(which.shape[0]):
        obj = datas[which[k]]
        PyObject_GetBuffer(obj, &buf, PyBUF_SIMPLE)
        try:
            n = buf.len
            pad = (PAGE_SIZE - n % PAGE_SIZE) % PAGE_SIZE
            if off + n + pad > out.shape[0]:
                raise ValueError("pack_pages: output buffer too small")
            with nogil:
                if n:
                    memcpy(&out[off], buf.buf, n)
                if pad:
                    memset(&out[off + n], 0, pad)
                sums[k] = XXH3_64bits(buf.buf, n)
        finally:
            PyBuffer_Release(&buf)
        off += n + pad
    return off // PAGE_SIZE


ctypedef packed struct PackedRecord:       # the catalog record of a packed file (FORMAT §14)
    RecordHeader rec
    PackRef ref


def pack_files(list datas, Py_ssize_t[::1] which, int64_t[::1] offsets not None,
               unsigned char[::1] out not None, uint64_t[::1] sums not None) -> None:
    """Copy datas[which[k]] (bytes-like, C-contiguous) into `out` at byte offsets[k] (packs,
    docs/FORMAT.md §14: files back to back, not page aligned) and set sums[k] to its xxh3-64.
    The bytes of `out` no file covers are left as they are (the caller zeroes them)."""
    cdef Py_ssize_t k, n, off
    cdef Py_buffer buf
    for k in range(which.shape[0]):
        PyObject_GetBuffer(datas[which[k]], &buf, PyBUF_SIMPLE)
        try:
            n = buf.len
            off = offsets[k]
            if off < 0 or off + n > out.shape[0]:
                raise ValueError("pack_files: output buffer too small")
            with nogil:
                if n:
                    memcpy(&out[off], buf.buf, n)
                sums[k] = XXH3_64bits(buf.buf, n)
        finally:
            PyBuffer_Release(&buf)


def packed_records(Py_ssize_t[::1] which, int64_t[::1] sizes not None,
                   uint64_t[::1] packs not None, int64_t[::1] offsets not None,
                   uint64_t[::1] sums not None, uint32_t[::1] modes not None,
                   int64_t[::1] ctimes not None, int64_t mtime, int kind, int storage,
                   list out not None) -> None:
    """out[which[k]] = the catalog record of a packed file (docs/FORMAT.md §14: RECORD, then
    its PackRef) of size sizes[k], in the pack at page packs[k] at byte offsets[k], checksum
    sums[k]; mode and ctime from modes[k] and ctimes[k]."""
    cdef Py_ssize_t k
    cdef bytes b
    cdef PackedRecord* r
    for k in range(which.shape[0]):
        b = PyBytes_FromStringAndSize(NULL, sizeof(PackedRecord))
        r = <PackedRecord*>PyBytes_AS_STRING(b)
        fill_header(&r.rec, kind, storage, modes[k], <uint64_t>sizes[k], ctimes[k], mtime,
                    sums[k])
        r.ref.pack_page = packs[k]
        r.ref.offset = <uint32_t>offsets[k]
        r.ref.reserved = 0
        out[which[k]] = b


def chunk_records(Py_ssize_t[::1] which, int64_t[::1] sizes not None,
                  uint64_t[::1] starts not None, uint64_t[::1] sums not None,
                  uint32_t[::1] modes not None, int64_t[::1] ctimes not None,
                  int64_t mtime, int kind, int storage, list out not None) -> None:
    """out[which[k]] = the catalog record of a one-chunk file (docs/FORMAT.md §5: RECORD then
    its single CHUNK_ENTRY) with size sizes[k], content at page starts[k], checksum sums[k];
    mode and ctime from modes[k] and ctimes[k]."""
    cdef Py_ssize_t k
    cdef bytes b
    cdef OneChunkRecord* r
    for k in range(which.shape[0]):
        b = PyBytes_FromStringAndSize(NULL, sizeof(OneChunkRecord))
        r = <OneChunkRecord*>PyBytes_AS_STRING(b)
        fill_header(&r.rec, kind, storage, modes[k], <uint64_t>sizes[k], ctimes[k], mtime,
                    sums[k])
        r.chunk.start = starts[k]
        r.chunk.checksum = sums[k]
        out[which[k]] = b


cdef extern from "string.h":
    void* memrchr(const void* s, int c, size_t n)


def parent_groups(list keys) -> list:
    """Runs of consecutive keys (path keys, sorted) that share a parent directory:
    [(parent key with its trailing '/', first index, end index)], one C pass."""
    cdef list out = []
    cdef Py_ssize_t i, n = len(keys), first = 0, plen = -1, kl, pl
    cdef const char* p = NULL
    cdef const char* k
    cdef const char* slash
    cdef bytes key, parent = None
    for i in range(n):
        key = keys[i]
        k = PyBytes_AS_STRING(key)
        kl = len(key)
        slash = <const char*>memrchr(k, 47, kl)
        pl = 0 if slash == NULL else slash - k + 1
        if pl != plen or memcmp(k, p, pl) != 0:
            if parent is not None:
                out.append((parent, first, i))
            parent = key[:pl]
            p = PyBytes_AS_STRING(parent)
            plen = pl
            first = i
    if parent is not None:
        out.append((parent, first, n))
    return out


def collect(items, file_key, as_bytes, dict meta=None) -> dict:
    """{catalog key: data} for write_many's (path, data) pairs, the last pair of a path
    winning: file_key(path)[1] is the key; data other than bytes is checked by as_bytes(data)
    and copied, so a caller reusing one buffer between pairs gets what write() would. With a
    `meta` dict, (path, data, m) triples are accepted too: meta[key] = m (the last item of a
    path winning here as well)."""
    cdef dict batch = {}
    cdef object item, path, data, m, key
    for item in items:
        m = None
        if type(item) is tuple and len(<tuple>item) == 2:
            path = (<tuple>item)[0]
            data = (<tuple>item)[1]
        else:
            try:
                if meta is not None and len(item) == 3:
                    path, data, m = item
                else:
                    path, data = item
            except (TypeError, ValueError):
                raise TypeError("write_many() takes (path, data) pairs or (path, data, meta) "
                                "triples") from None
        if type(data) is not bytes:
            data = bytes(as_bytes(data))   # a copy now: the caller may reuse its buffer
        key = file_key(path)[1]
        batch[key] = data
        if m is not None:
            meta[key] = m
        elif meta:
            meta.pop(key, None)
    return batch


def alloc_entry(Bitmap used not None, Bitmap pending not None, Py_ssize_t chunk) -> bytes:
    """The persisted allocation-map entry of `chunk` (docs/FORMAT.md §6): its 256 bytes of
    `used` bits, then its 256 bytes of `pending` bits (little-endian words), in one copy each."""
    cdef Py_ssize_t w0 = chunk * ALLOC_CHUNK_WORDS
    if (chunk < 0 or chunk >= (used._n_bits + ALLOC_CHUNK_BITS - 1) // ALLOC_CHUNK_BITS
            or chunk >= (pending._n_bits + ALLOC_CHUNK_BITS - 1) // ALLOC_CHUNK_BITS):
        raise ValueError(f"chunk {chunk} outside the bitmaps")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 2 * ALLOC_CHUNK_BYTES)
    cdef char* o = PyBytes_AS_STRING(out)
    memcpy(o, used._w + w0, ALLOC_CHUNK_BYTES)
    memcpy(o + ALLOC_CHUNK_BYTES, pending._w + w0, ALLOC_CHUNK_BYTES)
    return out


def inline_records(list datas, Py_ssize_t[::1] which, uint32_t[::1] modes not None,
                   int64_t[::1] ctimes not None, int64_t mtime, int kind, int storage,
                   list out not None) -> None:
    """out[which[k]] = the catalog record of a file whose content datas[which[k]] (bytes-like)
    is kept inline in the record (docs/FORMAT.md §5: RECORD, then the content), checksum its
    xxh3-64; mode and ctime from modes[k] and ctimes[k]. `storage` is for a non-empty file;
    an empty one is STORE_EMPTY (0)."""
    cdef Py_ssize_t k, n
    cdef Py_buffer buf
    cdef bytes b
    cdef RecordHeader* r
    for k in range(which.shape[0]):
        PyObject_GetBuffer(datas[which[k]], &buf, PyBUF_SIMPLE)
        try:
            n = buf.len
            b = PyBytes_FromStringAndSize(NULL, RECORD_SIZE + n)
            r = <RecordHeader*>PyBytes_AS_STRING(b)
            fill_header(r, kind, storage if n else STORE_EMPTY, modes[k], <uint64_t>n, ctimes[k],
                        mtime, XXH3_64bits(buf.buf, n))
            if n:
                memcpy(PyBytes_AS_STRING(b) + RECORD_SIZE, buf.buf, n)
        finally:
            PyBuffer_Release(&buf)
        out[which[k]] = b
