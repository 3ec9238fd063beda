"""Types of pageio.pyx: a SQLite member's page overlay and the statement guard's fast path."""
from typing import Any

import numpy as np
from typing_extensions import Buffer, TypeAlias

# a typed memoryview parameter: any buffer (numpy's stubs give ndarray __buffer__ only on 3.12+)
_Buf: TypeAlias = Buffer | np.ndarray[Any, Any]

class Overlay:
    size: int
    nbase: int
    exists: bool
    changed: bool
    poisoned: bool
    dirty: dict[int, bytearray]     # chunk index -> its bytes (zeros follow when short)
    placed: dict[int, Any]          # chunk index -> its spilled run
    spill_at: int
    epoch: Any
    ckeys: dict[int, Any]
    lock: Any
    eng: Any
    key: Any
    rec: Any
    def bind(self, lock: Any, eng: Any, writer: Any) -> None: ...
    def vfs_read(self, amount: int, offset: int) -> bytes: ...
    def vfs_write(self, data: _Buf, offset: int) -> None: ...
    def vfs_size(self) -> int: ...
    def revalidate_fast(self) -> None: ...
    def read(self, amount: int, offset: int) -> bytes: ...
    def write(self, data: _Buf, offset: int) -> None: ...

class StatementGuard:
    f: Any          # the connection's main database file (a MemberFile) or None
    pending: bool
    def bind(self, f: Any) -> None: ...
    def quiet(self, rollbacks: Any, reloads: Any) -> None: ...
    def __call__(self, cursor: Any, sql: Any, bindings: Any) -> bool: ...
