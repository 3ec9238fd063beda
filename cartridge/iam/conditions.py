"""The Condition element: every AWS condition operator, compiled to a test over the canonical
request context (a dict of casefolded key -> canonical value, see values.py).

Rules (AWS IAM):
- operators in a block, and keys under one operator, are AND'ed; the values of one key are OR'ed;
- a negated operator (StringNotEquals, StringNotEqualsIgnoreCase, StringNotLike,
  NumericNotEquals, DateNotEquals, NotIpAddress, ArnNotEquals, ArnNotLike) is true when the
  request value matches *none* of the policy values;
- a key missing from the request: positive operators are false, negated ones true;
  `...IfExists` is true; `ForAllValues:` is true, `ForAnyValue:` false; `Null` tests presence.
- `ForAllValues:` is true when every request value passes the operator, `ForAnyValue:` when at
  least one does (a negated operator is applied to each request value). Without a set prefix a
  multi-valued request value is true for a positive operator when any of its values matches,
  and a negated operator is the negation of that.
- Condition key names are case-insensitive; values are case-sensitive (except the IgnoreCase
  operators). Policy variables are substituted in the values of String, Bool and Arn operators
  (Version 2012-10-17); AWS does not support them for Numeric, Date, Binary and IP operators.
- A request value of the wrong type for the operator (text where a number is expected, an
  address that does not parse) matches no policy value.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from ..errors import PolicyError
from . import patterns, variables
from .values import render

Context = Mapping[str, Any]
Test = Callable[[Context], bool]

ALL = "ForAllValues:"
ANY = "ForAnyValue:"
INVALID = object()          # a request value the operator cannot compare
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# base operator -> (family, negated, comparison)
OPERATORS: dict[str, tuple[str, bool, str]] = {
    "StringEquals": ("string", False, "eq"),
    "StringNotEquals": ("string", True, "eq"),
    "StringEqualsIgnoreCase": ("string", False, "ieq"),
    "StringNotEqualsIgnoreCase": ("string", True, "ieq"),
    "StringLike": ("string", False, "like"),
    "StringNotLike": ("string", True, "like"),
    "NumericEquals": ("numeric", False, "eq"),
    "NumericNotEquals": ("numeric", True, "eq"),
    "NumericLessThan": ("numeric", False, "lt"),
    "NumericLessThanEquals": ("numeric", False, "le"),
    "NumericGreaterThan": ("numeric", False, "gt"),
    "NumericGreaterThanEquals": ("numeric", False, "ge"),
    "DateEquals": ("date", False, "eq"),
    "DateNotEquals": ("date", True, "eq"),
    "DateLessThan": ("date", False, "lt"),
    "DateLessThanEquals": ("date", False, "le"),
    "DateGreaterThan": ("date", False, "gt"),
    "DateGreaterThanEquals": ("date", False, "ge"),
    "Bool": ("bool", False, "eq"),
    "BinaryEquals": ("binary", False, "eq"),
    "IpAddress": ("ip", False, "in"),
    "NotIpAddress": ("ip", True, "in"),
    "ArnEquals": ("arn", False, "like"),
    "ArnLike": ("arn", False, "like"),
    "ArnNotEquals": ("arn", True, "like"),
    "ArnNotLike": ("arn", True, "like"),
    "Null": ("null", False, "eq"),
}
VARIABLE_FAMILIES = frozenset({"string", "bool", "arn"})


def parse_operator(name: str, where: str) -> tuple[str | None, str, bool]:
    """(set prefix or None, base operator, IfExists) of an operator name; PolicyError if unknown."""
    mode = None
    base = name
    for prefix in (ALL, ANY):
        if base.startswith(prefix):
            mode, base = prefix, base[len(prefix):]
            break
    if_exists = base.endswith("IfExists") and base[:-8] in OPERATORS
    if if_exists:
        base = base[:-8]
    if base not in OPERATORS:
        raise PolicyError(f"{where}: unknown condition operator {name!r}")
    if base == "Null" and (if_exists or mode):
        raise PolicyError(f"{where}: {name!r}: Null takes no IfExists suffix or set prefix")
    return mode, base, if_exists


# -- value parsing (policy side and request side) ---------------------------------------------
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|z|[+-]\d{2}(?::?\d{2})?)?)?")


def parse_number(text: str) -> Any:
    """int or finite float of numeric text, or INVALID."""
    if _INTEGER.fullmatch(text):
        return int(text)
    if _NUMBER.fullmatch(text):
        f = float(text)
        if math.isfinite(f):
            return int(f) if f.is_integer() and abs(f) < 2 ** 53 else f
    return INVALID


def epoch_datetime(seconds: Any) -> Any:
    try:
        if isinstance(seconds, int):
            return EPOCH + timedelta(seconds=seconds)
        return EPOCH + timedelta(microseconds=round(seconds * 1_000_000))
    except (OverflowError, ValueError):
        return INVALID


def parse_date(text: str) -> Any:
    """Aware UTC datetime of ISO 8601 text ('2026-01-02', '2026-01-02T03:04:05Z', with an
    offset or fraction) or of epoch seconds; INVALID if it is neither."""
    n = parse_number(text)
    if n is not INVALID:
        return epoch_datetime(n)
    m = _ISO.fullmatch(text)
    if m is None:
        return INVALID
    y, mo, d, h, mi, s, frac, tz = m.groups()
    try:
        micro = int((frac or "0")[:6].ljust(6, "0"))
        dt = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0), micro,
                      tzinfo=timezone.utc)
        if tz and tz not in "Zz":
            sign = 1 if tz[0] == "+" else -1
            digits = tz[1:].replace(":", "")
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
            if offset >= timedelta(hours=24):
                return INVALID
            dt -= sign * offset
        return dt
    except (ValueError, OverflowError):
        return INVALID


def to_number(v: Any) -> Any:
    t = type(v)
    if t is int or t is float:
        return v
    if t is str:
        return parse_number(v)
    return INVALID


def to_date(v: Any) -> Any:
    t = type(v)
    if t is datetime:
        return v
    if t is int or t is float:
        return epoch_datetime(v)
    if t is str:
        return parse_date(v)
    return INVALID


def to_bool(v: Any) -> Any:
    if type(v) is str:
        low = v.lower()
        if low == "true" or low == "false":
            return low
    return INVALID


def to_bytes(v: Any) -> Any:
    if type(v) is bytes:
        return v
    if type(v) is str:
        try:
            return base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            return INVALID
    return INVALID


def to_ip(v: Any) -> Any:
    if type(v) is not str:
        return INVALID
    try:
        ip = ipaddress.ip_address(v)
    except ValueError:
        return INVALID
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def to_arn(v: Any) -> Any:
    parts = render(v).split(":", 5)
    return tuple(parts) if len(parts) == 6 else INVALID


def arn_matchers(toks: patterns.Tokens) -> tuple | None:
    """Six component matchers of an ARN pattern (split at its first five ':'), or None."""
    comps: list = [[]]
    for t in toks:
        if isinstance(t, str) and len(comps) < 6 and ":" in t:
            pieces = t.split(":", 6 - len(comps))
            comps[-1].append(pieces[0])
            for p in pieces[1:]:
                comps.append([p])
        else:
            comps[-1].append(t)
    if len(comps) != 6:
        return None
    return tuple(patterns.compile_tokens(patterns.join_tokens(c)) for c in comps)


def _arn_match(matchers: tuple, parts: tuple) -> bool:
    for m, p in zip(matchers, parts):
        if not m(p):
            return False
    return True


# -- one condition (operator, key, values) -----------------------------------------------------
def _scalar_text(raw: Any, where: str) -> str:
    """Policy values are JSON strings, numbers or booleans, compared as text by most operators."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float):
        return str(int(raw)) if raw.is_integer() else repr(raw)
    if isinstance(raw, str):
        return raw
    raise PolicyError(f"{where}: condition values must be strings, numbers or booleans, "
                      f"not {raw!r}")


