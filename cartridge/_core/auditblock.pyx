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


# SHA-256 in C for the batch writer and the block reader: OpenSSL's SHA256_Init/Update/Final,
# found in the libcrypto that Python's own hashlib has already loaded (RTLD_NOLOAD: nothing
# new is loaded), so the hashes are OpenSSL's (SHA-NI where the CPU has it) without a Python
# object or an algorithm lookup per hash. Where they are not found (a Python without OpenSSL,
# another platform), hashlib does the same hashing. A self-test against hashlib decides.
cdef extern from "<dlfcn.h>" nogil:
    void *dlopen(const char *filename, int flags)
    void *dlsym(void *handle, const char *symbol)
    int RTLD_LAZY
    int RTLD_NOLOAD

ctypedef int (*sha_init_fn)(void *c) noexcept nogil
ctypedef int (*sha_update_fn)(void *c, const void *d, size_t n) noexcept nogil
ctypedef int (*sha_final_fn)(unsigned char *md, void *c) noexcept nogil
cdef sha_init_fn _sha_init = NULL
cdef sha_update_fn _sha_update = NULL
cdef sha_final_fn _sha_final = NULL
DEF SHA_CTX_ROOM = 512             # SHA256_CTX is 112 bytes; room to spare


cdef inline void _c_digest(const unsigned char *p, size_t n, unsigned char *out) noexcept nogil:
    cdef unsigned char ctx[SHA_CTX_ROOM]
    _sha_init(ctx)
    _sha_update(ctx, p, n)
    _sha_final(out, ctx)


cdef void _find_sha256():
    global _sha_init, _sha_update, _sha_final
    cdef void *h
    cdef void *f1
    cdef void *f2
    cdef void *f3
    cdef unsigned char out[32]
    cdef unsigned char msg[200]
    try:
        import _hashlib  # noqa: F401   (loads the libcrypto hashlib uses)
    except ImportError:
        return
    for name in (b"libcrypto.so.3", b"libcrypto.so.1.1", b"libcrypto.so", b"libcrypto.3.dylib",
                 b"libcrypto.dylib"):
        h = dlopen(<const char *>name, RTLD_LAZY | RTLD_NOLOAD)
        if h == NULL:
            continue
        f1 = dlsym(h, "SHA256_Init")
        f2 = dlsym(h, "SHA256_Update")
        f3 = dlsym(h, "SHA256_Final")
        if f1 == NULL or f2 == NULL or f3 == NULL:
            continue
        _sha_init, _sha_update, _sha_final = <sha_init_fn>f1, <sha_update_fn>f2, <sha_final_fn>f3
        ok = True
        for n in (0, 3, 55, 56, 64, 65, 119, 200):
            for k in range(n):
                msg[k] = <unsigned char>((k * 7 + n) & 0xFF)
            _c_digest(msg, n, out)
            if PyBytes_FromStringAndSize(<char *>out, 32) != \
                    _sha256(PyBytes_FromStringAndSize(<char *>msg, n)).digest():
                ok = False
        if ok:
            return
        _sha_init = NULL
    _sha_init = NULL


_find_sha256()


cdef inline bytes _digest(const unsigned char *p, Py_ssize_t n):
    cdef unsigned char out[32]
    if _sha_init != NULL:
        _c_digest(p, <size_t>n, out)
        return PyBytes_FromStringAndSize(<char *>out, 32)
    return _sha256(PyBytes_FromStringAndSize(<const char *>p, n)).digest()


def c_sha256() -> bool:
    """Whether the batch writer hashes through OpenSSL's C SHA256() (else through hashlib)."""
    return _sha_init != NULL


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
    cdef unsigned char pre[1 + MAX_RAW]
    cdef unsigned char pair[65]
    cdef list nxt
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
        pre[0] = 0
        memcpy(pre + 1, raw, at)
        lh = _digest(pre, at + 1)
        leaves.append(lh)
        memcpy(pair, PyBytes_AS_STRING(chain), 32)
        memcpy(pair + 32, PyBytes_AS_STRING(lh), 32)
        chain = _digest(pair, 64)
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
            nxt = []
            for k in range(0, len(level), 2):
                pair[0] = 1
                memcpy(pair + 1, PyBytes_AS_STRING(<bytes>level[k]), 32)
                memcpy(pair + 33, PyBytes_AS_STRING(<bytes>level[k + 1]), 32)
                nxt.append(_digest(pair, 65))
            level = nxt
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




