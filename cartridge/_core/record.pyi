"""Types of record.pyx: the catalog record of a file or directory (docs/FORMAT.md §5)."""
from typing import Any

from .memo import Memo

class Record:
    kind: int
    storage: int
    mode: int
    size: int
    ctime_ns: int
    mtime_ns: int
    checksum: int
    payload: Any        # the storage-specific bytes (inline content, chunk map, xmap ref)
    chunk_key: Any      # a one-chunk file's page-cache key (0 otherwise)
    info: Any           # the FileInfo built from it, memoised by the handle
    def __init__(self, kind: int, storage: int, mode: int, size: int, ctime_ns: int,
                 mtime_ns: int, checksum: int, payload: Any = b"", chunk_key: Any = 0) -> None: ...
    def encode(self) -> bytes: ...
    @property
    def is_dir(self) -> bool: ...
    @property
    def n_chunks(self) -> int: ...
    def _fields(self) -> tuple[Any, ...]: ...
    def __eq__(self, other: object) -> bool: ...
    def __reduce__(self) -> tuple[Any, ...]: ...

def with_chunk_key(rec: Record) -> Record: ...
def decode(value: Any, where: object) -> Record: ...   # where: a str, or a callable giving one
def get_record(records: Memo, catalog: Any, key: bytes, name: Any) -> Record | None: ...