def _compile_values(family: str, cmp: str, raws: list, variables_on: bool, where: str):
    """(static values, dynamic templates): the policy values fixed at compile time, parsed for
    the operator's type, and the templates resolved per request."""
    statics: list = []
    dynamics: list = []
    for raw in raws:
        if family == "numeric":
            n = raw if (type(raw) in (int, float)) else (
                parse_number(raw) if isinstance(raw, str) else INVALID)
            if n is INVALID or (isinstance(n, float) and not math.isfinite(n)):
                raise PolicyError(f"{where}: {raw!r} is not a number")
            statics.append(n)
            continue
        if family == "date":
            d = to_date(raw) if type(raw) in (int, float, str) else INVALID
            if d is INVALID:
                raise PolicyError(f"{where}: {raw!r} is not an ISO 8601 date or epoch seconds")
            statics.append(d)
            continue
        if family == "null" or family == "bool":
            if isinstance(raw, bool):
                statics.append("true" if raw else "false")
                continue
            if not isinstance(raw, str):
                raise PolicyError(f"{where}: {raw!r} is not 'true' or 'false'")
            if family == "bool":
                tpl = variables.parse(raw, variables_on, where)
                if variables.has_vars(tpl):
                    dynamics.append(tpl)
                    continue
                raw = variables.text(tpl, {})
            if raw.lower() not in ("true", "false"):
                raise PolicyError(f"{where}: {raw!r} is not 'true' or 'false'")
            statics.append(raw.lower())
            continue
        text = _scalar_text(raw, where)
        if family == "binary":
            try:
                statics.append(base64.b64decode(text, validate=True))
            except (binascii.Error, ValueError):
                raise PolicyError(f"{where}: {raw!r} is not base64") from None
            continue
        if family == "ip":
            try:
                statics.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise PolicyError(f"{where}: {raw!r} is not an IP address or CIDR block") from None
            continue
        tpl = variables.parse(text, variables_on and family in VARIABLE_FAMILIES, where)
        if variables.has_vars(tpl):
            dynamics.append(tpl)
            continue
        if family == "arn":
            ms = arn_matchers(variables.static_tokens(tpl))
            if ms is None:
                raise PolicyError(f"{where}: {raw!r} is not an ARN (six ':'-separated parts)")
            statics.append(ms)
        elif cmp == "like":
            statics.append(variables.static_tokens(tpl))
        else:
            statics.append(variables.text(tpl, {}))
    return statics, tuple(dynamics)


