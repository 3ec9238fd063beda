# cython: language_level=3
"""Page I/O of a SQLite member (cartridge/sqlite/member.py): an overlay of modified 64 KiB chunks over
the member's committed chunks, read and written with memcpy.

`Overlay` holds the hot state (size, dirty chunk buffers, spilled chunks); `cartridge.sqlite.Member`
subclasses it and supplies, in Python, what is rare: `_base_chunk(i)` / `_chunk(i)` to fetch a
chunk that is not in memory yet, `_spill()` when too many chunks are dirty, `_closed_read()` /
`_closed_write()` for a call after the archive closed. The kernel knows no archive handle: bind()
gives it the lock, the engine and the writer check it needs.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport (PyByteArray_AS_STRING, PyByteArray_FromStringAndSize,
                                PyByteArray_GET_SIZE, PyByteArray_Resize)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.object cimport PyObject
from libc.limits cimport LLONG_MAX
from libc.string cimport memcpy, memset

from cartridge._core.layout cimport CHUNK_MASK, CHUNK_SHIFT, CHUNK_SIZE
from cartridge._core.record cimport get_record



cdef inline long long _step(long long pos, long long end, long long* i, long long* lo) noexcept:
    """Chunk index (*i) and offset in it (*lo) of byte `pos`; how many bytes of that chunk lie
    in [pos, end)."""
    i[0] = pos >> CHUNK_SHIFT
    lo[0] = pos & CHUNK_MASK
    return CHUNK_SIZE - lo[0] if CHUNK_SIZE - lo[0] < end - pos else end - pos


cdef int _copy_out(object data, char* dst, long long lo, long long take) except -1:
    """dst[:take] = data[lo:lo+take], zeros past the end of data (a chunk stored short)."""
    cdef Py_buffer buf
    cdef long long got
    PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE)
    try:
        got = buf.len - lo
        if got > take:
            got = take
        if got < 0:
            got = 0
        if got:
            memcpy(dst, <char*>buf.buf + lo, got)
        if got < take:
            memset(dst + got, 0, take - got)
    finally:
        PyBuffer_Release(&buf)
    return 0


cdef class Overlay:
    """Current state of a member: `size`, `exists`, the first `nbase` committed chunks still
    valid, `dirty` (chunk index -> bytearray, maybe shorter than the chunk: zeros follow) and
    `placed` (chunk index -> spilled run). Subclasses define _base_chunk, _chunk and _spill."""

    cdef public long long size
    cdef public long long nbase
    cdef public bint exists
    cdef public bint changed
    cdef public bint poisoned
    cdef public dict dirty
    cdef public dict placed
    cdef public Py_ssize_t spill_at     # more dirty chunks than this: _spill()
    cdef public object epoch            # the engine's rollback count last checked (see fresh)
    cdef public dict ckeys              # committed chunk index -> page-cache key (_base_chunk)
    cdef public object lock             # the archive handle's lock (bind)
    cdef public object eng              # the archive's engine (bind)
    cdef object writer                  # () -> engine, raising unless writing is allowed (bind)
    cdef object cache                   # the engine's page cache
    cdef public object key              # the member's catalog key (the subclass sets it)
    cdef public object rec              # the committed record the overlay applies to

    def __cinit__(self, *args, **kwargs):
        self.dirty = {}
        self.placed = {}
        self.ckeys = {}
        self.spill_at = 256

    def bind(self, lock, eng, writer) -> None:
        """Serve vfs_read/vfs_write under `lock` over engine `eng`; writer() checks (raising)
        that the archive may be written, before each vfs_write."""
        self.lock = lock
        self.eng = eng
        self.writer = writer
        self.cache = eng.pager.cache

    def vfs_read(self, long long amount, long long offset):
        """MemberFile.xRead: read() under the archive handle's lock, after catching up with a
        rollback (fresh); a closed archive is _closed_read()'s business."""
        lock = self.lock
        eng = self.eng
        lock.acquire()
        try:
            if eng.closed:
                return self._closed_read()
            if self.epoch != eng.rollbacks:
                self.fresh()
            return self.read(amount, offset)
        finally:
            lock.release()

    def vfs_size(self):
        """MemberFile.xFileSize: the current size (0 for no file) under the handle's lock,
        after catching up with a rollback (fresh); after the archive closed, as it was."""
        lock = self.lock
        eng = self.eng
        lock.acquire()
        try:
            if not eng.closed and self.epoch != eng.rollbacks:
                self.fresh()
            return self.size if self.exists else 0
        finally:
            lock.release()

    def revalidate_fast(self):
        """revalidate() when the committed record is still ours (the common case: the engine
        hands out the same memoised record object) costs one lookup; else revalidate()."""
        eng = self.eng
        if get_record(eng.records, eng.catalog, self.key, eng.name) is not self.rec:
            self.revalidate()

    def vfs_write(self, data, long long offset):
        """MemberFile.xWrite (a writable file): write() under the handle's lock, as a writer."""
        lock = self.lock
        eng = self.eng
        lock.acquire()
        try:
            if eng.closed and self._closed_write():
                return
            self.writer()
            if self.epoch != eng.rollbacks:
                self.fresh()
            self.write(data, offset)
        finally:
            lock.release()

    cdef object _current(self, long long i):
        """Chunk i as stored now (bytes-like; may be short: zeros follow)."""
        cdef PyObject* p = PyDict_GetItem(self.dirty, i)
        if p is not NULL:
            return <object>p
        if i < self.nbase and PyDict_GetItem(self.placed, i) is NULL:
            p = PyDict_GetItem(self.ckeys, i)
            if p is not NULL:                 # a committed chunk in the page cache: no Python
                data = self.cache.get(<object>p)
                if data is not None:
                    return data
            return self._base_chunk(i)
        return self._chunk(i)

    def read(self, long long amount, long long offset):
        """Bytes [offset, offset+amount) clipped at the end (SQLite zero-fills short reads)."""
        cdef long long size = self.size
        cdef long long end, pos, i, lo, take
        cdef object data, out
        cdef char* dst
        if offset >= size or not self.exists or amount <= 0 or offset < 0:
            return b""
        end = size if amount > size - offset else offset + amount     # no overflow
        i = offset >> CHUNK_SHIFT
        lo = offset & CHUNK_MASK
        if lo + (end - offset) <= CHUNK_SIZE:             # one chunk: the hot path
            data = self._current(i)
            if type(data) is bytes and lo == 0 and end - offset == len(data):
                return data
            out = PyBytes_FromStringAndSize(NULL, end - offset)
            _copy_out(data, PyBytes_AS_STRING(out), lo, end - offset)
            return out
        out = PyBytes_FromStringAndSize(NULL, end - offset)
        dst = PyBytes_AS_STRING(out)
        pos = offset
        while pos < end:
            take = _step(pos, end, &i, &lo)
            _copy_out(self._current(i), dst + (pos - offset), lo, take)
            pos += take
        return out

    def write(self, data, long long offset):
        """Copy `data` into the overlay at `offset` (growing the member), chunk by chunk."""
        cdef Py_buffer src
        cdef long long n, end, pos, i, lo, take, have
        cdef const char* sp
        cdef PyObject* p
        cdef object buf
        cdef dict dirty = self.dirty
        if self.poisoned:
            return                  # a stale connection closing (its checkpoint): never kept
        if offset < 0:
            raise ValueError("negative offset")
        PyObject_GetBuffer(data, &src, PyBUF_SIMPLE)
        try:
            n = src.len
            sp = <const char*>src.buf
            if offset > LLONG_MAX - n:
                raise ValueError("write past the largest file offset")
            if not self.exists:
                self.exists = True
                self.size = 0
                self.nbase = 0
            end = offset + n
            pos = offset
            while pos < end:
                take = _step(pos, end, &i, &lo)
                p = PyDict_GetItem(dirty, i)
                if p is NULL:
                    if lo == 0 and take == CHUNK_SIZE:
                        PyDict_SetItem(dirty, i, PyByteArray_FromStringAndSize(sp + (pos - offset),
                                                                              CHUNK_SIZE))
                        self.placed.pop(i, None)
                        pos += take
                        continue
                    buf = bytearray(self._chunk(i))
                    PyDict_SetItem(dirty, i, buf)
                    self.placed.pop(i, None)
                else:
                    buf = <object>p
                have = PyByteArray_GET_SIZE(buf)
                if have < lo + take:
                    PyByteArray_Resize(buf, lo + take)
                    if have < lo:
                        memset(PyByteArray_AS_STRING(buf) + have, 0, lo - have)
                memcpy(PyByteArray_AS_STRING(buf) + lo, sp + (pos - offset), take)
                pos += take
        finally:
            PyBuffer_Release(&src)
        if end > self.size:
            self.size = end
        self.changed = True
        if len(dirty) > self.spill_at:
            self._spill()


