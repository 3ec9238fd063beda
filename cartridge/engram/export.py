"""Cartridge.export_engram(): freeze one committed state of an archive into an Engram file.

The export pins a committed state for its whole run (the handle's lock and a held reader
snapshot, so neither another thread nor another process's commits can mix two states), checks
every name before writing a byte, streams every file into the Engram (memory stays bounded),
writes `cartridge.json` (modes, exact mtimes, explicit directories, policies: the data an
Engram has no field for) and `manifest.json` (engram-rs's schema: every file's SHA-256 and
size, cartridge.json included, so a signature covers it all), writes to a temp file beside
`dest`, re-reads and verifies it, and renames it into place (cartridge.localfile).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

from .. import _handle as H
from .. import localfile as LF
from .. import paths as P
from .. import policies as PL
from ..errors import CartridgeError, CorruptionError, InvalidPathError, LockedError, NotFoundError
from ..format import KIND_DIR, KIND_FILE
from . import crypto
from . import manifest as MF
from .layout import MANIFEST_NAME, path_problem
from .reader import SQLITE_MAGIC, EngramReader, EngramReport
from .writer import EngramWriter, compression_method, encryption_mode

CARTRIDGE_JSON = "cartridge.json"
CARTRIDGE_FORMAT = "cartridge-engram/1"        # marks a cartridge.json this module wrote
RESERVED = (MANIFEST_NAME, CARTRIDGE_JSON)
SMALL_READ = 1 << 20                            # files up to this are read in one call
_COMPANIONS = ("-wal", "-journal", "-shm")
_MANIFEST_KEYS = {"id", "name", "description", "version", "author", "license", "tags",
                  "capabilities", "created"}

Progress = Callable[[int, int, str], None]


def progress_callback(progress: Any, what: str) -> Progress | None:
    """progress=: None/False (none), True (a bar on stderr), or a callable(done, total, path)."""
    if progress is None or progress is False:
        return None
    if progress is True:
        return _Bar(what)
    if callable(progress):
        return progress
    raise TypeError("progress must be None, True or a callable(done, total, path)")


class _Bar:
    def __init__(self, what: str):
        self.what = what
        self.last = -1

    def __call__(self, done: int, total: int, path: str) -> None:
        pct = 100 if total <= 0 else done * 100 // total
        if pct != self.last or done >= total:
            self.last = pct
            filled = pct * 30 // 100
            sys.stderr.write(f"\r{self.what} [{'#' * filled}{'.' * (30 - filled)}] {pct:3d}%")
            if done >= total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def _manifest_base(cart_path: str, manifest: Mapping[str, Any] | None, signer: str | None) \
        -> dict:
    stem = os.path.splitext(os.path.basename(cart_path))[0] or "cartridge"
    over = dict(manifest or {})
    unknown = set(over) - _MANIFEST_KEYS
    if unknown:
        raise ValueError(f"manifest= takes {sorted(_MANIFEST_KEYS)}, not {sorted(unknown)} "
                         "(engram-rs drops unknown fields, so they would never be signed)")
    author = over.get("author", signer or "cartridge")
    try:
        m = MF.new(over.get("id", stem), over.get("name", stem),
                   version=over.get("version", "1.0.0"), created=over.get("created"),
                   description=over.get("description"))
        m["author"] = {"name": author} if isinstance(author, str) else dict(author)
        if "license" in over:
            m["metadata"]["license"] = over["license"]
        m["metadata"]["tags"] = list(over.get("tags", []))
        m["capabilities"] = list(over.get("capabilities", []))
        return MF.parse(json.dumps(m))                   # the schema's own type checks
    except (MF.ManifestError, TypeError, ValueError) as e:
        raise ValueError(f"manifest=: {e}") from None


def _prefixes(include: str | Iterable[str] | None) -> list[str] | None:
    if include is None:
        return None
    items = [include] if isinstance(include, str) else list(include)
    out = []
    for p in items:
        if not isinstance(p, str):
            raise TypeError(f"include= takes path prefixes (str), not {type(p).__name__}")
        out.append(P.normalize(p))
    return out


def _included(path: str, prefixes: list[str] | None) -> bool:
    if prefixes is None:
        return True
    return any(pre == "/" or path == pre or path.startswith(pre + "/") for pre in prefixes)


class _Plan:
    """What the pinned state holds: the files to export (path, size, permission bits,
    mtime_ns) in path order, the explicit directories, and the files' total size."""

    def __init__(self) -> None:
        self.files: list[tuple[str, int, int, int]] = []
        self.dirs: list[str] = []
        self.total = 0