# -- the writer's batch: every record of one commit encoded, hashed and chained in one pass ----
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from libc.string cimport memset

DEF TILE_BITS = 4

cdef dict _RESULT_CODE = {"allowed": 0, "denied": 1, "error": 2}
cdef object _ODD = object()
cdef object _U64_END = 1 << 64


cdef inline void _bloom_set(unsigned char *bloom, uint64_t sid) noexcept:
    # FORMAT §13.5: bits h % 512, (h >> 16) % 512, (h >> 32) % 512 of the little-endian
    # 512-bit filter, h = sid * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019 (mod 2^64)
    cdef uint64_t h = sid * <uint64_t>0x9E3779B97F4A7C15 + <uint64_t>0x632BE59BD9B4E019
    cdef uint64_t k
    k = h % 512
    bloom[k >> 3] |= <unsigned char>(1 << (k & 7))
    k = (h >> 16) % 512
    bloom[k >> 3] |= <unsigned char>(1 << (k & 7))
    k = (h >> 32) % 512
    bloom[k >> 3] |= <unsigned char>(1 << (k & 7))


cdef inline bint _hex16(str s, uint64_t *out) noexcept:
    """16 hex digits (either case) to their value; False for anything else."""
    cdef Py_ssize_t k
    cdef Py_UCS4 ch
    cdef uint32_t cv
    cdef uint64_t v = 0
    if len(s) != 16:
        return False
    for k in range(16):
        ch = s[k]
        cv = <uint32_t>ch
        if 48 <= cv <= 57:
            v = (v << 4) | (cv - 48)
        elif 97 <= cv <= 102:
            v = (v << 4) | (cv - 87)
        elif 65 <= cv <= 70:
            v = (v << 4) | (cv - 55)
        else:
            return False
    out[0] = v
    return True


cdef inline object _string_of(object s, dict cache, object intern):
    """(sid, utf-8 bytes) of an interned string; _ODD when s is not a str the format holds."""
    got = cache.get(s)
    if got is not None:
        return got
    if type(s) is not str:
        return _ODD
    b = (<str>s).encode("utf-8", "surrogatepass")
    if PyBytes_GET_SIZE(b) > MAX_STRING:
        return _ODD
    return intern(s, b)


cdef inline Py_ssize_t _grow(bytearray blk, Py_ssize_t extra) except -1:
    cdef Py_ssize_t at = PyByteArray_GET_SIZE(blk)
    PyByteArray_Resize(blk, at + extra)
    return at


