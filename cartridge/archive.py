"""Cartridge: the public API of one open archive (the owner's handle).

Every call takes the handle's lock, normalises its paths with cartridge.paths, checks the
directory rules, and runs as its own atomic commit unless a transaction() is open. The layers
above the engine (guard, streams, sqlite, policies) see the handle only through the contract in
cartridge/_handle.py, and every public call passes through its operation hook.
"""
from __future__ import annotations

import io
import operator
import os
import stat as _stat
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import numpy as np

from . import _handle as H
from . import compactor, policystore, snapstore, source
from . import namespace as N
from . import paths as P
from . import policies as PL
from ._core.batch import collect, parent_groups
from ._core.readpath import lookup_info, read_whole
from .audit import log as AL
from .audit.store import is_audit_key
from .compactor import CompactStats
from .content import EMPTY_CHECKSUM, byte_view, file_meta, file_record
from .create import open_engine, open_remote_engine
from .engine import Engine
from .errors import (
    AlreadyExistsError,
    CartridgeError,
    ClosedError,
    DirectoryNotEmptyError,
    InvalidPathError,
    LockedError,
    NotFoundError,
    PathIsDirectoryError,
    PathNotDirectoryError,
    ReadOnlyError,
    TransactionAbortedError,
)
from .format import (
    CHUNK_SIZE,
    DEFAULT_MODE_DIR,
    DEFAULT_MODE_FILE,
    FROZEN_KEY,
    KIND_DIR,
    KIND_FILE,
    STORE_EMPTY,
    STORE_INLINE,
)
from .guard import PrincipalCartridge
from .records import Record, decode, max_payload
from .snapstore import SnapshotInfo
from .streams import abandon, open_stream
from .verify import VerifyReport, verify_engine

if TYPE_CHECKING:
    import apsw

    from . import engram, iam

MODES = ("r", "a", "w", "x")
DEFAULT_CACHE_SIZE = 64 << 20
BUFFER_COPY_MAX = CHUNK_SIZE   # read_buffer(): ranges up to one chunk come from the page cache
# Errors raised while checking a call's arguments, before anything changes: inside a
# transaction they leave it usable. Anything else raised mid-change aborts the transaction.
_CLEAN_ERRORS = (InvalidPathError, NotFoundError, AlreadyExistsError, PathIsDirectoryError,
                 PathNotDirectoryError, DirectoryNotEmptyError, ReadOnlyError, TypeError, ValueError)


class FileInfo(NamedTuple):
    """What stat() and scan() report about a file or directory (immutable)."""

    path: str
    size: int
    mode: int
    ctime: float
    mtime: float
    checksum: str | None     # 16 hex digits of the content checksum; None for directories

    @property
    def is_dir(self) -> bool:
        return _stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return _stat.S_ISREG(self.mode)


def _info(path: str, rec: Record | None) -> FileInfo:
    if rec is None:   # an implicit directory
        return FileInfo(path, 0, DEFAULT_MODE_DIR, 0.0, 0.0, None)
    info = rec.info          # kept on the record (any change to it drops this)
    if info is not None and info[0] == path:
        return info
    info = FileInfo(path, rec.size, rec.mode, rec.ctime_ns / 1e9, rec.mtime_ns / 1e9,
                    None if rec.kind == KIND_DIR else f"{rec.checksum:016x}")
    rec.info = info
    return info


def _range_args(offset, size) -> tuple[int, int]:
    """Validate read()'s offset/size: ints, offset >= 0, size >= 0 or -1/None for 'to the end'."""
    if size is None:
        size = -1
    try:
        offset, size = operator.index(offset), operator.index(size)
    except TypeError:
        raise TypeError("offset and size must be integers") from None
    if offset < 0:
        raise ValueError("offset must be >= 0")
    if size < -1:
        raise ValueError("size must be >= 0, or -1 / None for the rest of the file")
    if size > sys.maxsize:
        size = -1               # more than any file holds: the rest of the file
    return offset, size


def _check_out_buffer(buffer) -> None:
    """readinto()'s buffer: a writable, C-contiguous bytes-like object (TypeError otherwise)."""
    try:
        view = memoryview(buffer)
    except TypeError:
        raise TypeError(f"readinto() needs a writable bytes-like buffer, not "
                        f"{type(buffer).__name__}") from None
    if view.readonly or not view.c_contiguous:
        raise TypeError("readinto() needs a writable, C-contiguous buffer (this one is "
                        f"{'read-only' if view.readonly else 'not contiguous'})")


def _as_bytes(data) -> memoryview:
    if isinstance(data, str):
        raise TypeError("file data must be bytes-like, not str (encode it first)")
    try:
        return byte_view(data)
    except TypeError:
        raise TypeError(f"file data must be bytes-like, not {type(data).__name__}") from None


_META_KEYS = frozenset(("mode", "mtime"))


def _batch_meta(keys: list[bytes], given: dict, default: tuple) -> dict[int, tuple]:
    """write_many's metadata by index of the sorted keys: each item's own (a mapping with
    "mode"/"mtime", checked as write() checks them) over the call's `default`."""
    out = {}
    for i, key in enumerate(keys):
        m = given.get(key)
        if m is None:
            if default != (None, None):
                out[i] = default
            continue
        if not isinstance(m, Mapping):
            raise TypeError(f"write_many() meta must be a mapping, not {type(m).__name__}")
        unknown = set(m) - _META_KEYS
        if unknown:
            raise ValueError(f"write_many() meta takes the keys 'mode' and 'mtime', not "
                             f"{sorted(map(str, unknown))}")
        own = file_meta(m.get("mode"), m.get("mtime"))
        out[i] = (default[0] if own[0] is None else own[0], default[1] if own[1] is None else own[1])
    return out


