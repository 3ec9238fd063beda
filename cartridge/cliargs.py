"""What the command line accepts: its own errors and the checks of argument values.

    p.add_argument("--max-pages", type=positive)       # a bad value: exit 2, with the usage line
    raise UsageError("--freeze does not take --snapshot")     # a bad combination: exit 2
    raise CLIError("refusing to remove '/'")                   # anything else the CLI refuses: 1

Used by cli.py and cli_engram.py (docs/GUIDE.md, "Exit codes").
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
from typing import Any

from . import source
from .archive import Cartridge
from .archive import open as _open_archive
from .errors import NotFoundError
from .guard import PrincipalCartridge


class CLIError(Exception):
    """A failure the CLI itself detects (bad local path, unsafe extraction...): exit 1."""


class UsageError(CLIError):
    """A bad argument value or combination of options that argparse's own checks cannot see
    (--freeze with --snapshot...): exit 2 with the command's usage line, as argparse's own
    usage errors. Values checked one at a time are the `type=` validators below."""


def open_archive(target: str, mode: str, *, must_exist: bool = False,
                 **kwargs: Any) -> Cartridge | PrincipalCartridge:
    """cartridge.open() for the archive a command names. must_exist: a missing local archive is
    NotFoundError instead of a new empty one (a URL or file:// URL is looked up where it lives:
    a remote archive then says it opens read-only). A missing optional package (fsspec for a
    URL, or the one fsspec asks for: s3fs, aiohttp...) is a CLIError naming it, not a bug."""
    try:
        if must_exist and mode != "r":
            kind, local = source.resolve(target)
            if kind == "local" and not os.path.exists(local):
                raise NotFoundError(f"{target}: no such archive")
        return _open_archive(target, mode, **kwargs)
    except ImportError as e:
        raise CLIError(f"{target}: {e}") from None


# -- argument validators (argparse `type=`): a bad value is a usage error, exit 2 -------------------
def int_at_least(low: int):
    def check(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {v}")
        return v
    check.__name__ = f"int >= {low}"        # argparse names the type in some messages
    return check


count = int_at_least(0)        # -L, -d, SEQ, --size
positive = int_at_least(1)     # --max-pages


def time_value(text: str) -> float:
    """--since/--until: Unix seconds or an ISO 8601 time (naive: UTC)."""
    try:
        v = float(text)
    except ValueError:
        pass
    else:
        if v != v or v in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be a finite time, not {text!r}")
        return v
    try:
        t = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be Unix seconds or an ISO 8601 time (e.g. "
                                         f"2026-01-31T12:00:00), not {text!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()


def seconds(text: str) -> float:
    """--follow SECONDS: a number >= 0."""
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"takes seconds >= 0 (or nothing), not {text!r}")
    return v


def tree_head(text: str) -> tuple[int, bytes]:
    """--head SIZE:ROOT, ROOT the 64 hex digits of a SHA-256."""
    size, _, root = text.partition(":")
    try:
        held = (int(size), bytes.fromhex(root))
    except ValueError:
        held = (-1, b"")
    if held[0] < 0 or len(held[1]) != 32:
        raise argparse.ArgumentTypeError(f"must look like SIZE:ROOT (SIZE >= 0, ROOT 64 hex "
                                         f"digits), not {text!r}")
    return held


def pair(text: str) -> tuple[str, str]:
    """--tag/--context KEY=VALUE."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"must look like KEY=VALUE, not {text!r}")
    return key, value


def snapshot_name(name: str) -> str:
    """A snapshot NAME as the API takes it."""
    from .snapstore import check_name

    try:
        return check_name(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