def _plan(cart, prefixes: list[str] | None) -> _Plan:
    plan = _Plan()
    eng = H.ready(cart)
    unmatched = {p for p in prefixes if p != "/"} if prefixes is not None else set()
    for key, rec in eng.items(b"/", b"/"):
        path = P.stored_path(key)
        if not _included(path, prefixes):
            continue
        if unmatched:
            unmatched = {p for p in unmatched if not (path == p or path.startswith(p + "/"))}
        if rec.kind == KIND_DIR:
            plan.dirs.append(path)
        elif rec.kind == KIND_FILE:
            name = path[1:]
            why = path_problem(name)
            if why is not None:
                raise InvalidPathError(f"{path!r} cannot be stored in an Engram: {why}")
            if name in RESERVED:
                raise InvalidPathError(f"{path!r} collides with the Engram's own {name}; "
                                       "rename it or leave it out with include=")
            plan.files.append((path, rec.size, rec.mode & 0o7777, rec.mtime_ns))
            plan.total += rec.size
    if unmatched:
        # a mistyped --include would otherwise ship an Engram without what was asked for
        raise NotFoundError(f"nothing to export under {', '.join(sorted(unmatched))} "
                            f"(include= names no file or directory of the archive)")
    return plan


class _Hashing:
    """read() through, hashing what passes. A file that starts as an SQLite database has the
    first 20 bytes of its image patched so its header says rollback journal (bytes 18-19 = 1,
    as WAL mode leaves them 2): stdlib sqlite3.deserialize and engram-rs's VFS open it."""

    def __init__(self, src):
        self.src = src
        self.h = hashlib.sha256()
        self.first = True
        self.database = False

    def read(self, n: int) -> bytes:
        b = self.src.read(n)
        if self.first and b:
            self.first = False
            if len(b) < 20 and n >= 20:       # a short first read: make the header whole
                more = self.src.read(20 - len(b))
                b = bytes(b) + bytes(more)
            if b[:16] == SQLITE_MAGIC and len(b) >= 20:
                self.database = True
                b = _rollback_header(bytes(b))
        self.h.update(b)
        return b


def _companions_busy(eng, path: str) -> bool:
    for suffix in ("-wal", "-journal"):
        rec = eng.get(P.to_key(path + suffix))
        if rec is not None and rec.kind == KIND_FILE and rec.size > 0:
            return True
    return False


@contextlib.contextmanager
def _sqlite_image(cart, path: str) -> Iterator[tuple[BinaryIO, int]]:
    """A database with live WAL frames or a hot journal: its committed image, made by SQLite
    itself (an online backup through a read-only connection) in a temp file, rollback mode."""
    import apsw

    fd, tmp = tempfile.mkstemp(suffix=".db")
    os.close(fd)
    try:
        src = H.sqlite_connect(cart, path, True)
        # read-only: closing the last connection must not try to checkpoint the WAL
        src.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
        try:
            out = apsw.Connection(tmp)
            try:
                with out.backup("main", src, "main") as b:
                    b.step(-1)
                out.execute("PRAGMA journal_mode=DELETE").fetchall()
            finally:
                out.close()
        except apsw.BusyError:
            raise LockedError(f"{path!r} is in use by a connection of this handle (a WAL database "
                              "allows one at a time); close it, or export through another "
                              "handle") from None
        finally:
            src.close()
        with open(tmp, "rb") as f:
            yield f, os.fstat(f.fileno()).st_size
    finally:
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.remove(tmp + suffix)