def append_batch(list entries, object w, uint64_t n, bytes chain, int64_t last,
                 object intern, object put_hash, object end_block, object fix):
    """Append `entries` (time, principal, action, path, dest, result, size, checksum) to the
    log whose in-memory tail is writer `w` (its block, frontier, prev_time, bloom, mask,
    first_time and string cache `_cache`: str -> (id, UTF-8 bytes)), starting at record `n`
    with chain value `chain` and last time `last`. Each record's compact form goes into the
    tail block (FORMAT §13.4), its canonical bytes (§13.2) are hashed to its leaf hash, which
    extends the hash chain and the Merkle frontier.

    intern(s, utf8) -> (id, utf8): a string not in the cache; put_hash(level, j, hash): a
    complete subtree at a stored level (4, 8, ...); end_block(b, first_time, last_time, mask,
    bloom bytes, block bytes): block b completed. fix(entry) -> entry: called for an entry a
    field of which is not in the fast form (a time that is not an int/float, a string that is
    not a str or too long, an action that is not printable ASCII, a size or checksum out of
    range, a checksum given as hex): returns one that is, or raises.

    Returns (n, chain, last) after the batch."""
    cdef dict cache = w._cache
    cdef bytearray blk = w.block
    cdef list hs = [h for _, h in w.frontier]
    cdef int lv[66]
    cdef int nf = 0, k, i, t
    cdef unsigned char bloom[64]
    cdef unsigned char raw[1 + MAX_RAW]
    cdef unsigned char comp[1 + 10 * 6 + 8]
    cdef unsigned char pair[65]
    cdef unsigned char *bp = NULL
    cdef int64_t prev_time = w.prev_time, first_time = w.first_time, t_us, dt
    cdef int mask = w.mask, code, L
    cdef unsigned char flags
    cdef uint64_t sz = 0, cs = 0, aid = 0
    cdef uint64_t ids[3]
    cdef uint16_t u16
    cdef Py_ssize_t at, c, start, alen
    cdef bytes ab, leaf
    cdef object e, tm, got, sv, rv
    cdef tuple strs
    cdef int tries
    for _l, _ in w.frontier:
        if nf >= 65:
            raise CorruptionError("audit log: the Merkle frontier is too long")
        lv[nf] = _l
        nf += 1
    b0 = w.bloom.to_bytes(64, "little")
    memcpy(bloom, PyBytes_AS_STRING(b0), 64)
    for e in entries:
        tries = 0
        while True:
            if type(e) is not tuple or len(<tuple>e) < 8:
                raise TypeError("an audit entry is a tuple of 8 fields")
            tm = (<tuple>e)[0]
            principal = (<tuple>e)[1]
            action = (<tuple>e)[2]
            path = (<tuple>e)[3]
            dest = (<tuple>e)[4]
            result = (<tuple>e)[5]
            size = (<tuple>e)[6]
            checksum = (<tuple>e)[7]
            flags = 0
            # time
            if type(tm) is float:
                if not -4.6e12 < tm < 4.6e12:
                    got = _ODD
                else:
                    t_us = <int64_t>(<double>tm * 1e6)
                    got = None
            elif type(tm) is int and -TIME_LIMIT < tm < TIME_LIMIT:
                t_us = tm
                got = None
            else:
                got = _ODD
            # result
            if got is None:
                rv = _RESULT_CODE.get(result) if type(result) is str else None
                if rv is None:
                    got = _ODD
                else:
                    code = rv
            # size and checksum
            if got is None and size is not None:
                if type(size) is int and 0 <= size < _U64_END:
                    sz = size
                    flags |= 0x08
                else:
                    got = _ODD
            if got is None and checksum is not None:
                if type(checksum) is int and 0 <= checksum < _U64_END:
                    cs = checksum
                    flags |= 0x10
                elif type(checksum) is str and _hex16(<str>checksum, &cs):
                    flags |= 0x10
                else:
                    got = _ODD
            # strings
            if got is None:
                got = _string_of(action, cache, intern)
                if got is not _ODD:
                    aid = (<tuple>got)[0]
                    ab = (<tuple>got)[1]
                    if not _printable(ab):
                        got = _ODD
            if got is not _ODD:
                strs = (principal, path, dest)
                sv = [None, None, None]
                for k in range(3):
                    if strs[k] is not None:
                        got = _string_of(strs[k], cache, intern)
                        if got is _ODD:
                            break
                        ids[k] = (<tuple>got)[0]
                        sv[k] = (<tuple>got)[1]
                        flags |= 1 << k
            if got is not _ODD:
                break
            if tries:
                raise ValueError(f"audit entry cannot be recorded: {e!r}")
            tries = 1
            e = fix(e)
        if t_us < last:
            t_us = last
        last = t_us
        i = <int>(n % BLOCK_RECORDS)
        if i == 0:
            PyByteArray_Resize(blk, 0)
            _grow(blk, HEAD_SIZE)
            bp = <unsigned char *>PyByteArray_AS_STRING(blk)
            memset(bp, 0, HEAD_SIZE)
            memcpy(bp, b"ALOG", 4)
            memcpy(bp + 8, &n, 8)
            memcpy(bp + 16, PyBytes_AS_STRING(chain), 32)
            memset(bloom, 0, 64)
            mask = 0
            first_time = t_us
        if i % TILE == 0:
            t = i // TILE
            bp = <unsigned char *>PyByteArray_AS_STRING(blk)
            u16 = <uint16_t>PyByteArray_GET_SIZE(blk)
            memcpy(bp + 48 + 2 * t, &u16, 2)
            memcpy(bp + 80 + 8 * t, &t_us, 8)
            prev_time = t_us
        # the canonical bytes, after the leaf prefix 0x00
        alen = PyBytes_GET_SIZE(ab)
        raw[0] = 0
        raw[1] = 1
        raw[2] = <unsigned char>code
        raw[3] = flags
        raw[4] = <unsigned char>alen
        memcpy(raw + 5, &n, 8)
        memcpy(raw + 13, &t_us, 8)
        memcpy(raw + 21, PyBytes_AS_STRING(ab), alen)
        at = 21 + alen
        for k in range(3):
            if flags & (1 << k):
                at = _put_str(raw, at, <bytes>sv[k])
        if flags & 0x08:
            memcpy(raw + at, &sz, 8)
            at += 8
        if flags & 0x10:
            memcpy(raw + at, &cs, 8)
            at += 8
        # the compact form
        comp[0] = <unsigned char>(code | flags << 2)
        dt = t_us - prev_time
        c = _put_varint(comp, 1, <uint64_t>(dt << 1) if dt >= 0 else <uint64_t>(((-dt) << 1) - 1))
        c = _put_varint(comp, c, aid)
        _bloom_set(bloom, aid)
        for k in range(3):
            if flags & (1 << k):
                c = _put_varint(comp, c, ids[k])
                _bloom_set(bloom, ids[k])
        if flags & 0x08:
            c = _put_varint(comp, c, sz)
        if flags & 0x10:
            memcpy(comp + c, &cs, 8)
            c += 8
        start = _grow(blk, c)
        bp = <unsigned char *>PyByteArray_AS_STRING(blk)
        memcpy(bp + start, comp, c)
        u16 = <uint16_t>(i + 1)
        memcpy(bp + 4, &u16, 2)
        mask |= 1 << code
        prev_time = t_us
        # hashes: the leaf, the chain, the frontier (stored levels handed to put_hash)
        leaf = _digest(raw, at)
        memcpy(pair, PyBytes_AS_STRING(chain), 32)
        memcpy(pair + 32, PyBytes_AS_STRING(leaf), 32)
        chain = _digest(pair, 64)
        n += 1
        hs.append(leaf)
        lv[nf] = 0
        nf += 1
        while nf > 1 and lv[nf - 1] == lv[nf - 2]:
            pair[0] = 1
            memcpy(pair + 1, PyBytes_AS_STRING(<bytes>hs[nf - 2]), 32)
            memcpy(pair + 33, PyBytes_AS_STRING(<bytes>hs[nf - 1]), 32)
            node = _digest(pair, 65)
            hs.pop()
            nf -= 1
            hs[nf - 1] = node
            lv[nf - 1] += 1
            L = lv[nf - 1]
            if L % TILE_BITS == 0:
                put_hash(L, (n >> L) - 1, node)
        if n % BLOCK_RECORDS == 0:
            end_block((n - 1) // BLOCK_RECORDS, first_time, t_us, mask,
                      PyBytes_FromStringAndSize(<char *>bloom, 64),
                      PyBytes_FromStringAndSize(PyByteArray_AS_STRING(blk),
                                                PyByteArray_GET_SIZE(blk)))
            PyByteArray_Resize(blk, 0)
    w.frontier = [(lv[k], hs[k]) for k in range(nf)]
    w.prev_time = prev_time
    w.first_time = first_time
    w.mask = mask
    w.bloom = int.from_bytes(PyBytes_FromStringAndSize(<char *>bloom, 64), "little")
    return n, chain, last


