# cython: language_level=3, wraparound=True
"""Copy-on-write B+tree over 4096-byte slotted pages (docs/FORMAT.md §4).

A `Node` is a page held in a bytearray and read through the packed `NodeHeader` struct and its
slot array; `BTree` runs lookups, inserts, deletes, splits and merges on nodes supplied by a
*store* (the pager glue), which owns page allocation, copy-on-write and caching. The store
protocol (cartridge.nodestore.NodeStore; every member is required, BTree binds the first three
once):

    store.dirty: dict                      page_no -> Node, this transaction's dirty nodes
    store.cache                            committed nodes: cache.get(page_no) -> Node | None
    store.load_missing(page_no) -> Node    a committed node neither dirty nor cached (read,
                                           checked and cached by the store)
    store.writable(node) -> Node           node itself if dirty in this txn, else a dirty copy
                                           on a fresh page (the old page is freed)
    store.new_node(leaf: bool, tree_id) -> Node     an empty dirty node on a fresh page
    store.free_node(node)                  the node left the tree
    store.write_overflow(rest: bytes) -> int        page holding the tail of a long key
    store.free_overflow(page_no)
    store.read_overflow(page_no, length) -> bytes   (Node.decode / Node.read need only this)

Keys and values are bytes, ordered by unsigned byte comparison (memcmp, then length).
"""
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdlib cimport free, malloc
from libc.string cimport memchr, memcmp, memcpy, memmove, memset

from cartridge._core.checksum cimport page_checksum
from cartridge._core.layout cimport (CHUNK_ENTRY_SIZE, CHUNK_PAGES, KEY_INLINE, KIND_FILE, MAX_CELL,
                                     MAX_KEY, MAX_NAME_BYTES, NODE_HEADER_SIZE, NODE_USABLE,
                                     PAGE_SIZE, RECORD_SIZE, STORE_CHUNKS, STORE_XMAP,
                                     STORE_PACKED,
                                     TAG_INTERNAL, TAG_LEAF, TAG_SIZE, UNDERFLOW, NodeHeader)
from cartridge.errors import CorruptionError

import os

cdef extern from "<unistd.h>" nogil:
    ssize_t pread(int fd, void* buf, size_t count, long long offset)

cdef extern from "<errno.h>" nogil:
    int errno
    int EINTR


class NodeFormatError(CorruptionError):
    """A node page failed a check (cut short, checksum, structure); the message names the page,
    the caller prefixes the archive."""


cdef inline uint16_t rd16(const unsigned char* p) noexcept nogil:
    cdef uint16_t v
    memcpy(&v, p, 2)
    return v


