"""The audit log on disk (docs/FORMAT.md §13.3-13.7): system catalog entries under b"\\x00audit/".

Entries (each an ordinary file record, §5.5, its content as below):

    head                      the log's head: size, level, chain head, Merkle root, counts
    b/ BLOCK(u64 BE)          record block: BLOCK_RECORDS records in compact form
    h/ LEVEL(u8) GROUP(u64 BE) interior hashes of complete subtrees at LEVEL (4, 8, 12, ...)
    s/ GROUP(u64 BE)          string table: STRINGS_PER_ENTRY interned strings
    i/ SHA-256(string)[:16]   string index: the string's id (u64)
    x/ GROUP(u64 BE)          summaries of complete blocks (times, results, Bloom filter of ids)
    c/ INDEX(u64 BE)          a signed checkpoint

Appending rewrites only the tail: the tail block, the tail page of each hash level that gained
a hash, the tail string entry when a string is new (and its index entry), the summary entry
when a block completes, and the head. A proof reads O(log n) entries: stored hashes at every
4th level, and one tile of 16 records rehashed from its canonical bytes for the lowest levels.

Everything here runs on an Engine (the writer's inside the change that commits the records);
the feature layer (cartridge.audit.log) decides what to record and when.
"""
from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

from .._core.auditblock import append_batch, block_records, fold_root
from ..errors import CartridgeError, CorruptionError
from ..format import AUDIT_PREFIX, DEFAULT_MODE_FILE, KIND_FILE, STORE_EMPTY
from ..records import Record, max_payload
from . import merkle
from . import record as R
from .checkpoint import Checkpoint
from .checkpoint import decode as decode_checkpoint

BLOCK_RECORDS = 256             # records per block (seq // 256 is the block)
TILE_BITS = 4                   # a tile: 16 leaves, rehashed from records when a proof needs it
TILE = 1 << TILE_BITS
TILES_PER_BLOCK = BLOCK_RECORDS // TILE
HASHES_PER_ENTRY = 128          # interior hashes per h/ entry (4 KiB)
STRINGS_PER_ENTRY = 64
SUMMARIES_PER_ENTRY = 32
MAX_LEVEL = 64
LEVELS = ("off", "writes", "all")
CACHE_STRINGS = 100_000         # the writer's string -> id cache (then the index entries)

U64BE = struct.Struct(">Q")
HEAD = struct.Struct("<4sHBBQQ32s32sqQ")   # magic, version, level, 0, size, strings, chain, root,
HEAD_MAGIC = b"AHED"                       # last time_us, checkpoints
LOG_VERSION = 1
BLOCK_HEAD = struct.Struct(f"<4sHHQ32s{TILES_PER_BLOCK}H{TILES_PER_BLOCK}q")
BLOCK_MAGIC = b"ALOG"
SUMMARY = struct.Struct("<qqB7x64s")        # first time, last time, result mask, Bloom (512 bits)
BLOOM_BITS = 512
ZERO32 = bytes(32)
TIME_LIMIT = 1 << 62          # record times are within ±2^62 µs (FORMAT §13.2)

K_HEAD = AUDIT_PREFIX + b"head"
P_BLOCK = AUDIT_PREFIX + b"b/"
P_HASH = AUDIT_PREFIX + b"h/"
P_STRING = AUDIT_PREFIX + b"s/"
P_INDEX = AUDIT_PREFIX + b"i/"
P_SUMMARY = AUDIT_PREFIX + b"x/"
P_CHECKPOINT = AUDIT_PREFIX + b"c/"


def _utf8(s: object, what: str) -> bytes:
    if not isinstance(s, str):
        raise TypeError(f"{what} must be a str or None, not {type(s).__name__}")
    return s.encode("utf-8", "surrogatepass")


def k_block(b: int) -> bytes:
    return P_BLOCK + U64BE.pack(b)


def k_hash(level: int, group: int) -> bytes:
    return P_HASH + bytes([level]) + U64BE.pack(group)


def k_string(group: int) -> bytes:
    return P_STRING + U64BE.pack(group)


def k_index(s: bytes) -> bytes:
    return P_INDEX + hashlib.sha256(s).digest()[:16]


def k_summary(group: int) -> bytes:
    return P_SUMMARY + U64BE.pack(group)


def k_checkpoint(i: int) -> bytes:
    return P_CHECKPOINT + U64BE.pack(i)


