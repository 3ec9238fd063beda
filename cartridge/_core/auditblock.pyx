# cython: language_level=3
"""The audit log's hot loop: a record block (docs/FORMAT.md §13.4) decoded straight to the
records' canonical bytes (§13.2), their leaf hashes and the hash chain over them.

The pure-Python reader (cartridge.audit.store.parse_block + LogView.to_record) defines the
same result; tests hold the two to agree, byte for byte, and on every rejection.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

import hashlib

from cartridge.errors import CorruptionError

DEF BLOCK_RECORDS = 256
DEF TILE = 16
DEF TILES = 16
DEF HEAD_SIZE = 208
DEF MAX_STRING = 4160
DEF TIME_LIMIT = 1 << 62
DEF MAX_RAW = 20 + 64 + 3 * (2 + MAX_STRING) + 16

cdef object _sha256 = hashlib.sha256


cdef inline uint64_t _u64(const unsigned char *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline int _varint(const unsigned char *d, Py_ssize_t n, Py_ssize_t *pos, uint64_t *out) except -1:
    cdef uint64_t v = 0
    cdef int shift = 0
    cdef unsigned char b
    while True:
        if pos[0] >= n or shift > 63:
            raise CorruptionError("audit block: a number runs past the end")
        b = d[pos[0]]
        pos[0] += 1
        if shift == 63 and b > 1:
            raise CorruptionError("audit block: a number is over 64 bits")
        v |= (<uint64_t>(b & 0x7F)) << shift
        if b < 0x80:
            out[0] = v
            return 0
        shift += 7


cdef inline Py_ssize_t _put_str(unsigned char *raw, Py_ssize_t at, bytes s) except -1:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(s)
    cdef uint16_t n16
    if n > MAX_STRING:
        raise CorruptionError("audit log: an interned string is too long")
    n16 = <uint16_t>n
    memcpy(raw + at, &n16, 2)
    memcpy(raw + at + 2, PyBytes_AS_STRING(s), n)
    return at + 2 + n


def block_records(const unsigned char[::1] data not None, uint64_t block, object string,
                  bytes chain, int64_t prev_time, int lo=0, int hi=BLOCK_RECORDS):
    """Decode record block `block` (its content `data`). `string(id)` returns an interned
    string's UTF-8 bytes. `chain` is the chain value before the block's first record, as the
    reader computed it; `prev_time` the previous record's time (for the order check).

    Returns (count, stored chain before, raws, leaf hashes, chain after, first bad time index
    or -1, last time, Merkle roots of the complete tiles of 16 among them). CorruptionError for a malformed block."""
    cdef Py_ssize_t n = data.shape[0]
    if n < HEAD_SIZE:
        raise CorruptionError(f"audit block {block} is {n} bytes")
    cdef const unsigned char *d = &data[0]
    cdef uint16_t count, zero, off
    cdef int64_t base, tm
    memcpy(&count, d + 4, 2)
    memcpy(&zero, d + 6, 2)
    if d[0:4] != b"ALOG" or zero or count < 1 or count > BLOCK_RECORDS or \
            _u64(d + 8) != block * BLOCK_RECORDS:
        raise CorruptionError(f"audit block {block} has a bad header")
    cdef bytes stored_chain = d[16:48]
    cdef list raws = [], leaves = []
    cdef dict cache = {}
    cdef unsigned char raw[MAX_RAW]
    cdef Py_ssize_t pos = HEAD_SIZE, at
    cdef int i, t, k, bad_time = -1
    cdef unsigned char head, result, flags
    cdef uint64_t v
    cdef uint64_t ids[3]
    cdef uint64_t size = 0, csum = 0, seq
    cdef int64_t prev = 0, dt
    cdef bytes action, s, r, lh
    cdef object h
    for i in range(count):
        t = i // TILE
        if i % TILE == 0:
            memcpy(&off, d + 48 + 2 * t, 2)
            memcpy(&base, d + 80 + 8 * t, 8)
            if off != pos:
                raise CorruptionError(f"audit block {block}: tile {t} is out of place")
            if not -TIME_LIMIT < base < TIME_LIMIT:
                raise CorruptionError(f"audit block {block}: tile {t} has an impossible time")
            prev = base
        if pos >= n:
            raise CorruptionError(f"audit block {block} ends inside record {i}")
        head = d[pos]
        pos += 1
        result = head & 3
        flags = head >> 2
        if result > 2 or flags & ~0x1F:
            raise CorruptionError(f"audit block {block}: record {i} has bad flags")
        _varint(d, n, &pos, &v)
        if v >= 2 * <uint64_t>TIME_LIMIT:
            raise CorruptionError(f"audit block {block}: record {i} has an impossible time")
        dt = <int64_t>(v >> 1) if not v & 1 else -<int64_t>((v + 1) >> 1)
        tm = prev + dt
        if not -TIME_LIMIT < tm < TIME_LIMIT:
            raise CorruptionError(f"audit block {block}: record {i} has an impossible time")
        prev = tm
        if tm < prev_time and bad_time < 0:
            bad_time = i
        prev_time = tm
        _varint(d, n, &pos, &v)
        action = cache.get(v)
        if action is None:
            action = cache[v] = string(v)
        for k in range(3):
            ids[k] = 0
            if flags & (1 << k):
                _varint(d, n, &pos, &ids[k])
        if flags & 0x08:
            _varint(d, n, &pos, &size)
        if flags & 0x10:
            if pos + 8 > n:
                raise CorruptionError(f"audit block {block} ends inside record {i}")
            csum = _u64(d + pos)
            pos += 8
        if i < lo or i >= hi:
            continue
        # the canonical bytes (FORMAT §13.2)
        if PyBytes_GET_SIZE(action) < 1 or PyBytes_GET_SIZE(action) > 64:
            raise CorruptionError(f"audit block {block}: record {i} has a bad action name")
        for k in range(PyBytes_GET_SIZE(action)):
            if not 0x21 <= (<unsigned char>PyBytes_AS_STRING(action)[k]) <= 0x7E:
                raise CorruptionError(f"audit block {block}: record {i} has a bad action name")
        seq = block * BLOCK_RECORDS + i
        raw[0] = 1
        raw[1] = result
        raw[2] = flags
        raw[3] = <unsigned char>PyBytes_GET_SIZE(action)
        memcpy(raw + 4, &seq, 8)
        memcpy(raw + 12, &tm, 8)
        at = 20
        memcpy(raw + at, PyBytes_AS_STRING(action), PyBytes_GET_SIZE(action))
        at += PyBytes_GET_SIZE(action)
        for k in range(3):
            if flags & (1 << k):
                s = cache.get(ids[k])
                if s is None:
                    s = cache[ids[k]] = string(ids[k])
                at = _put_str(raw, at, s)
        if flags & 0x08:
            memcpy(raw + at, &size, 8)
            at += 8
        if flags & 0x10:
            memcpy(raw + at, &csum, 8)
            at += 8
        raw[at] = 0
        r = PyBytes_FromStringAndSize(<char *>raw, at)
        raws.append(r)
        lh = _sha256(b"\x00" + r).digest()
        leaves.append(lh)
        chain = _sha256(chain + lh).digest()
    if pos != n:
        raise CorruptionError(f"audit block {block} has trailing bytes")
    for t in range((count + TILE - 1) // TILE, TILES):
        memcpy(&off, d + 48 + 2 * t, 2)
        memcpy(&base, d + 80 + 8 * t, 8)
        if off or base:
            raise CorruptionError(f"audit block {block}: unused tile {t} is not zero")
    cdef list roots = [], level
    cdef Py_ssize_t a
    for a in range(0, len(leaves) - TILE + 1, TILE):
        if (lo + a) % TILE:
            break
        level = leaves[a:a + TILE]
        while len(level) > 1:
            level = [_sha256(b"\x01" + <bytes>level[k] + <bytes>level[k + 1]).digest()
                     for k in range(0, len(level), 2)]
        roots.append(level[0])
    return count, stored_chain, raws, leaves, chain, bad_time, prev_time, roots


cdef inline Py_ssize_t _put_varint(unsigned char *out, Py_ssize_t at, uint64_t v) noexcept:
    while v >= 0x80:
        out[at] = <unsigned char>((v & 0x7F) | 0x80)
        at += 1
        v >>= 7
    out[at] = <unsigned char>v
    return at + 1


cdef inline bint _printable(bytes a) noexcept:
    cdef Py_ssize_t k, n = PyBytes_GET_SIZE(a)
    cdef const char *p = PyBytes_AS_STRING(a)
    if n < 1 or n > 64:
        return False
    for k in range(n):
        if not 0x21 <= (<unsigned char>p[k]) <= 0x7E:
            return False
    return True


def pack_record(bytearray blk not None, uint64_t seq, int64_t t_us, int64_t prev_time, int code,
                bytes action not None, object principal, object path, object dest,
                uint64_t aid, uint64_t pid, uint64_t path_id, uint64_t dest_id, object size,
                object checksum):
    """Append one record's compact form (FORMAT §13.4) to `blk` and return its canonical
    bytes (§13.2) and leaf hash. `principal`, `path`, `dest` are UTF-8 bytes or None, with
    their string ids; `size` an int or None; `checksum` an int or None. ValueError for a
    field the format cannot hold (what record.encode refuses)."""
    cdef unsigned char raw[MAX_RAW]
    cdef unsigned char comp[8 + 10 * 6 + 8]
    cdef Py_ssize_t at, c = 0
    cdef unsigned char flags = 0
    cdef uint64_t sz = 0, cs = 0
    cdef int64_t dt
    cdef bytes s
    cdef int k
    if code < 0 or code > 2:
        raise ValueError("result code must be 0..2")
    if not _printable(action):
        raise ValueError(f"action must be 1-64 printable ASCII characters: {action!r}")
    if not -TIME_LIMIT < t_us < TIME_LIMIT or seq >= (<uint64_t>1 << 63):
        raise ValueError("seq or time out of range")
    strs = (principal, path, dest)
    for k in range(3):
        if strs[k] is not None:
            if PyBytes_GET_SIZE(<bytes>strs[k]) > MAX_STRING:
                raise ValueError(f"a string of {PyBytes_GET_SIZE(<bytes>strs[k])} bytes is over "
                                 f"the limit of {MAX_STRING}")
            flags |= 1 << k
    if size is not None:
        if type(size) is not int or size < 0 or size >= (1 << 64):
            raise ValueError(f"size must be an int in 0..2^64-1 or None: {size!r}")
        sz = size
        flags |= 0x08
    if checksum is not None:
        if type(checksum) is not int or checksum < 0 or checksum >= (1 << 64):
            raise ValueError("checksum must be a 64-bit int or None")
        cs = checksum
        flags |= 0x10
    raw[0] = 1
    raw[1] = <unsigned char>code
    raw[2] = flags
    raw[3] = <unsigned char>PyBytes_GET_SIZE(action)
    memcpy(raw + 4, &seq, 8)
    memcpy(raw + 12, &t_us, 8)
    at = 20
    memcpy(raw + at, PyBytes_AS_STRING(action), PyBytes_GET_SIZE(action))
    at += PyBytes_GET_SIZE(action)
    for k in range(3):
        if flags & (1 << k):
            at = _put_str(raw, at, <bytes>strs[k])
    if flags & 0x08:
        memcpy(raw + at, &sz, 8)
        at += 8
    if flags & 0x10:
        memcpy(raw + at, &cs, 8)
        at += 8
    # the compact form
    comp[0] = <unsigned char>(code | flags << 2)
    c = 1
    dt = t_us - prev_time
    c = _put_varint(comp, c, <uint64_t>(dt << 1) if dt >= 0 else <uint64_t>(((-dt) << 1) - 1))
    c = _put_varint(comp, c, aid)
    if flags & 1:
        c = _put_varint(comp, c, pid)
    if flags & 2:
        c = _put_varint(comp, c, path_id)
    if flags & 4:
        c = _put_varint(comp, c, dest_id)
    if flags & 0x08:
        c = _put_varint(comp, c, sz)
    if flags & 0x10:
        memcpy(comp + c, &cs, 8)
        c += 8
    blk.extend(PyBytes_FromStringAndSize(<char *>comp, c))
    r = PyBytes_FromStringAndSize(<char *>raw, at)
    return r, _sha256(b"\x00" + r).digest(), flags