cdef class StatementGuard:
    """The fast path of the exec_trace our connections get (cartridge.sqlite._Guard), run
    before every statement and executemany row: True at once unless the default journal mode
    is still to be set, the database file may be stale or poisoned (MemberFile.stale says for
    sure) or the SQL mentions WAL; then the subclass's slow(cursor, sql, bindings) decides."""

    cdef public object f            # the connection's main database file (MemberFile) or None
    cdef public bint pending        # the default journal mode is still to be set
    cdef Overlay m                  # f's member, engine and registry (bind)
    cdef object eng, reg
    cdef object q_rollbacks, q_reloads     # counters when f was last found not stale (quiet)
    cdef object plain_sql           # the last SQL text seen without "wal" (executemany repeats it)

    def bind(self, f) -> None:
        """Guard the connection whose main database file is `f` (a MemberFile, or None)."""
        self.f = f
        if f is not None:
            self.m = f.m
            self.eng = f.eng
            self.reg = f.reg

    def quiet(self, rollbacks, reloads) -> None:
        """f was not stale with these counters (the engine's rollbacks, the registry's
        reloads): until one of them moves, it still is not."""
        self.q_rollbacks = rollbacks
        self.q_reloads = reloads

    def __call__(self, cursor, sql, bindings):
        if self.pending or (self.f is not None and self._maybe_stale()):
            return self.slow(cursor, sql, bindings)
        if type(sql) is str and sql != self.plain_sql:
            if "wal" in sql.lower():           # any spelling: PRAGMA journal_mode=wAl
                return self.slow(cursor, sql, bindings)
            self.plain_sql = sql
        return True

    cdef bint _maybe_stale(self) except -1:
        f = self.f
        if f.closed:
            return False
        if self.m.poisoned:
            return True
        eng = self.eng
        if eng.closed or f.level == 0:
            return False
        return not (self.q_rollbacks == eng.rollbacks and self.q_reloads == self.reg.reloads)
