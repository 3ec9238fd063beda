# cython: language_level=3
"""Catalog records in C (docs/FORMAT.md §5.1): Record, decoded straight from the cell bytes
through the packed RecordHeader of layout.pxd, and the memoised record lookup."""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy

cimport cartridge._core.layout as L
from cartridge._core.memo cimport Memo

import struct as _struct

from cartridge._core.btree import file_has_children as _file_has_children
from cartridge.errors import CorruptionError


cdef class Record:
    """A catalog record (docs/FORMAT.md §5): what the B+tree stores for each path. Besides the
    fields: `payload`, `chunk_key` (page-cache key of a one-chunk file's content; 0: not one)
    and `info` (what stat() made of it, a FileInfo, dropped on any change)."""

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
        cdef L.RecordHeader* h
        if not (0 <= self._kind <= 255 and 0 <= self._storage <= 255):
            raise _struct.error("ubyte format requires 0 <= number <= 255")   # as struct.pack
        out = PyBytes_FromStringAndSize(NULL, L.RECORD_SIZE + n)
        h = <L.RecordHeader*>PyBytes_AS_STRING(out)
        h.kind = <uint8_t>self._kind
        h.storage = <uint8_t>self._storage
        h.reserved = 0
        h.mode = self._mode
        h.size = self._size
        h.ctime_ns = self._ctime_ns
        h.mtime_ns = self._mtime_ns
        h.checksum = self._checksum
        if n:
            memcpy(PyBytes_AS_STRING(out) + L.RECORD_SIZE, PyBytes_AS_STRING(pl), n)
        return out

    @property
    def is_dir(self) -> bool:
        return self._kind == L.KIND_DIR

    @property
    def n_chunks(self) -> int:
        return self._size // L.CHUNK_SIZE + (self._size % L.CHUNK_SIZE != 0)     # no overflow near 2**64

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


cdef inline object _chunk_key(const unsigned char* entry):
    """The page-cache key of a one-chunk file's content: its ChunkEntry as one 128-bit int."""
    cdef const L.ChunkEntry* e = <const L.ChunkEntry*>entry
    return (<object>e.start << 64) | <object>e.checksum


cdef inline object _pack_key(const unsigned char* ref, uint64_t checksum):
    """The page-cache key of a packed file's content (FORMAT §14): bit 127 set (no chunk key
    has it: page numbers are below 2^48), the file's byte address in bits 64-126, its checksum
    below."""
    cdef const L.PackRef* r = <const L.PackRef*>ref
    return (1 << 127) | ((<object>r.pack_page * L.PAGE_SIZE + <object>r.offset) << 64) \
        | <object>checksum


def with_chunk_key(Record rec) -> Record:
    """Fill in chunk_key for a file stored as exactly one chunk, or packed."""
    if rec._storage == L.STORE_PACKED:
        if type(rec.payload) is not bytes or PyBytes_GET_SIZE(rec.payload) != L.PACK_REF_SIZE:
            raise _struct.error("unpack requires a buffer of 16 bytes")
        rec.chunk_key = _pack_key(<const unsigned char*>PyBytes_AS_STRING(rec.payload),
                                  rec._checksum)
        return rec
    if rec._storage == L.STORE_CHUNKS and rec._size <= L.CHUNK_SIZE:
        if type(rec.payload) is not bytes or PyBytes_GET_SIZE(rec.payload) != L.CHUNK_ENTRY_SIZE:
            raise _struct.error("unpack requires a buffer of 16 bytes")
        rec.chunk_key = _chunk_key(<const unsigned char*>PyBytes_AS_STRING(rec.payload))
    return rec


