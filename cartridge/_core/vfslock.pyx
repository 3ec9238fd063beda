# cython: language_level=3
"""The per-statement VFS calls of a SQLite member file in C (cartridge/sqlite/vfs.py).

In autocommit mode SQLite brackets every statement with xLock(SHARED), xAccess of the journal and
the WAL, xFileSize, xDeviceCharacteristics and xUnlock(NONE). Each went through a Python method
(and a few helpers) of MemberFile / HandleVFS; a point lookup spent more time there than in
SQLite. The kernels here serve the common case of each call with no Python frame and hand
everything else to the Python method it stands for (the reference: the fast path does exactly
what that method does for the same state, tests/test_vfslock.py compares the two):

- FileKernel.x_lock: NONE -> SHARED on a writable handle (a read-only handle pins its snapshot:
  the Python path);
- FileKernel.x_unlock: SHARED -> NONE with no pinned snapshot (ending a write: the Python path);
- AccessKernel: xAccess of a name whose catalog key the VFS already resolved, on a VFS that
  checks no principal's rights;
- Const: a method that returns a constant (xDeviceCharacteristics, xSectorSize).

The lock table (`locks`: lock id -> LockState) and its mutex are the Python module's; lock order
as there: the handle's lock, then the table's mutex.
"""
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject

cimport cartridge._core.layout as L
from cartridge._core.record cimport Record, get_record

cdef enum:
    LOCK_NONE = 0
    LOCK_SHARED = 1
    LOCK_RESERVED = 2


cdef class LockState:
    """The locks held on one database (by id) across this process's connections."""
    cdef public long shared
    cdef public object reserved
    cdef public object pending
    cdef public object exclusive

    def __cinit__(self):
        self.shared = 0
        self.reserved = None
        self.pending = None
        self.exclusive = None


cdef class Const:
    """A callable returning `value` (a VFS method whose answer never changes)."""
    cdef object value

    def __cinit__(self, value):
        self.value = value

    def __call__(self):
        return self.value


cdef class FileKernel:
    """xLock/xUnlock fast paths of one MemberFile `f` (held weakly: f holds the kernel's bound
    methods). slow_lock(f, level) / slow_unlock(f, level): MemberFile.xLock / xUnlock, the reference."""
    cdef object fref, slow_lock, slow_unlock
    cdef object lock, mutex, locks, lock_id, eng, members, ready, busy
    cdef tuple group_keys
    cdef bint fast

    def __init__(self, f, slow_lock, slow_unlock, lock, mutex, dict locks, object lock_id,
                 eng, dict members, tuple group_keys, ready, busy):
        import weakref
        self.fref = weakref.ref(f)
        self.slow_lock = slow_lock
        self.slow_unlock = slow_unlock
        self.lock = lock
        self.mutex = mutex
        self.locks = locks
        self.lock_id = lock_id
        self.eng = eng
        self.members = members
        self.group_keys = group_keys
        self.ready = ready            # () -> engine, raising when the handle is closed/failed
        self.busy = busy              # the exception class of "database is locked"
        self.fast = bool(eng.writable)

    cdef list _group(self):
        cdef list out = []
        cdef PyObject* p
        for k in self.group_keys:
            p = PyDict_GetItem(self.members, k)
            if p != NULL:
                out.append(<object>p)
        return out

    def x_lock(self, int level):
        f = self.fref()
        if f is None:
            return None
        cdef int cur = f.level
        if level <= cur:
            return None
        if level != LOCK_SHARED or cur != LOCK_NONE or not self.fast:
            return self.slow_lock(f, level)
        eng = self.eng
        cdef LockState st
        cdef list group
        cdef long seen
        self.lock.acquire()
        try:
            if eng.closed:                  # closing: the Python path knows what to do
                return self.slow_lock(f, level)
            self.mutex.acquire()
            try:
                group = self._group()
                rollbacks = eng.rollbacks
                for m in group:
                    if m.epoch != rollbacks:
                        m.fresh()
                p = PyDict_GetItem(self.locks, self.lock_id)
                if p == NULL:
                    st = LockState()
                    self.locks[self.lock_id] = st
                else:
                    st = <LockState>p
                if st.pending is not None or st.exclusive is not None:
                    raise self.busy("cartridge: database is locked")
                st.shared += 1
                f.level = LOCK_SHARED
                try:
                    self.ready()                    # _begin_read of a writable handle
                    seen = 0
                    for m in group:
                        m.revalidate_fast()
                        seen += m.reloads
                    f.seen = seen
                except BaseException:
                    st.shared -= 1
                    f.level = LOCK_NONE
                    raise
                f.committed = False                 # a write transaction may begin
            finally:
                self.mutex.release()
        finally:
            self.lock.release()
        return None

    def x_unlock(self, int level):
        f = self.fref()
        if f is None:
            return None
        cdef int cur = f.level
        if level >= cur:
            return None
        if cur != LOCK_SHARED or level != LOCK_NONE or f.pinned is not None:
            return self.slow_unlock(f, level)
        cdef LockState st
        self.lock.acquire()
        try:
            self.mutex.acquire()
            try:
                p = PyDict_GetItem(self.locks, self.lock_id)
                if p != NULL:
                    st = <LockState>p
                    if st.reserved is f:
                        st.reserved = None
                    if st.pending is f:
                        st.pending = None
                    if st.exclusive is f:
                        st.exclusive = None
                    st.shared -= 1
                    if not st.shared and st.reserved is None and st.pending is None:
                        del self.locks[self.lock_id]
                f.level = level
            finally:
                self.mutex.release()
        finally:
            self.lock.release()
        return None


cdef class AccessKernel:
    """xAccess of a private VFS for a name whose key is in `keys` (filled by the Python
    method `slow`, the reference, which answers every other call)."""
    cdef dict keys
    cdef object reg_ref, slow

    def __init__(self, dict keys, reg_ref, slow):
        self.keys = keys
        self.reg_ref = reg_ref
        self.slow = slow

    def __call__(self, pathname, int flags):
        cdef PyObject* p = PyDict_GetItem(self.keys, pathname)
        if p == NULL:
            return self.slow(pathname, flags)
        key = <object>p
        reg = self.reg_ref()
        if reg is None:
            return False
        eng = reg.eng
        if eng.closed:
            return False
        cdef bint exists
        lock = reg.lock
        lock.acquire()
        try:
            eng = reg.ready()
            p = PyDict_GetItem(reg.members, key)
            if p != NULL:
                m = <object>p
                m.revalidate_fast()
                exists = m.exists
                size = m.size
            else:
                rec = get_record(eng.records, eng.catalog, key, eng.name)    # Engine.get
                exists = rec is not None and (<Record>rec)._kind == L.KIND_FILE
                size = rec.size if exists else 0
        finally:
            lock.release()
        if flags == 0:           # SQLITE_ACCESS_EXISTS: as the unix VFS, an empty file is absent
            return exists and size > 0
        if flags == 1:           # SQLITE_ACCESS_READWRITE
            return exists and bool(eng.writable)
        return exists
