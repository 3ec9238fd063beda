"""cartridge.import_engram(): unpack an Engram into a cartridge, in one transaction.

Every member name goes through the archive's own path normaliser (cartridge.paths) and must
come out unchanged; the content is streamed in (CRC, size and, when the Engram has a manifest,
its SHA-256 and size checked on the way); a cartridge.json written by export_engram restores
modes, exact mtimes, explicit directories and policies. With verify_key, the whole Engram is
verified first (signature by that key, every entry against the manifest) and nothing is written
unless it passes. Any failure rolls the transaction back: the cartridge is as it was.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from decimal import Decimal
from typing import Any

from .. import _handle as H
from .. import paths as P
from ..errors import CorruptionError, InvalidPathError, SignatureError
from ..iam import actions as A
from . import crypto
from .export import CARTRIDGE_FORMAT, CARTRIDGE_JSON, progress_callback
from .layout import MANIFEST_NAME, EntryInfo
from .reader import EngramReader

SMALL_WRITE = 1 << 20
MAX_CARTRIDGE_JSON = 256 << 20
MTIME_NS_RANGE = (-(1 << 63), (1 << 63) - 1)


def _cartridge_meta(r: EngramReader) -> dict | None:
    """cartridge.json if this Engram has one written by export_engram, checked field by field
    (it comes from outside: hostile until proven otherwise); None otherwise."""
    if CARTRIDGE_JSON not in r:
        return None
    e = r.getinfo(CARTRIDGE_JSON)
    # about 100 bytes a file is written; policies are small: a generous bound all the same
    if e.size > min(MAX_CARTRIDGE_JSON, 4096 * len(r) + (16 << 20)):
        raise CorruptionError(f"{r.path}: cartridge.json is {e.size} bytes, past the cap")
    try:
        doc = json.loads(r.read(CARTRIDGE_JSON))
    except (ValueError, RecursionError):
        return None                               # someone else's cartridge.json: a plain file
    if not isinstance(doc, dict) or doc.get("format") != CARTRIDGE_FORMAT:
        return None
    bad = CorruptionError(f"{r.path}: cartridge.json is malformed")
    files, dirs, policies = doc.get("files", {}), doc.get("dirs", []), doc.get("policies", {})
    if not isinstance(files, dict) or not isinstance(dirs, list) or not isinstance(policies, dict):
        raise bad
    for name, meta in files.items():
        if not isinstance(meta, dict):
            raise bad
        mode, mtime_ns = meta.get("mode"), meta.get("mtime_ns")
        if type(mode) is not int or not 0 <= mode <= 0o7777:
            raise CorruptionError(f"{r.path}: cartridge.json: bad mode for {name!r}")
        if type(mtime_ns) is not int or not MTIME_NS_RANGE[0] <= mtime_ns <= MTIME_NS_RANGE[1]:
            raise CorruptionError(f"{r.path}: cartridge.json: bad mtime for {name!r}")
    if not all(isinstance(d, str) for d in dirs) or not all(isinstance(k, str) for k in policies):
        raise bad
    return {"files": files, "dirs": dirs, "policies": policies}


def _target(name: str) -> str:
    """The cartridge path of member `name`: through the archive's normaliser, unchanged."""
    want = "/" + name
    try:
        got = P.normalize_file(want)
    except InvalidPathError as e:
        raise InvalidPathError(f"Engram member {name!r} is not a usable cartridge path: {e}") \
            from None
    if got != want:
        raise InvalidPathError(f"Engram member {name!r} would land at {got!r}; refused")
    return got


class _Hasher:
    def __init__(self, src):
        self.src = src
        self.h = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        b = self.src.read(n)
        self.h.update(b)
        return b


def import_engram(src: str | os.PathLike, dest_cart: Any, *, verify_key: Any = None,
                  key: Any = None, progress: Any = None) -> dict:
    """Build or fill the cartridge `dest_cart` (a path, opened "a" and closed again, or an open
    handle, owner or principal) from the Engram `src`, in one transaction. `verify_key`: an
    Ed25519 public key (object, 32 raw bytes, hex, or a key file) that must have signed the
    Engram (SignatureError, nothing written, otherwise). `key`: the 32-byte AES key of an
    encrypted Engram. Returns counts: files, bytes, policies, dirs.

    The operation hook (cartridge._handle) sees one operation, method "import_engram",
    action cart:PutObject, path "/", size the bytes imported and `files` one FileWrite per
    file written (its writes, stream closes, mkdirs and set_policy calls are part of it),
    reported inside the import's transaction before its commit, as a call inside
    transaction() is; an import into a path reports from the moment the archive is open."""
    report_progress = progress_callback(progress, "import")
    trusted = None if verify_key is None else crypto.load_public_key(verify_key)
    if isinstance(dest_cart, (str, os.PathLike)):
        return _import(src, None, os.fspath(dest_cart), trusted, key, report_progress)
    return _import(src, dest_cart, None, trusted, key, report_progress)


