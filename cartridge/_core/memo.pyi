"""Types of memo.pyx: the bounded per-path dict of the read path."""
from typing import Any

class Memo(dict[Any, Any]):
    limit: int
    max_limit: int
    hits: int
    misses: int
    def __init__(self, limit: int) -> None: ...
