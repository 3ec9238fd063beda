"""EngramWriter: writes an Engram v1.0 archive byte for byte as engram-rs's ArchiveWriter does
(same header, LOCA/CENT/ENDR, compression and encryption), with stricter member names and
bounded memory: large files are streamed and framed, archive encryption streams the body.

    with EngramWriter(f) as w:          # f: a writable, seekable binary file (or a path)
        w.add("docs/a.txt", b"...")
        w.add_stream("big.bin", src, size)
        w.add_manifest(manifest)
"""
from __future__ import annotations

import os
import tempfile
import time
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO, NamedTuple, Protocol

from ..errors import ClosedError, InvalidPathError
from . import codec, crypto
from . import manifest as MF
from .layout import (
    CENT_SIZE,
    ENC_ARCHIVE,
    ENC_NONE,
    ENC_PER_FILE,
    FRAME_SIZE,
    FRAME_THRESHOLD,
    HEADER_SIZE,
    MANIFEST_NAME,
    METHOD_BY_NAME,
    METHOD_NAMES,
    METHOD_NONE,
    EntryInfo,
    check_member_path,
    pack_cent,
    pack_endr,
    pack_header,
    pack_loca,
)


class Source(Protocol):
    """What add_stream reads from: read(n) gives at most n bytes (bytes-like), b"" at the end."""

    def read(self, n: int, /) -> Any: ...


class Prepared(NamedTuple):
    """A file compressed (and encrypted) by EngramWriter.prepare(), ready for add_prepared()."""

    size: int
    crc: int
    method: int
    stored: Any               # the stored payload (bytes-like)


ENCRYPTIONS = {None: ENC_NONE, "none": ENC_NONE, "archive": ENC_ARCHIVE, "per-file": ENC_PER_FILE}
STREAM_BLOCK = 1 << 20


def compression_method(compression: str | int, path: str, size: int) -> int:
    """The method `compression` ("auto", "none", "lz4", "zstd") asks for a file of `size`."""
    if compression == "auto":
        return codec.select_method(path, size)
    if isinstance(compression, str) and compression in METHOD_BY_NAME:
        return METHOD_BY_NAME[compression]
    raise ValueError(f"compression must be 'auto', 'none', 'lz4' or 'zstd', not {compression!r}")


def encryption_mode(encryption: str | None, key: Any) -> tuple[int, bytes | None]:
    if encryption not in ENCRYPTIONS:
        raise ValueError(f"encryption must be None, 'archive' or 'per-file', not {encryption!r}")
    mode = ENCRYPTIONS[encryption]
    if mode == ENC_NONE:
        if key is not None:
            raise ValueError("a key was given without encryption='archive' or 'per-file'")
        return mode, None
    if key is None:
        raise ValueError(f"encryption={encryption!r} needs key= (32 bytes)")
    return mode, crypto.check_key(key)


