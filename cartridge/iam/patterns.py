"""Wildcard patterns: `*` matches any run of characters (including `/` and the empty run), `?`
exactly one character, and nothing else is special.

A pattern is kept as a tuple of tokens: literal strings, STAR and QMARK. Keeping literal text
apart from wildcards lets a policy variable substitute text that is matched literally (a
principal named "*" must not become a wildcard).

Matching never backtracks: the text between two stars is found leftmost-first (which is optimal
for `*`-separated segments), so a hostile string against a many-star pattern costs
O(len(text) * len(pattern)), never exponential time as a naive regex translation can.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Callable, Union

STAR = 0
QMARK = 1
Token = Union[str, int]
Tokens = tuple[Token, ...]
Matcher = Callable[[str], bool]


def tokens(text: str, literal: bool = False) -> Tokens:
    """Tokens of pattern text (`*` and `?` are wildcards unless `literal`)."""
    if literal:
        return (text,) if text else ()
    return join_tokens(_split(text))


def _split(text: str) -> list:
    out: list = []
    run: list = []
    for ch in text:
        if ch == "*" or ch == "?":
            if run:
                out.append("".join(run))
                run = []
            out.append(STAR if ch == "*" else QMARK)
        else:
            run.append(ch)
    if run:
        out.append("".join(run))
    return out


def join_tokens(parts: Iterable[Token]) -> Tokens:
    """Canonical token tuple: adjacent literals merged, runs of STAR collapsed, no empty text."""
    out: list = []
    for t in parts:
        if isinstance(t, str):
            if not t:
                continue
            if out and isinstance(out[-1], str):
                out[-1] += t
                continue
        elif t == STAR and out and out[-1] == STAR:
            continue
        out.append(t)
    return tuple(out)


def is_literal(toks: Tokens) -> bool:
    return all(isinstance(t, str) for t in toks)


def literal_text(toks: Tokens) -> str:
    return "".join(toks)  # type: ignore[arg-type]


def _segment(seg: list) -> str | re.Pattern:
    """A star-free run of tokens: plain text, or a regex when it holds a `?`."""
    if all(isinstance(t, str) for t in seg):
        return "".join(seg)
    return re.compile("".join("." if t == QMARK else re.escape(t) for t in seg), re.DOTALL)


def _seglen(raw: list) -> int:
    return sum(1 if t == QMARK else len(t) for t in raw)


@lru_cache(maxsize=4096)
def compile_tokens(toks: Tokens) -> Matcher:
    """A function text -> bool that is True when the whole text matches the pattern."""
    if toks == (STAR,):
        return _always
    if not toks:
        return _empty
    if is_literal(toks):
        lit = literal_text(toks)
        return lit.__eq__
    if STAR not in toks:
        rx = _segment(list(toks))
        return lambda s: rx.fullmatch(s) is not None  # type: ignore[union-attr]
    if len(toks) == 2 and toks[1] == STAR and isinstance(toks[0], str):
        prefix = toks[0]
        return lambda s: s.startswith(prefix)
    if len(toks) == 2 and toks[0] == STAR and isinstance(toks[1], str):
        suffix = toks[1]
        return lambda s: s.endswith(suffix)
    # General case: head * mid * ... * tail.
    raw_segs: list = [[]]
    for t in toks:
        if t == STAR:
            raw_segs.append([])
        else:
            raw_segs[-1].append(t)
    segs = [(_segment(r), _seglen(r)) for r in raw_segs]
    head, head_len = segs[0]
    tail, tail_len = segs[-1]
    mids = [s for s in segs[1:-1] if s[1]]
    minimum = sum(n for _, n in segs)

    def match(s: str) -> bool:
        n = len(s)
        if n < minimum:
            return False
        if head_len:
            if isinstance(head, str):
                if not s.startswith(head):
                    return False
            elif head.match(s) is None:
                return False
        end = n - tail_len
        if tail_len:
            if isinstance(tail, str):
                if not s.endswith(tail):
                    return False
            elif tail.fullmatch(s, end) is None:
                return False
        pos = head_len
        for seg, seg_len in mids:
            if isinstance(seg, str):
                i = s.find(seg, pos, end)
                if i < 0:
                    return False
                pos = i + seg_len
            else:
                m = seg.search(s, pos, end)
                if m is None:
                    return False
                pos = m.end()
        return pos <= end

    return match


def _always(s: str) -> bool:
    return True


def _empty(s: str) -> bool:
    return s == ""


def compile_pattern(text: str) -> Matcher:
    """Matcher of one wildcard pattern written as text."""
    return compile_tokens(tokens(text))


class PatternSet:
    """Several patterns OR'ed, with fast paths: `*` matches everything, literal patterns are a
    set lookup, `prefix*` patterns one str.startswith call over all prefixes."""

    __slots__ = ("matches_all", "exact", "prefixes", "general", "match")

    def __init__(self, patterns: Iterable[Tokens]) -> None:
        exact = set()
        prefixes = []
        general = []
        matches_all = False
        for toks in patterns:
            if toks == (STAR,):
                matches_all = True
            elif is_literal(toks):
                exact.add(literal_text(toks))
            elif len(toks) == 2 and toks[1] == STAR and isinstance(toks[0], str):
                prefixes.append(toks[0])
            else:
                general.append(compile_tokens(toks))
        self.matches_all = matches_all
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)
        self.general = tuple(general)
        self.match: Matcher = self._build()

    def _build(self) -> Matcher:
        if self.matches_all:
            return _always
        exact, prefixes, general = self.exact, self.prefixes, self.general
        if not general:
            if not prefixes:
                return exact.__contains__
            if not exact:
                return lambda s: s.startswith(prefixes)
            return lambda s: s in exact or s.startswith(prefixes)

        def match(s: str) -> bool:
            if s in exact or (prefixes and s.startswith(prefixes)):
                return True
            for m in general:
                if m(s):
                    return True
            return False

        return match
