"""Types of auditblock.pyx: an audit record block decoded to canonical bytes and hashes."""
from collections.abc import Callable

from typing_extensions import Buffer

def block_records(data: Buffer, block: int, string: Callable[[int], bytes], chain: bytes,
                  prev_time: int, lo: int = ..., hi: int = ...
                  ) -> tuple[int, bytes, list[bytes], list[bytes], bytes, int, int, list[bytes]]: ...


def append_batch(entries: list[tuple], w: object, n: int, chain: bytes, last: int,
                 intern: Callable[[str, bytes], tuple[int, bytes]],
                 put_hash: Callable[[int, int, bytes], None],
                 end_block: Callable[[int, int, int, int, bytes, bytes], None],
                 fix: Callable[[tuple], tuple]) -> tuple[int, bytes, int]: ...

def fold_root(frontier: list[tuple[int, bytes]]) -> bytes | None: ...

def c_sha256() -> bool: ...

def pack_slot(tm: object, principal: object, action: object, path: object, dest: object,
              result: object, size: object, limit: int) -> bytes | None: ...

def unpack_slot(data: Buffer) -> tuple: ...
