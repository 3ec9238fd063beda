"""One audit record: its fields, its canonical bytes (`raw`, docs/FORMAT.md §13.2) and its leaf
hash SHA-256(0x00 || raw).

`raw` is self-contained: it names the principal, action and paths in full, so anyone holding
the bytes can check a proof without the archive. On disk the log keeps a compact form instead
(strings interned, times as deltas; docs/FORMAT.md §13.4) from which `raw` is rebuilt exactly.
"""
from __future__ import annotations

import hashlib
import struct
from typing import NamedTuple

from ..errors import CorruptionError

RAW_VERSION = 1
RESULTS = ("allowed", "denied", "error")
RESULT_CODE = {name: i for i, name in enumerate(RESULTS)}

# flags (raw byte 2, and the compact form's head byte, bits 2-6)
F_PRINCIPAL = 0x01
F_PATH = 0x02
F_DEST = 0x04
F_SIZE = 0x08
F_CHECKSUM = 0x10
F_ALL = 0x1F

RAW_HEAD = struct.Struct("<BBBBQq")          # version, result, flags, action length, seq, time_us
U16 = struct.Struct("<H")
U64 = struct.Struct("<Q")
MAX_ACTION = 64                              # an action name: 1..64 printable ASCII bytes
MAX_STRING = 4096 + 64                       # a principal or path: at most this many UTF-8 bytes
MAX_RAW = RAW_HEAD.size + MAX_ACTION + 3 * (2 + MAX_STRING) + 16
LEAF_PREFIX = b"\x00"


class AuditRecord(NamedTuple):
    """One operation as the log keeps it. `time` is Unix seconds (µs resolution); `principal`
    None for the owner handle; `dest` the destination of a `cart:Rename` (else None); `result`
    "allowed", "denied" or "error"; `size` bytes written or read (None where it means nothing);
    `checksum` the new content checksum of a write (16 hex digits, as FileInfo.checksum) or
    None; `raw` the canonical bytes the Merkle tree hashes."""
    seq: int
    time: float
    principal: str | None
    action: str
    path: str | None
    dest: str | None
    result: str
    size: int | None
    checksum: str | None
    raw: bytes

    @property
    def time_us(self) -> int:
        return RAW_HEAD.unpack_from(self.raw)[5]

    @property
    def leaf_hash(self) -> bytes:
        return leaf_hash(self.raw)


def leaf_hash(raw: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || raw)."""
    return hashlib.sha256(LEAF_PREFIX + raw).digest()


def check_action(action: object) -> bytes:
    if not isinstance(action, str):
        raise TypeError(f"action must be a str, not {type(action).__name__}")
    try:
        b = action.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"action must be printable ASCII: {action!r}") from None
    if not 1 <= len(b) <= MAX_ACTION or not all(0x21 <= c <= 0x7E for c in b):
        raise ValueError(f"action must be 1-{MAX_ACTION} printable ASCII characters: {action!r}")
    return b


def _string(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str or None, not {type(value).__name__}")
    b = value.encode("utf-8", "surrogatepass")
    if len(b) > MAX_STRING:
        raise ValueError(f"{what} is {len(b)} bytes; the limit is {MAX_STRING}")
    return b


def checksum_int(checksum: str | None) -> int | None:
    if checksum is None:
        return None
    if not isinstance(checksum, str) or len(checksum) != 16:
        raise ValueError(f"checksum must be 16 hex digits, not {checksum!r}")
    try:
        return int(checksum, 16)
    except ValueError:
        raise ValueError(f"checksum must be 16 hex digits, not {checksum!r}") from None


def encode(seq: int, time_us: int, principal: str | None, action: str, path: str | None,
           dest: str | None, result: str, size: int | None, checksum: str | None) -> bytes:
    """The canonical bytes of one record (docs/FORMAT.md §13.2)."""
    if type(seq) is not int or not 0 <= seq < 1 << 63:
        raise ValueError(f"seq must be an int in 0..2^63-1: {seq!r}")
    if type(time_us) is not int or not -(1 << 62) < time_us < 1 << 62:
        raise ValueError(f"time_us out of range: {time_us!r}")
    code = RESULT_CODE.get(result)
    if code is None:
        raise ValueError(f"result must be one of {RESULTS}: {result!r}")
    a = check_action(action)
    flags = 0
    tail = []
    for bit, value, what in ((F_PRINCIPAL, principal, "principal"), (F_PATH, path, "path"),
                             (F_DEST, dest, "dest")):
        if value is not None:
            b = _string(value, what)
            flags |= bit
            tail.append(U16.pack(len(b)) + b)
    if size is not None:
        if type(size) is not int or not 0 <= size < 1 << 64:
            raise ValueError(f"size must be an int in 0..2^64-1 or None: {size!r}")
        flags |= F_SIZE
        tail.append(U64.pack(size))
    c = checksum_int(checksum)
    if c is not None:
        flags |= F_CHECKSUM
        tail.append(U64.pack(c))
    return RAW_HEAD.pack(RAW_VERSION, code, flags, len(a), seq, time_us) + a + b"".join(tail)


def decode(raw: bytes) -> AuditRecord:
    """The record of canonical bytes; CorruptionError unless they are exactly canonical (the
    bytes encode() would make from the decoded fields)."""
    raw = bytes(raw)
    if len(raw) < RAW_HEAD.size or len(raw) > MAX_RAW:
        raise CorruptionError(f"audit record of {len(raw)} bytes cannot be canonical")
    version, code, flags, alen, seq, time_us = RAW_HEAD.unpack_from(raw)
    if version != RAW_VERSION or code >= len(RESULTS) or flags & ~F_ALL or not 1 <= alen <= MAX_ACTION:
        raise CorruptionError("audit record: bad version, result, flags or action length")
    pos = RAW_HEAD.size
    try:
        action = raw[pos:pos + alen].decode("ascii")
        pos += alen
        strings: list[str | None] = []
        for bit in (F_PRINCIPAL, F_PATH, F_DEST):
            if flags & bit:
                (n,) = U16.unpack_from(raw, pos)
                if n > MAX_STRING or pos + 2 + n > len(raw):
                    raise CorruptionError("audit record: string runs past the end")
                strings.append(raw[pos + 2:pos + 2 + n].decode("utf-8", "surrogatepass"))
                pos += 2 + n
            else:
                strings.append(None)
        size = checksum = None
        if flags & F_SIZE:
            (size,) = U64.unpack_from(raw, pos)
            pos += 8
        if flags & F_CHECKSUM:
            (c,) = U64.unpack_from(raw, pos)
            checksum = f"{c:016x}"
            pos += 8
    except (struct.error, UnicodeDecodeError) as e:
        raise CorruptionError(f"audit record is malformed: {e}") from None
    if pos != len(raw):
        raise CorruptionError("audit record has trailing bytes")
    rec = AuditRecord(seq, time_us / 1e6, strings[0], action, strings[1], strings[2],
                      RESULTS[code], size, checksum, raw)
    try:
        again = encode(seq, time_us, rec.principal, action, rec.path, rec.dest, rec.result, size,
                       checksum)
    except ValueError as e:
        raise CorruptionError(f"audit record is not canonical: {e}") from None
    if again != raw:
        raise CorruptionError("audit record is not canonical")
    return rec


def make(seq: int, time_us: int, principal: str | None, action: str, path: str | None,
         dest: str | None, result: str, size: int | None, checksum: str | None) -> AuditRecord:
    raw = encode(seq, time_us, principal, action, path, dest, result, size, checksum)
    return AuditRecord(seq, time_us / 1e6, principal, action, path, dest, result, size, checksum, raw)