def _static_test(family: str, cmp: str, statics: list) -> Callable[[Any], bool] | None:
    if not statics:
        return None
    if family == "string":
        if cmp == "eq":
            return frozenset(statics).__contains__
        if cmp == "ieq":
            folded = frozenset(s.casefold() for s in statics)
            return lambda cx: cx.casefold() in folded
        return patterns.PatternSet(statics).match
    if family in ("numeric", "date"):
        if cmp == "eq":
            return frozenset(statics).__contains__
        hi, lo = max(statics), min(statics)
        return {"lt": lambda cx: cx < hi, "le": lambda cx: cx <= hi,
                "gt": lambda cx: cx > lo, "ge": lambda cx: cx >= lo}[cmp]
    if family in ("bool", "binary"):
        return frozenset(statics).__contains__
    if family == "ip":
        nets = tuple(statics)
        return lambda cx: any(cx.version == n.version and cx in n for n in nets)
    if family == "arn":
        arns = tuple(statics)
        return lambda cx: any(_arn_match(ms, cx) for ms in arns)
    raise AssertionError(family)


def _dynamic_test(family: str, cmp: str, tpl: variables.Template) -> Callable[[Any, Context], bool]:
    if family == "bool":
        def test(cx, ctx):
            v = variables.text(tpl, ctx)
            return v is not None and v.lower() == cx
    elif family == "arn":
        def test(cx, ctx):
            toks = variables.tokens(tpl, ctx)
            if toks is None:
                return False
            ms = arn_matchers(toks)
            return ms is not None and _arn_match(ms, cx)
    elif cmp == "like":
        pat = variables.compile_pattern(tpl)

        def test(cx, ctx):
            if not cx.startswith(pat.prefix):
                return False
            toks = variables.pattern_tokens(pat, ctx)
            return toks is not None and patterns.compile_tokens(toks)(cx)
    elif cmp == "ieq":
        def test(cx, ctx):
            v = variables.text(tpl, ctx)
            return v is not None and v.casefold() == cx.casefold()
    else:
        def test(cx, ctx):
            return variables.text(tpl, ctx) == cx
    return test


