"""`--json` output of the command line: one document on standard output, safe for a terminal.

    from .jsonout import add_json_flag, emit_json
    add_json_flag(parser)                     # --json, with the same help on every command
    ...
    if args.json:
        emit_json({"path": ..., "size": ...})
        return 0

Every `--json` document is printed by emit_json(): indented (compact=True: one line),
non-ASCII and control characters escaped as \\uXXXX (so a hostile name cannot act on the
terminal and any consumer decodes it), no NaN or Infinity (not JSON: they become null), bytes as
hex and any other value as its str(). The keys each command prints are listed in docs/GUIDE.md
("The command line") and checked by tests/test_cli_json.py.
"""
from __future__ import annotations

import json
import math
import sys
from typing import IO, Any

JSON_HELP = "print the result as one JSON document (keys: docs/GUIDE.md, 'The command line')"


def add_json_flag(parser: Any, help: str = JSON_HELP) -> None:
    """Add the standard `--json` flag (dest "json") to an argparse parser."""
    parser.add_argument("--json", action="store_true", help=help)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def dumps(doc: Any, compact: bool = False) -> str:
    """The text emit_json() prints for `doc`."""
    return json.dumps(_clean(doc), indent=None if compact else 2, ensure_ascii=True,
                      allow_nan=False)


def emit_json(doc: Any, compact: bool = False, out: IO[str] | None = None) -> None:
    """Print `doc` as JSON (see the module doc) followed by a newline."""
    out = sys.stdout if out is None else out
    print(dumps(doc, compact), file=out)
