"""Text fit for a terminal or a log: names from an archive (or a command line) may hold escape
sequences, bidi overrides and other characters a terminal acts on.

Two functions, for two kinds of text:

- `safe(name)` for one raw value (a path, a name, a cell): every character that is not
  printable is shown as its repr escape and a backslash as two (as `ls -b` does), so the
  escaping is unambiguous: a name holding ESC shows as `a\\x1b`, one spelled with a literal
  backslash, `a` `\\` `x1b`, as `a\\\\x1b`.
- `safe_message(text)` for a message already composed from escaped parts (an exception's text,
  whose archive names are quoted reprs; a verify problem; a line built with `safe()`): only
  the characters a terminal acts on are escaped, backslashes are left as they are, so escaping
  it again changes nothing.
"""
from __future__ import annotations


def _escape(c: str) -> str:
    return c if c.isprintable() else repr(c)[1:-1]


def safe(text: object) -> str:
    """`text` (one raw value) with each character that is not printable (controls and escape
    sequences, bidi overrides, zero-width and other format characters, the lone surrogates of
    undecodable names) shown as its repr escape (\\x1b, \\n, \\u202e...) and each backslash
    doubled, so that no two texts show alike. Printable non-ASCII stays readable."""
    s = str(text)
    if s.isprintable() and "\\" not in s:
        return s
    return "".join("\\\\" if c == "\\" else _escape(c) for c in s)


def safe_message(text: object) -> str:
    """A composed message (its names already escaped: reprs, or `safe()`) with each character
    that is not printable shown as its repr escape; backslashes stay as they are, so a message
    escaped twice reads the same."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(_escape(c) for c in s)
