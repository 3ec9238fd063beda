"""The actions cartridge checks, listed once (docs/IAM.md's table), and the check of an action
pattern in a policy: a `cart:` pattern must name at least one of them.

Names match case-insensitively and may hold the wildcards `*` and `?`, as in AWS. Patterns of
other services are accepted (AWS accepts them; here they never match a request), except a
service name that looks like a misspelling of `cart`, which is refused like a misspelt action.
"""
from __future__ import annotations

import difflib
import re

from ..errors import PolicyError
from . import patterns

SERVICE = "cart"

GET_OBJECT = "cart:GetObject"
PUT_OBJECT = "cart:PutObject"
DELETE_OBJECT = "cart:DeleteObject"
LIST = "cart:List"
GET_POLICY = "cart:GetPolicy"
PUT_POLICY = "cart:PutPolicy"
READ_AUDIT = "cart:ReadAudit"        # reading the audit log and making checkpoints (cart.audit)
SNAPSHOT = "cart:Snapshot"           # snapshot(), restore(), delete_snapshot()
EXPORT = "cart:Export"               # export_engram (plus GetObject on every file)
COMPACT = "cart:Compact"             # compact(), vacuum()
FREEZE = "cart:Freeze"               # freeze()

#: Every action cartridge checks, in the order docs/IAM.md lists them.
ACTIONS = (GET_OBJECT, PUT_OBJECT, DELETE_OBJECT, LIST, GET_POLICY, PUT_POLICY, READ_AUDIT,
           SNAPSHOT, EXPORT, COMPACT, FREEZE)

_SYNTAX = re.compile(r"\*|[A-Za-z0-9_.*?-]+:[A-Za-z0-9_.*?-]+")
_BY_NAME = {a.split(":", 1)[1].casefold(): a for a in ACTIONS}
_FOLDED = tuple(a.casefold() for a in ACTIONS)


def known(action: str) -> str | None:
    """The canonical spelling of a known action written in any case, else None."""
    service, _, name = action.partition(":")
    return _BY_NAME.get(name.casefold()) if service.casefold() == SERVICE else None


def matching(pattern: str) -> tuple[str, ...]:
    """The known actions a (case-insensitive, wildcard) action pattern matches."""
    match = patterns.compile_pattern(pattern.casefold())
    return tuple(a for a, f in zip(ACTIONS, _FOLDED) if match(f))


def suggestion(action: str) -> str | None:
    """The known action closest to `action` (its name part, case-insensitively), or None."""
    name = action.rpartition(":")[2].casefold()
    close = difflib.get_close_matches(name, list(_BY_NAME), n=1, cutoff=0.6)
    return _BY_NAME[close[0]] if close else None


def _hint(action: str) -> str:
    best = suggestion(action)
    if best is not None:
        return f"did you mean {best!r}?"
    return "cartridge's actions are " + ", ".join(ACTIONS)


def check_pattern(pattern: str, where: str) -> None:
    """PolicyError unless `pattern` is `*` or `service:Name` and, for the `cart` service (or a
    service wildcard that covers it), matches at least one known action."""
    if not _SYNTAX.fullmatch(pattern):
        raise PolicyError(f"{where}: {pattern!r} is not an action ('service:Name' or '*')")
    if pattern == "*":
        return
    service = pattern.split(":", 1)[0].casefold()
    wild = "*" in pattern or "?" in pattern
    if not patterns.compile_pattern(service)(SERVICE):
        if "*" in service or "?" in service or \
                not difflib.get_close_matches(service, [SERVICE], n=1, cutoff=0.6):
            return                  # another service: accepted, never matches a request
        raise PolicyError(f"{where}: {pattern!r} names service {service!r}; cartridge's "
                          f"service is {SERVICE!r}: {_hint(pattern)}")
    if matching(pattern):
        return
    if wild:
        raise PolicyError(f"{where}: {pattern!r} matches no cartridge action (they are "
                          f"{', '.join(ACTIONS)})")
    raise PolicyError(f"{where}: unknown action {pattern!r}; {_hint(pattern)}")
