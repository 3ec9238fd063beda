"""Page sources: where a pager's bytes come from (docs/FSSPEC.md, docs/ARCHITECTURE.md).

A pager reads and writes through a *file layer*: an object with the `os` module's `pread(fd, n,
offset)`, `preadv(fd, buffers, offset)` and `fstat(fd)` (and, for a writer, `pwrite`, `pwritev`,
`ftruncate`, `fdatasync`, `fsync`). A local archive uses the `os` module itself over a file
descriptor: OFD locks pin what readers read, and the C read paths (`readpath.checked_chunk`,
`Node.read`) read straight from the descriptor. The crash simulator (`testing/crash.py`) stands
in a recording layer. This module adds the third kind:

`RemoteSource`: a read-only archive anywhere fsspec reaches (`http://`, `s3://`, `memory://`, an
`fsspec.core.OpenFile`, or any open binary file object with `seek` and `read`). Bytes come by
ranged reads, through a block cache whose size is counted in pages: a read of a few pages fetches
the blocks that hold them (neighbouring missing blocks in one request), and a read of a block or
more (content chunks) is fetched exactly and not cached (the page cache above keeps checked
chunks and nodes). Every checksum is verified above this layer exactly as for a local file. A
remote source has no descriptor (fd -1) and no locks: a remote handle reads the committed state
it found at open and never moves (docs/FSSPEC.md, "Consistency").

`resolve(target)` tells a local path from a remote target; fsspec is imported only for a remote
one.
"""
from __future__ import annotations

import errno
import io
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .errors import CartridgeError, InvalidPathError, NotFoundError
from .format import PAGE_SIZE

DEFAULT_BLOCK_PAGES = 16        # one ranged request fetches 64 KiB (one content chunk)
DEFAULT_CACHE_PAGES = 4096      # the block cache holds 16 MiB
MAX_BLOCK_PAGES = 4096          # 16 MiB per request at most
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_LOCAL_PROTOCOLS = ("file", "local")


class _Size:
    """What fstat() gives the pager: the size only."""

    __slots__ = ("st_size",)

    def __init__(self, size: int):
        self.st_size = size


def _is_url(s: str) -> bool:
    """"scheme://...", or a chained URL ("simplecache::s3://b/x.cart"); a local name that merely
    holds "::" stays local. (A local file whose path starts "name://" needs a pathlib.Path.)"""
    return bool(_URL.match(s)) or ("::" in s and "://" in s)


def is_remote(target: Any) -> bool:
    """Whether cartridge.open() would read `target` remotely (without importing fsspec for a
    plain path)."""
    if isinstance(target, str):
        return _is_url(target) and resolve(target)[0] == "remote"
    if isinstance(target, os.PathLike):
        return False
    return resolve(target)[0] == "remote"


def _local_fs(fs: Any) -> bool:
    protos = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return any(p in _LOCAL_PROTOCOLS for p in protos)


def resolve(target: Any) -> tuple[str, Any]:
    """("local", path) for a local archive path (a str, an os.PathLike, a file:// URL or a local
    OpenFile), else ("remote", target) for a URL fsspec reaches, an fsspec OpenFile or an open
    binary file object. Anything else is InvalidPathError."""
    if isinstance(target, str):
        if not _is_url(target):
            return "local", target
        fsspec = _fsspec()
        try:
            fs, path = fsspec.core.url_to_fs(target)
        except ValueError as e:          # an unknown protocol ("needs aiohttp": ImportError)
            raise InvalidPathError(f"{target}: not a URL fsspec can open ({e})") from None
        if _local_fs(fs) and "::" not in target:     # file:// (a chain keeps its layers)
            return "local", path
        return "remote", target
    if isinstance(target, os.PathLike):
        return "local", target
    if hasattr(target, "fs") and hasattr(target, "path") and hasattr(target, "open"):
        if _local_fs(target.fs):          # fsspec.open("file:///x.cart") or a local path
            return "local", target.path
        return "remote", target
    if callable(getattr(target, "read", None)) and callable(getattr(target, "seek", None)):
        return "remote", target
    raise InvalidPathError(f"archive path must be str or os.PathLike (or, read-only, a URL or "
                           f"an open fsspec file), not {type(target).__name__}")


