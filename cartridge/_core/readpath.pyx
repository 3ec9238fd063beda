# cython: language_level=3
"""The read path in C: path keys, catalog records, page reads and the cached one-chunk read.

Path rules live in cartridge.paths (its Python normaliser is the reference): here a path that
is already normal is recognised with one scan of its UTF-8 bytes, and anything else (paths to
collapse, bad paths and their errors) goes to the reference, installed by cartridge.paths.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from cartridge._core.checksum cimport XXH3_64bits

import os as _os
import struct as _struct

from cartridge.errors import CorruptionError

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL
    bint PyUnicode_IS_ASCII(object s)
    void* PyUnicode_DATA(object s)
    Py_ssize_t PyUnicode_GET_LENGTH(object s)

cdef extern from "<unistd.h>" nogil:
    ssize_t pread(int fd, void* buf, size_t count, long long offset)

cdef extern from "<errno.h>" nogil:
    int errno
    int EINTR

cdef enum:
    MAX_PATH = 4096
    MAX_NAME = 255
    REC_SIZE = 40
    K_FILE = 1
    K_DIR = 2
    S_EMPTY = 0
    S_INLINE = 1
    S_CHUNKS = 2
    S_XMAP = 3
    CHUNK = 65536
    XMAP_REF_SIZE = 16
    FILE_KEYS_MAX = 100000

_RECORD = _struct.Struct("<BBHIQqqQ")      # cartridge.format.RECORD (checked at import there)

# -- memos ---------------------------------------------------------------------------------
cdef enum:
    MEMO_SMALL = 4096       # entries a memo keeps while its lookups mostly miss
    MEMO_RETRY = 1024       # small fills before the full size is tried again


cdef class Memo(dict):
    """A dict of per-path results bounded at `limit` entries, which forgets its older half when
    full. When under a third of the lookups since the last fill hit, a memo this large only
    costs (it evicts the CPU caches the B-tree descent needs; a uniform spread over millions of
    paths), so it shrinks to a few thousand entries, and tries its full size again later."""
    cdef public Py_ssize_t limit
    cdef public Py_ssize_t max_limit
    cdef public Py_ssize_t hits
    cdef public Py_ssize_t misses
    cdef Py_ssize_t small_fills

    def __init__(self, Py_ssize_t limit):
        dict.__init__(self)
        self.limit = self.max_limit = max(limit, 2)
        self.hits = self.misses = self.small_fills = 0

    cdef inline object lookup(self, object key):
        """The memoised value, or _MISSING (counted as a hit or a miss)."""
        cdef PyObject* hit = PyDict_GetItem(self, key)
        if hit == NULL:
            self.misses += 1
            return _MISSING
        self.hits += 1
        return <object>hit

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
            self.clear()
        elif self.limit < self.max_limit:
            self.small_fills += 1
            if not poor or self.small_fills >= MEMO_RETRY:
                self.limit = self.max_limit
            _forget_half(self, len(self) // 2)
        else:
            _forget_half(self, self.limit // 2)
        self.hits = self.misses = 0
        return 0


cdef object _MISSING = object()


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


# -- paths ---------------------------------------------------------------------------------
cdef object _reference = None       # paths._normalize_ref: str -> (normalised, trailing)
cdef object _check_type = None      # paths._check_type: the argument checks and os.PathLike
cdef object _root_error = None      # paths._file_errors: raises for '/' and trailing '/'
cdef Memo _FILE_KEYS = Memo(FILE_KEYS_MAX)


def use_reference(reference, check_type, file_errors) -> None:
    """Install cartridge.paths' reference normaliser (rules and errors for every path that is
    not already normal)."""
    global _reference, _check_type, _root_error
    _reference = reference
    _check_type = check_type
    _root_error = file_errors
    _FILE_KEYS.clear()


cdef inline bint _is_normal(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """Whether UTF-8 bytes already are a normal path: '/name' segments of 1..255 bytes, none
    '.' or '..', no C0/DEL/C1 control character, at most 4096 bytes in all (the root '/' and a
    trailing '/' are not: the reference handles them)."""
    cdef Py_ssize_t i, start = 1, ln
    cdef unsigned char c
    if n < 2 or n > MAX_PATH or s[0] != 47:
        return False
    for i in range(1, n + 1):
        if i == n or s[i] == 47:
            ln = i - start
            if ln == 0 or ln > MAX_NAME:
                return False
            if s[start] == 46 and (ln == 1 or (ln == 2 and s[start + 1] == 46)):
                return False
            start = i + 1
        else:
            c = s[i]
            if c < 0x20 or c == 0x7f:
                return False
            if c == 0xc2 and i + 1 < n and 0x80 <= s[i + 1] <= 0x9f:
                return False
    return True


cdef inline const unsigned char* _utf8(object path, Py_ssize_t* n):
    """UTF-8 bytes of an exact str, or NULL when it has none (a lone surrogate)."""
    if PyUnicode_IS_ASCII(path):
        n[0] = PyUnicode_GET_LENGTH(path)
        return <const unsigned char*>PyUnicode_DATA(path)
    try:
        return <const unsigned char*>PyUnicode_AsUTF8AndSize(path, n)
    except UnicodeEncodeError:
        return NULL


cdef inline bint _fast(object path) except -1:
    cdef Py_ssize_t n = 0
    cdef const unsigned char* s
    if type(path) is not str:
        return False
    s = _utf8(path, &n)
    return s != NULL and _is_normal(s, n)


def is_normal(path) -> bool:
    """Whether `path` is an exact str that is already a normal path (no work to do)."""
    return _fast(path)


def normalize_any(path) -> tuple:
    """(normalised path, whether it was written with a trailing '/')."""
    if _fast(path):
        return path, False
    return _reference(_check_type(path))


def normalize(path):
    """Normalise a path that may name a file or a directory."""
    if _fast(path):
        return path
    return _reference(_check_type(path))[0]


def normalize_file(path):
    """Normalise a path that must name a file: the root and a trailing '/' are refused."""
    if _fast(path):
        return path
    return _file_slow(path)


cdef object _file_slow(object path):
    result, trailing = _reference(_check_type(path))
    _root_error(path, result, trailing)
    return result


cpdef tuple file_key(object path):
    """(normalised file path, catalog key), memoised for str paths: the hot path of every read
    and write."""
    cdef object hit_
    cdef Py_ssize_t n = 0
    cdef const unsigned char* s
    cdef tuple out
    if type(path) is not str:
        norm = normalize_file(path)
        return (norm, (<str>norm).encode("utf-8"))
    hit_ = _FILE_KEYS.lookup(path)
    if hit_ is not _MISSING:
        return <tuple>hit_
    s = _utf8(path, &n)
    if s != NULL and _is_normal(s, n):
        out = (path, PyBytes_FromStringAndSize(<const char*>s, n))
    else:
        norm = _file_slow(path)
        out = (norm, (<str>norm).encode("utf-8"))
    _FILE_KEYS.admit(path, out)
    return out


def path_key(path) -> tuple:
    """(normalised path, catalog key, written with a trailing '/') of a file or directory path;
    already-normal str paths share file_key's memo."""
    if _fast(path):
        norm, key = file_key(path)
        return norm, key, False
    norm, trailing = _reference(_check_type(path))
    return norm, (<str>norm).encode("utf-8"), trailing