def is_audit_key(key: bytes) -> bool:
    """True for a well-formed audit-log system key (verify() accepts these)."""
    if not key.startswith(AUDIT_PREFIX):
        return False
    rest = key[len(AUDIT_PREFIX):]
    if rest == b"head":
        return True
    tag, body = rest[:2], rest[2:]
    if tag in (b"b/", b"s/", b"x/", b"c/"):
        return len(body) == 8
    if tag == b"h/":
        return len(body) == 9 and body[0] % TILE_BITS == 0 and 0 < body[0] <= MAX_LEVEL
    if tag == b"i/":
        return len(body) == 16
    return False


class TreeHead(NamedTuple):
    """The log's size and the Merkle tree head (32 bytes) over its records."""
    size: int
    root: bytes


class Head(NamedTuple):
    size: int
    level: int
    strings: int
    chain: bytes
    root: bytes
    last_time_us: int
    checkpoints: int

    def encode(self) -> bytes:
        return HEAD.pack(HEAD_MAGIC, LOG_VERSION, self.level, 0, self.size, self.strings,
                         self.chain, self.root, self.last_time_us, self.checkpoints)


EMPTY_HEAD = Head(0, 1, 0, ZERO32, merkle.EMPTY_ROOT, 0, 0)


def decode_head(data: bytes, where: str) -> Head:
    if len(data) != HEAD.size:
        raise CorruptionError(f"{where}: audit head is {len(data)} bytes")
    magic, version, level, zero, size, strings, chain, root, last, cps = HEAD.unpack(data)
    if magic != HEAD_MAGIC or version != LOG_VERSION or level >= len(LEVELS) or zero:
        raise CorruptionError(f"{where}: audit head has a bad magic, version or level")
    if size >= 1 << 48 or strings > size * 4 + len(LEVELS) or cps >= 1 << 32:
        raise CorruptionError(f"{where}: audit head names impossible counts")
    return Head(size, level, strings, chain, root, last, cps)


# -- varints --------------------------------------------------------------------------------
def _put_varint(out: bytearray, v: int) -> None:
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CorruptionError("audit block: a number runs past the end")
        b = buf[pos]
        pos += 1
        if shift == 63 and b > 1:
            raise CorruptionError("audit block: a number is over 64 bits")
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v, pos
        shift += 7


def _zigzag(v: int) -> int:
    return (v << 1) if v >= 0 else ((-v << 1) - 1)


def _unzigzag(v: int) -> int:
    return (v >> 1) if not v & 1 else -((v + 1) >> 1)


