"""Policy documents kept inside the archive, in the catalog's system namespace (FORMAT §5.5).

A policy named N is a file record under the key b"\\x00policy/" + N holding the document as
UTF-8 JSON. The 0x00 prefix sorts before every path, so no user path, listing or scan can reach
it, and the entries are not counted as files.
"""
from __future__ import annotations

import re
import time

from .errors import CorruptionError, PolicyError
from .format import DEFAULT_MODE_FILE, KIND_FILE, POLICY_PREFIX, STORE_EMPTY
from .records import Record, decode, max_payload

NAME_RE = re.compile(r"[A-Za-z0-9+=,.@_-]{1,128}")
MAX_DOCUMENT = 1 << 20        # a policy document is at most 1 MiB of JSON


def check_name(name: object) -> str:
    """A policy name as AWS allows them: 1-128 of A-Z a-z 0-9 + = , . @ _ -."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise PolicyError(f"policy name must be 1-128 characters of A-Z a-z 0-9 +=,.@_-, "
                          f"not {name!r}")
    return name


def policy_key(name: str) -> bytes:
    return POLICY_PREFIX + check_name(name).encode("ascii")


def is_system_key(key: bytes) -> bool:
    """True for a well-formed system-namespace key (today: policies only)."""
    if not key.startswith(POLICY_PREFIX):
        return False
    try:
        return NAME_RE.fullmatch(key[len(POLICY_PREFIX):].decode("ascii")) is not None
    except UnicodeDecodeError:
        return False


def _text(eng, key: bytes, rec: Record) -> bytes:
    where = eng.where(key)
    if rec.kind != KIND_FILE:
        raise CorruptionError(f"{where}: a policy entry is not a file record")
    if rec.storage == STORE_EMPTY:
        return b""
    return eng.content.read(rec, 0, -1, where)


def _entries(eng):
    """(key, Record) of every stored policy, in name order."""
    start = POLICY_PREFIX
    while True:
        batch = eng.catalog.items_from(start, 256, POLICY_PREFIX)
        for k, v in batch:
            yield k, decode(v, eng.where(k))
        if len(batch) < 256:
            return
        start = batch[-1][0] + b"\x00"


def load(eng, name: str) -> bytes | None:
    """One stored document, or None."""
    key = policy_key(name)
    rec = eng.get(key)
    return None if rec is None else _text(eng, key, rec)


def load_all(eng) -> dict[str, bytes]:
    """name -> stored document bytes, for every policy in the engine's current state."""
    out: dict[str, bytes] = {}
    for k, rec in _entries(eng):
        if not is_system_key(k):
            raise CorruptionError(f"{eng.name}: malformed policy key {k[:60]!r}")
        out[k[len(POLICY_PREFIX):].decode("ascii")] = _text(eng, k, rec)
    return out


def fingerprint(eng) -> tuple:
    """A cheap identity of the stored policies: (name, size, checksum, mtime) per entry."""
    return tuple((k, rec.size, rec.checksum, rec.mtime_ns) for k, rec in _entries(eng))


def store(eng, name: str, text: bytes) -> None:
    """Create or replace one policy (inside the caller's commit)."""
    if len(text) > MAX_DOCUMENT:
        raise PolicyError(f"policy {name!r} is {len(text)} bytes; the limit is {MAX_DOCUMENT}")
    key = policy_key(name)
    old = eng.get(key)
    storage, payload, csum, _ = eng.content.store(memoryview(text), max_payload(len(key)))
    now = time.time_ns()
    eng.put(key, Record(KIND_FILE, storage, DEFAULT_MODE_FILE, len(text),
                        now if old is None else old.ctime_ns, now, csum, payload))
    if old is not None:
        eng.content.free(old, eng.where(key))


def remove(eng, name: str) -> bool:
    """Delete one policy (inside the caller's commit); False if there was none."""
    key = policy_key(name)
    old = eng.delete(key)
    if old is None:
        return False
    eng.content.free(old, eng.where(key))
    return True