# -- records -------------------------------------------------------------------------------
cdef inline uint64_t _rd64(const unsigned char* p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef class Record:
    """A catalog record (docs/FORMAT.md §5): what the B+tree stores for each path."""
    cdef int _kind
    cdef int _storage
    cdef unsigned int _mode
    cdef unsigned long long _size
    cdef long long _ctime_ns
    cdef long long _mtime_ns
    cdef unsigned long long _checksum
    cdef public object payload
    cdef public object chunk_key    # page-cache key of a one-chunk file's content (0: not one)
    cdef public object info         # what stat() made of it (FileInfo), dropped on any change

    @property
    def kind(self):
        return self._kind

    @kind.setter
    def kind(self, int v):
        self._kind = v
        self.info = None

    @property
    def storage(self):
        return self._storage

    @storage.setter
    def storage(self, int v):
        self._storage = v
        self.info = None

    @property
    def mode(self):
        return self._mode

    @mode.setter
    def mode(self, unsigned int v):
        self._mode = v
        self.info = None

    @property
    def size(self):
        return self._size

    @size.setter
    def size(self, unsigned long long v):
        self._size = v
        self.info = None

    @property
    def ctime_ns(self):
        return self._ctime_ns

    @ctime_ns.setter
    def ctime_ns(self, long long v):
        self._ctime_ns = v
        self.info = None

    @property
    def mtime_ns(self):
        return self._mtime_ns

    @mtime_ns.setter
    def mtime_ns(self, long long v):
        self._mtime_ns = v
        self.info = None

    @property
    def checksum(self):
        return self._checksum

    @checksum.setter
    def checksum(self, unsigned long long v):
        self._checksum = v
        self.info = None

    def __init__(self, int kind, int storage, unsigned int mode, unsigned long long size,
                 long long ctime_ns, long long mtime_ns, unsigned long long checksum,
                 payload=b"", chunk_key=0):
        self._kind = kind
        self._storage = storage
        self._mode = mode
        self._size = size
        self._ctime_ns = ctime_ns
        self._mtime_ns = mtime_ns
        self._checksum = checksum
        self.payload = payload
        self.chunk_key = chunk_key

    def encode(self) -> bytes:
        """The record as stored: the 40-byte header, then the payload."""
        cdef bytes pl = self.payload if type(self.payload) is bytes else bytes(self.payload)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(pl)
        cdef bytes out
        cdef unsigned char* o
        cdef uint16_t zero = 0
        cdef uint64_t u
        cdef int64_t t
        if not (0 <= self._kind <= 255 and 0 <= self._storage <= 255):
            return _RECORD.pack(self.kind, self.storage, 0, self.mode, self.size, self.ctime_ns,
                                self.mtime_ns, self.checksum) + pl     # raises struct.error
        out = PyBytes_FromStringAndSize(NULL, REC_SIZE + n)
        o = <unsigned char*>PyBytes_AS_STRING(out)
        o[0] = <uint8_t>self._kind
        o[1] = <uint8_t>self._storage
        memcpy(o + 2, &zero, 2)
        memcpy(o + 4, &self._mode, 4)
        u = self._size
        memcpy(o + 8, &u, 8)
        t = self._ctime_ns
        memcpy(o + 16, &t, 8)
        t = self._mtime_ns
        memcpy(o + 24, &t, 8)
        u = self._checksum
        memcpy(o + 32, &u, 8)
        if n:
            memcpy(o + REC_SIZE, PyBytes_AS_STRING(pl), n)
        return out

    @property
    def is_dir(self) -> bool:
        return self._kind == K_DIR

    @property
    def n_chunks(self) -> int:
        return self._size // CHUNK + (self._size % CHUNK != 0)     # no overflow near 2**64

    def _fields(self) -> tuple:
        return (self._kind, self._storage, self._mode, self._size, self._ctime_ns, self._mtime_ns,
                self._checksum, self.payload, self.chunk_key)

    def __eq__(self, other):
        if type(other) is not Record:
            return NotImplemented
        return self._fields() == (<Record>other)._fields()

    __hash__ = None

    def __repr__(self) -> str:
        return ("Record(kind={!r}, storage={!r}, mode={!r}, size={!r}, ctime_ns={!r}, "
                "mtime_ns={!r}, checksum={!r}, payload={!r}, chunk_key={!r})").format(*self._fields())

    def __reduce__(self):
        return (Record, self._fields())


cdef inline void _fill_chunk_key(Record rec):
    cdef const unsigned char* p
    if rec._storage == S_CHUNKS and rec._size <= CHUNK and type(rec.payload) is bytes \
            and PyBytes_GET_SIZE(rec.payload) == 16:
        p = <const unsigned char*>PyBytes_AS_STRING(rec.payload)
        rec.chunk_key = (<object>_rd64(p) << 64) | <object>_rd64(p + 8)


def with_chunk_key(Record rec) -> Record:
    """Fill in chunk_key for a file stored as exactly one chunk."""
    if rec._storage == S_CHUNKS and rec._size <= CHUNK:
        if type(rec.payload) is not bytes or PyBytes_GET_SIZE(rec.payload) != 16:
            raise _struct.error("unpack requires a buffer of 16 bytes")
        _fill_chunk_key(rec)
    return rec


cdef Record _decode(const unsigned char* v, Py_ssize_t n, object value, object where):
    """A record from its stored bytes, sanity-checked; `where` (a str, or a callable giving
    one) only names it in the error."""
    cdef Record rec
    cdef int kind, storage
    cdef uint32_t mode
    cdef uint64_t size, csum
    cdef int64_t ctime, mtime
    cdef Py_ssize_t pl = n - REC_SIZE
    cdef bint ok
    if n < REC_SIZE:
        raise CorruptionError(f"{_where(where)}: catalog record is {n} bytes, too short")
    kind = v[0]
    storage = v[1]
    memcpy(&mode, v + 4, 4)
    memcpy(&size, v + 8, 8)
    memcpy(&ctime, v + 16, 8)
    memcpy(&mtime, v + 24, 8)
    memcpy(&csum, v + 32, 8)
    if kind == K_DIR:
        ok = storage == S_EMPTY and size == 0
    elif kind == K_FILE:
        if storage == S_EMPTY:
            ok = size == 0
        elif storage == S_INLINE:
            ok = <uint64_t>pl == size
        elif storage == S_CHUNKS:
            ok = size > 0 and <uint64_t>pl == 16 * (size // CHUNK + (size % CHUNK != 0))
        elif storage == S_XMAP:
            ok = size > 0 and pl == XMAP_REF_SIZE
        else:
            ok = False
    else:
        ok = False
    if not ok:
        raise CorruptionError(f"{_where(where)}: malformed catalog record (kind {kind}, "
                              f"storage {storage}, size {size})")
    rec = Record.__new__(Record)
    rec._kind = kind
    rec._storage = storage
    rec._mode = mode
    rec._size = size
    rec._ctime_ns = ctime
    rec._mtime_ns = mtime
    rec._checksum = csum
    rec.payload = b"" if pl == 0 else PyBytes_FromStringAndSize(<const char*>v + REC_SIZE, pl)
    rec.chunk_key = 0
    if storage == S_CHUNKS and size <= CHUNK:
        rec.chunk_key = (<object>_rd64(v + REC_SIZE) << 64) | <object>_rd64(v + REC_SIZE + 8)
    return rec


cdef str _where(object where):
    return where() if callable(where) else str(where)


def decode(value, where) -> Record:
    """Parse and sanity-check a record; a malformed one raises CorruptionError."""
    cdef bytes b = value if type(value) is bytes else bytes(value)
    return _decode(<const unsigned char*>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), b, where)


cpdef object get_record(Memo records, object catalog, bytes key, object name):
    """The record under `key` (None if absent), through the per-path memo `records`; `name`
    prefixes errors."""
    cdef object rec = records.lookup(key)
    if rec is not _MISSING:
        return rec
    return _fetch_record(records, catalog, key, name)


cdef object _fetch_record(Memo records, object catalog, bytes key, object name):
    """A memo miss: the record from the catalog, decoded and memoised."""
    cdef object rec
    cdef object value = catalog.get(key)
    if value is None:
        rec = None
    else:
        rec = _decode(<const unsigned char*>PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value),
                      value, _Where(name, key))
    records.admit(key, rec)
    return rec