def _bloom_bits(sid: int) -> tuple[int, int, int]:
    h = (sid * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
    return h % BLOOM_BITS, (h >> 16) % BLOOM_BITS, (h >> 32) % BLOOM_BITS


_MASKS: dict[int, int] = {}


def _string_piece(s: str) -> bytes:
    """One string of a string-table entry: u16 length, UTF-8 bytes (FORMAT §13.3)."""
    b = s.encode("utf-8", "surrogatepass")
    return R.U16.pack(len(b)) + b


_MASKS_CACHED = 1 << 16     # string ids whose Bloom masks are kept


def bloom_add(bloom: int, sid: int) -> int:
    m = _MASKS.get(sid)
    if m is None:
        a, b, c = _bloom_bits(sid)
        m = (1 << a) | (1 << b) | (1 << c)
        if len(_MASKS) < _MASKS_CACHED:
            _MASKS[sid] = m
    return bloom | m


def bloom_has(bloom: int, sid: int) -> bool:
    a, b, c = _bloom_bits(sid)
    return bool(bloom >> a & 1 and bloom >> b & 1 and bloom >> c & 1)


class Compact(NamedTuple):
    """A record in compact form: string ids instead of strings (FORMAT §13.4)."""
    time_us: int
    result: int
    flags: int
    action: int
    principal: int
    path: int
    dest: int
    size: int
    checksum: int


def parse_block(data: bytes, b: int, where: str) -> tuple[int, bytes, list[int], list[int], list[Compact]]:
    """(count, chain before, tile offsets, tile base times, records) of block b's content."""
    if len(data) < BLOCK_HEAD.size:
        raise CorruptionError(f"{where}: audit block {b} is {len(data)} bytes")
    fields = BLOCK_HEAD.unpack_from(data)
    magic, count, zero, first, chain = fields[:5]
    offs = list(fields[5:5 + TILES_PER_BLOCK])
    bases = list(fields[5 + TILES_PER_BLOCK:])
    if magic != BLOCK_MAGIC or zero or not 1 <= count <= BLOCK_RECORDS or first != b * BLOCK_RECORDS:
        raise CorruptionError(f"{where}: audit block {b} has a bad header")
    recs: list[Compact] = []
    pos = BLOCK_HEAD.size
    prev = 0
    for i in range(count):
        t = i // TILE
        if i % TILE == 0:
            if offs[t] != pos:
                raise CorruptionError(f"{where}: audit block {b}: tile {t} is out of place")
            prev = bases[t]
            if not -TIME_LIMIT < prev < TIME_LIMIT:
                raise CorruptionError(f"{where}: audit block {b}: tile {t} has an impossible time")
        if pos >= len(data):
            raise CorruptionError(f"{where}: audit block {b} ends inside record {i}")
        head = data[pos]
        pos += 1
        result, flags = head & 3, head >> 2
        if result > 2 or flags & ~R.F_ALL:
            raise CorruptionError(f"{where}: audit block {b}: record {i} has bad flags")
        dt, pos = _varint(data, pos)
        if dt >= 2 * TIME_LIMIT:
            raise CorruptionError(f"{where}: audit block {b}: record {i} has an impossible time")
        tm = prev + _unzigzag(dt)
        if not -TIME_LIMIT < tm < TIME_LIMIT:
            raise CorruptionError(f"{where}: audit block {b}: record {i} has an impossible time")
        prev = tm
        action, pos = _varint(data, pos)
        principal = path = dest = size = checksum = 0
        if flags & R.F_PRINCIPAL:
            principal, pos = _varint(data, pos)
        if flags & R.F_PATH:
            path, pos = _varint(data, pos)
        if flags & R.F_DEST:
            dest, pos = _varint(data, pos)
        if flags & R.F_SIZE:
            size, pos = _varint(data, pos)
        if flags & R.F_CHECKSUM:
            if pos + 8 > len(data):
                raise CorruptionError(f"{where}: audit block {b} ends inside record {i}")
            (checksum,) = R.U64.unpack_from(data, pos)
            pos += 8
        recs.append(Compact(tm, result, flags, action, principal, path, dest, size, checksum))
    if pos != len(data):
        raise CorruptionError(f"{where}: audit block {b} has trailing bytes")
    for t in range(-(-count // TILE), TILES_PER_BLOCK):
        if offs[t] or bases[t]:
            raise CorruptionError(f"{where}: audit block {b}: unused tile {t} is not zero")
    return count, chain, offs, bases, recs


# -- reading ------------------------------------------------------------------------------------
class LogView:
    """The log as stored in an engine's current state (committed, or the writer's own state
    inside its change). Caches only what never changes once written (complete tiles, full hash
    and string entries); a rollback of the engine clears them."""

    def __init__(self, eng) -> None:
        self.eng = eng
        self._rollbacks = -1
        self.where = f"{eng.name}:<audit log>"   # names the log in error messages
        self.tile_override: dict[int, list[bytes]] = {}   # the writer's partial tile

    def _fresh(self) -> None:
        if self._rollbacks != self.eng.rollbacks:
            self._rollbacks = self.eng.rollbacks
            self._hash_pages: dict[bytes, bytes] = {}
            self._string_pages: dict[int, list[str]] = {}
            self._tiles: dict[int, list[bytes]] = {}
            self._blocks: dict[int, tuple] = {}
            self._sbytes: dict[int, bytes] = {}

    # raw entries
    def read(self, key: bytes) -> bytes | None:
        eng = self.eng
        rec = eng.get(key)
        if rec is None:
            return None
        where = f"{self.where}{key[len(AUDIT_PREFIX):]!r}"
        if rec.kind != KIND_FILE:
            raise CorruptionError(f"{where}: an audit entry is not a file record")
        if rec.storage == STORE_EMPTY:
            return b""
        return bytes(eng.content.read(rec, 0, -1, where))

    def head(self) -> Head:
        data = self.read(K_HEAD)
        return EMPTY_HEAD if data is None else decode_head(data, self.where)

    def tree_head(self) -> TreeHead:
        h = self.head()
        return TreeHead(h.size, h.root)

    # strings
    def string(self, sid: int) -> str:
        self._fresh()
        g = sid // STRINGS_PER_ENTRY
        page = self._string_pages.get(g)
        if page is None or sid % STRINGS_PER_ENTRY >= len(page):
            page = self.string_page(g)     # ids never change their string: any page may be kept
            if len(self._string_pages) > 4096:
                self._string_pages.clear()
            self._string_pages[g] = page
        i = sid % STRINGS_PER_ENTRY
        if i >= len(page):
            raise CorruptionError(f"{self.where}: string {sid} is not in the string table")
        return page[i]

    def string_bytes(self, sid: int) -> bytes:
        self._fresh()
        got = self._sbytes.get(sid)
        if got is None:
            got = self.string(sid).encode("utf-8", "surrogatepass")
            if len(self._sbytes) > 200_000:
                self._sbytes.clear()
            self._sbytes[sid] = got
        return got

    def block_data(self, b: int) -> bytes:
        data = self.read(k_block(b))
        if data is None:
            raise CorruptionError(f"{self.where}: audit block {b} is missing")
        return data

    def string_page(self, g: int) -> list[str]:
        data = self.read(k_string(g))
        if data is None:
            raise CorruptionError(f"{self.where}: string table entry {g} is missing")
        return parse_strings(data, self.where)

    def string_id(self, s: str) -> int | None:
        """The id of an interned string, or None."""
        b = s.encode("utf-8", "surrogatepass")
        data = self.read(k_index(b))
        if data is None:
            return None
        if len(data) != 8:
            raise CorruptionError(f"{self.where}: a string index entry is {len(data)} bytes")
        (sid,) = R.U64.unpack(data)
        return sid if self.string(sid) == s else None

    # blocks and records
    def block(self, b: int) -> tuple[int, bytes, list[int], list[int], list[Compact]]:
        self._fresh()
        got = self._blocks.get(b)
        if got is not None:
            return got
        data = self.read(k_block(b))
        if data is None:
            raise CorruptionError(f"{self.where}: audit block {b} is missing")
        got = parse_block(data, b, self.where)
        if got[0] == BLOCK_RECORDS:
            if len(self._blocks) > 64:
                self._blocks.clear()
            self._blocks[b] = got
        return got

    def to_record(self, seq: int, c: Compact) -> R.AuditRecord:
        s = self.string
        try:
            return R.make(seq, c.time_us, s(c.principal) if c.flags & R.F_PRINCIPAL else None,
                          s(c.action), s(c.path) if c.flags & R.F_PATH else None,
                          s(c.dest) if c.flags & R.F_DEST else None, R.RESULTS[c.result],
                          c.size if c.flags & R.F_SIZE else None,
                          f"{c.checksum:016x}" if c.flags & R.F_CHECKSUM else None)
        except (ValueError, TypeError) as e:
            raise CorruptionError(f"{self.where}: record {seq} cannot be encoded: {e}") from None

    def records(self, lo: int, hi: int) -> Iterator[R.AuditRecord]:
        """Records lo..hi-1 (hi at most the size)."""
        seq = lo
        while seq < hi:
            b = seq // BLOCK_RECORDS
            count, _, _, _, recs = self.block(b)
            i = seq - b * BLOCK_RECORDS
            end = min(count, hi - b * BLOCK_RECORDS)
            if i >= count:
                raise CorruptionError(f"{self.where}: record {seq} is missing")
            for j in range(i, end):
                yield self.to_record(b * BLOCK_RECORDS + j, recs[j])
            seq = b * BLOCK_RECORDS + end

    def record(self, seq: int) -> R.AuditRecord:
        return next(self.records(seq, seq + 1))

    # hashes
    def tile_leaves(self, t: int) -> list[bytes]:
        """Leaf hashes of tile t (records 16t..16t+15 that exist)."""
        self._fresh()
        got = self.tile_override.get(t) or self._tiles.get(t)
        if got is not None:
            return got
        b, i = divmod(t * TILE, BLOCK_RECORDS)
        leaves = block_records(self.block_data(b), b, self.string_bytes, ZERO32, -(1 << 63),
                               i, i + TILE)[3]
        if len(leaves) == TILE:
            if len(self._tiles) > 4096:
                self._tiles.clear()
            self._tiles[t] = leaves
        return leaves

    def stored_hash(self, level: int, j: int) -> bytes:
        self._fresh()
        key = k_hash(level, j // HASHES_PER_ENTRY)
        page = self._hash_pages.get(key)
        if page is None:
            page = self.read(key) or b""
            if len(page) % 32 or len(page) > HASHES_PER_ENTRY * 32:
                raise CorruptionError(f"{self.where}: hash entry of level {level} is {len(page)} bytes")
            if len(page) == HASHES_PER_ENTRY * 32:
                if len(self._hash_pages) > 1024:
                    self._hash_pages.clear()
                self._hash_pages[key] = page
        i = (j % HASHES_PER_ENTRY) * 32
        if i + 32 > len(page):
            raise CorruptionError(f"{self.where}: interior hash {j} of level {level} is missing")
        return page[i:i + 32]

    def stored_range(self, level: int, j: int, k: int) -> bytes:
        """Stored hashes j..j+k-1 of a level, concatenated (all in one entry)."""
        self.stored_hash(level, j)
        key = k_hash(level, j // HASHES_PER_ENTRY)
        page = self._hash_pages.get(key) or self.read(key) or b""
        i = (j % HASHES_PER_ENTRY) * 32
        return page[i:i + 32 * k]

    def full(self, level: int, j: int) -> bytes:
        """Hash of the complete subtree of 2^level leaves starting at leaf j * 2^level."""
        if level < TILE_BITS:
            leaves = self.tile_leaves((j << level) >> TILE_BITS)
            off = (j << level) % TILE
            return merkle.root_of_hashes(leaves[off:off + (1 << level)])
        base = level - level % TILE_BITS
        if base == level:
            return self.stored_hash(level, j)
        span = level - base
        return merkle.root_of_hashes([self.stored_hash(base, i)
                                      for i in range(j << span, (j + 1) << span)])

    def mth(self, lo: int, hi: int) -> bytes:
        """MTH of leaves [lo, hi) for the ranges RFC 6962 proofs ask for."""
        n = hi - lo
        if n <= 0:
            return merkle.EMPTY_ROOT
        if n & (n - 1) == 0 and lo % n == 0:
            return self.full(n.bit_length() - 1, lo // n)
        k = merkle.split(n)
        return merkle.hash_node(self.mth(lo, lo + k), self.mth(lo + k, hi))

    def inclusion_proof(self, seq: int, size: int) -> list[bytes]:
        return merkle.inclusion_path(seq, size, self.mth)

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        return merkle.consistency_path(old, new, self.mth)

    # summaries
    def summary(self, b: int) -> tuple[int, int, int, int]:
        """(first time, last time, result mask, Bloom) of a complete block b."""
        data = self.read(k_summary(b // SUMMARIES_PER_ENTRY))
        i = (b % SUMMARIES_PER_ENTRY) * SUMMARY.size
        if data is None or len(data) < i + SUMMARY.size:
            raise CorruptionError(f"{self.where}: summary of audit block {b} is missing")
        t0, t1, mask, bloom = SUMMARY.unpack_from(data, i)
        return t0, t1, mask, int.from_bytes(bloom, "little")

    # checkpoints
    def checkpoints(self) -> list[Checkpoint]:
        h = self.head()
        out = []
        for i in range(h.checkpoints):
            data = self.read(k_checkpoint(i))
            if data is None:
                raise CorruptionError(f"{self.where}: checkpoint {i} is missing")
            out.append(decode_checkpoint(data))
        return out


def parse_strings(data: bytes, where: str) -> list[str]:
    out = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise CorruptionError(f"{where}: string table entry is cut short")
        (n,) = R.U16.unpack_from(data, pos)
        if n > R.MAX_STRING or pos + 2 + n > len(data):
            raise CorruptionError(f"{where}: string table entry is cut short")
        try:
            out.append(data[pos + 2:pos + 2 + n].decode("utf-8", "surrogatepass"))
        except UnicodeDecodeError:
            raise CorruptionError(f"{where}: string table holds invalid UTF-8") from None
        pos += 2 + n
    if len(out) > STRINGS_PER_ENTRY:
        raise CorruptionError(f"{where}: string table entry holds {len(out)} strings")
    return out


# -- writing ------------------------------------------------------------------------------------
def write_entry(eng, key: bytes, data: bytes) -> Record:
    """Create or replace one audit entry inside the engine's open change; returns its record."""
    old = eng.get(key)
    storage, payload, csum, _ = eng.content.store(memoryview(data), max_payload(len(key)))
    now = time.time_ns()
    rec = Record(KIND_FILE, storage, DEFAULT_MODE_FILE, len(data),
                 now if old is None else old.ctime_ns, now, csum, payload)
    eng.put(key, rec)
    if old is not None:
        eng.content.free(old, f"{eng.name}:<audit log>")
    return rec


def _stamp_of(rec: Record) -> tuple:
    """What tells one stored head from another (LogWriter._stamp)."""
    return (rec.size, rec.checksum, rec.mtime_ns, rec.ctime_ns)


Entry = tuple  # (time_us, principal, action, path, dest, result, size, checksum)


def strict_entry(e: Entry) -> Entry:
    """An entry in the form append_batch takes (int time, int checksum), or TypeError /
    ValueError naming what the record format cannot hold (what record.encode refuses)."""
    t_us, principal, action, path, dest, result, size, checksum = e
    if isinstance(t_us, bool) or not isinstance(t_us, (int, float)):
        raise TypeError(f"time must be a number, not {type(t_us).__name__}")
    t = int(t_us)
    if not -TIME_LIMIT < t < TIME_LIMIT:
        raise ValueError(f"time_us out of range: {t_us!r}")
    if result not in R.RESULT_CODE:
        raise ValueError(f"result must be one of {R.RESULTS}: {result!r}")
    R.check_action(action)
    for value, what in ((principal, "principal"), (path, "path"), (dest, "dest")):
        if value is not None:
            b = _utf8(value, what)
            if len(b) > R.MAX_STRING:
                raise ValueError(f"{what} is {len(b)} bytes; the limit is {R.MAX_STRING}")
    if size is not None and (type(size) is not int or not 0 <= size < 1 << 64):
        raise ValueError(f"size must be an int in 0..2^64-1 or None: {size!r}")
    if isinstance(checksum, int) and not isinstance(checksum, bool) and 0 <= checksum < 1 << 64:
        c: int | None = checksum
    else:
        c = R.checksum_int(checksum)
    return (t, principal, action, path, dest, result, size, c)


class LogWriter:
    """Appends records to the log of a writable engine. Its in-memory tail (the partial block,
    tile and string entry) is rebuilt from the catalog whenever the engine rolled back."""

    def __init__(self, eng) -> None:
        self.eng = eng
        self.view = LogView(eng)
        self._rollbacks = -1
        self._cache: dict[str, tuple[int, bytes]] = {}
        self.head: Head = EMPTY_HEAD
        self._head_stamp: tuple | None = None
        self.frontier: list[tuple[int, bytes]] = []

    def _stamp(self) -> tuple | None:
        rec = self.eng.get(K_HEAD)
        return None if rec is None else _stamp_of(rec)

    def _load(self) -> None:
        if self._rollbacks == self.eng.rollbacks:
            # (another writer on the engine may have appended: the stored head must be ours)
            stamp = self._stamp()
            if stamp is not None and stamp == self._head_stamp:
                return
            if self.view.head() == self.head:
                self._head_stamp = stamp
                return
        v = self.view
        self.head = h = v.head()
        self._cache = {}
        self.block = bytearray()
        self.prev_time = 0
        self.strings_tail: list[str] = []
        self.bloom, self.mask, self.first_time = 0, 0, 0
        n = h.size
        if n % BLOCK_RECORDS:
            b = n // BLOCK_RECORDS
            data = v.read(k_block(b)) or b""
            count, _, _, _, recs = parse_block(data, b, v.where)
            if count != n % BLOCK_RECORDS:
                raise CorruptionError(f"{v.where}: the tail block holds {count} records, the head "
                                      f"says {n % BLOCK_RECORDS}")
            self.block = bytearray(data)
            self.first_time = recs[0].time_us
            for c in recs:
                self._summarise(c)
            self.prev_time = recs[-1].time_us
        if h.strings % STRINGS_PER_ENTRY:
            self.strings_tail = v.string_page(h.strings // STRINGS_PER_ENTRY)
        self.tail_bytes = bytearray(b"".join(_string_piece(x) for x in self.strings_tail))
        # the compact range: hashes of the complete subtrees covering [0, n), largest first;
        # the root is their fold from the right (RFC 6962's split)
        self.frontier = []
        lo = 0
        for k in range(63, -1, -1):
            if n >> k & 1:
                self.frontier.append((k, v.full(k, lo >> k)))
                lo += 1 << k
        self._head_stamp = self._stamp()
        self._rollbacks = self.eng.rollbacks

    def _summarise(self, c: Compact) -> None:
        self.mask |= 1 << c.result
        for bit, sid in ((0, c.action), (R.F_PRINCIPAL, c.principal), (R.F_PATH, c.path),
                         (R.F_DEST, c.dest)):
            if bit == 0 or c.flags & bit:
                self.bloom = bloom_add(self.bloom, sid)

    def size(self) -> int:
        self._load()
        return self.head.size

    def level(self) -> str:
        self._load()
        return LEVELS[self.head.level]

    def _intern(self, s: str, b: bytes, dirty: dict) -> tuple[int, bytes]:
        """(id, UTF-8 bytes) of string s (its bytes b), interned now if it is new."""
        got = self._cache.get(s)
        if got is not None:
            return got
        ikey = k_index(b)
        data = dirty.get(ikey)
        if data is None:
            data = self.view.read(ikey)
        if data is not None and len(data) == 8:
            (sid,) = R.U64.unpack(data)
            if sid < self.strings and self._string(sid, dirty) == s:
                return self._remember(s, sid, b)
        sid = self.strings
        self.strings += 1
        self.strings_tail.append(s)
        self.tail_bytes += R.U16.pack(len(b)) + b      # the string-table entry, kept encoded
        dirty[k_string(sid // STRINGS_PER_ENTRY)] = bytes(self.tail_bytes)
        if len(self.strings_tail) == STRINGS_PER_ENTRY:
            self.strings_tail = []
            self.tail_bytes = bytearray()
        dirty[ikey] = R.U64.pack(sid)
        return self._remember(s, sid, b)

    def _string(self, sid: int, dirty: dict) -> str:
        base = (self.strings - len(self.strings_tail))
        if sid >= base:
            return self.strings_tail[sid - base]
        staged = dirty.get(k_string(sid // STRINGS_PER_ENTRY))   # written in this append
        if staged is not None:
            page = parse_strings(staged, self.view.where)
            return page[sid % STRINGS_PER_ENTRY]
        return self.view.string(sid)

    def _remember(self, s: str, sid: int, b: bytes) -> tuple[int, bytes]:
        if len(self._cache) >= CACHE_STRINGS:
            self._cache.clear()
        got = self._cache[s] = (sid, b)
        return got

    def append(self, entries: list[Entry], level: str | None = None,
               fix: Callable[[Entry], Entry] | None = None) -> int:
        """Stage records (and the level in the head) in the engine's open change; returns the
        seq of the first. Call inside the change that commits them. Each entry is (time,
        principal, action, path, dest, result, size, checksum): time in µs (an int) or
        seconds (a float), checksum an int or 16 hex digits. `fix(entry)` makes an entry the
        format cannot hold as given into one it can (default: strict, TypeError/ValueError).

        The records are encoded, hashed, chained and added to the Merkle frontier in one pass
        in C (cartridge._core.auditblock.append_batch); only the entries it fills (a complete
        tile's and stored level's hashes, a complete block, a new string) come back here."""
        self._load()
        h = self.head
        eng = self.eng
        dirty: dict[bytes, bytes] = {}
        self.strings = h.strings
        first = h.size

        def intern(s: str, b: bytes) -> tuple[int, bytes]:
            return self._intern(s, b, dirty)

        def put_hash(level: int, j: int, digest: bytes) -> None:
            self._put_hash(level, j, digest, dirty)

        def end_block(b: int, first_time: int, last_time: int, mask: int, bloom: bytes,
                      block: bytes) -> None:
            skey = k_summary(b // SUMMARIES_PER_ENTRY)
            old = dirty.get(skey)
            if old is None:
                old = self.view.read(skey) or b""
            if len(old) != (b % SUMMARIES_PER_ENTRY) * SUMMARY.size:
                raise CorruptionError(f"{self.view.where}: block summaries are out of step")
            dirty[skey] = old + SUMMARY.pack(first_time, last_time, mask, bloom)
            dirty[k_block(b)] = block

        try:
            n, chain, last = append_batch(entries, self, h.size, h.chain, h.last_time_us,
                                          intern, put_hash, end_block, fix or strict_entry)
            if n % BLOCK_RECORDS:
                dirty[k_block(n // BLOCK_RECORDS)] = bytes(self.block)
            lvl = h.level if level is None else LEVELS.index(level)
            for key, data in dirty.items():
                write_entry(eng, key, data)
            self.view._fresh()
            root = fold_root(self.frontier) or merkle.EMPTY_ROOT
            self.head = Head(n, lvl, self.strings, chain, root, last, h.checkpoints)
            self._head_stamp = _stamp_of(write_entry(eng, K_HEAD, self.head.encode()))
        except BaseException:
            self._rollbacks = -1          # the tail in memory is no longer the stored one
            raise
        return first

    def _put_hash(self, level: int, j: int, digest: bytes, dirty: dict) -> None:
        """Interior hash j of a stored level (4, 8, ...) into its h/ entry."""
        if level > MAX_LEVEL:
            return
        key = k_hash(level, j // HASHES_PER_ENTRY)
        page = dirty.get(key)
        if page is None:
            page = self.view.read(key) or b"" if j % HASHES_PER_ENTRY else b""
        if len(page) != (j % HASHES_PER_ENTRY) * 32:
            raise CorruptionError(f"{self.view.where}: interior hashes of level {level} are out "
                                  f"of step")
        dirty[key] = page + digest

    def add_checkpoint(self, cp: Checkpoint) -> None:
        self._load()
        h = self.head
        write_entry(self.eng, k_checkpoint(h.checkpoints), cp.encode())
        self.head = h._replace(checkpoints=h.checkpoints + 1)
        write_entry(self.eng, K_HEAD, self.head.encode())
        self._head_stamp = self._stamp()


# -- verification -------------------------------------------------------------------------------
class AuditReport(NamedTuple):
    """What cart.audit.verify() found: `ok`; `size` records checked; `first_bad` the first seq
    that is not provably intact (None if none); `problems` human-readable findings."""
    ok: bool
    size: int
    first_bad: int | None
    problems: list[str]


def verify_log(view: LogView, held: TreeHead | None = None,
               progress: Callable[[int], object] | None = None) -> AuditReport:
    """Re-read every record, rebuild the chain, every stored interior hash and the head, and
    compare; with `held` (a head saved earlier), also that today's log extends it.
    progress(n) is called as each block of n records has been re-hashed."""
    problems: list[str] = []
    first_bad: int | None = None

    def bad(seq: int | None, msg: str) -> None:
        nonlocal first_bad
        if seq is not None and (first_bad is None or seq < first_bad):
            first_bad = seq
        if len(problems) < 100:
            problems.append(msg)

    view._rollbacks = -1          # no cache: every entry is read again
    view._fresh()
    try:
        h = view.head()
    except CartridgeError as e:
        return AuditReport(False, 0, 0, [f"audit head: {e}"])
    n = h.size
    chain = ZERO32
    tile_hashes: list[bytes] = []             # every rebuilt level-4 hash
    stamp = -(1 << 63)
    ok_through = 0
    for b in range(-(-n // BLOCK_RECORDS)):
        lo = b * BLOCK_RECORDS
        want = min(BLOCK_RECORDS, n - lo)
        try:
            count, before, _raws, _leaves, after, bad_time, stamp, roots = block_records(
                view.block_data(b), b, view.string_bytes, chain, stamp)
            if count != want:
                raise CorruptionError(f"audit block {b} holds {count} records, expected {want}")
        except CartridgeError as e:
            bad(lo, f"records {lo}..{lo + want - 1}: {e}")
            break
        if before != chain:
            bad(lo, f"record {lo}: the chain value stored before it does not match the records "
                    f"before it (a record before {lo} was changed, removed or inserted)")
        if bad_time >= 0:
            bad(lo + bad_time, f"record {lo + bad_time}: its time is before the previous record's")
        chain = after
        j0 = len(tile_hashes)
        tile_hashes.extend(roots)
        if roots:
            try:        # a block's tiles: 16 hashes, always inside one hash entry
                same = view.stored_range(TILE_BITS, j0, len(roots)) == b"".join(roots)
            except CartridgeError:
                same = False
            if not same:
                for j, th in enumerate(roots, j0):
                    try:
                        stored = view.stored_hash(TILE_BITS, j)
                    except CartridgeError as e:
                        bad(j * TILE, f"interior hash {j} of level {TILE_BITS}: {e}")
                        break
                    if stored != th:
                        bad(j * TILE, f"records {j * TILE}..{j * TILE + TILE - 1}: they no longer "
                                      f"match their stored interior hash (one was changed)")
                        break
        ok_through = lo + count
        if progress is not None:
            progress(count)
    if not problems:
        # stored interior hashes against the rebuilt ones, level by level
        level = 2 * TILE_BITS
        hashes = [merkle.root_of_hashes(tile_hashes[i:i + TILE])
                  for i in range(0, len(tile_hashes) - TILE + 1, TILE)]
        while hashes and level <= MAX_LEVEL:
            for j, want_h in enumerate(hashes):
                try:
                    got = view.stored_hash(level, j)
                except CartridgeError as e:
                    bad(j << level, f"interior hash {j} of level {level}: {e}")
                    break
                if got != want_h:
                    bad(j << level, f"records {j << level}..{((j + 1) << level) - 1}: the stored "
                                    f"interior hash of level {level} does not match them")
                    break
            hashes = [merkle.root_of_hashes(hashes[i:i + TILE])
                      for i in range(0, len(hashes) - TILE + 1, TILE)]
            level += TILE_BITS
        if chain != h.chain:
            bad(max(0, n - 1), "the chain head in the log's head does not match its records "
                               "(records were removed or changed at the end)")
        try:
            root = view.mth(0, n)
        except CartridgeError as e:
            bad(None, f"Merkle root: {e}")
            root = b""
        if root != h.root:
            bad(None, "the Merkle root in the log's head does not match its records")
        # the summaries of complete blocks
        for b in range(n // BLOCK_RECORDS):
            try:
                view.summary(b)
            except CartridgeError as e:
                bad(b * BLOCK_RECORDS, f"block {b}: {e}")
                break
    if held is not None:
        hs, hr = held
        if hs > n:
            bad(min(n, ok_through), f"the log has {n} records, fewer than the {hs} of the held "
                                    f"head (it was cut short)")
        else:
            try:
                if view.mth(0, hs) != bytes(hr):
                    bad(None, f"the first {hs} records no longer hash to the held head: the log "
                              f"was rewritten (a fork of the history that head saw)")
            except CartridgeError as e:
                bad(0, f"the records of the held head cannot be read: {e}")
    return AuditReport(not problems, n, first_bad, problems)
