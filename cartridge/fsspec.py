"""fsspec filesystem for cartridge archives: protocol ``cart`` (docs/FSSPEC.md).

    fs = fsspec.filesystem("cart", fo="data.cart")             # read-only (the default)
    fs = fsspec.filesystem("cart", fo="data.cart", mode="a")   # read-write, holds the write lock
    pandas.read_csv("cart://tables/a.csv::/data/x.cart")        # chained URL: member::archive
    pandas.read_csv("cart://a.csv::s3://bucket/x.cart")         # a remote archive, read-only

Paths inside the archive are absolute (``/dir/a.csv``; ``dir/a.csv`` means the same). Every
call goes through the archive's public API (and cartridge/_handle.py for snapshots), so it is
checked, atomic and reported to the operation hook like any other call; a filesystem over a
principal handle is not offered (open the archive yourself and use the API).

Registered through the ``fsspec.specs`` entry point in pyproject.toml. This module is
``cartridge.fsspec``; ``import fsspec`` below is absolute and reaches the real fsspec package.
"""
from __future__ import annotations

if __name__ != "cartridge.fsspec":      # the package directory itself is on sys.path
    raise ImportError(f"{__file__} was imported as {__name__!r}, shadowing the fsspec package: "
                      "the cartridge package directory is on sys.path (run Python from "
                      "elsewhere)")

import datetime
import functools
import io
import os
import posixpath
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import fsspec.core
from fsspec.spec import AbstractFileSystem
from fsspec.transaction import Transaction
from fsspec.utils import stringify_path

from . import _handle as H
from . import source
from .archive import Cartridge, FileInfo
from .errors import (
    ClosedError,
    DirectoryNotEmptyError,
    InvalidPathError,
    PathNotDirectoryError,
    ReadOnlyError,
)

COPY_PIECE = 1 << 20               # cp_file streams larger files in pieces of this size
READ_BUFFER = 1 << 16              # buffer of a read stream opened through the filesystem
__all__ = ["CartridgeFileSystem", "close_all"]


class _Reader(io.BufferedReader):
    """A buffered read stream of one member, seekable, with the fsspec file attributes."""

    def __init__(self, raw: Any, fs: CartridgeFileSystem, path: str, size: int, buffer: int):
        super().__init__(raw, buffer_size=buffer)
        self.fs = fs
        self.path = path
        self.size = size


class CartridgeTransaction(Transaction):
    """``fs.transaction`` mapped onto one archive transaction (Cartridge.transaction()): every
    change made inside the block (writes, streams closed inside it, rm, mv, cp...) commits
    together at its end, or none does if it raises. Write streams still open at the end are
    closed (published) before the commit, or before the rollback. The block holds the archive
    handle's lock, so run it in one thread."""

    def __init__(self, fs: CartridgeFileSystem, **kwargs: Any):
        super().__init__(fs, **kwargs)
        self._cm: Any = None

    def start(self) -> None:
        self.files.clear()
        cm = self.fs.cart.transaction()
        cm.__enter__()
        self._cm = cm
        self.fs._intrans = True

    def complete(self, commit: bool = True) -> None:
        cm, self._cm = self._cm, None
        files = list(self.files)
        self.files.clear()
        try:
            for f in files:
                if not f.closed:
                    f.close()
        except BaseException as e:
            if cm is not None:
                cm.__exit__(type(e), e, e.__traceback__)
            raise
        finally:
            self.fs._intrans = False
        if cm is None:
            return
        if commit:
            cm.__exit__(None, None, None)
        else:
            err = _Rollback()
            cm.__exit__(_Rollback, err, None)


class _Rollback(Exception):
    """Thrown into the archive's transaction to roll it back (never escapes)."""


READ_ONLY_HINT = ("the cart:// filesystem opens an archive read-only unless told otherwise; to "
                  "write, open it with mode='a': fsspec.filesystem('cart', fo=..., mode='a'), or for a "
                  "URL storage_options={'cart': {'mode': 'a'}} (pandas' to_csv, Dask), then "
                  "cartridge.fsspec.close_all() to release the write lock")