def export(cart, dest: str | os.PathLike, *, signing_key: Any = None, signer: str | None = None,
           compression: str = "auto", include: str | Iterable[str] | None = None,
           manifest: Mapping[str, Any] | None = None, encryption: str | None = None,
           key: Any = None, progress: Any = None, verify: bool = True,
           snapshot: str | None = None, freeze: bool = False,
           authorize: Callable[[list[str], bool], None] | None = None,
           principal: str | None = None) -> EngramReport | None:
    """See Cartridge.export_engram. `snapshot`: export that snapshot (through cart.at(),
    which pins its root) instead of the newest committed state. `freeze`: freeze the archive
    (vacuumed first) once the Engram is written, synced and verified, still holding the
    handle's lock, then rename the Engram into place (a failed freeze removes it; a failed
    export freezes nothing). `authorize(paths, has_policies)`: a principal handle's check of
    what is about to be exported (raises to refuse; nothing is written then); `principal`:
    whose call it is (the freeze is reported to the operation hook as theirs)."""
    # every argument is checked before anything is read or written
    compression_method(compression, "x", 0)
    enc_mode, aes_key = encryption_mode(encryption, key)
    keys = [] if signing_key is None else (
        list(signing_key) if isinstance(signing_key, (list, tuple)) else [signing_key])
    privs = [crypto.load_private_key(k) for k in keys]
    if signer is not None and not isinstance(signer, str):
        raise TypeError("signer must be a str")
    prefixes = _prefixes(include)
    report_progress = progress_callback(progress, "export")
    base = _manifest_base(cart.path, manifest, signer)
    dest = LF.check_destination(dest)
    try:
        same = os.path.samefile(dest, cart.path)
    except OSError:
        same = False
    if same:
        raise InvalidPathError(f"{dest} is the archive being exported: give another file")
    if not isinstance(freeze, bool):
        raise TypeError(f"freeze must be a bool, not {type(freeze).__name__}")
    before_publish = None
    if freeze:
        if snapshot is not None:
            raise ValueError("freeze=True exports the live state; it does not take snapshot=")
        if not verify:
            raise ValueError("freeze=True always verifies the Engram before freezing the archive")
        with H.lock(cart):
            H.writer(cart)                    # read-only, already frozen: refused up front
            if H.in_transaction(cart):
                raise CartridgeError("export_engram(freeze=True) cannot run inside a "
                                     "transaction() block")

        def before_publish() -> None:
            _freeze(cart, principal)
    if snapshot is not None:
        if not isinstance(snapshot, str):
            raise TypeError(f"snapshot must be a str, not {type(snapshot).__name__}")
        # the snapshot's own read-only handle: its root is fixed and its pages pinned until
        # it is closed, so the export reads exactly the snapshot
        with cart.at(snapshot) as view:
            return _export(view, dest, privs, signer, compression, prefixes, report_progress,
                           base, enc_mode, aes_key, verify, authorize, before_publish)
    return _export(cart, dest, privs, signer, compression, prefixes, report_progress, base,
                   enc_mode, aes_key, verify, authorize, before_publish)


def _export(cart, dest: str, privs: list, signer: str | None, compression: str,
            prefixes: list[str] | None, report_progress: Progress | None, base: dict,
            enc_mode: int, aes_key: bytes | None, verify: bool,
            authorize: Callable[[list[str], bool], None] | None,
            before_publish: Callable[[], None] | None) -> EngramReport | None:
    lock = H.lock(cart)
    with lock:
        if H.in_transaction(cart):
            raise CartridgeError("export_engram reads one committed state: call it outside a "
                                 "transaction() block")
        eng = H.ready(cart)                              # a reader moves to the newest commit
        H.hold_snapshot(cart)                            # ...and stays there until the end
        held = True
        try:
            plan = _plan(cart, prefixes)
            policies = PL.all_policies(cart)
            if authorize is not None:
                authorize([f[0] for f in plan.files], bool(policies))
            exported = {f[0] for f in plan.files}
            # a database's -wal/-journal/-shm are folded into its exported image: which
            # companions have an exported database beside them (databases with no companion
            # are recognised by their first bytes as they are streamed)
            databases = set()
            for path in exported:
                if path.endswith(_COMPANIONS):
                    db = P.database_of(path)
                    if db != path and db in exported and cart.read(db, 0, 16) == SQLITE_MAGIC:
                        databases.add(db)
            skipped = {p for p in exported
                       if p.endswith(_COMPANIONS) and P.database_of(p) in databases}
            report = None
            with LF.atomic_path(dest) as tmp:
                fmeta, digests = _write(cart, eng, tmp, plan, skipped, databases, policies,
                                        base, privs, signer, compression, enc_mode, aes_key,
                                        report_progress)
                if verify:
                    report = _verify(tmp, aes_key, privs, fmeta, digests)
                if before_publish is not None:
                    H.release_snapshot(cart)         # everything is read: let it commit
                    held = False
                    before_publish()
        finally:
            if held:
                H.release_snapshot(cart)
    return report