def _fsspec() -> Any:
    try:
        import fsspec
        import fsspec.core
    except ImportError as e:
        if "shadowing" in str(e):
            raise
        raise ImportError("remote archives need fsspec: pip install 'cartridge[fsspec]'") from None
    return fsspec


def check_cache_args(block_pages: Any, cache_pages: Any) -> tuple[int, int]:
    """The block size and block-cache size in pages (defaults for None); TypeError/ValueError."""
    out = []
    for name, v, default, lo, hi in (("block_pages", block_pages, DEFAULT_BLOCK_PAGES, 1,
                                      MAX_BLOCK_PAGES),
                                     ("cache_pages", cache_pages, DEFAULT_CACHE_PAGES, 0, 1 << 40)):
        if v is None:
            v = default
        elif type(v) is not int:
            raise TypeError(f"{name} must be an int, not {type(v).__name__}")
        if not lo <= v <= hi:
            raise ValueError(f"{name} must be between {lo} and {hi}, not {v}")
        out.append(v)
    return out[0], out[1]


class RemoteSource:
    """A read-only file layer over ranged reads, with a block cache (see the module doc).

    `fetch(start, end)` returns the bytes [start, end) of the remote file; `size` is its length
    at open. Thread-safe (one lock around the cache and the fetches). `stats()` counts requests
    and bytes fetched."""

    writable = False

    def __init__(self, fetch: Callable[[int, int], bytes], size: int, name: str, *,
                 block_pages: int = DEFAULT_BLOCK_PAGES, cache_pages: int = DEFAULT_CACHE_PAGES,
                 closer: Callable[[], None] | None = None):
        self._fetch_raw = fetch
        self.size = size
        self.name = name
        self.block_pages = block_pages
        self.cache_pages = cache_pages
        self.block = block_pages * PAGE_SIZE
        self.capacity = cache_pages // block_pages           # blocks held at most
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._closer = closer
        self.requests = 0
        self.bytes_fetched = 0
        self.hits = 0
        self.closed = False

    # -- the file layer ---------------------------------------------------------------------
    def fstat(self, fd: int) -> _Size:
        return _Size(self.size)

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        if n <= 0 or offset >= self.size or offset < 0:
            return b""
        end = min(offset + n, self.size)
        with self._lock:
            return self._read(offset, end)

    def preadv(self, fd: int, buffers: list, offset: int) -> int:
        done = 0
        for buf in buffers:
            view = memoryview(buf).cast("B")
            data = self.pread(fd, len(view), offset + done)
            view[:len(data)] = data
            done += len(data)
            if len(data) < len(view):
                break
        return done

    def _read(self, start: int, end: int) -> bytes:
        B = self.block
        first, last = start // B, (end - 1) // B
        if (end - start > PAGE_SIZE and end - start >= B) or last - first + 1 > self.capacity:
            return self._fetch(start, end)        # content: exactly what is asked, not cached
        blocks = self._blocks
        parts = []
        i = first
        while i <= last:
            blk = blocks.get(i)
            if blk is not None:
                blocks.move_to_end(i)
                self.hits += 1
                parts.append(blk)
                i += 1
                continue
            j = i
            while j < last and j + 1 not in blocks:
                j += 1
            want = min((j + 1) * B, self.size) - i * B
            data = self._fetch(i * B, i * B + want)
            if len(data) == want:        # a short answer is not cached: the pager reports it
                for k in range(i, j + 1):
                    blocks[k] = data[(k - i) * B:(k - i + 1) * B]
            parts.append(data)
            i = j + 1
        while len(blocks) > self.capacity:
            blocks.popitem(last=False)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        return data[start - first * B:end - first * B]

    def _fetch(self, start: int, end: int) -> bytes:
        if self.closed:
            raise OSError(errno.EBADF, f"{self.name}: remote archive is closed")
        try:
            data = self._fetch_raw(start, end)
        except FileNotFoundError:
            raise NotFoundError(f"{self.name}: the remote archive is gone") from None
        except OSError:
            raise
        except Exception as e:          # a network client's own errors (aiohttp, botocore...)
            raise OSError(errno.EIO, f"{self.name}: remote read of bytes {start}..{end - 1} "
                                     f"failed: {type(e).__name__}: {e}") from e
        data = bytes(data)
        self.requests += 1
        self.bytes_fetched += len(data)
        if len(data) > end - start:
            raise OSError(errno.EIO, f"{self.name}: the remote returned {len(data)} bytes for a "
                                     f"range of {end - start} (ranged reads not honoured?)")
        return data

    # -- the rest ---------------------------------------------------------------------------
    def stats(self) -> dict:
        return {"requests": self.requests, "bytes_fetched": self.bytes_fetched,
                "block_hits": self.hits, "block_pages": self.block_pages,
                "cache_pages": self.cache_pages, "cached_blocks": len(self._blocks),
                "size": self.size}

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._blocks.clear()
        if self._closer is not None:
            try:
                self._closer()
            except Exception:
                pass