cdef class _Where:
    """The error prefix of a record, made only when an error needs it."""
    cdef object name
    cdef bytes key

    def __cinit__(self, name, bytes key):
        self.name = name
        self.key = key

    def __call__(self):
        return f"{self.name}:{self.key.decode('utf-8', 'replace')}"


# -- page reads ----------------------------------------------------------------------------
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


def pread_bytes(int fd, Py_ssize_t n, long long offset) -> bytes:
    """os.pread without the intermediate: a bytes object of what was read (short at EOF)."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef Py_ssize_t got = _pread_full(fd, <unsigned char*>PyBytes_AS_STRING(out), n, offset)
    if got != n:
        return out[:got]
    return out


def pread_into(int fd, unsigned char[::1] buf not None, long long offset) -> int:
    """Fill `buf` from `offset`; returns the bytes read (short at EOF)."""
    if buf.shape[0] == 0:
        return 0
    return _pread_full(fd, &buf[0], buf.shape[0], offset)


def checked_chunk(int fd, long long offset, Py_ssize_t n, uint64_t csum) -> object:
    """n bytes of content at `offset` whose xxh3-64 must be `csum`, read into the bytes object
    returned (no staging copy); 1 when the file ends first, 2 when the checksum differs."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    cdef uint64_t h
    if _pread_full(fd, p, n, offset) != n:
        return 1
    with nogil:
        h = XXH3_64bits(p, n)
    return out if h == csum else 2


# -- the cached whole-file read --------------------------------------------------------------
def read_whole(Memo records, object catalog, object name, object cache, object path,
               long long size=-1):
    """read(path)'s hot path, for a whole file (size -1, or at least the file's size): its
    bytes when the record is memoised or found (catalog None: memo only) and the content is
    inline, empty, or one chunk already in the page cache `cache`; None for everything else,
    which the caller takes the general way (errors included)."""
    cdef tuple fk = file_key(path)
    cdef bytes key = <bytes>fk[1]
    cdef object rec = records.lookup(key)
    cdef Record r
    if rec is _MISSING:
        if catalog is None:
            return None
        rec = _fetch_record(records, catalog, key, name)
    if rec is None:
        return None
    r = <Record>rec
    if r._kind != K_FILE or (size >= 0 and <unsigned long long>size < r._size):
        return None
    if r._storage == S_INLINE:
        return r.payload
    if r._storage == S_EMPTY:
        return b""
    if r.chunk_key:
        return cache.get(r.chunk_key)
    return None