cdef inline uint64_t rd64(const unsigned char* p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline void wr16(unsigned char* p, uint16_t v) noexcept nogil:
    memcpy(p, &v, 2)


cdef inline void wr64(unsigned char* p, uint64_t v) noexcept nogil:
    memcpy(p, &v, 8)


cdef inline Py_ssize_t cell_size_for(Py_ssize_t key_len, Py_ssize_t val_len) noexcept nogil:
    if key_len > KEY_INLINE:
        return 4 + KEY_INLINE + 8 + val_len
    return 4 + key_len + val_len


cdef inline int cmp_bytes(const unsigned char* a, Py_ssize_t la,
                          const unsigned char* b, Py_ssize_t lb) noexcept nogil:
    cdef Py_ssize_t n = la if la < lb else lb
    cdef int c = memcmp(a, b, n) if n > 0 else 0
    if c != 0:
        return c
    return (la > lb) - (la < lb)


cdef class Node:
    """One B+tree node: a 4096-byte page plus the full keys of its overflow cells."""
    cdef public bytearray data
    cdef unsigned char* p
    cdef public dict ovf          # overflow page -> full key, for cells whose key is long
    cdef list kids                # nodes read from disk (never changed): internal children
                                  # already checked against this node, by child index
    cdef bint committed           # read from disk: never changes while this object lives
    cdef Node checked_by          # a committed leaf: the committed parent it was checked under
    cdef Py_ssize_t checked_ci    # ... as child number checked_ci
    cdef uint32_t* pref           # committed nodes: the 4 key bytes after the keys' common
    cdef Py_ssize_t cp            # prefix (big-endian, zero padded), one per cell: a search
                                  # probes this array, not cells spread over the page

    def __dealloc__(self):
        if self.pref != NULL:
            free(self.pref)

    def __cinit__(self, data=None):
        if data is None:
            self.data = bytearray(PAGE_SIZE)
        else:
            if len(data) != PAGE_SIZE:
                raise NodeFormatError("node page is not 4096 bytes")
            self.data = bytearray(data)
        self.p = <unsigned char*>PyByteArray_AS_STRING(self.data)
        self.ovf = None

    @staticmethod
    def empty(uint64_t page_no, bint leaf, int tree_id):
        """A fresh, empty node for page `page_no`."""
        cdef Node n = Node()
        cdef NodeHeader* h = <NodeHeader*>n.p
        memcpy(h.tag, TAG_LEAF if leaf else TAG_INTERNAL, TAG_SIZE)
        h.tree_id = tree_id
        h.page_no = page_no
        h.cell_start = PAGE_SIZE
        return n

    @staticmethod
    def decode(page, uint64_t page_no, int tree_id, store):
        """Check a page's structure and wrap it; long keys are completed from their overflow pages.

        The checksum is checked by the caller; this guards every offset so a hostile page can
        never make the kernel read outside the page.
        """
        cdef Node n = Node(page)
        n._validate(page_no, tree_id, store)
        n._from_disk()
        return n

    @staticmethod
    def read(int fd, uint64_t page_no, int tree_id, store):
        """Node page `page_no` read straight from file descriptor `fd` into a new node, its
        checksum and structure checked; NodeFormatError when the page is cut short, its checksum
        does not match or its structure is bad."""
        cdef Node n = Node.__new__(Node)
        cdef uint64_t stored
        cdef Py_ssize_t got = 0
        cdef ssize_t r = 0
        cdef long long off = <long long>page_no * PAGE_SIZE
        with nogil:
            while got < PAGE_SIZE:
                r = pread(fd, n.p + got, PAGE_SIZE - got, off + got)
                if r <= 0:
                    if r < 0 and errno == EINTR:
                        continue
                    break
                got += r
        if r < 0:
            raise OSError(errno, os.strerror(errno))
        if got != PAGE_SIZE:
            raise NodeFormatError(f"page {page_no} is cut short")
        stored = (<NodeHeader*>n.p).checksum
        if page_checksum(n.p, PAGE_SIZE) != stored:
            raise NodeFormatError(f"checksum mismatch in B-tree page {page_no}")
        n._validate(page_no, tree_id, store)
        n._from_disk()
        return n

    cdef inline void _from_disk(self):
        """A committed node, read from disk: it never changes, so an internal node may keep
        its checked internal children (the upper levels stay decoded while it lives)."""
        cdef NodeHeader* h = <NodeHeader*>self.p
        self.committed = True
        if memcmp(h.tag, TAG_INTERNAL, TAG_SIZE) == 0:
            self.kids = [None] * (h.nkeys + 1)
        self._index()

    cdef void _index(self) noexcept:
        """Build `pref` (committed nodes of 8+ cells whose keys are all inline: their order was
        checked, so the array is sorted too)."""
        cdef Py_ssize_t n = self.n(), i, j, kl, cp, l0, l1
        cdef unsigned char* k0
        cdef unsigned char* k
        cdef uint32_t v
        if n < 8 or self.ovf is not None or self.pref != NULL:
            return
        k0 = self.cell(0)
        k = self.cell(n - 1)
        l0 = rd16(k0)
        l1 = rd16(k)
        cp = 0
        while cp < l0 and cp < l1 and k0[4 + cp] == k[4 + cp]:
            cp += 1
        self.pref = <uint32_t*>malloc(n * sizeof(uint32_t))
        if self.pref == NULL:
            return
        self.cp = cp
        for i in range(n):
            k = self.cell(i)
            kl = rd16(k)
            v = 0
            for j in range(cp, cp + 4):
                v = (v << 8) | (k[4 + j] if j < kl else 0)
            self.pref[i] = v

    cdef int _validate(self, uint64_t page_no, int tree_id, store) except -1:
        """Structural checks of a page read from disk (see decode)."""
        cdef Node n = self
        cdef NodeHeader* h = <NodeHeader*>n.p
        cdef Py_ssize_t i, off, kl, vl, sz, slot_end, prev_off = -1, pkl = 0
        cdef bint leaf
        cdef bint long_keys = False
        cdef bytes prev = None, key
        if memcmp(h.tag, TAG_LEAF, TAG_SIZE) == 0:
            leaf = True
        elif memcmp(h.tag, TAG_INTERNAL, TAG_SIZE) == 0:
            leaf = False
        else:
            raise NodeFormatError(f"page {page_no}: not a B-tree node")
        if h.page_no != page_no:
            raise NodeFormatError(f"page {page_no}: header names page {h.page_no} (misdirected write)")
        if h.tree_id != tree_id:
            raise NodeFormatError(f"page {page_no}: belongs to tree {h.tree_id}, expected {tree_id}")
        slot_end = NODE_HEADER_SIZE + 2 * <Py_ssize_t>h.nkeys
        if slot_end > h.cell_start or h.cell_start > PAGE_SIZE:
            raise NodeFormatError(f"page {page_no}: slot array overlaps the cell area")
        if not leaf and h.nkeys == 0 and h.right_child == 0:
            raise NodeFormatError(f"page {page_no}: internal node without children")
        for i in range(h.nkeys):
            off = rd16(n.p + NODE_HEADER_SIZE + 2 * i)
            if off < h.cell_start or off + 4 > PAGE_SIZE:
                raise NodeFormatError(f"page {page_no}: cell {i} offset {off} out of range")
            kl = rd16(n.p + off)
            vl = rd16(n.p + off + 2)
            if kl == 0 or kl > MAX_KEY or (not leaf and vl != 8):
                raise NodeFormatError(f"page {page_no}: cell {i} has bad lengths")
            sz = cell_size_for(kl, vl)
            if off + sz > PAGE_SIZE:
                raise NodeFormatError(f"page {page_no}: cell {i} runs past the page end")
            if kl > KEY_INLINE:
                long_keys = True
                ovp = rd64(n.p + off + 4 + KEY_INLINE)
                rest = store.read_overflow(ovp, kl - KEY_INLINE)
                if n.ovf is None:
                    n.ovf = {}
                n.ovf[ovp] = PyBytes_FromStringAndSize(<char*>n.p + off + 4, KEY_INLINE) + rest
            elif not long_keys:
                # keys strictly increasing, compared in place while no key is long
                if prev_off >= 0 and cmp_bytes(n.p + prev_off + 4, pkl, n.p + off + 4, kl) >= 0:
                    raise NodeFormatError(f"page {page_no}: keys out of order at cell {i}")
                prev_off = off
                pkl = kl
        if long_keys:
            for i in range(h.nkeys):
                key = n.key(i)
                if prev is not None and prev >= key:
                    raise NodeFormatError(f"page {page_no}: keys out of order at cell {i}")
                prev = key
        return 0

    # -- header --------------------------------------------------------------------------
    @property
    def page_no(self):
        return (<NodeHeader*>self.p).page_no

    @page_no.setter
    def page_no(self, uint64_t v):
        (<NodeHeader*>self.p).page_no = v

    @property
    def is_leaf(self):
        return memcmp((<NodeHeader*>self.p).tag, TAG_LEAF, TAG_SIZE) == 0

    cdef inline bint leaf(self) noexcept:
        """is_leaf without the property call (the descents' loop test)."""
        return memcmp((<NodeHeader*>self.p).tag, TAG_LEAF, TAG_SIZE) == 0

    @property
    def tree_id(self):
        return (<NodeHeader*>self.p).tree_id

    @property
    def nkeys(self):
        return (<NodeHeader*>self.p).nkeys

    @property
    def right_child(self):
        return (<NodeHeader*>self.p).right_child

    @right_child.setter
    def right_child(self, uint64_t v):
        (<NodeHeader*>self.p).right_child = v

    cdef inline Py_ssize_t n(self) noexcept:
        return (<NodeHeader*>self.p).nkeys

    cdef inline unsigned char* cell(self, Py_ssize_t i) noexcept:
        return self.p + rd16(self.p + NODE_HEADER_SIZE + 2 * i)

    def used_bytes(self) -> int:
        """Bytes taken by live cells and their slots."""
        cdef NodeHeader* h = <NodeHeader*>self.p
        return (PAGE_SIZE - h.cell_start - h.frag) + 2 * h.nkeys

    # -- cells ---------------------------------------------------------------------------
    cdef int compare_at(self, Py_ssize_t i, const unsigned char* k, Py_ssize_t kl) except? -2:
        cdef unsigned char* c = self.cell(i)
        cdef Py_ssize_t cl = rd16(c)
        cdef int r
        cdef bytes full
        if cl <= KEY_INLINE:
            return cmp_bytes(c + 4, cl, k, kl)
        r = memcmp(c + 4, k, KEY_INLINE if kl > KEY_INLINE else kl)
        if r != 0:
            return r
        if kl <= KEY_INLINE:
            return 1   # the stored key is longer and shares the whole probe as a prefix
        full = self.ovf[rd64(c + 4 + KEY_INLINE)]
        return cmp_bytes(<unsigned char*>PyBytes_AS_STRING(full), cl, k, kl)

    cdef Py_ssize_t lower_bound(self, const unsigned char* k, Py_ssize_t kl) except -1:
        """First index whose key is >= k."""
        cdef Py_ssize_t lo = 0, hi = self.n(), mid
        if self.pref != NULL and self._pref_range(k, kl, &lo, &hi):
            return lo
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.compare_at(mid, k, kl) < 0:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef bint _pref_range(self, const unsigned char* k, Py_ssize_t kl, Py_ssize_t* lo,
                          Py_ssize_t* hi) noexcept:
        """Narrow [lo, hi) to the cells whose `pref` equals the probe's; True when that
        settles the answer (the probe sorts before or after every cell: lo is it)."""
        cdef Py_ssize_t cp = self.cp, n = self.n(), a, b, mid, j
        cdef const unsigned char* c0 = self.cell(0) + 4
        cdef int r = memcmp(k, c0, cp if kl > cp else kl) if (cp if kl > cp else kl) > 0 else 0
        cdef uint32_t v = 0
        if r < 0 or (r == 0 and kl < cp):
            lo[0] = 0
            return True
        if r > 0:
            lo[0] = n
            return True
        for j in range(cp, cp + 4):
            v = (v << 8) | (k[j] if j < kl else 0)
        a = 0
        b = n
        while a < b:                   # first cell with pref >= v
            mid = (a + b) >> 1
            if self.pref[mid] < v:
                a = mid + 1
            else:
                b = mid
        lo[0] = a
        b = n
        while a < b:                   # first cell with pref > v
            mid = (a + b) >> 1
            if self.pref[mid] <= v:
                a = mid + 1
            else:
                b = mid
        hi[0] = a
        if lo[0] == hi[0]:
            return True
        return False

    cdef Py_ssize_t upper_bound(self, const unsigned char* k, Py_ssize_t kl) except -1:
        """First index whose key is > k."""
        cdef Py_ssize_t lo = 0, hi = self.n(), mid
        if self.pref != NULL and self._pref_range(k, kl, &lo, &hi):
            return lo
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.compare_at(mid, k, kl) <= 0:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def search(self, bytes key):
        """(index, found): position of `key` in this node, or where it would be inserted."""
        cdef Py_ssize_t i = self.lower_bound(<unsigned char*>PyBytes_AS_STRING(key), len(key))
        return i, (i < self.n() and self.compare_at(i, <unsigned char*>PyBytes_AS_STRING(key),
                                                      len(key)) == 0)

    cpdef bytes key(self, Py_ssize_t i):
        """Full key of cell i."""
        cdef unsigned char* c = self.cell(i)
        cdef Py_ssize_t kl = rd16(c)
        if kl <= KEY_INLINE:
            return PyBytes_FromStringAndSize(<char*>c + 4, kl)
        return self.ovf[rd64(c + 4 + KEY_INLINE)]

    cpdef uint64_t overflow_page(self, Py_ssize_t i):
        """Overflow page of cell i, or 0 when its key is stored whole."""
        cdef unsigned char* c = self.cell(i)
        if rd16(c) <= KEY_INLINE:
            return 0
        return rd64(c + 4 + KEY_INLINE)

    cdef inline unsigned char* value_ptr(self, Py_ssize_t i, Py_ssize_t* vl) noexcept:
        cdef unsigned char* c = self.cell(i)
        cdef Py_ssize_t kl = rd16(c)
        vl[0] = rd16(c + 2)
        return c + 4 + (KEY_INLINE + 8 if kl > KEY_INLINE else kl)

    cpdef bytes value(self, Py_ssize_t i):
        """Value bytes of cell i."""
        cdef Py_ssize_t vl
        cdef unsigned char* v = self.value_ptr(i, &vl)
        return PyBytes_FromStringAndSize(<char*>v, vl)

    def content_cells_from(self, uint64_t lo):
        """Catalog leaves (compaction, docs/FORMAT.md §12.5): the indexes of the cells whose
        record may own a content or chunk-map page numbered `lo` or more - file records with
        an XMAP, and file records with a chunk map any of whose chunks reaches `lo` (a chunk
        spans at most CHUNK_PAGES pages) or whose map is not a whole number of entries. Every
        other cell (directories, empty and inline files, chunk maps wholly below `lo`) is
        skipped here, without a Python object per cell."""
        cdef Py_ssize_t i, j, vl, n = self.n()
        cdef unsigned char* v
        cdef uint64_t top
        cdef bint hit
        out = []
        for i in range(n):
            v = self.value_ptr(i, &vl)
            if vl < 2 or v[0] != KIND_FILE:
                continue
            if v[1] == STORE_XMAP or v[1] == STORE_PACKED:
                # packed (FORMAT §14): the whole pack's pages may be wanted; cheap to decode
                out.append(i)
            elif v[1] == STORE_CHUNKS:
                if vl < RECORD_SIZE or (vl - RECORD_SIZE) % CHUNK_ENTRY_SIZE:
                    out.append(i)           # malformed: the caller decodes it and reports
                    continue
                hit = False
                j = RECORD_SIZE
                while j < vl:
                    top = rd64(v + j)
                    if top + CHUNK_PAGES > lo:
                        hit = True
                        break
                    j += CHUNK_ENTRY_SIZE
                if hit:
                    out.append(i)
        return out

    cpdef uint64_t child(self, Py_ssize_t i):
        """Child page i of an internal node (i == nkeys means the right child)."""
        cdef Py_ssize_t vl
        if i == self.n():
            return (<NodeHeader*>self.p).right_child
        return rd64(self.value_ptr(i, &vl))

    cpdef set_child(self, Py_ssize_t i, uint64_t page_no):
        cdef Py_ssize_t vl
        if i == self.n():
            (<NodeHeader*>self.p).right_child = page_no
        else:
            wr64(self.value_ptr(i, &vl), page_no)

    cpdef Py_ssize_t child_index(self, bytes key):
        """Which child of an internal node may hold `key`."""
        return self.upper_bound(<unsigned char*>PyBytes_AS_STRING(key), len(key))

    def raw_cell(self, Py_ssize_t i) -> bytes:
        """Cell i exactly as stored (used to move cells between nodes)."""
        cdef unsigned char* c = self.cell(i)
        return PyBytes_FromStringAndSize(<char*>c, cell_size_for(rd16(c), rd16(c + 2)))

    def cells(self) -> list:
        return [self.raw_cell(i) for i in range(self.n())]

    # -- mutation ------------------------------------------------------------------------
    cdef void compact(self) noexcept:
        """Squeeze out dead bytes so all free space is contiguous."""
        cdef unsigned char tmp[PAGE_SIZE]
        cdef NodeHeader* h = <NodeHeader*>self.p
        cdef Py_ssize_t i, top = PAGE_SIZE, sz
        cdef unsigned char* c
        if h.frag == 0:
            return
        for i in range(h.nkeys):
            c = self.cell(i)
            sz = cell_size_for(rd16(c), rd16(c + 2))
            top -= sz
            memcpy(tmp + top, c, sz)
            wr16(self.p + NODE_HEADER_SIZE + 2 * i, <uint16_t>top)
        memcpy(self.p + top, tmp + top, PAGE_SIZE - top)
        h.cell_start = <uint16_t>top
        h.frag = 0

    def insert_raw(self, Py_ssize_t i, bytes cell, full_key=None) -> bool:
        """Insert a ready-made cell at index i; False when it does not fit."""
        cdef NodeHeader* h = <NodeHeader*>self.p
        cdef Py_ssize_t sz = len(cell)
        cdef Py_ssize_t need = sz + 2
        cdef Py_ssize_t slot_end = NODE_HEADER_SIZE + 2 * h.nkeys
        if h.cell_start - slot_end < need:
            if NODE_USABLE - ((PAGE_SIZE - h.cell_start - h.frag) + 2 * h.nkeys) < need:
                return False
            self.compact()
        h.cell_start -= sz
        memcpy(self.p + h.cell_start, PyBytes_AS_STRING(cell), sz)
        memmove(self.p + NODE_HEADER_SIZE + 2 * (i + 1), self.p + NODE_HEADER_SIZE + 2 * i, 2 * (h.nkeys - i))
        wr16(self.p + NODE_HEADER_SIZE + 2 * i, h.cell_start)
        h.nkeys += 1
        if full_key is not None:
            if self.ovf is None:
                self.ovf = {}
            self.ovf[rd64(self.p + h.cell_start + 4 + KEY_INLINE)] = full_key
        return True

    def remove(self, Py_ssize_t i):
        """Drop cell i (its overflow page, if any, is the caller's to free)."""
        cdef NodeHeader* h = <NodeHeader*>self.p
        cdef unsigned char* c = self.cell(i)
        cdef Py_ssize_t kl = rd16(c)
        cdef Py_ssize_t sz = cell_size_for(kl, rd16(c + 2))
        if kl > KEY_INLINE and self.ovf is not None:
            self.ovf.pop(rd64(c + 4 + KEY_INLINE), None)
        if self.p + h.cell_start == c:
            h.cell_start += sz
        else:
            h.frag += sz
        memmove(self.p + NODE_HEADER_SIZE + 2 * i, self.p + NODE_HEADER_SIZE + 2 * (i + 1), 2 * (h.nkeys - i - 1))
        h.nkeys -= 1
        if h.nkeys == 0:
            h.cell_start = PAGE_SIZE
            h.frag = 0

    def set_value_same_size(self, Py_ssize_t i, bytes value) -> bool:
        """Overwrite cell i's value in place when the size is unchanged."""
        cdef Py_ssize_t vl
        cdef unsigned char* v = self.value_ptr(i, &vl)
        if vl != len(value):
            return False
        memcpy(v, PyBytes_AS_STRING(value), vl)
        return True

    def reset(self, list cells, dict full_keys, uint64_t right_child=0):
        """Rewrite the node to hold exactly `cells` (in order)."""
        cdef NodeHeader* h = <NodeHeader*>self.p
        h.nkeys = 0
        h.cell_start = PAGE_SIZE
        h.frag = 0
        h.right_child = right_child
        memset(self.p + NODE_HEADER_SIZE, 0, PAGE_SIZE - NODE_HEADER_SIZE)
        self.ovf = None
        for i, c in enumerate(cells):
            ovp = 0
            if rd16(<unsigned char*>PyBytes_AS_STRING(c)) > KEY_INLINE:
                ovp = rd64(<unsigned char*>PyBytes_AS_STRING(c) + 4 + KEY_INLINE)
            if not self.insert_raw(i, c, full_keys.get(ovp) if ovp else None):
                raise AssertionError("reset: cells do not fit in one node")

    def seal(self):
        """Store the checksum and return the page (the node's own buffer) ready to write."""
        cdef NodeHeader* h = <NodeHeader*>self.p
        h.checksum = page_checksum(self.p, PAGE_SIZE)
        return self.data

    def copy_to(self, uint64_t page_no):
        """A dirty copy of this node for page `page_no`."""
        cdef Node n = Node(self.data)
        (<NodeHeader*>n.p).page_no = page_no
        n.ovf = dict(self.ovf) if self.ovf else None
        return n


    cdef bint insert_kv(self, Py_ssize_t i, const unsigned char* k, Py_ssize_t kl,
                        bytes value) noexcept:
        """insert_raw() of the cell for a short key (kl <= KEY_INLINE) and `value`, written
        straight into the page; False when it does not fit."""
        cdef NodeHeader* h = <NodeHeader*>self.p
        cdef Py_ssize_t vl = PyBytes_GET_SIZE(value)
        cdef Py_ssize_t sz = 4 + kl + vl
        cdef Py_ssize_t need = sz + 2
        cdef unsigned char* c
        if h.cell_start - (NODE_HEADER_SIZE + 2 * h.nkeys) < need:
            if NODE_USABLE - ((PAGE_SIZE - h.cell_start - h.frag) + 2 * h.nkeys) < need:
                return False
            self.compact()
        h.cell_start -= sz
        c = self.p + h.cell_start
        wr16(c, <uint16_t>kl)
        wr16(c + 2, <uint16_t>vl)
        memcpy(c + 4, k, kl)
        memcpy(c + 4 + kl, PyBytes_AS_STRING(value), vl)
        memmove(self.p + NODE_HEADER_SIZE + 2 * (i + 1), self.p + NODE_HEADER_SIZE + 2 * i, 2 * (h.nkeys - i))
        wr16(self.p + NODE_HEADER_SIZE + 2 * i, h.cell_start)
        h.nkeys += 1
        return True


def make_cell(bytes key, bytes value, uint64_t ovf_page=0) -> bytes:
    """Encode a cell: u16 key_len, u16 val_len, key (inline part) [, u64 overflow page], value."""
    cdef Py_ssize_t kl = len(key), vl = len(value)
    if kl == 0 or kl > MAX_KEY:
        raise ValueError("key length out of range")
    cdef Py_ssize_t sz = cell_size_for(kl, vl)
    if sz > MAX_CELL:
        raise ValueError(f"cell of {sz} bytes exceeds {MAX_CELL}")
    cdef bytearray out = bytearray(sz)
    cdef unsigned char* o = <unsigned char*>PyByteArray_AS_STRING(out)
    wr16(o, <uint16_t>kl)
    wr16(o + 2, <uint16_t>vl)
    if kl > KEY_INLINE:
        memcpy(o + 4, PyBytes_AS_STRING(key), KEY_INLINE)
        wr64(o + 4 + KEY_INLINE, ovf_page)
        memcpy(o + 4 + KEY_INLINE + 8, PyBytes_AS_STRING(value), vl)
    else:
        memcpy(o + 4, PyBytes_AS_STRING(key), kl)
        memcpy(o + 4 + kl, PyBytes_AS_STRING(value), vl)
    return bytes(out)


cdef inline bytes u64le(uint64_t v):
    return PyBytes_FromStringAndSize(<char*>&v, 8)


cdef bytes shortest_separator(bytes left, bytes right):
    """Shortest prefix of `right` that is still greater than `left`."""
    cdef Py_ssize_t n = min(len(left), len(right)), i = 0
    cdef const unsigned char* a = <unsigned char*>PyBytes_AS_STRING(left)
    cdef const unsigned char* b = <unsigned char*>PyBytes_AS_STRING(right)
    while i < n and a[i] == b[i]:
        i += 1
    return right[:i + 1]


def file_has_children(bytes key, bytes below):
    """The damage of a file record `key` with the key `below` under it (a file cannot have
    children): a CorruptionError naming both keys, escaped (undecodable bytes and control
    characters shown as escapes); its `file_with_children` attribute is (key, below)."""
    err = CorruptionError(f"catalog holds a file with entries below it: "
                          f"{key.decode('utf-8', 'backslashreplace')!r} and "
                          f"{below.decode('utf-8', 'backslashreplace')!r}")
    err.file_with_children = (key, below)      # what delete/rename may repair
    return err


cdef int _file_with_children(bytes prefix, object name, const unsigned char* kp,
                             Py_ssize_t kl) except -1:
    """Raise for a directory entry that is both a file record and the parent of a deeper key
    (a damaged catalog: a file cannot have children), naming both keys escaped."""
    raise file_has_children(prefix + name.encode("utf-8"), PyBytes_FromStringAndSize(<char*>kp, kl))


cdef object _stored_name(const unsigned char* p, Py_ssize_t n):
    """A directory entry's name from catalog key bytes, as cartridge.paths.stored_name checks
    it: UTF-8, not empty, '.' or '..', no C0/DEL/C1 control character, at most 255 bytes."""
    cdef Py_ssize_t j
    cdef bint bad = n == 0 or n > MAX_NAME_BYTES or (p[0] == 46 and (n == 1 or (n == 2 and p[1] == 46)))
    cdef object name
    if not bad:
        for j in range(n):
            if p[j] < 0x20 or p[j] == 0x7f or (p[j] == 0xc2 and j + 1 < n and 0x80 <= p[j + 1] <= 0x9f):
                bad = True
                break
    try:
        name = PyUnicode_DecodeUTF8(<char*>p, n, "strict")
    except UnicodeDecodeError:
        raise CorruptionError(f"catalog key is not UTF-8: {PyBytes_FromStringAndSize(<char*>p, n)[:60]!r}") from None
    if bad:
        raise CorruptionError(f"catalog holds an impossible name: {name[:60]!r}")
    return name


cdef class BTree:
    """A copy-on-write B+tree: root page, height and entry count, nodes from `store`."""
    cdef public object store
    cdef public uint64_t root
    cdef public int height
    cdef public uint64_t count
    cdef public int tree_id
    cdef dict _dirty              # store.dirty, looked up without a Python call
    cdef object _cache_get        # store.cache.get, likewise
    cdef object _store_load       # store.load_missing

    def __init__(self, store, uint64_t root=0, int height=0, uint64_t count=0, int tree_id=1):
        self.store = store
        self.root = root
        self.height = height
        self.count = count
        self.tree_id = tree_id
        self._dirty = store.dirty
        self._cache_get = store.cache.get
        self._store_load = store.load_missing

    cdef Node _load(self, uint64_t pno):
        """A node: from the dirty set, then the page cache, then the store (disk)."""
        cdef object n
        n = self._dirty.get(pno)
        if n is not None:
            return <Node>n
        n = self._cache_get(pno)
        if n is not None:
            return <Node>n
        return <Node>self._store_load(pno)

    cdef inline Node _child(self, Node parent, Py_ssize_t ci):
        """Child `ci` of `parent`, checked against its range. Under a committed parent, a
        committed internal child is kept by the parent (later descents skip the cache and the
        check) and a committed leaf remembers the check (both pages can no longer change)."""
        cdef Node child
        cdef object kid
        if parent.kids is not None:
            kid = parent.kids[ci]
            if kid is not None:
                return <Node>kid
        child = self._load(parent.child(ci))
        if child.checked_by is parent and child.checked_ci == ci and child.committed:
            return child            # a committed leaf checked under this committed parent
        _check_child(parent, ci, child)
        if parent.kids is not None and child.committed:
            if child.kids is not None:
                parent.kids[ci] = child
            else:
                child.checked_by = parent
                child.checked_ci = ci
        return child

    cdef Node _writable(self, Node node):
        if node.page_no in self._dirty:
            return node
        return <Node>self.store.writable(node)

    # -- lookup --------------------------------------------------------------------------
    cpdef object get(self, bytes key):
        """Value stored under `key`, or None."""
        cdef Node node
        cdef Py_ssize_t i
        cdef const unsigned char* k = <unsigned char*>PyBytes_AS_STRING(key)
        cdef Py_ssize_t kl = PyBytes_GET_SIZE(key)
        if self.root == 0:
            return None
        cdef int depth = 1
        cdef Node parent
        cdef Py_ssize_t ci
        node = self._load(self.root)
        while not node.leaf():
            depth += 1
            if depth > self.height:
                raise NodeFormatError(f"tree {self.tree_id} is deeper than its height {self.height}")
            parent = node
            node = self._child(parent, parent.upper_bound(k, kl))
        i = node.lower_bound(k, kl)
        if i < node.n() and node.compare_at(i, k, kl) == 0:
            return node.value(i)
        return None

    cpdef object get_path(self, bytes key):
        """get() of a path key ('/...'), which also proves that a file record under it has no
        key below it (key + '/...': damage no writer makes, raised as CorruptionError naming
        both keys). The keys that start with `key` follow it in order, those with a byte below
        '/' after it ('/a-x', '/a.x') before any '/a/...': so the keys after it in the leaf it
        was found in settle it, and only when they run to the leaf's end does a second descent
        look for the first key from key + '/'."""
        cdef Node node, parent
        cdef Py_ssize_t i, j, n, cl, vl
        cdef const unsigned char* k = <unsigned char*>PyBytes_AS_STRING(key)
        cdef Py_ssize_t kl = PyBytes_GET_SIZE(key)
        cdef const unsigned char* c
        cdef const unsigned char* v
        cdef bytes full, below
        cdef int depth = 1
        if self.root == 0:
            return None
        node = self._load(self.root)
        while not node.leaf():
            depth += 1
            if depth > self.height:
                raise NodeFormatError(f"tree {self.tree_id} is deeper than its height {self.height}")
            parent = node
            node = self._child(parent, parent.upper_bound(k, kl))
        i = node.lower_bound(k, kl)
        n = node.n()
        if i >= n or node.compare_at(i, k, kl) != 0:
            return None
        v = node.value_ptr(i, &vl)
        if vl == 0 or v[0] != KIND_FILE:
            return node.value(i)
        for j in range(i + 1, n):
            c = node.cell(j)
            cl = rd16(c)
            if cl <= KEY_INLINE:
                c = c + 4
            else:
                full = node.key(j)
                c = <unsigned char*>PyBytes_AS_STRING(full)
            if cl <= kl or memcmp(c, k, kl) != 0 or c[kl] > 47:
                return node.value(i)        # past every key that starts with key + '/'
            if c[kl] == 47:
                raise file_has_children(key, node.key(j))
        below = self.first_key_from(key + b"/")
        if below is not None and below.startswith(key + b"/"):
            raise file_has_children(key, below)
        return node.value(i)

    def items_from(self, bytes start, Py_ssize_t limit, bytes prefix=None):
        """Up to `limit` (key, value) pairs with key >= start, in order, stopping at the first
        key that does not start with `prefix` (when given)."""
        cdef list out = []
        cdef list stack = []
        cdef Node node
        cdef Py_ssize_t i
        cdef bytes k
        if self.root == 0 or limit <= 0:
            return out
        node = self._seek_leaf(start, stack)
        i, _ = node.search(start)
        while True:
            while i < node.n():
                k = node.key(i)
                if prefix is not None and not k.startswith(prefix):
                    return out
                out.append((k, node.value(i)))
                if len(out) >= limit:
                    return out
                i += 1
            node = self._next_leaf(stack)
            if node is None:
                return out
            i = 0

    def children(self, bytes prefix, int dir_kind):
        """Immediate children of the directory whose keys start with `prefix` (which ends in
        '/'): a dict name -> True for a directory (a record whose first value byte is
        `dir_kind`, or any deeper key), False for a file. Skips each subdirectory's subtree with
        one seek, so it costs O(children * log n). A name no path could have produced (not
        UTF-8, empty, '.', '..', a control character, over 255 bytes) raises CorruptionError."""
        cdef dict out = {}
        cdef list stack
        cdef Node node
        cdef Py_ssize_t i, pl = PyBytes_GET_SIZE(prefix), kl, nl, vl
        cdef bytes start = prefix
        cdef bytes key
        cdef object name
        cdef const unsigned char* kp
        cdef const unsigned char* pp = <unsigned char*>PyBytes_AS_STRING(prefix)
        cdef const unsigned char* slash
        cdef unsigned char* c
        cdef unsigned char* v
        cdef bint is_dir, seek
        if self.root == 0:
            return out
        while True:
            stack = []
            node = self._seek_leaf(start, stack)
            i = node.lower_bound(<unsigned char*>PyBytes_AS_STRING(start), PyBytes_GET_SIZE(start))
            seek = False
            while not seek:
                while i < node.n():
                    c = node.cell(i)
                    kl = rd16(c)
                    if kl <= KEY_INLINE:
                        kp = c + 4
                    else:
                        key = node.key(i)
                        kp = <unsigned char*>PyBytes_AS_STRING(key)
                    if kl < pl or memcmp(kp, pp, pl) != 0:
                        return out
                    slash = <const unsigned char*>memchr(kp + pl, 47, kl - pl)
                    if slash == NULL:
                        nl = kl - pl
                        v = node.value_ptr(i, &vl)
                        is_dir = vl > 0 and v[0] == dir_kind
                    else:
                        nl = slash - (kp + pl)
                        is_dir = True
                    name = _stored_name(kp + pl, nl)
                    if slash != NULL and out.get(name) is False:
                        _file_with_children(prefix, name, kp, kl)
                    if is_dir or name not in out:
                        out[name] = is_dir
                    if slash != NULL:      # skip the subdirectory: '0' follows '/'
                        start = PyBytes_FromStringAndSize(<char*>kp, pl + nl) + b"0"
                        seek = True
                        break
                    i += 1
                if seek:
                    break
                node = self._next_leaf(stack)
                if node is None:
                    return out
                i = 0

    cdef Node _seek_leaf(self, bytes key, list stack):
        """The leaf that may hold `key`, pushing (node, child index) of each level onto
        `stack`; every child is checked against its parent (hostile trees raise)."""
        cdef Node node = self._load(self.root)
        cdef Node parent
        cdef Py_ssize_t i
        while not node.is_leaf:
            i = node.child_index(key)
            stack.append((node, i))
            if len(stack) >= self.height:
                raise NodeFormatError(f"tree {self.tree_id} is deeper than its height {self.height}")
            node = self._child(node, i)
        return node

    cdef Node _next_leaf(self, list stack):
        """The leaf after the one `stack` leads to (None after the last), moving `stack` on."""
        cdef Node parent, node
        cdef Py_ssize_t ci
        while stack:
            parent, ci = stack.pop()
            if ci < parent.n():
                stack.append((parent, ci + 1))
                node = self._load(parent.child(ci + 1))
                _check_child(parent, ci + 1, node)
                while not node.is_leaf:
                    stack.append((node, 0))
                    if len(stack) >= self.height:
                        raise NodeFormatError(f"tree {self.tree_id} is deeper than its height")
                    parent = node
                    node = self._load(parent.child(0))
                    _check_child(parent, 0, node)
                return node
        return None

    def first_key_from(self, bytes start):
        """Smallest key >= start, or None (one descent; no value copied)."""
        cdef Node node, parent
        cdef Py_ssize_t i
        cdef int depth = 1
        if self.root == 0:
            return None
        node = self._load(self.root)
        while not node.is_leaf:
            depth += 1
            if depth > self.height:
                raise NodeFormatError(f"tree {self.tree_id} is deeper than its height {self.height}")
            parent = node
            node = self._child(parent, parent.child_index(start))
        i = node.lower_bound(<unsigned char*>PyBytes_AS_STRING(start), PyBytes_GET_SIZE(start))
        if i < node.n():
            return node.key(i)
        r = self.items_from(start, 1)      # it is in a later leaf: climb the general way
        return r[0][0] if r else None

    # -- mutation ------------------------------------------------------------------------
    cdef list _descend(self, bytes key):
        """Path from the root to the leaf for `key`: [(node, child index), ..., (leaf, -1)]."""
        cdef list path = []
        cdef Node node
        cdef Py_ssize_t i
        node = self._load(self.root)
        while not node.is_leaf:
            i = node.child_index(key)
            path.append([node, i])
            if len(path) >= self.height:
                raise NodeFormatError(f"tree {self.tree_id} is deeper than its height {self.height}")
            node = self._load(node.child(i))
        path.append([node, -1])
        return path

    cdef void _make_path_writable(self, list path):
        """Copy-on-write every node on the path, fixing child pointers up to the root."""
        cdef Py_ssize_t d
        cdef Node node, w
        for d in range(len(path)):
            node = path[d][0]
            w = self._writable(node)
            path[d][0] = w
            if d == 0:
                self.root = w.page_no
            elif w is not node:
                (<Node>path[d - 1][0]).set_child(path[d - 1][1], w.page_no)

    cdef bytes _cell_for(self, bytes key, bytes value):
        cdef uint64_t ovp = 0
        if len(key) > KEY_INLINE:
            ovp = self.store.write_overflow(key[KEY_INLINE:])
        return make_cell(key, value, ovp)

    def put(self, bytes key, bytes value):
        """Insert or replace; returns the previous value or None."""
        cdef Node leaf
        cdef Py_ssize_t i
        cdef bint found
        cdef bytes old = None
        if len(key) == 0 or len(key) > MAX_KEY:
            raise ValueError("key length out of range")
        if cell_size_for(len(key), len(value)) > MAX_CELL:
            raise ValueError("value too large for a cell")
        if self.root == 0:
            leaf = self.store.new_node(True, self.tree_id)
            self.root = leaf.page_no
            self.height = 1
        path = self._descend(key)
        self._make_path_writable(path)
        leaf = path[-1][0]
        i, found = leaf.search(key)
        if found:
            old = leaf.value(i)
            if leaf.set_value_same_size(i, value):
                return old
            ovp = leaf.overflow_page(i)
            full = leaf.key(i) if ovp else None
            cell = make_cell(key, value, ovp)
            leaf.remove(i)
            if leaf.insert_raw(i, cell, full):
                return old
            self._split_insert(path, len(path) - 1, i, cell, full)
            return old
        cell = self._cell_for(key, value)
        full = key if len(key) > KEY_INLINE else None
        self.count += 1
        if not leaf.insert_raw(i, cell, full):
            self._split_insert(path, len(path) - 1, i, cell, full)
        return None

    def put_sorted(self, list keys, list values):
        """Insert or replace many pairs, `keys` strictly ascending: one descent per leaf, not
        per key (the batched write path). Returns the previous values (None for new keys)."""
        cdef Py_ssize_t n = len(keys), i = 0, j, d, idx, kl
        cdef list olds = [None] * n
        cdef list path
        cdef Node leaf, node
        cdef bytes key, value, hi, prev = None, cell
        cdef const unsigned char* k
        cdef object full
        cdef uint64_t ovp
        if len(values) != n:
            raise ValueError("keys and values differ in length")
        for j in range(n):
            key = keys[j]
            value = values[j]
            if len(key) == 0 or len(key) > MAX_KEY:
                raise ValueError("key length out of range")
            if cell_size_for(len(key), len(value)) > MAX_CELL:
                raise ValueError("value too large for a cell")
            if prev is not None and not prev < key:
                raise ValueError("put_sorted: keys must be strictly ascending")
            prev = key
        while i < n:
            if self.root == 0:
                leaf = self.store.new_node(True, self.tree_id)
                self.root = leaf.page_no
                self.height = 1
            path = self._descend(keys[i])
            self._make_path_writable(path)
            leaf = path[-1][0]
            # keys of this leaf lie below the separator of its deepest ancestor that has one
            hi = None
            for d in range(len(path) - 2, -1, -1):
                node = path[d][0]
                if path[d][1] < node.n():
                    hi = node.key(path[d][1])
                    break
            while i < n:
                key = keys[i]
                if hi is not None and key >= hi:
                    break
                value = values[i]
                k = <unsigned char*>PyBytes_AS_STRING(key)
                kl = PyBytes_GET_SIZE(key)
                idx = leaf.lower_bound(k, kl)
                i += 1
                if idx < leaf.n() and leaf.compare_at(idx, k, kl) == 0:
                    olds[i - 1] = leaf.value(idx)
                    if leaf.set_value_same_size(idx, value):
                        continue
                    ovp = leaf.overflow_page(idx)
                    full = leaf.key(idx) if ovp else None
                    cell = make_cell(key, value, ovp)
                    leaf.remove(idx)
                else:
                    self.count += 1
                    if kl <= KEY_INLINE:
                        if leaf.insert_kv(idx, k, kl, value):
                            continue
                        cell = make_cell(key, value)
                        full = None
                    else:
                        cell = self._cell_for(key, value)
                        full = key
                        if leaf.insert_raw(idx, cell, full):
                            continue
                    # the leaf is full (so not empty)
                    if idx == leaf.n() and self._rightmost(path, len(path) - 1):
                        self._append_leaf(path, cell, full)
                    else:
                        self._split_insert(path, len(path) - 1, idx, cell, full)
                    break      # the path changed: descend again for the next key
                if not leaf.insert_raw(idx, cell, full):
                    self._split_insert(path, len(path) - 1, idx, cell, full)
                    break      # the path changed: descend again for the next key
        return olds

    cdef void _append_leaf(self, list path, bytes cell, object full):
        """The last leaf, path[-1], is full and `cell` sorts after all its keys: a new last
        leaf holds it and the full one stays as it is (what _split_insert does for keys that
        arrive in order, without rewriting the left node)."""
        cdef Py_ssize_t d = len(path) - 1
        cdef Node node = path[d][0]
        cdef Node right
        cdef bytes sep, sep_cell
        cdef object sep_full
        right = self.store.new_node(True, self.tree_id)
        right.insert_raw(0, cell, full)
        sep = shortest_separator(node.key(node.n() - 1), right.key(0))
        sep_full = sep if len(sep) > KEY_INLINE else None
        sep_cell = self._cell_for(sep, u64le(node.page_no))
        self._push_up(path, d, right, sep_cell, sep_full)

    cdef void _push_up(self, list path, Py_ssize_t d, Node right, bytes sep_cell, object sep_full):
        """path[d] was split and `right` holds its upper part: put the separator (pointing
        left) into the parent, or into a new root when path[d] was the root."""
        cdef Node root, parent
        cdef Py_ssize_t j
        if d == 0:
            root = self.store.new_node(False, self.tree_id)
            root.reset([sep_cell], {ovp_of(sep_cell): sep_full} if sep_full is not None else {},
                       right.page_no)
            self.root = root.page_no
            self.height += 1
            return
        parent = <Node>path[d - 1][0]
        j = path[d - 1][1]
        # the slot that pointed at path[d] now points at `right`; the new cell points left
        parent.set_child(j, right.page_no)
        if not parent.insert_raw(j, sep_cell, sep_full):
            self._split_insert(path, d - 1, j, sep_cell, sep_full)

    cdef bint _rightmost(self, list path, Py_ssize_t d):
        """Whether path[d] is the last node of its level (every ancestor descends to its right
        child): splits there see ascending inserts, as in a load in key order."""
        cdef Py_ssize_t k
        for k in range(d):
            if path[k][1] != (<Node>path[k][0]).n():
                return False
        return True

    cdef void _split_insert(self, list path, Py_ssize_t d, Py_ssize_t i, bytes cell, object full):
        """Node path[d] is full: split it around the new cell and push a separator up."""
        cdef Node node = path[d][0]
        cdef Node right
        cdef list cells = node.cells()
        cdef dict keys = dict(node.ovf) if node.ovf else {}
        cdef Py_ssize_t total, acc, m
        cdef bytes sep, sep_cell
        cdef object sep_full = None
        cdef uint64_t ovp
        cdef bint append = i == len(cells) and self._rightmost(path, d)
        cells.insert(i, cell)
        if full is not None:
            keys[rd64(<unsigned char*>PyBytes_AS_STRING(cell) + 4 + KEY_INLINE)] = full
        total = sum(len(c) + 2 for c in cells)
        if node.is_leaf:
            acc = 0
            m = 0
            while m < len(cells) - 1 and acc + len(cells[m]) + 2 <= total // 2:
                acc += len(cells[m]) + 2
                m += 1
            m = max(1, m)
            if append:      # keys arrive in order: leave the left node full (SQLite's quick balance)
                m = len(cells) - 1
            right = self.store.new_node(True, self.tree_id)
            node.reset(cells[:m], keys)
            right.reset(cells[m:], keys)
            sep = shortest_separator(node.key(m - 1), right.key(0))
            sep_full = sep if len(sep) > KEY_INLINE else None
            sep_cell = self._cell_for(sep, u64le(node.page_no))
        else:
            acc = 0
            m = 0
            while m < len(cells) - 2 and acc + len(cells[m]) + 2 <= total // 2:
                acc += len(cells[m]) + 2
                m += 1
            m = max(1, m)
            if append and len(cells) >= 3:
                m = len(cells) - 2
            right = self.store.new_node(False, self.tree_id)
            mid = cells[m]
            mid_kl = rd16(<unsigned char*>PyBytes_AS_STRING(mid))
            mid_child = rd64(<unsigned char*>PyBytes_AS_STRING(mid) + len(mid) - 8)
            old_right = node.right_child
            node.reset(cells[:m], keys, mid_child)
            right.reset(cells[m + 1:], keys, old_right)
            # the middle separator moves up, keeping its overflow page; it now points left
            if mid_kl > KEY_INLINE:
                ovp = rd64(<unsigned char*>PyBytes_AS_STRING(mid) + 4 + KEY_INLINE)
                sep_full = keys[ovp]
            sep_cell = mid[:len(mid) - 8] + u64le(node.page_no)
        self._push_up(path, d, right, sep_cell, sep_full)

    cdef tuple _writable_path_to(self, bytes key):
        """Copy-on-write the path to an existing `key`: (path, index in the leaf), or None."""
        cdef Node leaf
        cdef Py_ssize_t i
        cdef bint found
        if self.root == 0:
            return None
        path = self._descend(key)
        leaf = path[-1][0]
        i, found = leaf.search(key)
        if not found:
            return None
        self._make_path_writable(path)
        return path, i

    def touch(self, bytes key):
        """Copy-on-write the path to `key` without changing it. Returns (leaf, index) so the
        caller can overwrite the value in place (same size), or None when `key` is absent."""
        found = self._writable_path_to(key)
        return None if found is None else (found[0][-1][0], found[1])

    def touch_many(self, list keys):
        """touch() for each key, in one call: [(leaf, index) or None per key]."""
        cdef list out = []
        cdef bytes key
        for key in keys:
            found = self._writable_path_to(key)
            out.append(None if found is None else (found[0][-1][0], found[1]))
        return out

    def delete(self, bytes key):
        """Remove `key`; returns its value or None if absent."""
        cdef Node leaf
        cdef Py_ssize_t i
        found = self._writable_path_to(key)
        if found is None:
            return None
        path, i = found
        leaf = path[-1][0]
        old = leaf.value(i)
        ovp = leaf.overflow_page(i)
        leaf.remove(i)
        if ovp:
            self.store.free_overflow(ovp)
        self.count -= 1
        self._rebalance(path, len(path) - 1)
        return old

    cdef void _rebalance(self, list path, Py_ssize_t d):
        """Merge an underfull node with a sibling; collapse the root when it empties."""
        cdef Node node = path[d][0]
        cdef Node parent, left, l0, r0
        cdef Py_ssize_t j, li, need
        if d == 0:
            if node.n() == 0:
                if node.is_leaf:
                    self.store.free_node(node)
                    self.root = 0
                    self.height = 0
                else:
                    self.root = node.right_child
                    self.height -= 1
                    self.store.free_node(node)
            return
        if node.used_bytes() >= UNDERFLOW and node.n() > 0:
            return
        parent = path[d - 1][0]
        j = path[d - 1][1]
        if parent.n() == 0:      # no sibling to merge with
            if node.n() == 0 and node.is_leaf:
                self._unlink(path, d)
            return
        # merge the pair (child li, child li + 1) separated by parent cell li
        li = j - 1 if j == parent.n() else j
        l0 = self._load(parent.child(li))
        r0 = self._load(parent.child(li + 1))
        need = l0.used_bytes() + r0.used_bytes()
        if not l0.is_leaf:
            need += len(parent.raw_cell(li)) + 2
        if need > NODE_USABLE:     # the pair does not fit in one page
            if node.n() == 0 and node.is_leaf:
                self._unlink(path, d)
            return
        left = self._writable(l0)
        parent.set_child(li, left.page_no)
        self._merge(parent, li, left, r0)
        if parent.n() == 0 and d - 1 == 0:
            self.root = parent.right_child
            self.height -= 1
            self.store.free_node(parent)
            return
        self._rebalance(path, d - 1)

    cdef void _unlink(self, list path, Py_ssize_t d):
        """Remove the empty leaf (or childless internal node) path[d] from its parent, so no
        non-root node is ever left empty; then rebalance the parent."""
        cdef Node node = path[d][0]
        cdef Node parent = path[d - 1][0]
        cdef Py_ssize_t j = path[d - 1][1]
        cdef Py_ssize_t last
        cdef uint64_t ovp, new_right
        self.store.free_node(node)
        if parent.n() == 0:          # its only child is gone: the parent is empty too
            if d - 1 == 0:
                self.store.free_node(parent)
                self.root = 0
                self.height = 0
            else:
                self._unlink(path, d - 1)
            return
        if j < parent.n():
            # drop cell j: child j's key range joins child j + 1's (it held nothing anyway)
            ovp = parent.overflow_page(j)
            parent.remove(j)
        else:
            # the right child goes: child n - 1 becomes the right child
            last = parent.n() - 1
            new_right = parent.child(last)
            ovp = parent.overflow_page(last)
            parent.remove(last)
            parent.set_child(parent.n(), new_right)
        if ovp:
            self.store.free_overflow(ovp)
        self._rebalance(path, d - 1)

    cdef void _merge(self, Node parent, Py_ssize_t li, Node left, Node right):
        """Fold `right` (which must fit) into `left`, drop their separator from the parent."""
        cdef list cells
        cdef dict keys = {}
        cdef bytes sep_cell, pulled
        cdef uint64_t sep_ovp
        sep_cell = parent.raw_cell(li)
        sep_ovp = parent.overflow_page(li)
        if left.ovf:
            keys.update(left.ovf)
        if right.ovf:
            keys.update(right.ovf)
        if left.is_leaf:
            left.reset(left.cells() + right.cells(), keys)
            if sep_ovp:
                self.store.free_overflow(sep_ovp)
        else:
            if sep_ovp:
                keys[sep_ovp] = parent.key(li)
            pulled = sep_cell[:len(sep_cell) - 8] + u64le(left.right_child)
            left.reset(left.cells() + [pulled] + right.cells(), keys, right.right_child)
        # parent: drop separator li; the pointer after it (to `right`) now points to `left`
        parent.remove(li)
        parent.set_child(li, left.page_no)
        self.store.free_node(right)

    def pages(self):
        """Every page of the tree: (page_no, node) for nodes, depth first."""
        if self.root == 0:
            return
        stack = [self.root]
        while stack:
            pno = stack.pop()
            node = self._load(pno)
            yield pno, node
            if not node.is_leaf:
                for i in range(node.nkeys, -1, -1):
                    stack.append(node.child(i))


cdef int _check_child(Node parent, Py_ssize_t ci, Node child) except -1:
    """The keys of child `ci` must lie between the parent's separators ci-1 and ci; a node
    from elsewhere in the tree (a hostile page) would make lookups miss keys that exist."""
    cdef Py_ssize_t n = child.n()
    if n == 0:
        return 0
    if ci > 0 and _cmp_cells(child, 0, parent, ci - 1) < 0:
        raise NodeFormatError(f"page {child.page_no}: keys below its parent's range")
    if ci < parent.n() and _cmp_cells(child, n - 1, parent, ci) >= 0:
        raise NodeFormatError(f"page {child.page_no}: keys above its parent's range")
    return 0


cdef int _cmp_cells(Node a, Py_ssize_t i, Node b, Py_ssize_t j) except? -2:
    """Key i of `a` against key j of `b`, compared in place unless b's key is long."""
    cdef unsigned char* c = b.cell(j)
    cdef Py_ssize_t kl = rd16(c)
    cdef bytes full
    if kl <= KEY_INLINE:
        return a.compare_at(i, c + 4, kl)
    full = b.key(j)
    return a.compare_at(i, <unsigned char*>PyBytes_AS_STRING(full), kl)


cdef uint64_t ovp_of(bytes cell):
    if rd16(<unsigned char*>PyBytes_AS_STRING(cell)) > KEY_INLINE:
        return rd64(<unsigned char*>PyBytes_AS_STRING(cell) + 4 + KEY_INLINE)
    return 0
