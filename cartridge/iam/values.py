"""Request-context values: the one canonical form every decision and cache key is built from.

`canonical(v)` maps what an application may pass (str, int, float, bool, datetime, date, bytes,
ipaddress objects, and lists/tuples/sets of those) to a small set of forms in which *equal means
evaluates the same*: bools become "true"/"false", integral floats become ints (1.0 -> 1,
-0.0 -> 0), datetimes become aware UTC datetimes, bytes-likes become bytes, collections become
tuples. Python's 1 == 1.0 == True could otherwise let a cached decision for one value be served
for another that a string operator tells apart. None (and an empty collection) mean "missing".
"""
from __future__ import annotations

import base64
import ipaddress
import math
from datetime import date, datetime, timezone
from typing import Any

_SCALARS = (str, int, float, bytes)


def canonical(v: Any) -> Any:
    """Canonical form of one context value (see the module docstring); TypeError if unusable."""
    t = type(v)
    if t is str or t is int:
        return v
    if t is datetime and v.tzinfo is timezone.utc:
        return v
    if t is bool:
        return "true" if v else "false"
    if v is None:
        return None
    if isinstance(v, (list, tuple, set, frozenset)):
        out = tuple(_scalar(x) for x in v)
        return out if out else None
    return _scalar(v)


def _scalar(v: Any) -> Any:
    t = type(v)
    if t is str or t is int or t is bytes:
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return repr(float(v))
        if v.is_integer():
            return int(v)
        return float(v)
    if isinstance(v, datetime):
        if v.tzinfo is None:
            return v.replace(tzinfo=timezone.utc)
        return v.astimezone(timezone.utc)
    if isinstance(v, date):
        return datetime(v.year, v.month, v.day, tzinfo=timezone.utc)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, (ipaddress.IPv4Address, ipaddress.IPv6Address,
                      ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return str(v)
    raise TypeError(f"unsupported IAM context value {v!r} ({type(v).__name__}); use str, int, "
                    f"float, bool, datetime, bytes or a list of those")


def render(v: Any) -> str:
    """The text of a canonical scalar, as string operators and policy variables see it."""
    t = type(v)
    if t is str:
        return v
    if t is int:
        return str(v)
    if t is float:
        return repr(v)
    if t is datetime:
        return format_datetime(v)
    if t is bytes:
        return base64.b64encode(v).decode("ascii")
    return str(v)


def format_datetime(d: datetime) -> str:
    """ISO 8601 in UTC with a 'Z', e.g. 2026-01-02T03:04:05Z (fraction only when non-zero)."""
    d = d.astimezone(timezone.utc)
    text = (f"{d.year:04d}-{d.month:02d}-{d.day:02d}"
            f"T{d.hour:02d}:{d.minute:02d}:{d.second:02d}")
    if d.microsecond:
        text += f".{d.microsecond:06d}".rstrip("0")
    return text + "Z"
