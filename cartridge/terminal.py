"""Text fit for a terminal or a log: names from an archive (or a command line) may hold escape
sequences, bidi overrides and other characters a terminal acts on; `safe()` shows them escaped."""
from __future__ import annotations


def safe(text: object) -> str:
    """`text` with each character that is not printable (controls and escape sequences, bidi
    overrides, zero-width and other format characters, the lone surrogates of undecodable
    names) shown as its repr escape (\\x1b, \\n, \\u202e...). Printable non-ASCII stays
    readable; backslashes stay as they are, so text already escaped (a repr in a message) is
    unchanged."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)