# -- a read record in a ring slot (cartridge.audit.log: level "all") ------------------------------
from cpython.unicode cimport PyUnicode_DecodeUTF8

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL

DEF SLOT_HEAD = 12          # time_us i64, result u8, flags u8, 0 u16; then u16-length strings
cdef tuple _RESULTS = ("allowed", "denied", "error")


def pack_slot(object tm, object principal, object action, object path, object dest,
              object result, object size, Py_ssize_t limit):
    """A read record's ring slot (time in float seconds or int µs, result "allowed" /
    "denied" / "error"): time_us, result, flags (1 principal, 2 path, 4 dest, 8 size), then
    action, principal, path, dest as u16 length + UTF-8, then the size (u64). None when a
    field is not in the fast form (not a str, a lone surrogate, an action that is not
    printable ASCII, a size out of range) or the slot would exceed `limit` bytes: the caller
    cleans the entry and packs it the slow way."""
    cdef unsigned char buf[1024]
    cdef int64_t t_us
    cdef unsigned char flags = 0
    cdef Py_ssize_t at = SLOT_HEAD, n, k, i
    cdef const char *p
    cdef uint16_t n16
    cdef uint64_t sz = 0
    cdef object rv, s
    if limit > 1024:
        limit = 1024
    if type(tm) is float and -4.6e12 < tm < 4.6e12:
        t_us = <int64_t>(<double>tm * 1e6)
    elif type(tm) is int and -TIME_LIMIT < tm < TIME_LIMIT:
        t_us = tm
    else:
        return None
    rv = _RESULT_CODE.get(result) if type(result) is str else None
    if rv is None or type(action) is not str:
        return None
    if size is not None:
        if type(size) is not int or not 0 <= size < _U64_END:
            return None
        sz = size
        flags |= 0x08
    try:
        for k, s in enumerate((action, principal, path, dest)):
            if s is None:
                continue
            if type(s) is not str:
                return None
            p = PyUnicode_AsUTF8AndSize(s, &n)
            if k == 0:
                if n < 1 or n > 64:
                    return None
                for i in range(n):
                    if not 0x21 <= (<unsigned char>p[i]) <= 0x7E:
                        return None
            else:
                flags |= 1 << (k - 1)
            if at + 2 + n + 8 > limit:
                return None
            n16 = <uint16_t>n
            memcpy(buf + at, &n16, 2)
            memcpy(buf + at + 2, p, n)
            at += 2 + n
    except UnicodeEncodeError:
        return None                  # a lone surrogate: the slow way keeps it (surrogatepass)
    if flags & 0x08:
        memcpy(buf + at, &sz, 8)
        at += 8
    memcpy(buf, &t_us, 8)
    buf[8] = <unsigned char>(<int>rv)
    buf[9] = flags
    buf[10] = 0
    buf[11] = 0
    return PyBytes_FromStringAndSize(<char *>buf, at)


