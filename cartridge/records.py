"""Catalog records: what the B+tree stores for each path (docs/FORMAT.md §5)."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import CorruptionError
from .format import (
    CHUNK_ENTRY,
    CHUNK_SIZE,
    KEY_INLINE,
    KIND_DIR,
    KIND_FILE,
    MAX_CELL,
    RECORD,
    STORE_CHUNKS,
    STORE_EMPTY,
    STORE_INLINE,
    STORE_XMAP,
    XMAP_REF,
)


@dataclass
class Record:
    kind: int
    storage: int
    mode: int
    size: int
    ctime_ns: int
    mtime_ns: int
    checksum: int
    payload: bytes = b""
    chunk_key: int = 0      # page-cache key of a one-chunk file's content (0: not one chunk)

    def encode(self) -> bytes:
        return RECORD.pack(self.kind, self.storage, 0, self.mode, self.size, self.ctime_ns,
                           self.mtime_ns, self.checksum) + self.payload

    @property
    def is_dir(self) -> bool:
        return self.kind == KIND_DIR

    @property
    def n_chunks(self) -> int:
        return -(-self.size // CHUNK_SIZE)


def decode(value: bytes, where: str) -> Record:
    """Parse and sanity-check a record; a malformed one raises CorruptionError."""
    if len(value) < RECORD.size:
        raise CorruptionError(f"{where}: catalog record is {len(value)} bytes, too short")
    kind, storage, _r, mode, size, ctime, mtime, csum = RECORD.unpack_from(value)
    payload = value[RECORD.size:]
    ok = True
    if kind == KIND_DIR:
        ok = storage == STORE_EMPTY and size == 0
    elif kind == KIND_FILE:
        if storage == STORE_EMPTY:
            ok = size == 0
        elif storage == STORE_INLINE:
            ok = len(payload) == size
        elif storage == STORE_CHUNKS:
            ok = size > 0 and len(payload) == CHUNK_ENTRY.size * (-(-size // CHUNK_SIZE))
        elif storage == STORE_XMAP:
            ok = size > 0 and len(payload) == XMAP_REF.size
        else:
            ok = False
    else:
        ok = False
    if not ok:
        raise CorruptionError(f"{where}: malformed catalog record (kind {kind}, storage {storage}, "
                              f"size {size})")
    return with_chunk_key(Record(kind, storage, mode, size, ctime, mtime, csum, payload))


def with_chunk_key(rec: Record) -> Record:
    """Fill in chunk_key for a file stored as exactly one chunk."""
    if rec.storage == STORE_CHUNKS and rec.size <= CHUNK_SIZE:
        start, csum = CHUNK_ENTRY.unpack(rec.payload)
        rec.chunk_key = (start << 64) | csum
    return rec


def max_payload(key_len: int) -> int:
    """Largest record payload that still fits in one catalog cell for a key of this length."""
    key_part = KEY_INLINE + 8 if key_len > KEY_INLINE else key_len
    return MAX_CELL - 4 - key_part - RECORD.size