_CONVERT = {"string": render, "numeric": to_number, "date": to_date, "bool": to_bool,
            "binary": to_bytes, "ip": to_ip, "arn": to_arn}


def compile_condition(operator: str, key: str, raws: list, variables_on: bool,
                      where: str) -> tuple[Test, set[str]]:
    """A test ctx -> bool for one key under one operator, and the context keys it reads."""
    mode, base, if_exists = parse_operator(operator, where)
    family, negated, cmp = OPERATORS[base]
    k = key.casefold()
    statics, dyn_tpls = _compile_values(family, cmp, raws, variables_on, where)
    refs = {k}
    for tpl in dyn_tpls:
        refs |= variables.keys(tpl)

    if family == "null":
        wanted = frozenset(s == "true" for s in statics)

        def null_test(ctx: Context) -> bool:
            return (ctx.get(k) is None) in wanted

        return null_test, refs

    static = _static_test(family, cmp, statics)
    convert = _CONVERT[family]
    dynamics = tuple(_dynamic_test(family, cmp, t) for t in dyn_tpls)

    def positive(x: Any, ctx: Context) -> bool:
        cx = convert(x)
        if cx is INVALID:
            return False
        if static is not None and static(cx):
            return True
        for d in dynamics:
            if d(cx, ctx):
                return True
        return False

    def test(ctx: Context) -> bool:
        v = ctx.get(k)
        if mode is ALL and v == "":
            v = None        # AWS: an empty string is an empty set, for which ForAllValues holds
        if v is None:
            if if_exists or mode is ALL:
                return True
            if mode is ANY:
                return False
            return negated
        if type(v) is not tuple:
            return positive(v, ctx) is not negated
        if mode is None:
            for x in v:
                if positive(x, ctx):
                    return not negated
            return negated
        if mode is ALL:
            for x in v:
                if positive(x, ctx) is negated:
                    return False
            return True
        for x in v:
            if positive(x, ctx) is not negated:
                return True
        return False

    return test, refs


def compile_block(block: Mapping[str, Any], variables_on: bool, where: str
                  ) -> tuple[tuple[Test, ...], frozenset[str]]:
    """Tests (all must hold) and referenced context keys of a whole Condition element."""
    tests: list = []
    refs: set = set()
    for operator, entries in block.items():
        w = f"{where} {operator}"
        if not isinstance(entries, Mapping) or not entries:
            raise PolicyError(f"{w}: an operator maps condition keys to values "
                              f"(a non-empty object), not {entries!r}")
        for key, value in entries.items():
            if not isinstance(key, str) or not key.strip():
                raise PolicyError(f"{w}: condition key must be a non-empty string, not {key!r}")
            raws = value if isinstance(value, list) else [value]
            if not raws:
                raise PolicyError(f"{w} {key}: needs at least one value")
            test, r = compile_condition(operator, key, raws, variables_on, f"{w} {key}")
            tests.append(test)
            refs |= r
    return tuple(tests), frozenset(refs)