def unpack_slot(const unsigned char[::1] data not None):
    """The entry of a slot pack_slot made: (time_us, principal, action, path, dest, result,
    size, None, True) (the last field: a read record survives a rollback)."""
    cdef Py_ssize_t n = data.shape[0], at = SLOT_HEAD
    cdef const unsigned char *d = &data[0] if n else NULL
    cdef int64_t t_us
    cdef uint16_t n16
    cdef uint64_t sz
    cdef unsigned char flags, code
    cdef list out = [None, None, None, None]
    cdef int k
    if n < SLOT_HEAD:
        raise ValueError("a ring slot is too short")
    memcpy(&t_us, d, 8)
    code = d[8]
    flags = d[9]
    if code > 2:
        raise ValueError("a ring slot has a bad result")
    for k in range(4):
        if k and not flags & (1 << (k - 1)):
            continue
        if at + 2 > n:
            raise ValueError("a ring slot is cut short")
        memcpy(&n16, d + at, 2)
        if at + 2 + n16 > n:
            raise ValueError("a ring slot is cut short")
        out[k] = PyUnicode_DecodeUTF8(<const char *>d + at + 2, n16, "surrogatepass")
        at += 2 + n16
    size = None
    if flags & 0x08:
        if at + 8 > n:
            raise ValueError("a ring slot is cut short")
        memcpy(&sz, d + at, 8)
        size = sz
    return (t_us, out[1], out[0], out[2], out[3], _RESULTS[code], size, None, True)


def fold_root(list frontier):
    """The Merkle root of a compact range [(level, hash), ...] (largest subtree first): the
    hashes folded from the right, node = SHA-256(0x01 || left || right); None if empty."""
    cdef Py_ssize_t k = len(frontier)
    cdef unsigned char pair[65]
    cdef bytes root, left
    if k == 0:
        return None
    root = (<tuple>frontier[k - 1])[1]
    pair[0] = 1
    for k in range(k - 2, -1, -1):
        left = (<tuple>frontier[k])[1]
        if PyBytes_GET_SIZE(left) != 32 or PyBytes_GET_SIZE(root) != 32:
            raise ValueError("a Merkle hash is 32 bytes")
        memcpy(pair + 1, PyBytes_AS_STRING(left), 32)
        memcpy(pair + 33, PyBytes_AS_STRING(root), 32)
        root = _digest(pair, 65)
    return root
