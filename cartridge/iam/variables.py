"""Policy variables (Version "2012-10-17" only): `${key}`, `${key, 'default'}` and the escapes
`${*}`, `${?}`, `${$}`.

- The key is any request-context key, matched case-insensitively (`${cart:username}`,
  `${cart:PrincipalTag/team}`, `${cart:SourceIp}`, ...). Spaces around it are ignored.
- A default is single-quoted, case-sensitive, and writes a quote as two quotes: `${k, 'it''s'}`.
- A key that is missing, None, or multi-valued (a list) cannot be substituted; the default is
  used if there is one, else the element holding the variable matches nothing.
- Substituted text is literal: a value holding `*` or `?` is not a wildcard. `${*}` and `${?}`
  are how a policy writes a literal `*` or `?` where wildcards are active, `${$}` a literal `$`.
- One round only: text produced by a substitution is never scanned for variables again.

A template is a tuple of pieces: str (policy text, where `*` and `?` are wildcards in Resource
and in the Like operators), Var (a variable), Lit (an escape: always literal text).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Union

from ..errors import PolicyError
from . import patterns
from .values import render


class Var(NamedTuple):
    key: str                    # casefolded context key
    default: str | None      # None: no default
    source: str                 # as written in the policy


class Lit(NamedTuple):
    text: str                   # an escape's literal character
    source: str                 # as written: ${*}, ${?} or ${$}


Piece = Union[str, Var, Lit]
Template = tuple[Piece, ...]
UNRESOLVED = None

_ESCAPES = {"${*}": "*", "${?}": "?", "${$}": "$"}


def parse(text: str, enabled: bool, where: str) -> Template:
    """Split policy text into pieces; with variables disabled (Version 2008-10-17) the whole text
    is one literal piece. PolicyError for a malformed `${...}`."""
    if not enabled or "${" not in text:
        return (text,) if text else ()
    pieces: list = []
    pos = 0
    n = len(text)
    while True:
        i = text.find("${", pos)
        if i < 0:
            break
        if i > pos:
            pieces.append(text[pos:i])
        esc = text[i:i + 4]
        if esc in _ESCAPES:
            pieces.append(Lit(_ESCAPES[esc], esc))
            pos = i + 4
            continue
        var, pos = _parse_var(text, i + 2, n, where)
        pieces.append(var._replace(source=text[i:pos]))
    if pos < n:
        pieces.append(text[pos:])
    return tuple(pieces)


def _parse_var(text: str, j: int, n: int, where: str) -> tuple[Var, int]:
    start = j
    while j < n and text[j] not in ",}":
        if text[j] in "${'":
            raise PolicyError(f"{where}: malformed policy variable in {text!r}")
        j += 1
    if j >= n:
        raise PolicyError(f"{where}: unterminated policy variable in {text!r}")
    key = text[start:j].strip()
    if not key or any(c.isspace() for c in key):
        raise PolicyError(f"{where}: policy variable needs a context key name in {text!r}")
    default = None
    if text[j] == ",":
        j += 1
        while j < n and text[j] == " ":
            j += 1
        if j >= n or text[j] != "'":
            raise PolicyError(f"{where}: a policy variable default must be single-quoted in {text!r}")
        j += 1
        chars = []
        while True:
            if j >= n:
                raise PolicyError(f"{where}: unterminated default value in {text!r}")
            c = text[j]
            if c == "'":
                if j + 1 < n and text[j + 1] == "'":
                    chars.append("'")
                    j += 2
                    continue
                j += 1
                break
            chars.append(c)
            j += 1
        default = "".join(chars)
        while j < n and text[j] == " ":
            j += 1
        if j >= n or text[j] != "}":
            raise PolicyError(f"{where}: malformed policy variable in {text!r}")
    return Var(key.casefold(), default, ""), j + 1


def has_vars(template: Template) -> bool:
    return any(type(p) is not str for p in template)


def keys(template: Template) -> set[str]:
    """Casefolded context keys the template refers to."""
    return {p.key for p in template if type(p) is Var}


def lookup(var: Var, vals: Mapping[str, Any]) -> str | None:
    """The text of a variable in a context of canonical values, or UNRESOLVED."""
    v = vals.get(var.key)
    if v is None or type(v) is tuple:
        return var.default
    return render(v)


def text(template: Template, vals: Mapping[str, Any]) -> str | None:
    """The template with every variable substituted; UNRESOLVED if one cannot be."""
    out: list[str] = []
    for p in template:
        tp = type(p)
        if tp is str:
            out.append(p)  # type: ignore[arg-type]  # tp is str
        elif tp is Lit:
            out.append(p.text)  # type: ignore[union-attr]
        else:
            v = lookup(p, vals)  # type: ignore[arg-type]
            if v is None:
                return UNRESOLVED
            out.append(v)
    return "".join(out)


def tokens(template: Template, vals: Mapping[str, Any]) -> patterns.Tokens | None:
    """Wildcard tokens of the template: policy text keeps its wildcards, substituted text and
    escapes are literal. UNRESOLVED if a variable cannot be substituted."""
    out: list = []
    for p in template:
        tp = type(p)
        if tp is str:
            out.extend(patterns.tokens(p))  # type: ignore[arg-type]
        elif tp is Lit:
            out.append(p.text)  # type: ignore[union-attr]
        else:
            v = lookup(p, vals)  # type: ignore[arg-type]
            if v is None:
                return UNRESOLVED
            out.append(v)
    return patterns.join_tokens(out)


class Pattern(NamedTuple):
    """A template compiled for wildcard matching: policy text pre-split into tokens, and the
    literal text every match must start with (a cheap test before any substitution)."""
    pieces: tuple            # token tuples and Vars
    prefix: str


def compile_pattern(template: Template) -> Pattern:
    pieces: list = []
    prefix: list = []
    fixed = True
    for p in template:
        tp = type(p)
        if tp is Var:
            pieces.append(p)
            fixed = False
            continue
        toks = patterns.tokens(p) if tp is str else (p.text,)  # type: ignore[arg-type,union-attr]  # tp narrows p
        pieces.append(toks)
        for t in toks:
            if not fixed:
                break
            if isinstance(t, str):
                prefix.append(t)
            else:
                fixed = False
    return Pattern(tuple(pieces), "".join(prefix))


def pattern_tokens(pattern: Pattern, vals: Mapping[str, Any]) -> patterns.Tokens | None:
    """Tokens of a compiled pattern with its variables substituted (as literal text)."""
    out: list = []
    for p in pattern.pieces:
        if type(p) is tuple:
            out.extend(p)
        else:
            v = lookup(p, vals)
            if v is None:
                return UNRESOLVED
            out.append(v)
    return patterns.join_tokens(out)


def static_tokens(template: Template) -> patterns.Tokens:
    """Tokens of a template without variables (escapes allowed)."""
    return tokens(template, {})  # type: ignore[return-value]