def name_of(target: Any) -> str:
    if isinstance(target, str):
        return target
    fs, path = getattr(target, "fs", None), getattr(target, "path", None)
    if fs is not None and isinstance(path, str):
        try:
            return str(fs.unstrip_protocol(path))
        except Exception:
            return path
    for attr in ("path", "name"):
        v = getattr(target, attr, None)
        if isinstance(v, str):
            return v
    return repr(target)


def open_remote(target: Any, *, block_pages: int, cache_pages: int) -> RemoteSource:
    """A RemoteSource over a URL, an fsspec OpenFile or an open binary file object."""
    name = name_of(target)
    try:
        if isinstance(target, str):
            fsspec = _fsspec()
            fs, path = fsspec.core.url_to_fs(target)
            return _over_fs(fs, path, name, block_pages, cache_pages)
        if hasattr(target, "fs") and hasattr(target, "path") and hasattr(target, "open"):
            return _over_fs(target.fs, target.path, name, block_pages, cache_pages)
        return _over_file(target, name, block_pages, cache_pages)
    except FileNotFoundError:
        raise NotFoundError(f"{name}: no such remote archive") from None
    except (CartridgeError, ImportError, OSError, ValueError, TypeError):
        raise
    except Exception as e:
        raise OSError(errno.EIO, f"{name}: cannot open the remote archive: "
                                 f"{type(e).__name__}: {e}") from e


def _over_fs(fs: Any, path: str, name: str, block_pages: int, cache_pages: int) -> RemoteSource:
    info = fs.info(path)
    if info.get("type") == "directory":
        from .errors import PathIsDirectoryError
        raise PathIsDirectoryError(f"{name} is a directory, not an archive file")
    size = info.get("size")
    if not isinstance(size, int) or size < 0:
        raise OSError(errno.EIO, f"{name}: the remote does not tell the file's size")

    def fetch(start: int, end: int) -> bytes:
        return fs.cat_file(path, start=start, end=end)

    return RemoteSource(fetch, size, name, block_pages=block_pages, cache_pages=cache_pages)


def _over_file(f: Any, name: str, block_pages: int, cache_pages: int) -> RemoteSource:
    """An open binary file object: seek+read under a lock (its own buffering applies; it stays
    the caller's to close)."""
    if getattr(f, "closed", False):
        raise ValueError(f"{name}: the file object is closed")
    if isinstance(f, io.TextIOBase) or not isinstance(f.read(0), bytes):
        raise ValueError(f"{name}: open the file in binary mode ('rb'), not as text")
    lock = threading.Lock()
    size = getattr(f, "size", None)
    if not isinstance(size, int) or size < 0:
        with lock:
            size = f.seek(0, os.SEEK_END)
    if not isinstance(size, int) or size < 0:
        raise OSError(errno.EIO, f"{name}: cannot tell the file's size")

    def fetch(start: int, end: int) -> bytes:
        with lock:
            f.seek(start)
            out = bytearray()
            while len(out) < end - start:
                got = f.read(end - start - len(out))
                if not got:
                    break
                out += got
            return bytes(out)

    return RemoteSource(fetch, size, name, block_pages=block_pages, cache_pages=cache_pages)
