# cython: language_level=3
"""The read path in C: read(path)'s cached whole-file read, and the checked read of one chunk
of content from the file. Path keys (pathkeys), records (record) and the memo (memo) are
cimported: every step is a C call."""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.object cimport PyObject
from libc.stdint cimport uint64_t

cimport cartridge._core.layout as L
from cartridge._core.checksum cimport XXH3_64bits
from cartridge._core.memo cimport Memo
from cartridge._core.pathkeys cimport file_key, normal_key
from cartridge._core.record cimport Record, fetch_record

import os as _os

from cartridge.errors import CorruptionError

cdef extern from "<unistd.h>" nogil:
    ssize_t pread(int fd, void* buf, size_t count, long long offset)

cdef extern from "<errno.h>" nogil:
    int errno
    int EINTR


cdef Py_ssize_t _pread_full(int fd, unsigned char* buf, Py_ssize_t n, long long off) except -1:
    """Read up to n bytes at off (retrying short reads and EINTR); bytes read (short at EOF)."""
    cdef Py_ssize_t got = 0
    cdef ssize_t r
    while got < n:
        with nogil:
            r = pread(fd, buf + got, n - got, off + got)
        if r < 0:
            if errno == EINTR:
                continue
            raise OSError(errno, _os.strerror(errno))
        if r == 0:
            break
        got += r
    return got


def checked_chunk(int fd, uint64_t start, Py_ssize_t n, uint64_t csum, object name,
                  object where=None, Py_ssize_t index=0):
    """n bytes of content from page `start` whose xxh3-64 must be `csum`, read into the bytes
    object returned (no staging copy). Raises CorruptionError when the file ends first
    (prefixed by `name`, the archive) or the checksum differs (prefixed by `where`, the file,
    naming chunk `index`; `name` when no `where` is given)."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    cdef uint64_t h
    cdef uint64_t last = start + (n + L.PAGE_SIZE - 1) // L.PAGE_SIZE - 1
    if _pread_full(fd, p, n, <long long>(start * L.PAGE_SIZE)) != n:
        raise CorruptionError(f"{name}: pages {start}..{last} are cut short")
    with nogil:
        h = XXH3_64bits(p, n)
    if h != csum:
        raise CorruptionError(f"{name if where is None else where}: content checksum mismatch "
                              f"in chunk {index} (pages {start}..{last})")
    return out


def read_whole(Memo records, object catalog, object name, object cache, object path,
               long long size=-1):
    """read(path)'s hot path, for a whole file (size -1, or at least the file's size): its
    bytes when the record is memoised or found (catalog None: memo only) and the content is
    inline, empty, or one chunk already in the page cache `cache`; None for everything else,
    which the caller takes the general way (errors included)."""
    cdef tuple fk = file_key(path)
    cdef bytes key = <bytes>fk[1]
    cdef PyObject* hit = records.lookup(key)
    cdef object rec
    cdef Record r
    if hit != NULL:
        rec = <object>hit
    elif catalog is None:
        return None
    else:
        rec = fetch_record(records, catalog, key, name)
    if rec is None:
        return None
    r = <Record>rec
    if r._kind != L.KIND_FILE or (size >= 0 and <unsigned long long>size < r._size):
        return None
    if r._storage == L.STORE_INLINE:
        return r.payload
    if r._storage == L.STORE_EMPTY:
        return b""
    if r.chunk_key:
        return cache.get(r.chunk_key)
    return None


def lookup_info(Memo records, object catalog, object name, object path, object make):
    """stat(path)'s hot path for an already-normal str path: the FileInfo kept on its record
    (memoised, or found in the catalog and memoised: the errors of that lookup are the general
    way's too), or make(path, record) when the record has none for this path yet (make None:
    True, for exists()); None for everything else (not normal, no record), which the caller
    takes the general way."""
    cdef tuple fk = normal_key(path)
    if fk is None:
        return None
    cdef bytes key = <bytes>fk[1]
    cdef PyObject* hit = records.lookup(key)
    cdef object rec
    if hit != NULL:
        rec = <object>hit
    else:
        rec = fetch_record(records, catalog, key, name)
    if rec is None:
        return None
    info = (<Record>rec).info
    if info is not None and (<tuple>info)[0] == path:
        return info
    if make is None:
        return True
    return make(path, rec)