class _Op:
    """The import as one reported operation (nothing when nobody listens)."""

    def __init__(self, cart) -> None:
        self.ev: H.Event | None = None
        self.files: list[H.FileWrite] = []
        self.size = 0
        if H.hooks:
            self.ev = H.begin_op(cart, getattr(cart, "principal", None), "import_engram",
                                 A.PUT_OBJECT, "/", 0, absorb=True)

    def wrote(self, path: str, size: int) -> None:
        self.size += size
        ev = self.ev
        if ev is not None:
            self.files.append(H.FileWrite(path, size, ev.checksum))
            ev.csum = None

    def end(self, exc: BaseException | None) -> None:
        ev, self.ev = self.ev, None
        if ev is None:
            return
        ev.size = self.size
        ev.csum = None
        ev.files = tuple(self.files)
        if exc is not None:
            ev.changed = False          # the transaction it ran in is rolled back
        H.end_op(ev, exc)


def _import(src, cart, path: str | None, trusted, key, report_progress) -> dict:
    """import_engram into the open handle `cart`, or into the archive at `path` (opened "a",
    created if missing; removed again if this call created it and failed)."""
    op = _Op(cart) if cart is not None else None
    try:
        return _read_and_fill(src, cart, path, trusted, key, report_progress, op)
    except BaseException as e:
        if op is not None:
            op.end(e)
        raise


def _read_and_fill(src, cart, path: str | None, trusted, key, report_progress,
                   op: _Op | None) -> dict:
    with EngramReader(src, key) as r:
        if trusted is not None:
            rep = r.verify(public_keys=[trusted])
            if not rep.trusted:
                raise SignatureError(f"{r.path}: not signed by the given key: "
                                     + "; ".join(rep.problems[:3]))
            if not rep.ok:
                raise CorruptionError(f"{r.path}: verification failed: "
                                      + "; ".join(rep.problems[:3]))
        meta = _cartridge_meta(r)
        listed = {}
        m = r.manifest()
        if m is not None:
            listed = {f["path"]: (f["sha256"].lower(), f["size"]) for f in m["files"]}
        entries = [e for e in r.infolist() if e.path != MANIFEST_NAME
                   and not (meta is not None and e.path == CARTRIDGE_JSON)]
        targets = [(e, _target(e.path)) for e in entries]        # every name first
        if path is not None:
            existed = os.path.lexists(path)
            cart = H.open_archive(path, "a")
            op = None
            try:
                op = _Op(cart)
                return _fill(r, cart, targets, meta, listed, report_progress, op)
            except BaseException as e:
                if op is not None:
                    op.end(e)
                cart.close()
                if not existed:                 # the archive this call created: not left behind
                    with contextlib.suppress(OSError):
                        os.remove(path)
                raise
            finally:
                cart.close()
        assert op is not None
        return _fill(r, cart, targets, meta, listed, report_progress, op)


def _fill(r: EngramReader, cart, targets: list[tuple[EntryInfo, str]], meta: dict | None,
          listed: dict, report_progress, op: _Op) -> dict:
    with cart.transaction():
        try:
            out = _fill_files(r, cart, targets, meta, listed, report_progress, op)
        except BaseException as e:
            op.end(e)           # as a call inside transaction(): before the block's end
            raise
        op.end(None)            # reported inside the transaction, before its commit
    return out


def _fill_files(r: EngramReader, cart, targets: list[tuple[EntryInfo, str]],
                meta: dict | None, listed: dict, report_progress, op: _Op) -> dict:
    total = sum(e.size for e, _ in targets)
    done = 0
    fmeta = meta["files"] if meta is not None else {}
    for e, path in targets:
        fm = fmeta.get(e.path)
        mode = fm["mode"] if fm is not None else None
        mtime: Any = Decimal(fm["mtime_ns"]) / Decimal(1_000_000_000) if fm is not None \
            else e.mtime
        with r.open(e.path) as src:
            hs = _Hasher(src)
            if e.size <= SMALL_WRITE:
                cart.write(path, hs.read(), mode=mode, mtime=mtime)
            else:
                with cart.open(path, "wb", perm=mode, mtime=mtime) as out:
                    while True:
                        block = hs.read(1 << 20)
                        if not block:
                            break
                        out.write(block)
            if hs.read(1):
                raise CorruptionError(f"{r.path}: {e.path!r} longer than declared")
        want = listed.get(e.path)
        if want is not None and want != (hs.h.hexdigest(), e.size):
            raise CorruptionError(f"{r.path}: {e.path!r} does not match the manifest's "
                                  "SHA-256 and size")
        op.wrote(path, e.size)
        done += e.size
        if report_progress is not None:
            report_progress(done, total, path)
    dirs = meta["dirs"] if meta is not None else []
    for d in dirs:
        cart.mkdir(P.normalize(d), parents=True, exist_ok=True)
    policies = meta["policies"] if meta is not None else {}
    for name, doc in policies.items():
        cart.set_policy(name, doc)
    return {"files": len(targets), "bytes": total, "policies": len(policies), "dirs": len(dirs)}