def _freeze(cart, principal: str | None) -> None:
    """cart.freeze() as an operation of its own (method "freeze", cart:Freeze) inside the
    export that asked for it, so the operation hook (the audit log) records the freeze."""
    if not H.hooks:
        cart.freeze()
        return
    from ..iam import actions as A

    ev = H.begin_op(cart, principal, "freeze", A.FREEZE, "/")
    try:
        cart.freeze()
    except BaseException as e:
        H.end_op(ev, e)
        raise
    H.end_op(ev, None)


BATCH_BYTES = 1 << 20            # small files handed to a worker thread together
BATCH_FILES = 256


def _workers() -> int:
    return max(1, min(4, (os.cpu_count() or 1)))


def _prepare_batch(w: EngramWriter, batch: list, compression: str) -> list:
    """A worker thread's share: per file, the compressed payload, CRC and SHA-256 (all three
    release the GIL, so batches on several threads run in parallel)."""
    out = []
    for name, data in batch:
        data = _rollback_header(data)
        out.append((w.prepare(name, data, compression=compression),
                    hashlib.sha256(data).hexdigest(), data[:16] == SQLITE_MAGIC))
    return out


def _write(cart, eng, tmp: str, plan: _Plan, skipped: set, databases: set, policies: dict,
           base: dict, privs: list, signer: str | None, compression: str, enc_mode: int,
           aes_key: bytes | None, report_progress: Progress | None) -> tuple[dict, dict]:
    """Write the Engram: files in plan order. Small files are read here and prepared
    (compressed, hashed) in batches by worker threads, a bounded number of batches ahead, then
    written in order; large files and databases with live companions are streamed here."""
    encryption = {0: None, 1: "archive", 2: "per-file"}[enc_mode]
    fmeta: dict[str, dict] = {}
    digests: dict[str, tuple[str, int]] = {}
    done = 0
    nworkers = _workers()
    pool = ThreadPoolExecutor(nworkers, thread_name_prefix="engram-export")
    pending: deque = deque()            # (future, [(path, name, size, mode, mtime_ns)])

    def record(path: str, name: str, size: int, mode: int, mtime_ns: int, digest: str,
               is_db: bool) -> None:
        nonlocal done
        if is_db:
            databases.add(path)
        digests[name] = (digest, size)
        fmeta[name] = {"mode": mode, "mtime_ns": mtime_ns}
        done += size
        if report_progress is not None:
            report_progress(done, plan.total, path)

    def drain(keep: int) -> None:
        while len(pending) > keep:
            fut, metas = pending.popleft()
            for (path, name, size, mode, mtime_ns), (prep, digest, is_db) in \
                    zip(metas, fut.result()):
                w.add_prepared(name, prep, mtime=mtime_ns // 1_000_000_000)
                record(path, name, size, mode, mtime_ns, digest, is_db)

    with pool, open(tmp, "r+b", buffering=1 << 20) as f:
        w = EngramWriter(f, encryption=encryption, key=aes_key)
        try:
            batch: list = []
            metas: list = []
            batch_bytes = 0
            for path, size, mode, mtime_ns in plan.files:
                if path in skipped:
                    continue
                name = path[1:]
                if size <= SMALL_READ and path not in databases:
                    batch.append((name, cart.read(path)))
                    metas.append((path, name, size, mode, mtime_ns))
                    batch_bytes += size
                    if batch_bytes >= BATCH_BYTES or len(batch) >= BATCH_FILES:
                        pending.append((pool.submit(_prepare_batch, w, batch, compression),
                                        metas))
                        batch, metas, batch_bytes = [], [], 0
                        drain(2 * nworkers)
                    continue
                if batch:
                    pending.append((pool.submit(_prepare_batch, w, batch, compression), metas))
                    batch, metas, batch_bytes = [], [], 0
                drain(0)                                     # keep the order of the plan
                mtime_s = mtime_ns // 1_000_000_000
                if path in databases and _companions_busy(eng, path):
                    with _sqlite_image(cart, path) as (src, n):
                        hs = _Hashing(src)
                        w.add_stream(name, hs, n, compression=compression, mtime=mtime_s)
                    record(path, name, n, mode, mtime_ns, hs.h.hexdigest(), True)
                    continue
                with contextlib.ExitStack() as stack:
                    stream: Any = _Bytes(cart.read(path)) if size <= SMALL_READ else \
                        stack.enter_context(cart.open(path, "rb"))
                    hs = _Hashing(stream)
                    w.add_stream(name, hs, size, compression=compression, mtime=mtime_s)
                record(path, name, size, mode, mtime_ns, hs.h.hexdigest(), hs.database)
            if batch:
                pending.append((pool.submit(_prepare_batch, w, batch, compression), metas))
            drain(0)
            doc = {"format": CARTRIDGE_FORMAT, "files": fmeta,
                   "dirs": plan.dirs, "policies": policies,
                   "sqlite": sorted(p[1:] for p in databases)}
            cj = json.dumps(doc, sort_keys=True, ensure_ascii=False).encode("utf-8")
            w.add(CARTRIDGE_JSON, cj, compression="auto")
            digests[CARTRIDGE_JSON] = (hashlib.sha256(cj).hexdigest(), len(cj))
            m = base
            m["files"] = [{"path": n, "sha256": d[0], "size": d[1]} for n, d in digests.items()]
            for priv in privs:
                MF.sign(m, priv, signer=signer)
            w.add_manifest(m)
            w.close()
        except BaseException:
            for fut, _ in pending:
                fut.cancel()
            w.abort()
            raise
        os.fsync(f.fileno())
    return fmeta, digests


def _verify(tmp: str, aes_key: bytes | None, privs: list, fmeta: dict,
            digests: dict[str, tuple[str, int]]) -> EngramReport:
    """Re-read the written file: every entry against what was read from the archive."""
    with EngramReader(tmp, aes_key) as r:
        report = r.verify(public_keys=[crypto.public_raw(p) for p in privs] or None)
        names = set(r.namelist())
        m = r.manifest()
    want = set(digests) | {MANIFEST_NAME}
    problems = list(report.problems)
    if names != want:
        problems.append(f"the Engram holds {sorted(names ^ want)[:5]} unexpectedly")
    listed = {f["path"]: (f["sha256"], f["size"]) for f in (m or {}).get("files", [])}
    if listed != digests:
        problems.append("the manifest does not list exactly what was read from the archive")
    if problems:
        raise CorruptionError("the written Engram failed verification, so it was removed: "
                              + "; ".join(problems[:5]))
    return report


def _rollback_header(data: bytes) -> bytes:
    """An SQLite image whose header says WAL (bytes 18-19 = 2) patched to say rollback
    journal (1), as stdlib sqlite3.deserialize and engram-rs's VFS need; other data as is."""
    if data[:16] == SQLITE_MAGIC and data[18:20] == b"\x02\x02":
        return data[:18] + b"\x01\x01" + data[20:]
    return data


class _Bytes:
    __slots__ = ("b", "pos")

    def __init__(self, b: bytes):
        self.b, self.pos = b, 0

    def read(self, n: int) -> bytes:
        out = self.b[self.pos:self.pos + n]
        self.pos += len(out)
        return out
