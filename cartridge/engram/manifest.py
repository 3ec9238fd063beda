"""The Engram manifest (`manifest.json`) and its Ed25519 signatures, as engram-rs defines them.

The schema is engram-rs's Manifest struct; unknown fields are dropped when parsed (as serde
does), so they are never signed. A signature is Ed25519 over the 32 raw bytes of SHA-256 of the
*canonical* manifest: compact JSON, keys in the struct's field order, absent options omitted,
`"signatures":[]`. The stored file is the pretty, key-sorted form; readers never depend on it.
"""
from __future__ import annotations

import binascii
import hashlib
import json
import time
from typing import Any

from ..errors import CorruptionError
from . import crypto

ALGORITHM = "ed25519"
DEFAULT_VERSION = "0.4.0"          # what engram-rs Manifest::new writes
U64_MAX = (1 << 64) - 1

# field -> (kind, required); kind: "str", "u64", "[str]", or a nested schema name
_SCHEMAS: dict[str, list[tuple[str, str, bool]]] = {
    "manifest": [("version", "str", True), ("id", "str", True), ("name", "str", True),
                 ("description", "str", False), ("author", "author", True),
                 ("metadata", "metadata", True), ("capabilities", "[str]", False),
                 ("files", "[file]", False), ("signatures", "[signature]", False)],
    "author": [("name", "str", True), ("email", "str", False), ("url", "str", False)],
    "metadata": [("version", "str", True), ("created", "u64", True), ("modified", "u64", False),
                 ("license", "str", False), ("tags", "[str]", False)],
    "file": [("path", "str", True), ("sha256", "str", True), ("size", "u64", True),
             ("mime_type", "str", False)],
    "signature": [("algorithm", "str", True), ("public_key", "str", True),
                  ("signature", "str", True), ("timestamp", "u64", True), ("signer", "str", False)],
}
_LIST_DEFAULTS = {"capabilities", "files", "signatures", "tags"}


class ManifestError(CorruptionError):
    """manifest.json does not parse as an Engram manifest."""


def _value(kind: str, v: Any, where: str) -> Any:
    if kind == "str":
        if not isinstance(v, str):
            raise ManifestError(f"manifest {where}: expected a string")
        return v
    if kind == "u64":
        if type(v) is not int or not 0 <= v <= U64_MAX:
            raise ManifestError(f"manifest {where}: expected an integer in 0..2^64-1")
        return v
    if kind.startswith("["):
        if not isinstance(v, list):
            raise ManifestError(f"manifest {where}: expected a list")
        return [_value(kind[1:-1], x, f"{where}[{i}]") for i, x in enumerate(v)]
    return _struct(kind, v, where)


def _struct(schema: str, obj: Any, where: str) -> dict:
    if not isinstance(obj, dict):
        raise ManifestError(f"manifest {where or 'root'}: expected an object")
    out: dict[str, Any] = {}
    for name, kind, required in _SCHEMAS[schema]:
        here = f"{where}.{name}" if where else name
        v = obj.get(name)
        if v is None:
            if name in obj and name in _LIST_DEFAULTS:
                raise ManifestError(f"manifest {here}: null is not a list")
            if required:
                raise ManifestError(f"manifest {here}: missing")
            if name in _LIST_DEFAULTS:
                out[name] = []
            continue
        out[name] = _value(kind, v, here)
    return out


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    d: dict = {}
    for k, v in pairs:
        if k in d:
            raise ManifestError(f"manifest: duplicate field {k!r}")
        d[k] = v
    return d


def parse(raw: bytes | str) -> dict:
    """A manifest in canonical field order (unknown fields dropped, defaults filled in);
    ManifestError for anything engram-rs would refuse, and for duplicate keys."""
    try:
        obj = json.loads(raw, object_pairs_hook=_no_duplicates)
    except ManifestError:
        raise
    except (ValueError, RecursionError) as e:
        raise ManifestError(f"manifest.json is not valid JSON ({e})") from None
    return _struct("manifest", obj, "")


def new(id: str, name: str, *, author: str = "cartridge", version: str = "1.0.0",
        created: int | None = None, description: str | None = None) -> dict:
    """An empty manifest as engram-rs Manifest::new makes it."""
    m: dict[str, Any] = {"version": DEFAULT_VERSION, "id": id, "name": name}
    if description is not None:
        m["description"] = description
    m["author"] = {"name": author}
    m["metadata"] = {"version": version, "created": int(time.time()) if created is None else created,
                     "tags": []}
    m["capabilities"] = []
    m["files"] = []
    m["signatures"] = []
    return _struct("manifest", m, "")


def canonical(m: dict) -> bytes:
    """The bytes engram-rs hashes: compact serde JSON in struct order, signatures emptied."""
    m = _struct("manifest", m, "")
    m["signatures"] = []
    return json.dumps(m, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def canonical_hash(m: dict) -> bytes:
    return hashlib.sha256(canonical(m)).digest()


def stored_bytes(m: dict) -> bytes:
    """manifest.json as engram-rs stores it: pretty (2-space), keys sorted, no final newline.
    (json's pretty printer is pure Python: the files list, the bulk, is laid out here.)"""
    m = _struct("manifest", m, "")
    files = m["files"]
    text = json.dumps(dict(m, files=[]), indent=2, sort_keys=True, ensure_ascii=False)
    if files:
        dump = json.dumps
        entries = []
        for f in files:
            fields = ",\n".join(f'      "{k}": {f[k] if k == "size" else dump(f[k], ensure_ascii=False)}'
                                for k in sorted(f))
            entries.append("    {\n" + fields + "\n    }")
        text = text.replace('"files": []', '"files": [\n' + ",\n".join(entries) + "\n  ]", 1)
    return text.encode("utf-8")


def sign(m: dict, key: Any, signer: str | None = None, timestamp: int | None = None) -> dict:
    """Append a signature by `key` (see crypto.load_private_key) to manifest `m` (in place)."""
    priv = crypto.load_private_key(key)
    sig = priv.sign(canonical_hash(m))
    entry: dict[str, Any] = {"algorithm": ALGORITHM, "public_key": crypto.public_hex(priv),
                             "signature": sig.hex(),
                             "timestamp": int(time.time()) if timestamp is None else timestamp}
    if signer is not None:
        entry["signer"] = signer
    m.setdefault("signatures", []).append(entry)
    return m


def _unhex(s: str, n: int) -> bytes | None:
    try:
        raw = binascii.unhexlify(s.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    return raw if len(raw) == n else None


def verify_signatures(m: dict) -> list[bool]:
    """One bool per signature entry, as engram-rs verify_signatures: the algorithm is exactly
    "ed25519", the key and signature decode (strict hex) to 32 and 64 bytes, and the signature
    verifies over the canonical hash. Never raises for a bad entry."""
    h = canonical_hash(m)
    out = []
    for s in m.get("signatures", []):
        ok = False
        pk, sig = _unhex(s["public_key"], 32), _unhex(s["signature"], 64)
        if s["algorithm"] == ALGORITHM and pk is not None and sig is not None:
            try:
                crypto.load_public_key(pk).verify(sig, h)
                ok = True
            except (crypto.InvalidSignature, ValueError):
                ok = False
        out.append(ok)
    return out