class EngramWriter:
    """Write an Engram archive to `file` (a writable, seekable binary file object, or a path
    that is created or truncated; for an atomic file use Cartridge.export_engram or
    cartridge.localfile). `encryption`: None, "archive" or "per-file" with a 32-byte `key`.
    `mtime`: the Unix seconds recorded for entries added without their own (None: the wall
    clock at each add, as engram-rs does)."""

    def __init__(self, file: str | os.PathLike | BinaryIO, *, encryption: str | None = None,
                 key: Any = None, mtime: int | None = None):
        self._enc, self._key = encryption_mode(encryption, key)
        self._mtime = mtime
        self._name: str | None = None
        self._out: BinaryIO
        if isinstance(file, (str, os.PathLike)):
            self._name = os.fspath(file)
            self._out = open(self._name, "wb")   # closed by close() or abort()
        else:
            self._out = file
        self._own = self._name is not None
        # archive encryption: the plaintext body goes to a temp file, encrypted at close
        self._body: BinaryIO = tempfile.TemporaryFile() if self._enc == ENC_ARCHIVE else self._out
        self._entries: list[EntryInfo] = []
        self._names: set[str] = set()
        self._done = False
        self._body.write(pack_header(0, 0, 0, 0))          # placeholder, rewritten at close
        self._pos = HEADER_SIZE

    # -- entries ------------------------------------------------------------------------------
    @property
    def entries(self) -> list[EntryInfo]:
        return list(self._entries)

    def _start(self, path: str, mtime: int | None) -> tuple[bytes, int]:
        if self._done:
            raise ClosedError("the Engram writer is closed")
        check_member_path(path)
        if path in self._names:
            raise InvalidPathError(f"{path!r} is already in this Engram")
        if mtime is None:
            mtime = int(time.time()) if self._mtime is None else self._mtime
        if type(mtime) is not int or not 0 <= mtime < 1 << 64:
            raise ValueError(f"mtime must be whole Unix seconds in 0..2^64-1, not {mtime!r}")
        return path.encode("utf-8"), mtime

    def _record(self, path: str, offset: int, size: int, stored: int, crc: int, mtime: int,
                method: int) -> EntryInfo:
        e = EntryInfo(path, size, stored, METHOD_NAMES[method], mtime, crc, offset)
        self._entries.append(e)
        self._names.add(path)
        return e

    def add(self, path: str, data, *, compression: str = "auto", mtime: int | None = None) \
            -> EntryInfo:
        """Add a file from bytes. Files of 50 MiB or more are framed (see add_stream)."""
        view = memoryview(data).cast("B")
        if view.nbytes >= FRAME_THRESHOLD:
            return self.add_stream(path, _ViewReader(view), view.nbytes, compression=compression,
                                   mtime=mtime)
        return self.add_prepared(path, self.prepare(path, view, compression=compression),
                                 mtime=mtime)

    def prepare(self, path: str, data, *, compression: str = "auto") -> Prepared:
        """The CPU work of add() for a file under 50 MiB (compression, CRC, per-file
        encryption), touching no writer state: it may run on another thread while this one
        writes, and its result is added in order with add_prepared()."""
        view = memoryview(data).cast("B")
        size = view.nbytes
        if size >= FRAME_THRESHOLD:
            raise ValueError("prepare() takes files under 50 MiB; use add_stream()")
        method = compression_method(compression, path, size)
        stored, method = codec.compress_small(view, method)
        if self._enc == ENC_PER_FILE:
            stored = crypto.encrypt(self._key, stored)          # type: ignore[arg-type]
        return Prepared(size, zlib.crc32(view), method, stored)

    def add_prepared(self, path: str, prep: Prepared, *, mtime: int | None = None) -> EntryInfo:
        """Write a file prepared by prepare() (of this writer)."""
        raw, mtime = self._start(path, mtime)
        offset = self._pos
        stored = prep.stored
        self._write(pack_loca(raw, prep.size, len(stored), prep.crc, mtime, prep.method))
        self._write(stored)
        return self._record(path, offset, prep.size, len(stored), prep.crc, mtime, prep.method)

    def add_stream(self, path: str, src: Source, size: int, *, compression: str = "auto",
                   mtime: int | None = None) -> EntryInfo:
        """Add a file of exactly `size` bytes read from `src` (an object with read(n)).
        Memory stays bounded: raw and framed (>= 50 MiB) files are streamed; a compressed file
        under 50 MiB is compressed in one piece, as the format requires."""
        if type(size) is not int or size < 0:
            raise ValueError(f"size must be an int >= 0, not {size!r}")
        method = compression_method(compression, path, size)
        if method != METHOD_NONE and size < FRAME_THRESHOLD:
            data = _read_exact(src, size)
            return self.add(path, data, compression=METHOD_NAMES[method], mtime=mtime)
        raw, mtime = self._start(path, mtime)
        offset = self._pos
        self._write(pack_loca(raw, 0, 0, 0, 0, 0))                # placeholder, patched below
        crc = 0

        def content() -> Iterator[bytes]:
            nonlocal crc
            step = FRAME_SIZE if method != METHOD_NONE else STREAM_BLOCK
            for piece in _pieces(src, size, step):
                crc = zlib.crc32(piece, crc)
                yield piece

        payload = content() if method == METHOD_NONE else codec.frames(content(), size, method)
        stored = 0
        enc = crypto.StreamEncryptor(self._key) if self._enc == ENC_PER_FILE else None  # type: ignore[arg-type]
        if enc is not None:
            self._write(enc.nonce)
            stored += len(enc.nonce)
        for piece in payload:
            out = enc.update(piece) if enc is not None else piece
            self._write(out)
            stored += len(out)
        if enc is not None:
            tail = enc.finalize()
            self._write(tail)
            stored += len(tail)
        end = self._pos
        self._body.seek(offset)
        self._body.write(pack_loca(raw, size, stored, crc, mtime, method))
        self._body.seek(end)
        return self._record(path, offset, size, stored, crc, mtime, method)

    def add_manifest(self, manifest: dict) -> EntryInfo:
        """Store `manifest` (engram-rs's schema; see cartridge.engram.manifest) as manifest.json:
        pretty, key-sorted JSON, never compressed (encrypted in per-file mode)."""
        return self.add(MANIFEST_NAME, MF.stored_bytes(manifest), compression="none")

    def _write(self, b) -> None:
        self._body.write(b)
        self._pos += len(b)

    # -- the end ------------------------------------------------------------------------------
    def close(self) -> None:
        """Write the central directory, the final header and ENDR (encrypting the body in
        archive mode). The file object given is flushed, not closed."""
        if self._done:
            return
        self._done = True
        try:
            cd_offset = self._pos
            for e in self._entries:
                self._write(pack_cent(e))
            n = len(self._entries)
            cd_size = CENT_SIZE * n
            if self._enc == ENC_ARCHIVE:
                self._encrypt_body()
            self._out.seek(0)
            self._out.write(pack_header(cd_offset, cd_size, n, self._enc))
            self._out.seek(0, os.SEEK_END)
            self._out.write(pack_endr(cd_offset, cd_size, n))
            self._out.flush()
        finally:
            if self._body is not self._out:
                self._body.close()
            if self._own:
                self._out.close()

    def _encrypt_body(self) -> None:
        enc = crypto.StreamEncryptor(self._key)                  # type: ignore[arg-type]
        out = self._out
        out.seek(0)
        out.truncate()
        out.write(pack_header(0, 0, 0, 0))
        out.write(enc.nonce)
        self._body.seek(HEADER_SIZE)
        while True:
            block = self._body.read(STREAM_BLOCK)
            if not block:
                break
            out.write(enc.update(block))
        out.write(enc.finalize())

    def abort(self) -> None:
        """Give up: nothing more is written (a path given to the constructor is removed)."""
        if self._done:
            return
        self._done = True
        if self._body is not self._out:
            self._body.close()
        if self._own:
            self._out.close()
            try:
                os.remove(self._name)                            # type: ignore[arg-type]
            except OSError:
                pass

    def __enter__(self) -> EngramWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _ViewReader:
    __slots__ = ("view", "pos")

    def __init__(self, view: memoryview):
        self.view, self.pos = view, 0

    def read(self, n: int) -> memoryview:
        b = self.view[self.pos:self.pos + n]
        self.pos += len(b)
        return b


def _pieces(src, size: int, step: int) -> Iterator[bytes]:
    left = size
    while left:
        piece = src.read(min(step, left))
        if not piece:
            raise ValueError(f"the source ended {left} bytes before the {size} it was to give")
        n = len(piece)
        if n > left:
            raise ValueError("the source gave more bytes than asked for")
        left -= n
        if n < step and left:              # a short read mid-way: make whole pieces anyway
            rest = _read_exact(src, min(step - n, left))
            piece = bytes(piece) + rest
            left -= len(rest)
        yield piece


def _read_exact(src, n: int) -> bytes:
    parts = []
    left = n
    while left:
        b = src.read(left)
        if not b:
            raise ValueError(f"the source ended {left} bytes before the {n} it was to give")
        parts.append(bytes(b))
        left -= len(b)
    return b"".join(parts)
