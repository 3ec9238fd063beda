"""Types of batch.pyx: write_many's batched kernels (packing, records, grouping)."""
from collections.abc import Iterable
from typing import Any, Callable

import numpy as np
from typing_extensions import Buffer, TypeAlias

from .bitmap import Bitmap

# a typed memoryview parameter: any buffer (numpy's stubs give ndarray __buffer__ only on 3.12+)
_Buf: TypeAlias = Buffer | np.ndarray[Any, Any]

def pack_pages(datas: list[Any], which: _Buf, out: _Buf, sums: _Buf) -> int: ...
def chunk_records(which: _Buf, sizes: _Buf, starts: _Buf, sums: _Buf, modes: _Buf,
                  ctimes: _Buf, mtime: int, kind: int, storage: int, out: list[Any]) -> None: ...
def parent_groups(keys: list[bytes]) -> list[tuple[bytes, int, int]]: ...
def collect(items: Iterable[Any], file_key: Callable[[Any], tuple[str, bytes]],
            as_bytes: Callable[[Any], Any], meta: dict[bytes, Any] | None = None) -> dict[bytes, bytes]: ...
def alloc_entry(used: Bitmap, pending: Bitmap, chunk: int) -> bytes: ...
def inline_records(datas: list[Any], which: _Buf, modes: _Buf, ctimes: _Buf, mtime: int,
                   kind: int, storage: int, out: list[Any]) -> None: ...