def _writes(method: Callable) -> Callable:
    """A method that changes the archive: on a filesystem opened read-only (mode "r") its
    ReadOnlyError says how to open one that writes (unless the archive can never be written
    here: remote, or frozen)."""
    @functools.wraps(method)
    def wrapper(self: CartridgeFileSystem, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except ReadOnlyError as e:
            hint = self._read_only_hint()
            if hint is None:
                raise
            raise ReadOnlyError(f"{e}: {hint}") from None
    return wrapper


def _stamp(t: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc)


def _entry(st: FileInfo) -> dict[str, Any]:
    return {"name": st.path, "size": st.size, "type": "directory" if st.is_dir else "file",
            "created": st.ctime, "mtime": st.mtime, "mode": st.mode, "checksum": st.checksum}


class CartridgeFileSystem(AbstractFileSystem):
    """A cartridge archive as an fsspec filesystem.

    fo: the archive: a local path, a URL fsspec reaches (remote: read-only) or an fsspec
    OpenFile / open binary file. mode: "r" (default: read-only, sees each new commit of a
    local archive at every call), "a" (read-write: holds the archive's write lock until
    close(); another process gets LockedError, or waits `timeout` seconds), "w", "x" (as
    cartridge.open). target_protocol / target_options: what a chained URL gives for the
    archive (``cart://a.csv::s3://bucket/x.cart``). sync, cache_size, timeout, block_pages,
    cache_pages: passed to cartridge.open.

    fsspec keeps one instance per set of arguments: every ``fsspec.filesystem("cart",
    fo=..., mode="a")`` in a process shares one write handle. close() releases the archive and
    forgets the instance."""

    protocol = "cart"
    root_marker = "/"
    transaction_type = CartridgeTransaction

    def __init__(self, fo: Any = "", mode: str = "r", target_protocol: str | None = None,
                 target_options: dict | None = None, *, sync: str = "full",
                 cache_size: int | None = None, timeout: float | None = None,
                 block_pages: int | None = None, cache_pages: int | None = None,
                 **kwargs: Any):
        super().__init__(**kwargs)
        if isinstance(fo, str) and not fo:
            raise ValueError("fo: the archive to open (a path, a URL or an open file) is missing")
        target = fo
        if target_protocol not in (None, "file", "local") and isinstance(fo, str):
            fs = fsspec.filesystem(target_protocol, **(target_options or {}))
            target = fsspec.core.OpenFile(fs, fs._strip_protocol(fo))
        elif target_options and isinstance(fo, str) and source.is_remote(fo):
            fs, path = fsspec.core.url_to_fs(fo, **target_options)
            target = fsspec.core.OpenFile(fs, path)
        opts: dict[str, Any] = {"sync": sync, "timeout": timeout}
        if cache_size is not None:
            opts["cache_size"] = cache_size
        if block_pages is not None or cache_pages is not None:
            opts["block_pages"] = block_pages
            opts["cache_pages"] = cache_pages
        self.cart = Cartridge(target, mode, **opts)
        self.mode = mode

    def _read_only_hint(self) -> str | None:
        if self.mode != "r" or source.is_remote(self.cart.path):
            return None
        try:
            if self.cart.info().get("frozen"):
                return None
        except Exception:           # the hint is a courtesy: the error itself stands
            return None
        return READ_ONLY_HINT

    # -- paths ------------------------------------------------------------------------------
    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = stringify_path(path)
        if not isinstance(path, str):
            raise TypeError(f"path must be str or os.PathLike, not {type(path).__name__}")
        if path.startswith("cart://"):
            path = path[len("cart://"):]
        elif path.startswith("cart::"):
            path = path[len("cart::"):]
        return "/" + path.strip("/")

    def unstrip_protocol(self, name: str) -> str:
        return name if name.startswith("cart://") else "cart://" + name.lstrip("/")

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict:
        return {}

    def close(self) -> None:
        """Close the archive (publishing open write streams) and forget this instance, so the
        next fsspec.filesystem() with the same arguments opens the archive again."""
        self.cart.close()
        type(self)._cache.pop(self._fs_token, None)

    def start_transaction(self) -> CartridgeTransaction:
        """fs.transaction without a with block: the archive transaction opens now and ends at
        end_transaction() (commit) or fs.transaction.complete(commit=False) (rollback)."""
        tx = self.transaction_type(self)
        tx.start()
        self._transaction = tx
        return tx

    @contextmanager
    def _snapshot(self) -> Iterator[Cartridge]:
        """One committed state for a call that asks the archive several things (a read-only
        handle would otherwise move to a newer commit between them)."""
        cart = self.cart
        with H.lock(cart):
            if H.is_closed(cart):
                raise ClosedError(f"{cart.path}: archive is closed")
            H.ready(cart)
            H.hold_snapshot(cart)
            try:
                yield cart
            finally:
                H.release_snapshot(cart)

    # -- queries ----------------------------------------------------------------------------
    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return _entry(self.cart.stat(self._strip_protocol(path)))

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list:
        p = self._strip_protocol(path)
        with self._snapshot() as cart:
            st = cart.stat(p)
            if st.is_dir:
                names = cart.listdir(p)
                infos = [cart.stat(posixpath.join(p, n)) for n in names]
            else:
                infos = [st]
        if detail:
            return [_entry(i) for i in infos]
        return [i.path for i in infos]

    def exists(self, path: str, **kwargs: Any) -> bool:
        try:
            return self.cart.exists(self._strip_protocol(path))
        except InvalidPathError:
            return False

    def isdir(self, path: str) -> bool:
        try:
            return self.cart.isdir(self._strip_protocol(path))
        except InvalidPathError:
            return False

    def isfile(self, path: str) -> bool:
        try:
            return self.cart.isfile(self._strip_protocol(path))
        except InvalidPathError:
            return False

    def created(self, path: str) -> datetime.datetime:
        """When the path was first written (UTC); the epoch for an implicit directory."""
        return _stamp(self.cart.stat(self._strip_protocol(path)).ctime)

    def modified(self, path: str) -> datetime.datetime:
        """Its last change (UTC); the epoch for an implicit directory."""
        return _stamp(self.cart.stat(self._strip_protocol(path)).mtime)

    def checksum(self, path: str) -> int:
        """A file's content checksum (xxh3-64, FileInfo.checksum) as an int: equal contents,
        equal checksums, whatever the times. A directory: fsspec's token of its info."""
        st = self.cart.stat(self._strip_protocol(path))
        if st.checksum is None:
            return super().checksum(path)
        return int(st.checksum, 16)

    def ukey(self, path: str) -> str:
        st = self.cart.stat(self._strip_protocol(path))
        if st.checksum is None:
            return super().ukey(path)
        return f"{st.checksum}-{st.size}"

    # -- reading ----------------------------------------------------------------------------
    @_writes
    def _open(self, path: str, mode: str = "rb", block_size: int | None = None,
              autocommit: bool = True, cache_options: dict | None = None, **kwargs: Any) -> Any:
        p = self._strip_protocol(path)
        cart = self.cart
        if mode == "rb":
            with self._snapshot():
                size = cart.stat(p).size
                raw = cart.open(p, "rb")
            buf = block_size if isinstance(block_size, int) and block_size > 0 else READ_BUFFER
            return _Reader(raw, self, p, size, buf)
        perm, mtime = kwargs.get("perm"), kwargs.get("mtime")
        if mode == "xb":
            with H.lock(cart):
                if cart.exists(p):
                    raise FileExistsError(f"{p} already exists")
                return cart.open(p, "wb", perm=perm, mtime=mtime)
        if mode in ("wb", "ab"):
            return cart.open(p, mode, perm=perm, mtime=mtime)
        raise ValueError(f"mode must be 'rb', 'wb', 'ab' or 'xb' (or a text mode), not {mode!r}")

    def cat_file(self, path: str, start: int | None = None, end: int | None = None,
                 **kwargs: Any) -> bytes:
        p = self._strip_protocol(path)
        if start is None and end is None:
            return self.cart.read(p)
        with self._snapshot() as cart:
            if (start is not None and start < 0) or (end is not None and end < 0):
                size = cart.stat(p).size
            else:
                size = 0
            s = 0 if start is None else (max(0, size + start) if start < 0 else start)
            if end is None:
                return cart.read(p, s, -1)
            e = size + end if end < 0 else end
            return cart.read(p, s, max(0, e - s))

    def cat_ranges(self, paths: list, starts: Any, ends: Any, max_gap: int | None = None,
                   on_error: str = "return", **kwargs: Any) -> list:
        """The ranges, in order, read from one committed state; with on_error="return" a
        failing range gives its exception in place of bytes."""
        if not isinstance(paths, list):
            raise TypeError("paths must be a list")
        starts = starts if isinstance(starts, list) else [starts] * len(paths)
        ends = ends if isinstance(ends, list) else [ends] * len(paths)
        if len(starts) != len(paths) or len(ends) != len(paths):
            raise ValueError("paths, starts and ends must have the same length")
        out: list = []
        with self._snapshot():
            for p, s, e in zip(paths, starts, ends):
                try:
                    out.append(self.cat_file(p, s, e))
                except Exception as err:
                    if on_error != "return":
                        raise
                    out.append(err)
        return out

    # -- writing ----------------------------------------------------------------------------
    @_writes
    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        p = self._strip_protocol(path)
        cart = self.cart
        if mode == "create":
            with cart.transaction():
                if cart.exists(p):
                    raise FileExistsError(f"{p} already exists")
                cart.write(p, value, mode=kwargs.get("perm"), mtime=kwargs.get("mtime"))
            return
        if mode != "overwrite":
            raise ValueError(f"pipe_file mode must be 'overwrite' or 'create', not {mode!r}")
        cart.write(p, value, mode=kwargs.get("perm"), mtime=kwargs.get("mtime"))

    @_writes
    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        self.cart.mkdir(self._strip_protocol(path), parents=create_parents)

    @_writes
    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self.cart.mkdir(self._strip_protocol(path), parents=True, exist_ok=exist_ok)

    @_writes
    def rmdir(self, path: str) -> None:
        p = self._strip_protocol(path)
        cart = self.cart
        with cart.transaction():
            if cart.isfile(p):
                raise PathNotDirectoryError(f"{p} is a file, not a directory")
            cart.delete(p)

    @_writes
    def rm_file(self, path: str) -> None:
        self.cart.delete(self._strip_protocol(path))

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    @_writes
    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """Delete files and directories (globs and lists as fsspec expands them) in one atomic
        commit. A directory needs recursive=True unless it is empty; with maxdepth, files
        deeper than it stay, and so do the directories that hold them."""
        cart = self.cart
        with cart.transaction():
            paths = [self._strip_protocol(p) for p in
                     self.expand_path(path, recursive=recursive, maxdepth=maxdepth)]
            for p in paths:
                if not cart.exists(p):
                    raise FileNotFoundError(f"no such file or directory: {p}")
            for p in reversed(paths):
                if not cart.exists(p):
                    continue             # gone with a directory deleted before, or implicit
                if cart.isdir(p):
                    if recursive and maxdepth is None:
                        cart.delete(p, recursive=True)
                    elif maxdepth is not None and cart.listdir(p):
                        continue         # holds what lies deeper than maxdepth
                    else:
                        cart.delete(p)
                else:
                    cart.delete(p)

    @_writes
    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy one file (its permission bits too) or make the directory; atomic."""
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        cart = self.cart
        with cart.transaction():
            st = cart.stat(src)
            if st.is_dir:
                cart.mkdir(dst, parents=True, exist_ok=True)
                return
            perm = st.mode & 0o7777
            if st.size <= COPY_PIECE:
                cart.write(dst, cart.read(src), mode=perm)
                return
            with cart.open(src, "rb") as fin, cart.open(dst, "wb", perm=perm) as fout:
                while True:
                    piece = fin.read(COPY_PIECE)
                    if not piece:
                        break
                    fout.write(piece)

    @_writes
    def mv(self, path1: Any, path2: Any, recursive: bool = False, maxdepth: int | None = None,
           **kwargs: Any) -> None:
        """Move files or directories. One existing path moves by a rename (atomic, no copy):
        into path2 when it is an existing directory (or ends with '/'), else to path2; a
        directory with contents needs recursive=True (DirectoryNotEmptyError, nothing moved,
        otherwise). Lists, globs and the other cases copy then delete, as fsspec does, in one
        atomic commit."""
        cart = self.cart
        with cart.transaction():
            if (isinstance(path1, str) and isinstance(path2, str) and maxdepth is None
                    and not path1.endswith("/") and not any(c in path1 for c in "*?[")):
                src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
                if src == dst:
                    return
                if not recursive and cart.isdir(src) and cart.listdir(src):
                    raise DirectoryNotEmptyError(f"{src} is a directory with contents: pass "
                                                 "recursive=True to move it and all below it")
                if cart.exists(src):        # a file, a tree or an empty directory
                    if path2.endswith("/") or cart.isdir(dst):
                        dst = posixpath.join(dst, posixpath.basename(src))
                    if dst != src:
                        cart.rename(src, dst)
                    return
            super().mv(path1, path2, recursive=recursive, maxdepth=maxdepth, **kwargs)

    def __repr__(self) -> str:
        return f"<CartridgeFileSystem {self.cart.path!r} mode={self.mode!r}>"



def _url_key(name: str) -> str:
    """A remote archive's name as fsspec spells it ("memory://a" and "memory:///a" alike)."""
    try:
        fs, path = fsspec.core.url_to_fs(name)
        return str(fs.unstrip_protocol(path))
    except Exception:
        return name


def _same_archive(cart: Cartridge, fo: Any) -> bool:
    try:
        return os.path.samefile(cart.path, os.fspath(fo))
    except (OSError, TypeError, ValueError):
        name = fo if isinstance(fo, str) else source.name_of(fo)
        return _url_key(cart.path) == _url_key(name)


def close_all(fo: Any = None) -> int:
    """Close every cached cart:// filesystem of the process (of archive `fo` only, when given:
    a path or URL) and forget them; returns how many. pandas and Dask open filesystems from
    URLs and fsspec keeps them, so a URL opened with mode "a" (``storage_options={"cart":
    {"mode": "a"}}``) holds the archive's write lock until then."""
    n = 0
    for inst in list(CartridgeFileSystem._cache.values()):
        if fo is None or _same_archive(inst.cart, fo):
            inst.close()
            n += 1
    return n
