"""Catalog records: what the B+tree stores for each path (docs/FORMAT.md §5).

Record, decode() and with_chunk_key() are C (cartridge._core.record): a record is decoded
straight from the cell bytes, with no struct or dataclass work per lookup.
"""
from __future__ import annotations

from ._core.memo import Memo
from ._core.record import Record, decode, get_record, with_chunk_key
from .format import KEY_INLINE, MAX_CELL, RECORD

__all__ = ["Memo", "Record", "decode", "get_record", "max_payload", "with_chunk_key"]


def max_payload(key_len: int) -> int:
    """Largest record payload that still fits in one catalog cell for a key of this length."""
    key_part = KEY_INLINE + 8 if key_len > KEY_INLINE else key_len
    return MAX_CELL - 4 - key_part - RECORD.size
