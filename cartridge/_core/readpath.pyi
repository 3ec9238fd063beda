"""Types of readpath.pyx: the read path's hot loops (one checked chunk, a whole small file)."""
from typing import Any

from .memo import Memo

def checked_chunk(fd: int, start: int, n: int, csum: int, name: Any, where: Any = ...,
                  index: int = ...) -> bytes: ...
def read_whole(records: Memo, catalog: Any, name: Any, cache: Any, path: Any,
               size: int = -1) -> bytes | None: ...
def lookup_info(records: Memo, catalog: Any, name: Any, path: Any, make: Any) -> Any: ...
