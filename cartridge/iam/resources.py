"""Resource patterns: kept as written and matched literally against the normalised request path,
as AWS matches them; a pattern that can never match a normalised path is refused.

A normalised path (cartridge.paths) is `/`, or `/name` segments with an optional trailing `/`
(the directory resources of cart:List); no name is empty, `.` or `..`, and none holds a
control character. Rewriting a pattern to that form instead (as cartridge once did) changes
what a wildcard pattern matches: `?data/x` matches `/data/x` in AWS, `/?data/x` does not. So
the pattern is never rewritten; one that provably matches no such path (no leading `/` or
wildcard, `//`, a `.` or `..` segment, a control character) is a PolicyError that suggests the
canonical spelling. `*` and `?` may stand in for `/`, and a policy variable for any text, so
only patterns no choice of those could make match are refused.
"""
from __future__ import annotations

import re

from ..errors import PolicyError
from ..paths import MAX_NAME_BYTES, MAX_PATH_BYTES
from . import variables

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

# The automaton of normalised paths: states after reading a prefix of one.
_START, _SLASH, _DOT, _DOTDOT, _NAME = range(5)
_ACCEPT = frozenset({_SLASH, _NAME})            # "/", "/a/" and "/a" are paths; "/." is not
_SLASH_C, _DOT_C, _OTHER_C = "/", ".", "x"      # one representative of each legal class
_STEP = {
    (_START, "/"): _SLASH,
    (_SLASH, "."): _DOT, (_SLASH, "x"): _NAME,
    (_DOT, "."): _DOTDOT, (_DOT, "x"): _NAME,
    (_DOTDOT, "."): _NAME, (_DOTDOT, "x"): _NAME,
    (_NAME, "/"): _SLASH, (_NAME, "."): _NAME, (_NAME, "x"): _NAME,
}
_ANY, _RUN = object(), object()                 # `?` (one character), `*` or a variable (any run)


def _char_class(ch: str) -> str | None:
    if ch == "/" or ch == ".":
        return ch
    if _CONTROL.match(ch) or "\ud800" <= ch <= "\udfff":
        return None                             # no path holds it
    return "x"


def _step(states: frozenset, item) -> frozenset:
    if item is _ANY or item is _RUN:
        one = frozenset(t for s in states for c in "/.x" if (t := _STEP.get((s, c))) is not None)
        if item is _ANY:
            return one
        seen = set(states)
        while not one <= seen:
            seen |= one
            one = frozenset(t for s in one for c in "/.x" if (t := _STEP.get((s, c))) is not None)
        return frozenset(seen)
    cls = _char_class(item)
    if cls is None:
        return frozenset()
    return frozenset(t for s in states if (t := _STEP.get((s, cls))) is not None)


def _items(template: variables.Template) -> list:
    """The pattern as a list of literal characters, _ANY and _RUN."""
    out: list = []
    for p in template:
        tp = type(p)
        if tp is str:
            out.extend(_RUN if c == "*" else _ANY if c == "?" else c for c in p)
        elif tp is variables.Lit:
            out.extend(p.text)                  # type: ignore[union-attr]
        else:
            out.append(_RUN)                    # a variable may become any text
    return out


def can_match(template: variables.Template) -> bool:
    """False when no normalised path (and no substitution of its variables) can match."""
    items = _items(template)
    return _shape_possible(items) and _lengths_possible(items)


def _shape_possible(items: list) -> bool:
    """Whether some path of the normalised form matches, lengths aside."""
    states = frozenset({_START})
    for item in items:
        states = _step(states, item)
        if not states:
            return False
    return bool(states & _ACCEPT)


def _lengths_possible(items: list) -> bool:
    """False when a name between two literal '/' is over MAX_NAME_BYTES, or every match would be
    longer than the longest path (a directory resource has one '/' more)."""
    shortest = sum(len(i.encode("utf-8", "surrogatepass")) if isinstance(i, str) else
                   1 if i is _ANY else 0 for i in items)
    if shortest > MAX_PATH_BYTES + 1:
        return False
    run = 0
    bounded = True                              # the run so far starts at a literal '/'
    for i in items:
        if i == "/":
            if bounded and run > MAX_NAME_BYTES:
                return False
            run, bounded = 0, True
        elif isinstance(i, str):
            run += len(i.encode("utf-8", "surrogatepass"))
        else:
            bounded = False
    return not (bounded and run > MAX_NAME_BYTES)


def _flatten(text: str, variables_on: bool) -> tuple[str, dict]:
    """The pattern with each variable/escape stood in for by one private-use character, and
    the map back to their source text."""
    holders: dict = {}
    code = 0xE000
    joined = []
    for p in variables.parse(text, variables_on, ""):
        if type(p) is str:
            joined.append(p)
            continue
        while chr(code) in text:
            code += 1
        holders[chr(code)] = p.source  # type: ignore[union-attr]  # not a str: a Var or Lit
        joined.append(chr(code))
        code += 1
    return "".join(joined), holders


def _reason(tpl: variables.Template, flat: str, holders: dict) -> str:
    if _shape_possible(_items(tpl)):
        return f"names are at most {MAX_NAME_BYTES} bytes and paths {MAX_PATH_BYTES}"
    if _CONTROL.search(flat):
        return "it holds a control character, which no path does"
    if flat[:1] not in ("/", "*", "?") and flat[:1] not in holders:
        return "paths start with '/'"
    if "//" in flat:
        return "paths never hold '//'"
    segments = flat.split("/")
    if ".." in segments:
        return "paths never hold a '..' segment"
    if "." in segments:
        return "paths never hold a '.' segment"
    return "no normalised path matches it"


def _suggest(flat: str, holders: dict, text: str, variables_on: bool) -> str | None:
    """The canonical spelling: a leading '/' added, '//' and '.' collapsed, '..' resolved, as
    the archive would spell the path (variables and wildcards left where they are)."""
    trailing = flat.endswith("/") or flat.endswith("/.") or flat.endswith("/..")
    parts: list = []
    for seg in flat.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts:
                parts.pop()
            continue
        parts.append(seg)
    lead = "" if flat[:1] in ("*", "?") or flat[:1] in holders else "/"
    out = lead + "/".join(parts)
    if trailing and out not in ("", "/"):
        out += "/"
    out = "".join(holders.get(c, c) for c in (out or "/"))
    if out == text or not can_match(variables.parse(out, variables_on, "")):
        return None
    return out


def parse(text: str, variables_on: bool, where: str) -> variables.Template:
    """The template of a Resource/NotResource pattern, kept as written; PolicyError naming the
    pattern, why, and its canonical spelling when it can never match a normalised path."""
    tpl = variables.parse(text, variables_on, where)
    if can_match(tpl):
        return tpl
    flat, holders = _flatten(text, variables_on)
    shown = repr(text) if len(text) <= 80 else repr(text[:60]) + "..."
    msg = (f"{where}: {shown} can never match an archive path ({_reason(tpl, flat, holders)}; "
           f"patterns are matched as written, as in AWS)")
    fix = _suggest(flat, holders, text, variables_on)
    if fix is not None and len(fix) <= 200:
        msg += f"; write {fix!r}"
    raise PolicyError(msg)
