"""Types of auditblock.pyx: an audit record block decoded to canonical bytes and hashes."""
from collections.abc import Callable

from typing_extensions import Buffer

def block_records(data: Buffer, block: int, string: Callable[[int], bytes], chain: bytes,
                  prev_time: int, lo: int = ..., hi: int = ...
                  ) -> tuple[int, bytes, list[bytes], list[bytes], bytes, int, int, list[bytes]]: ...

def pack_record(blk: bytearray, seq: int, t_us: int, prev_time: int, code: int, action: bytes,
                principal: bytes | None, path: bytes | None, dest: bytes | None, aid: int,
                pid: int, path_id: int, dest_id: int, size: int | None,
                checksum: int | None) -> tuple[bytes, bytes, int]: ...
