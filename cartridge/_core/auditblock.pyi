"""Types of auditblock.pyx: an audit record block decoded to canonical bytes and hashes."""
from collections.abc import Callable

from typing_extensions import Buffer

def block_records(data: Buffer, block: int, string: Callable[[int], bytes], chain: bytes,
                  prev_time: int, lo: int = ..., hi: int = ...
                  ) -> tuple[int, bytes, list[bytes], list[bytes], bytes, int, int, list[bytes]]: ...