def open(path: str | os.PathLike | Any, mode: str = "r", *, principal: str | None = None,
         tags: Mapping[str, str] | None = None, context: Mapping[str, Any] | None = None,
         **kwargs) -> Cartridge | PrincipalCartridge:
    """Open an archive, read-only unless `mode` says otherwise (see Cartridge). With `principal`,
    the handle acts as that principal (see Cartridge.as_principal) and closes the archive on close."""
    if principal is None:
        if tags is not None or context is not None:
            raise ValueError("tags and context need a principal")
        return Cartridge(path, mode, **kwargs)
    auto = kwargs.pop("auto_compact", False)
    if not isinstance(auto, bool):
        raise TypeError(f"auto_compact must be a bool, not {type(auto).__name__}")
    if auto and mode == "r":
        raise ValueError("auto_compact needs a writable handle (mode 'a', 'w' or 'x')")
    cart = Cartridge(path, mode, **kwargs)
    try:
        view = PrincipalCartridge(cart, principal, tags, context, owns=True)
        if auto:            # compaction as the principal: cart:Compact now and every cycle
            view.start_auto_compact()
        return view
    except BaseException:
        cart.close()
        raise


class Cartridge:
    """An open .cart archive.

    mode: "r" read-only (the default, as in zipfile: a missing archive is NotFoundError, never
    a new one), "a" read-write (create if missing), "w" create or truncate, "x" create and fail
    if it exists. sync: "full" (durable when a call returns), "normal"
    (no sync per commit: consistent after power loss, may lose the commits since the last sync,
    which comes every 64 commits or 100 ms, at commit() and at close()), "off" (survives a killed
    process, not a power cut). cache_size: page cache budget in bytes (default: 64 MiB, grown with
    the catalog so that lookups in large archives stay in memory: about 128 bytes more per file
    and directory, at most an eighth of the machine's memory or 1 GiB). timeout: seconds to wait for the
    write lock (default: fail at once with LockedError).

    Remote, read-only (docs/FSSPEC.md): `path` may be a URL fsspec reaches ("s3://b/x.cart",
    "http://...", "memory://x.cart"), an fsspec OpenFile or an open binary file object. Such an
    archive is read by ranged reads through a block cache of `cache_pages` pages fetched
    `block_pages` pages at a time, every checksum verified; it opens in mode "r" only (any
    other mode raises ReadOnlyError) and reads the committed state found at open.
    """

    def __init__(self, path: str | os.PathLike | Any, mode: str = "r", *, sync: str = "full",
                 cache_size: int | None = None, timeout: float | None = None,
                 block_pages: int | None = None, cache_pages: int | None = None,
                 auto_compact: bool = False, audit: str = "writes",
                 audit_flush_ms: int = AL.DEFAULT_FLUSH_MS):
        if not isinstance(auto_compact, bool):
            raise TypeError(f"auto_compact must be a bool, not {type(auto_compact).__name__}")
        if auto_compact and mode == "r":
            raise ValueError("auto_compact needs a writable handle (mode 'a', 'w' or 'x')")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if sync not in ("full", "normal", "off"):
            raise ValueError(f"sync must be 'full', 'normal' or 'off', not {sync!r}")
        follow = cache_size is None
        if follow:
            cache_size = DEFAULT_CACHE_SIZE
        if not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"cache_size must be an int >= 0 (bytes), not {cache_size!r}")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
            raise ValueError(f"timeout must be None or seconds >= 0, not {timeout!r}")
        AL.check_level(audit)
        AL.check_flush_ms(audit_flush_ms)
        kind, target = source.resolve(path)
        if kind == "remote":
            blocks = source.check_cache_args(block_pages, cache_pages)
            if mode != "r":
                raise ReadOnlyError(f"{source.name_of(target)}: a remote archive opens read-only "
                                    f"(mode 'r'), not in mode {mode!r}")
        elif block_pages is not None or cache_pages is not None:
            raise ValueError("block_pages and cache_pages apply to remote archives only")
        else:
            try:
                target = os.fspath(target)
            except TypeError:
                raise InvalidPathError(f"archive path must be str or os.PathLike, not "
                                       f"{type(target).__name__}") from None
            if not isinstance(target, str) or not target or "\0" in target:
                raise InvalidPathError(f"not a usable archive path: {target!r}")
        self.path: str = target if kind == "local" else source.name_of(target)
        self.mode = mode
        self._lock = threading.RLock()
        self._closed = True
        self._txn_depth = 0
        self._txn_aborted = False
        self._txn_id = 0              # counts outer transactions (the operation hook's Event)
        self._streams: set = set()
        self._features: dict[str, Any] = {}   # per-handle state of feature layers (_handle.feature)
        self._snapshot_held = 0       # > 0: a reader stays on its state (a principal's check)
        if kind == "remote":
            self._eng: Engine = open_remote_engine(target, cache_size=cache_size,
                                                   block_pages=blocks[0], cache_pages=blocks[1])
        else:
            self._eng = open_engine(self.path, mode, sync=sync, cache_size=cache_size,
                                    timeout=timeout)
        if follow:
            self._eng.follow_catalog(cache_size)
        self._closed = False
        self._auto: tuple[threading.Thread, threading.Event] | None = None
        H.register_handle(self)
        try:
            AL.attach(self, audit, audit_flush_ms)
        except BaseException:
            self.close()
            raise
        if auto_compact:
            self._start_auto_compact(None)

    def _start_auto_compact(self, compact_ref) -> None:
        """The auto_compact thread; `compact_ref`: a weak reference to the callable that runs
        one cycle (a principal handle's compact), None for this handle's own."""
        if self._auto is not None:
            return
        if not self._eng.writable:
            raise ValueError("auto_compact needs a writable handle (mode 'a', 'w' or 'x')")
        stop = threading.Event()
        t = threading.Thread(target=_auto_compact, args=(weakref.ref(self), stop, compact_ref),
                             name=f"cartridge-compact {self.path}", daemon=True)
        self._auto = (t, stop)
        t.start()

    # -- plumbing ---------------------------------------------------------------------------
    def _ready(self) -> Engine:
        if self._closed:
            raise ClosedError(f"{self.path}: archive is closed")
        eng = self._eng
        if eng.failed is not None:
            raise CartridgeError(f"{self.path}: an I/O error interrupted a commit ({eng.failed}); "
                                 "the file is consistent, reopen it to go on")
        if not eng.writable and not self._txn_depth and not self._snapshot_held:
            eng.refresh()
        return eng

    def _writer(self) -> Engine:
        eng = self._ready()
        if not eng.writable:
            raise ReadOnlyError(f"{self.path}: opened read-only")
        if eng.frozen:
            raise ReadOnlyError(f"{self.path}: the archive is frozen (permanently read-only)")
        if self._txn_aborted:
            raise TransactionAbortedError("the enclosing transaction was rolled back; leave it first")
        return eng

    @contextmanager
    def _change(self):
        """Run one mutating call: its own commit, or a step of the open transaction."""
        eng = self._eng
        if self._txn_depth:
            try:
                yield eng
                if H.hooks:
                    H.changing(self)
            except _CLEAN_ERRORS:
                raise
            except BaseException:
                self._abort()
                raise
            return
        eng.begin()
        try:
            yield eng
            if H.hooks:
                H.changing(self)     # the call's event, before the commit that carries it
        except BaseException:
            eng.rollback()
            raise
        eng.commit()

    def _apply(self, fn, *args):
        """_change() as a plain call, for the hot write path."""
        eng = self._eng
        if self._txn_depth:
            try:
                result = fn(eng, *args)
                if H.hooks:
                    H.changing(self)
                return result
            except _CLEAN_ERRORS:
                raise
            except BaseException:
                self._abort()
                raise
        eng.begin()
        try:
            result = fn(eng, *args)
            if H.hooks:
                H.changing(self)
        except BaseException:
            eng.rollback()
            raise
        eng.commit()
        return result

    def _abort(self) -> None:
        self._eng.rollback()
        self._txn_aborted = True

    # -- files ------------------------------------------------------------------------------
    def write(self, path: str, data: bytes | bytearray | memoryview, *, mode: int | None = None,
              mtime: float | None = None) -> None:
        """Create or replace a file with `data`, atomically. `mode`: its permission bits
        (0 <= mode <= 0o7777; stat() reports them with the regular-file type bits, 0o100000);
        `mtime`: its modification time, seconds since the epoch (int or float). Left None, a
        new file gets 0o644 and a replaced one keeps its mode; mtime is now."""
        meta = file_meta(mode, mtime)
        view = _as_bytes(data)
        with self._lock:
            eng = self._writer()
            p, key = P.file_key(path)
            old = eng.get(key)
            if old is None:
                N.check_parents(eng, p)
                if N.implicit_dir(eng, key):
                    raise PathIsDirectoryError(f"{p} is a directory")
            elif old.kind == KIND_DIR:
                raise PathIsDirectoryError(f"{p} is a directory")
            self._apply(self._store, key, view, old, meta)

    def _store(self, eng: Engine, key: bytes, view, old: Record | None,
               meta: tuple[int | None, int | None] = (None, None)) -> None:
        # inside a transaction small files share this transaction's open pack (FORMAT §14);
        # a write in its own commit keeps its own page run (a pack of one file saves nothing)
        storage, payload, csum, _ = eng.content.store(view, max_payload(len(key)),
                                                      pack=self._txn_depth > 0)
        rec = file_record(old, storage, len(view), csum, payload, mode=meta[0], mtime=meta[1])
        eng.put_file(key, rec, old)
        if H.hooks:
            H.note_checksum(self, csum)
        if old is not None:
            eng.content.free(old, eng.where(key))

    def write_many(self, items: Iterable[tuple], *, mode: int | None = None,
                   mtime: float | None = None) -> int:
        """Create or replace many files, atomically: one commit for the whole batch (inside a
        transaction() it joins it). Returns the number of files written.

        Each item is (path, data) or (path, data, meta), meta a mapping with the keys "mode"
        and/or "mtime" (as write() takes them); the keyword `mode` / `mtime` apply to every item
        whose meta does not name its own. Values are checked before anything changes.

        Paths and data are checked as write() checks them, before anything changes (the same
        errors; a batch naming both a file and a path below it raises PathNotDirectoryError).
        A path given twice keeps its last data, as consecutive write() calls would. Much faster
        than write() per file for many small files: the batch is written in key order, each
        directory checked once, small files packed onto shared runs of pages."""
        default = file_meta(mode, mtime)
        given: dict = {}
        batch = collect(items, P.file_key, _as_bytes, given)
        keys = list(batch)
        keys.sort()
        datas = list(map(batch.__getitem__, keys))
        del batch
        metas = _batch_meta(keys, given, default) if given or default != (None, None) else None
        with self._lock:
            eng = self._writer()
            if not keys:
                return 0
            olds = self._check_many(eng, keys)
            self._apply(self._store_many, keys, datas, olds, metas)
        return len(keys)

    def _check_many(self, eng: Engine, keys: list[bytes]) -> dict[int, Record]:
        """write()'s checks for a sorted batch of file keys, each directory once; returns the
        existing records the batch replaces, by index."""
        batch = set(keys)
        exists: dict[bytes, bool] = {b"": True}     # directory key -> exists in the archive

        def dir_exists(d: bytes) -> bool:
            """Whether directory `d` exists; raises if it, or an ancestor, is a file. Walks up
            (a loop, not recursion: paths may be thousands of levels deep) until an ancestor is
            known or found, since no ancestor of a missing directory may be a file either."""
            found_now: list[tuple[bytes, bool]] = []
            cur = d
            while exists.get(cur) is None:
                if cur in batch:
                    raise PathNotDirectoryError(f"{cur.decode()} is written as a file, so paths "
                                                "below it cannot be")
                rec = eng.get(cur)
                if rec is not None and rec.kind == KIND_FILE:
                    raise PathNotDirectoryError(f"{cur.decode()} is a file, so paths below it "
                                                "cannot exist")
                found = rec is not None or N.implicit_dir(eng, cur)
                found_now.append((cur, found))
                if found:
                    break
                cur = cur[:cur.rfind(b"/")]
            exists.update(found_now)
            return exists[d]

        olds: dict[int, Record] = {}
        for parent, first, end in parent_groups(keys):
            if not dir_exists(parent[:-1]):
                continue            # a new directory: nothing below it exists yet
            for i in range(first, end):
                key = keys[i]
                old = eng.get(key)
                if old is None:
                    if N.implicit_dir(eng, key):
                        raise PathIsDirectoryError(f"{key.decode()} is a directory")
                elif old.kind == KIND_DIR:
                    raise PathIsDirectoryError(f"{key.decode()} is a directory")
                else:
                    olds[i] = old
        return olds

    def _store_many(self, eng: Engine, keys: list[bytes], datas: list,
                    olds: dict[int, Record], metas: dict | None = None) -> None:
        now = time.time_ns()
        modes = np.full(len(keys), DEFAULT_MODE_FILE, np.uint32)
        ctimes = np.full(len(keys), now, np.int64)
        for i, old in olds.items():
            modes[i] = old.mode
            ctimes[i] = old.ctime_ns
        mtimes = None
        if metas:       # (index -> (st_mode, mtime_ns)), None where not set
            mtimes = {}
            for i, (m, t) in metas.items():
                if m is not None:
                    modes[i] = m
                if t is not None:
                    mtimes[i] = t
        values, sizes = eng.content.store_many(keys, datas, modes, ctimes, now, mtimes)
        replaced = eng.put_many(keys, values, sizes)
        if H.hooks:
            files = tuple(H.FileWrite(k.decode("utf-8"), int(n), f"{decode(v, '').checksum:016x}")
                          for k, v, n in zip(keys, values, sizes.tolist()))
            H.note(self, size=int(sizes.sum()), files=files)
        if olds or any(replaced):
            for key, prev in zip(keys, replaced):
                if prev is not None:
                    eng.content.free(prev, eng.where(key))

    def read(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        """A file's bytes; with offset/size a range (a range past the end comes back short)."""
        if (type(offset) is not int or type(size) is not int or offset < 0 or size < -1
                or size > sys.maxsize):
            offset, size = _range_args(offset, size)
        with self._lock:
            if self._closed or self._eng.failed is not None:
                self._ready()
            eng = self._eng
            if not eng.writable and not self._snapshot_held:
                eng.refresh()
            if offset == 0:     # the hot path, in C: a whole inline or cached one-chunk file
                data = read_whole(eng.records, eng.catalog, eng.name, eng.pager.cache, path, size)
                if data is not None:
                    return data
            p, key = P.file_key(path)
            rec = eng.get(key)
            if rec is None or rec.kind != KIND_FILE:
                rec = N.file_record(eng, p)
            if rec.chunk_key and offset == 0 and (size < 0 or size >= rec.size):
                return eng.content.fetch_single(rec, p)       # one chunk, not cached
            if rec.storage == STORE_EMPTY:
                return b""
            return eng.content.read(rec, offset, size, p)

    def readinto(self, path: str, buffer: bytearray | memoryview, offset: int = 0) -> int:
        """Read into a writable buffer from `offset`; returns the number of bytes filled."""
        offset, _ = _range_args(offset, -1)
        _check_out_buffer(buffer)
        with self._lock:
            eng = self._ready()
            p, key = P.file_key(path)
            rec = N.file_record(eng, p, key)
            if rec.storage == STORE_EMPTY:
                return 0
            return eng.content.readinto(rec, offset, buffer, p)

    def read_buffer(self, path: str, offset: int = 0, size: int | None = -1) -> memoryview:
        """Bytes [offset, offset+size) of a file as a memoryview, without copies beyond the read
        itself: for large ranges a new buffer is filled straight from the file, one read per
        run of adjacent chunks, and each chunk's checksum is verified in that buffer (a damaged
        chunk raises CorruptionError: the view never holds unchecked bytes); small cached files
        come back as a read-only view of the cached bytes. Use it (or readinto() with a buffer
        you reuse) for large files, where read()'s bytes object would cost one more copy."""
        offset, size = _range_args(offset, size)
        with self._lock:
            eng = self._ready()
            p, key = P.file_key(path)
            rec = N.file_record(eng, p, key)
            end = rec.size if size < 0 else min(rec.size, offset + size)
            n = end - offset
            if n <= 0 or rec.storage == STORE_EMPTY:
                return memoryview(b"")
            if rec.storage == STORE_INLINE or n <= BUFFER_COPY_MAX:
                return memoryview(eng.content.read(rec, offset, size, p))
            eng.content.check_size(rec, p)       # a damaged size: CorruptionError, no huge buffer
            buf = np.empty(n, dtype=np.uint8)
            eng.content.readinto(rec, offset, buf, p)
            return memoryview(cast(Any, buf))  # ndarray is a buffer (older numpy stubs lack __buffer__)

    def open(self, path: str, mode: str = "rb", *, perm: int | None = None,
             mtime: float | None = None) -> io.RawIOBase:
        """A streaming binary file object: "rb", "wb", "ab" or "r+b". A write stream sets, when
        it publishes at close(), the permission bits `perm` and the `mtime` given (what write()
        calls `mode` and `mtime`; `mode` here is the stream's mode), else the defaults."""
        return open_stream(self, path, mode, perm=perm, mtime=mtime)

    # -- queries ----------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        with self._lock:
            eng = self._ready()
            if lookup_info(eng.records, eng.catalog, eng.name, path, None) is not None:
                return True             # (in C: a normal path with a record)
            return N.kind_of(eng, path)[1] is not None

    def isfile(self, path: str) -> bool:
        with self._lock:
            eng = self._ready()
            return N.kind_of(eng, path)[1] == "file"

    def isdir(self, path: str) -> bool:
        with self._lock:
            eng = self._ready()
            p, kind, _ = N.kind_of(eng, path)
            if kind == "file":          # a file with entries below it is damage, not a file
                damage = N.file_with_children(eng, P.to_key(p))
                if damage is not None:
                    raise damage
            return kind == "dir"

    def stat(self, path: str) -> FileInfo:
        """FileInfo of a file or directory."""
        with self._lock:
            eng = self._ready()
            info = lookup_info(eng.records, eng.catalog, eng.name, path, _info)
            if info is not None:        # in C: a normal path with a record (and its FileInfo)
                return info
            p, kind, rec = N.kind_of(eng, path)
            if kind is None:
                if P.path_key(path)[2] and N.kind(eng, p)[0] == "file":
                    raise N.not_a_directory(eng, P.to_key(p), PathNotDirectoryError(
                        f"{p} is a file, not a directory"))
                raise NotFoundError(f"no such file or directory: {p}")
            return _info(p, rec)

    def _children(self, eng: Engine, d: str) -> dict[str, bool]:
        """Immediate children of directory `d`: name -> is a directory. Skips whole subtrees
        with one seek each, so it costs O(children * log n)."""
        return eng.catalog.children(P.to_key(P.dir_prefix(d)), KIND_DIR)

    def _dir_or_raise(self, eng: Engine, path: str) -> str:
        p = P.normalize(path)
        kind, _ = N.kind(eng, p)
        if kind is None:
            raise NotFoundError(f"no such directory: {p}")
        if kind == "file":
            raise N.not_a_directory(eng, P.to_key(p), PathNotDirectoryError(f"{p} is a file"))
        return p

    def listdir(self, path: str = "/") -> list[str]:
        """Sorted names of the immediate children (files and directories) of a directory."""
        with self._lock:
            eng = self._ready()
            p = self._dir_or_raise(eng, path)
            return sorted(self._children(eng, p))

    def walk(self, top: str = "/") -> Iterator[tuple[str, list[str], list[str]]]:
        """Like os.walk (top-down): (dirpath, dirnames, filenames) for every directory."""
        with self._lock:
            eng = self._ready()
            top = self._dir_or_raise(eng, top)
        stack = [top]
        while stack:
            d = stack.pop()
            with self._lock:
                eng = self._ready()
                kids = self._children(eng, d)
            dirs = sorted(n for n, is_dir in kids.items() if is_dir)
            files = sorted(n for n, is_dir in kids.items() if not is_dir)
            yield d, dirs, files
            stack.extend(P.join(d, n) for n in reversed(dirs))

    def scan(self, prefix: str = "/") -> Iterator[FileInfo]:
        """FileInfo of every file whose path starts with `prefix`, in path order."""
        if not isinstance(prefix, str):
            raise InvalidPathError("prefix must be a str")
        if not prefix:
            raise InvalidPathError("empty prefix (use '/' for everything)")
        norm = P.normalize(prefix) if prefix.strip("/") else "/"
        if prefix.endswith("/") and norm != "/":
            norm += "/"
        kp = P.to_key(norm)
        start = kp
        # File keys that are byte prefixes of the key at hand: a key below one of them (the
        # innermost: an outer one is followed by a byte other than '/') is a file with children.
        files: list[bytes] = []
        end = kp.rfind(b"/")
        with self._lock:
            eng = self._ready()
            while end > 0:      # the prefix's ancestors: a lookup of a file with entries below raises
                eng.get(kp[:end])
                end = kp.rfind(b"/", 0, end)
        while True:
            with self._lock:
                eng = self._ready()
                batch = list(eng.catalog.items_from(start, 256, kp))
            for k, v in batch:
                while files and not k.startswith(files[-1]):
                    files.pop()
                if files and k[len(files[-1]):len(files[-1]) + 1] == b"/":
                    raise P.file_has_children(files[-1], k)
                if v[0] == KIND_FILE:
                    files.append(k)
                    yield _info(P.stored_path(k), decode(v, k.decode("utf-8", "replace")))
            if len(batch) < 256:
                return
            start = batch[-1][0] + b"\x00"

    # -- namespace changes ------------------------------------------------------------------
    def mkdir(self, path: str, parents: bool = False, exist_ok: bool = False) -> None:
        """Create an explicit (possibly empty) directory."""
        with self._lock:
            eng = self._writer()
            p = P.normalize(path)
            kind, _ = N.kind(eng, p)
            if kind == "file":
                raise AlreadyExistsError(f"{p} exists and is a file")
            if kind == "dir":
                if exist_ok:
                    return
                raise AlreadyExistsError(f"{p} already exists")
            N.check_parents(eng, p)
            missing = []
            for anc in P.ancestors(p):
                if N.kind(eng, anc)[0] is None:
                    if not parents:
                        raise NotFoundError(f"parent directory {anc} does not exist")
                    missing.append(anc)
            now = time.time_ns()
            with self._change():
                for d in missing + [p]:
                    eng.put(P.to_key(d), Record(KIND_DIR, STORE_EMPTY, DEFAULT_MODE_DIR, 0, now, now,
                                                0))

    def delete(self, path: str, recursive: bool = False) -> None:
        """Delete a file, an empty directory, or (recursive=True) a whole tree."""
        with self._lock:
            eng = self._writer()
            p, trailing = P.normalize_any(path)
            kind, rec = N.kind_to_repair(eng, p)
            if kind is None:
                raise NotFoundError(f"no such file or directory: {p}")
            key = P.to_key(p)
            if kind == "file" and trailing:
                raise InvalidPathError(f"a file path cannot end with '/': {path!r}")
            H.refuse_change(self, p, tree=kind == "dir")
            if kind == "file":
                assert rec is not None      # N.kind gives a file its record
                with self._change():
                    eng.delete(key)
                    eng.content.free(rec, p)
                return
            prefix = P.to_key(P.dir_prefix(p))
            first = eng.first_key(prefix)
            has_children = first is not None and first.startswith(prefix)
            if has_children and not recursive:
                raise DirectoryNotEmptyError(f"directory not empty: {p}")
            if p == "/" and not has_children:
                return
            with self._change():
                self._delete_tree(eng, prefix)
                if p != "/" and rec is not None:
                    eng.delete(key)

    def _drain(self, eng: Engine, prefix: bytes) -> Iterator[tuple[bytes, Record]]:
        """Every entry under `prefix`, for a caller that deletes each one it is given (so each
        batch starts again at the prefix)."""
        while True:
            batch = eng.catalog.items_from(prefix, 256, prefix)
            if not batch:
                return
            for k, v in batch:
                yield k, decode(v, k.decode("utf-8", "replace"))

    def _delete_tree(self, eng: Engine, prefix: bytes) -> None:
        for k, rec in self._drain(eng, prefix):
            eng.delete(k)
            eng.content.free(rec, k.decode("utf-8", "replace"))

    def rename(self, src: str, dst: str) -> None:
        """Move a file or a directory tree, atomically. A file replaces an existing file at dst;
        a directory needs dst not to exist."""
        with self._lock:
            eng = self._writer()
            s, s_slash = P.normalize_any(src)
            d, d_slash = P.normalize_any(dst)
            if s == "/" or d == "/":
                raise InvalidPathError("the root cannot be renamed or replaced")
            kind, rec = N.kind_to_repair(eng, s)
            if kind is None:
                raise NotFoundError(f"no such file or directory: {s}")
            if kind == "file" and (s_slash or d_slash):
                raise InvalidPathError("a file path cannot end with '/'")
            if s == d:
                return
            H.refuse_change(self, s, tree=kind == "dir")
            H.refuse_change(self, d, tree=False)
            N.check_parents(eng, d)
            dkind, drec = N.kind(eng, d)
            skey, dkey = P.to_key(s), P.to_key(d)
            if kind == "file":
                if dkind == "dir":
                    raise PathIsDirectoryError(f"{d} is a directory")
                assert rec is not None      # N.kind gives a file its record
                with self._change():
                    eng.delete(skey)
                    eng.put(dkey, rec)
                    if drec is not None:
                        eng.content.free(drec, d)
                return
            if d.startswith(s + "/"):
                raise InvalidPathError(f"cannot move directory {s} inside itself ({d})")
            if dkind is not None:
                raise AlreadyExistsError(f"{d} already exists")
            sp, dp = P.to_key(P.dir_prefix(s)), P.to_key(P.dir_prefix(d))
            with self._change():
                if rec is not None:
                    eng.delete(skey)
                    eng.put(dkey, rec)
                for k, r in self._drain(eng, sp):
                    eng.delete(k)
                    eng.put(dp + k[len(sp):], r)

    # -- SQLite ---------------------------------------------------------------------------
    def sqlite(self, path: str, readonly: bool = False, **apsw_kwargs: Any) -> apsw.Connection:
        """An apsw.Connection on the SQLite database stored as member `path` (created if missing
        unless readonly; always read-only on a read-only handle). See docs/SQLITE.md."""
        return _sqlite_connect(self, path, readonly, **apsw_kwargs)

    def sqlite_export(self, path: str, dest: str | os.PathLike) -> None:
        """Write the database at member `path` (its WAL checkpointed first) to the local file
        `dest`, ready for the stdlib sqlite3 module."""
        from .sqlite import export

        export(self, path, dest)

    # -- Engram export (the machinery: cartridge/engram/export.py) -------------------------
    def export_engram(self, dest: str | os.PathLike, *, signing_key: Any = None,
                      signer: str | None = None, compression: str = "auto",
                      include: str | Iterable[str] | None = None,
                      manifest: Mapping[str, Any] | None = None, encryption: str | None = None,
                      key: Any = None, progress: Any = None, verify: bool = True,
                      snapshot: str | None = None, freeze: bool = False) \
            -> engram.EngramReport | None:
        """Freeze one committed state into the Engram file `dest` (docs/ENGRAM.md): every file
        (or those under the `include` prefixes), member names without the leading '/',
        cartridge.json (modes, exact mtimes, directories, policies) and a manifest.json listing
        every file's SHA-256 and size, signed by `signing_key` (Ed25519: a key, its 32-byte
        seed, hex or a key file; a list for several) as `signer`. compression: "auto" (as
        engram-rs picks), "none", "lz4", "zstd". encryption: None, "archive" or "per-file"
        with a 32-byte `key`. progress: True (a bar on stderr) or a callable(done, total,
        path). Written beside `dest` and renamed into place after it verified (unless
        verify=False); returns the verification's EngramReport (None when not verified).
        snapshot: export that snapshot (as at(snapshot) reads it: its files, directories and
        policies) instead of the newest committed state. freeze=True: the release workflow
        (a writable handle): once the Engram is written and verified, the archive is frozen
        (freeze(): vacuumed, permanently read-only) and only then is `dest` put in place; a
        failed export freezes nothing, a failed freeze leaves no output. Needs the `engram`
        extra."""
        from .engram.export import export

        return export(self, dest, signing_key=signing_key, signer=signer,
                      compression=compression, include=include, manifest=manifest,
                      encryption=encryption, key=key, progress=progress, verify=verify,
                      snapshot=snapshot, freeze=freeze)

    # -- transactions and durability --------------------------------------------------------
    def transaction(self) -> AbstractContextManager[Cartridge]:
        """Group calls into one atomic commit; an exception inside rolls everything back.
        Nested blocks join the outer one; if an inner block fails, the whole transaction is
        rolled back and the outer block's remaining calls raise TransactionAbortedError."""
        return self._transaction(self, None)

    @contextmanager
    def _transaction(self, face, principal: str | None) -> Iterator[Any]:
        """transaction() of this handle, yielding `face` (a principal handle's own block
        yields the principal handle, and its events name the principal)."""
        with self._lock:
            eng = self._writer()
            outer = self._txn_depth == 0
            if outer:
                eng.begin()
                self._txn_aborted = False
                self._txn_id += 1
            self._txn_depth += 1
            try:
                yield face
            except BaseException as e:
                self._txn_depth -= 1
                if not self._txn_aborted and not self._closed:
                    self._abort()
                if outer:
                    self._txn_aborted = False
                    if H.hooks:
                        H.report_transaction(self, principal, e)
                raise
            self._txn_depth -= 1
            if self._closed:
                err: CartridgeError = ClosedError(
                    f"{self.path}: closed inside a transaction, which was rolled back")
                if outer and H.hooks:
                    H.report_transaction(self, principal, err)
                raise err
            if not outer:
                return
            if self._txn_aborted:
                self._txn_aborted = False
                err = TransactionAbortedError("a nested transaction failed; nothing was committed")
                if H.hooks:
                    H.report_transaction(self, principal, err)
                raise err
            if H.hooks:
                try:
                    H.report_transaction(self, principal, None)   # before its commit
                except BaseException:
                    self._abort()
                    self._txn_aborted = False
                    raise
            eng.commit()

    def commit(self) -> None:
        """Make everything so far durable now (fsync), whatever the sync mode. Inside a
        transaction, commits the work so far and carries on."""
        with self._lock:
            eng = self._ready()
            if not eng.writable:
                return
            try:
                eng.commit(force_sync=True)
            except BaseException:
                if self._txn_depth:     # what the block did so far was rolled back: it ends
                    self._txn_aborted = True
                raise
            if self._txn_depth:
                eng.begin()

    # -- policies (the machinery: cartridge/policies.py) ------------------------------------
    def set_policy(self, name: str, document: Mapping[str, Any] | str | bytes) -> None:
        """Store (or replace) an IAM policy inside the archive; validated first (PolicyError)."""
        PL.set_policy(self, name, document)

    def get_policy(self, name: str) -> dict:
        """A stored policy document; NotFoundError if there is none by that name."""
        return PL.get_policy(self, name)

    def delete_policy(self, name: str) -> None:
        """Remove a stored policy; NotFoundError if there is none by that name."""
        PL.delete_policy(self, name)

    def policies(self) -> dict[str, dict]:
        """Every stored policy: name -> document, sorted by name."""
        return PL.all_policies(self)

    def as_principal(self, name: str, tags: Mapping[str, str] | None = None,
                     context: Mapping[str, Any] | None = None) -> PrincipalCartridge:
        """A handle on this archive acting as principal `name`: the full API, with every call
        checked against the stored policies first (AccessDeniedError). With no policies
        stored, a principal may do everything; with any, only what they allow."""
        self._ready()
        return PrincipalCartridge(self, name, tags, context)

    def check_access(self, principal: str, action: str, resource: str,
                     tags: Mapping[str, str] | None = None,
                     context: Mapping[str, Any] | None = None) -> iam.Explanation:
        """What the stored policies decide for `principal` doing `action` on `resource`, with
        the keys a principal handle would supply: an iam.Explanation (decision + statements)."""
        with self._lock:
            view = self.as_principal(principal, tags, context)
            return PL.explain(self, principal, action, resource, view.tags, view.context)

    # -- snapshots (the records: cartridge/snapstore.py) ------------------------------------
    def snapshot(self, name: str) -> SnapshotInfo:
        """Pin the current committed state under `name`, in O(1) time and space: pages stay
        shared with the live state until it changes them, and no page the snapshot reaches is
        reused while it exists. AlreadyExistsError if the name is taken; not inside a
        transaction() (the state it would pin is not committed)."""
        snapstore.check_name(name)
        with self._lock:
            eng = self._writer()
            self._outside_transaction("snapshot")
            with self._change():
                return snapstore.create(eng, name)

    def snapshots(self) -> list[SnapshotInfo]:
        """Every snapshot, oldest first."""
        with self._lock:
            eng = self._ready()
            return [snapstore.info(*t) for t in snapstore.all_snapshots(eng)]

    def at(self, name: str) -> SnapshotView:
        """A read-only handle on snapshot `name` with the whole read API (read, open("rb"),
        stat, listdir, walk, scan, verify, sqlite(path, readonly=True), ...). It holds the
        snapshot's pages even if the snapshot is deleted meanwhile, until it is closed (and
        while it is open, pages freed by later commits wait too). NotFoundError if there is
        no snapshot by that name."""
        snapstore.check_name(name)
        with self._lock:
            eng = self._ready()
            remote = eng.source
        if remote is not None:      # the same remote file, however the handle reached it
            return SnapshotView(remote, name, block_pages=remote.block_pages,
                                cache_pages=remote.cache_pages)
        return SnapshotView(self.path, name)

    def restore(self, name: str) -> None:
        """Make the live files and directories equal to snapshot `name`, in one atomic
        commit. Policies and snapshots (the system namespace) stay as they are; every
        snapshot stays valid. Open SQLite connections on the handle make it LockedError."""
        snapstore.check_name(name)
        with self._lock:
            eng = self._writer()
            self._outside_transaction("restore")
            snapstore.lookup(eng, name)
            H.refuse_change(self, "/", tree=True)
            with self._change():
                snapstore.restore(eng, name)

    def delete_snapshot(self, name: str) -> None:
        """Delete a snapshot; the pages only it held become free (for reuse once no reader
        or older root can reach them). NotFoundError if there is none by that name."""
        snapstore.check_name(name)
        with self._lock:
            eng = self._writer()
            self._outside_transaction("delete_snapshot")
            snapstore.lookup(eng, name)
            with self._change():
                snapstore.delete(eng, name)

    # -- space (the machinery: cartridge/compactor.py) ----------------------------------------
    def compact(self, max_pages: int | None = None) -> CompactStats:
        """One compaction cycle: move at most `max_pages` in-use pages from the tail of the
        file into free pages nearer the front (one atomic commit), then truncate the file if
        its tail is free. max_pages=None runs cycles until nothing is left to do (vacuum()).
        Pages that readers of older commits, open read streams or snapshots reach are never
        moved or reused until released; snapshots' pages stay where they are, so the file
        cannot shrink below the last page a snapshot reaches."""
        if max_pages is not None:
            if not isinstance(max_pages, int) or isinstance(max_pages, bool):
                raise TypeError(f"max_pages must be an int or None, not {type(max_pages).__name__}")
            if max_pages < 1:
                raise ValueError(f"max_pages must be >= 1, not {max_pages}")
        with self._lock:
            eng = self._writer()
            self._outside_transaction("compact")
            start = os.fstat(eng.fd).st_size
            moved = 0
            while True:
                try:
                    n, freed, done = compactor.cycle(eng, max_pages or compactor.VACUUM_PAGES,
                                                     self._held_open)
                except OSError as e:          # a failed commit: rolled back, the file intact
                    raise CartridgeError(f"{self.path}: compaction failed: {e}") from e
                moved += n
                if max_pages is not None or done or (n == 0 and freed == 0):
                    break
            end = os.fstat(eng.fd).st_size
            return CompactStats(moved, max(start - end, 0), end, done)

    def _held_open(self, key: bytes) -> bool:
        """Whether a feature layer holds the member under `key` open (an SQLite connection
        with its own view of the member's pages): compaction leaves those in place."""
        if key[:1] != b"/":
            return False
        try:
            H.refuse_change(self, P.stored_path(key), tree=False)
        except LockedError:
            return True
        return False

    def vacuum(self) -> CompactStats:
        """compact() run to completion."""
        return self.compact(None)

    def freeze(self, compact: bool = True) -> None:
        """Make the archive permanently read-only, in one commit: opening it with "a", "w" or
        "x" raises ReadOnlyError from then on ("w" never replaces it), and this handle takes
        no more changes. Readers read (and verify checksums) as before. The archive is
        vacuumed first unless compact=False."""
        if not isinstance(compact, bool):
            raise TypeError(f"compact must be a bool, not {type(compact).__name__}")
        with self._lock:
            eng = self._writer()
            self._outside_transaction("freeze")
            if self._streams:
                raise LockedError(f"{self.path}: close the open streams before freezing")
            if compact:
                self.vacuum()
            now = time.time_ns()
            with self._change():
                eng.put(FROZEN_KEY, Record(KIND_FILE, STORE_EMPTY, DEFAULT_MODE_FILE, 0, now, now,
                                           EMPTY_CHECKSUM))
            eng.pager.sync_now()
            eng.frozen = True

    def _outside_transaction(self, what: str) -> None:
        if self._txn_depth:
            raise CartridgeError(f"{what}() cannot run inside a transaction()")

    # -- maintenance ------------------------------------------------------------------------
    def verify(self, deep: bool = True, *,
               progress: Callable[[int], object] | None = None) -> VerifyReport:
        """Check every reachable page; deep=True also checks every content checksum.
        progress(n), if given, is called as each n bytes of content have been checked (their
        sum reaches info()["total_bytes"]): a progress bar's update."""
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be callable, not {type(progress).__name__}")
        with self._lock:
            eng = self._ready()
            return verify_engine(eng, deep, _system_key_ok, progress)

    def info(self) -> dict:
        """Counts, sizes, free space and fragmentation."""
        with self._lock:
            eng = self._ready()
            audit = AL.info(self, eng)      # first: the stats then count the pages it read
            frozen = eng.get(FROZEN_KEY) is not None      # (a remote handle's too)
            out = eng.stats()
            out["path"] = self.path
            out["mode"] = self.mode
            out["sync"] = eng.pager.sync_mode
            out["frozen"] = frozen
            out["audit"] = audit
            return out

    @property
    def audit(self) -> AL.Audit:
        """The archive's audit log (docs/AUDIT.md): head, proofs, verify, checkpoints,
        entries."""
        return AL.Audit(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Commit what is pending (audit records included) and release the file. Safe to
        call twice."""
        auto = getattr(self, "_auto", None)
        if auto is not None:
            self._auto = None
            auto[1].set()
            if auto[0] is not threading.current_thread():
                auto[0].join()
        AL.closing(self)           # the drain thread stops; the last commit point writes the rest
        with self._lock:
            if self._closed:
                return
            try:
                eng = self._eng
                with H.detached():              # each stream's publish is its own operation
                    for s in list(self._streams):
                        if eng.failed is None:
                            s.close()
                        else:
                            abandon(s)
                if eng.writable and eng.failed is None:
                    if self._txn_depth:        # the block never finished: nothing of it lands
                        eng.rollback()
                    if eng.participants:       # a last commit point: participants flush
                        eng.begin()
                        eng.commit()
                    if eng.pager.sync_mode == "normal":
                        eng.pager.sync_now()
                    eng.unseal(both=True)
            finally:
                self._closed = True
                self._eng.close()
                AL.detach(self)

    def __enter__(self) -> Cartridge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed:
                self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"mode={self.mode!r}"
        return f"<cartridge.Cartridge {self.path!r} {state}>"



def _system_key_ok(key: bytes) -> bool:
    """The system-namespace keys the layers above know (FORMAT §5.5)."""
    return (policystore.is_system_key(key) or snapstore.is_system_key(key) or key == FROZEN_KEY
            or is_audit_key(key))


AUTO_COMPACT_INTERVAL = 0.5          # seconds between looks at the archive
AUTO_COMPACT_BYTES = 8 << 20         # reclaimable space that starts a cycle ...
AUTO_COMPACT_SHARE = 0.2             # ... when it is also this share of the file
AUTO_COMPACT_PAGES = 100             # pages moved per cycle


def _auto_compact(ref, stop: threading.Event, compact_ref=None) -> None:
    """auto_compact=True: small compaction cycles while reclaimable space passes the threshold;
    each cycle takes the handle's lock for that cycle only, and only when nobody else holds
    it (no transaction, no open stream). With `compact_ref` (a principal's handle) each cycle
    runs through it, so cart:Compact is checked every time: a refusal stops the thread."""
    while not stop.wait(AUTO_COMPACT_INTERVAL):
        cart = ref()
        if cart is None:
            return
        lock = H.lock(cart)
        if not lock.acquire(timeout=0.05):
            continue
        try:
            if H.is_closed(cart) or stop.is_set():
                return
            eng = H.engine(cart)
            if eng.failed is not None or eng.frozen:
                return
            if H.in_transaction(cart) or H.streams(cart):
                continue
            # the same figure as info()'s reclaimable_bytes: pack dead bytes count too
            space = eng.space_and_packs(eng.allocator, os.fstat(eng.fd).st_size)
            if (space["reclaimable_bytes"] < AUTO_COMPACT_BYTES or space["reclaimable_bytes"]
                    < AUTO_COMPACT_SHARE * space["file_bytes"]):
                continue
            run = cart.compact if compact_ref is None else compact_ref()
            if run is None:
                return           # the principal's handle is gone
            try:
                run(AUTO_COMPACT_PAGES)
            except CartridgeError:
                return           # refused, or broken: the next call on the handle reports it
            finally:
                del run
        finally:
            lock.release()
            del cart


class SnapshotView(Cartridge):
    """A read-only handle on one snapshot (Cartridge.at): the whole read API, as of the
    snapshot. It has a file descriptor of its own and pins the snapshot's generation, so the
    snapshot's pages stay in place while it is open, even if the snapshot is deleted."""

    def __init__(self, path: str | os.PathLike | Any, name: str, *,
                 cache_size: int | None = None, block_pages: int | None = None,
                 cache_pages: int | None = None):
        super().__init__(path, "r", cache_size=cache_size, block_pages=block_pages,
                         cache_pages=cache_pages)
        self.snapshot_name = name
        try:
            with self._lock:
                eng = self._ready()
                root, _ = snapstore.lookup(eng, name)
                eng.fix_root(root)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"snapshot={self.snapshot_name!r}"
        return f"<cartridge.SnapshotView {self.path!r} {state}>"


def _sqlite_connect(cart, path: str, readonly: bool, **kwargs: Any) -> apsw.Connection:
    from .sqlite import connect  # apsw is imported (and the VFS registered) on first use

    return connect(cart, path, readonly, **kwargs)


H.set_opener(Cartridge)
H.set_sqlite_connector(_sqlite_connect)
H.instrument(Cartridge, None, H.HANDLE_OPS, archive_of=None)     # the owner: itself