cdef Record decode_at(const unsigned char* v, Py_ssize_t n, object where):
    """A record from its stored bytes, sanity-checked; `where` (a str, or a callable giving
    one) only names it in the error."""
    cdef Record rec
    cdef const L.RecordHeader* h = <const L.RecordHeader*>v
    cdef int kind, storage
    cdef uint64_t size
    cdef Py_ssize_t pl = n - L.RECORD_SIZE
    cdef bint ok
    cdef const L.PackRef* pk
    if n < L.RECORD_SIZE:
        raise CorruptionError(f"{_where(where)}: catalog record is {n} bytes, too short")
    kind = h.kind
    storage = h.storage
    size = h.size
    if kind == L.KIND_DIR:
        ok = storage == L.STORE_EMPTY and size == 0
    elif kind == L.KIND_FILE:
        if storage == L.STORE_EMPTY:
            ok = size == 0
        elif storage == L.STORE_INLINE:
            ok = <uint64_t>pl == size
        elif storage == L.STORE_CHUNKS:
            ok = size > 0 and <uint64_t>pl == L.CHUNK_ENTRY_SIZE * (
                size // L.CHUNK_SIZE + (size % L.CHUNK_SIZE != 0))
        elif storage == L.STORE_XMAP:
            ok = size > 0 and pl == L.XMAP_REF_SIZE
        elif storage == L.STORE_PACKED:
            pk = <const L.PackRef*>(v + L.RECORD_SIZE)
            ok = (size > 0 and pl == L.PACK_REF_SIZE and pk.pack_page >= 1
                  and pk.pack_page < (<uint64_t>1 << 48) and pk.reserved == 0
                  and <uint64_t>pk.offset + size <= L.PACK_MAX_PAGES * L.PAGE_SIZE)
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
    rec._mode = h.mode
    rec._size = size
    rec._ctime_ns = h.ctime_ns
    rec._mtime_ns = h.mtime_ns
    rec._checksum = h.checksum
    rec.payload = b"" if pl == 0 else PyBytes_FromStringAndSize(<const char*>v + L.RECORD_SIZE, pl)
    rec.chunk_key = 0
    if storage == L.STORE_CHUNKS and size <= L.CHUNK_SIZE:
        rec.chunk_key = _chunk_key(v + L.RECORD_SIZE)
    elif storage == L.STORE_PACKED:
        rec.chunk_key = _pack_key(v + L.RECORD_SIZE, h.checksum)
    return rec


cdef str _where(object where):
    return where() if callable(where) else str(where)


def decode(value, where) -> Record:
    """Parse and sanity-check a record; a malformed one raises CorruptionError."""
    cdef bytes b = value if type(value) is bytes else bytes(value)
    return decode_at(<const unsigned char*>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), where)


cpdef object get_record(Memo records, object catalog, bytes key, object name):
    """The record under `key` (None if absent), through the per-path memo `records`; `name`
    prefixes errors."""
    cdef PyObject* hit = records.lookup(key)
    if hit != NULL:
        return <object>hit
    return fetch_record(records, catalog, key, name)


cdef object fetch_record(Memo records, object catalog, bytes key, object name):
    """A memo miss: the record from the catalog, decoded and memoised. A path key's record is
    memoised only once it is known not to be a file with entries below it (BTree.get_path) and
    no ancestor of it is a file (_check_ancestors): damage no writer makes, CorruptionError
    naming both keys on every lookup, so a memo hit never needs to look."""
    cdef object rec
    cdef object value
    cdef bint is_path = PyBytes_GET_SIZE(key) > 1 and PyBytes_AS_STRING(key)[0] == 47
    value = catalog.get_path(key) if is_path else catalog.get(key)
    if value is None:
        rec = None
    else:
        rec = decode_at(<const unsigned char*>PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value),
                        _Where(name, key))
        if is_path:
            _check_ancestors(records, catalog, key, name)
    records.admit(key, rec)
    return rec


cdef int _check_ancestors(Memo records, object catalog, bytes key, object name) except -1:
    """Raise CorruptionError if an ancestor of the path key `key`, which holds a record, is a
    file. Nearest first, through the memo (not counted as its hits or misses); it stops at a
    memoised directory record, whose own ancestors were checked when it was memoised (every
    record a lookup memoises went through here; a writer memoises what it wrote after its
    parent checks). Ancestors read from the catalog are memoised once all are known good."""
    cdef const char* s = PyBytes_AS_STRING(key)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(key)
    cdef PyObject* hit
    cdef bytes anc
    cdef object rec, value
    cdef list found = None
    while True:
        end -= 1
        while end > 0 and s[end] != 47:
            end -= 1
        if end <= 0:
            break
        anc = PyBytes_FromStringAndSize(s, end)
        hit = records.lookup_anc(anc)
        if hit != NULL:
            rec = <object>hit
            if rec is None:
                continue
            if (<Record>rec)._kind == L.KIND_FILE:
                raise _file_has_children(anc, key)
            break
        value = catalog.get(anc)
        if value is None:
            rec = None
        else:
            rec = decode_at(<const unsigned char*>PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value),
                            _Where(name, anc))
            if (<Record>rec)._kind == L.KIND_FILE:
                raise _file_has_children(anc, key)
        if found is None:
            found = []
        found.append((anc, rec))
    if found is not None:
        for anc, rec in found:
            records.admit_anc(anc, rec)
    return 0


cdef class _Where:
    """The error prefix of a record, made only when an error needs it."""
    cdef object name
    cdef bytes key

    def __cinit__(self, name, bytes key):
        self.name = name
        self.key = key

    def __call__(self):
        return f"{self.name}:{self.key.decode('utf-8', 'replace')}"
