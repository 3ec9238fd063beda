"""Engram compression, encoded exactly as engram-rs does (docs/ENGRAM.md, "Compression"):

* none: the bytes as they are;
* LZ4: one LZ4 *block* with a 4-byte little-endian size prefix (lz4_flex compress_prepend_size,
  python-lz4 `lz4.block.compress(store_size=True)`), never the LZ4 frame format;
* Zstd: level 6 through the *streaming* encoder (no content size in the frame header);
* files of 50 MiB or more with LZ4/Zstd: u32 frame count, then (u32 length, frame) per 64 KiB of
  input, each frame compressed alone with the method.

Decoding is bounded: no call ever produces more than the entry's declared size (checked against
the caps of layout.Limits before anything is read), and any difference is a CorruptionError.
"""
from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from typing import BinaryIO

import lz4.block
import zstandard

from ..errors import CorruptionError
from .layout import (
    AUTO_MIN_SIZE,
    FRAME_SIZE,
    FRAME_THRESHOLD,
    METHOD_LZ4,
    METHOD_NONE,
    METHOD_ZSTD,
    ZSTD_LEVEL,
)

U32 = struct.Struct("<I")
READ_BLOCK = 1 << 20
# the largest a compressed 64 KiB frame can be (LZ4 bound 66,068 + prefix; Zstd bound ~65,800)
FRAME_MAX_STORED = FRAME_SIZE + 4096

_RAW_EXT = frozenset("jpg jpeg png gif webp mp3 mp4 zip gz bz2".split())
_ZSTD_EXT = frozenset("json txt xml html css js ts md csv db sqlite sqlite3".split())

_tls = threading.local()


def select_method(path: str, size: int) -> int:
    """engram-rs writer.rs select_compression: what `compression="auto"` picks for a file."""
    if size < AUTO_MIN_SIZE:
        return METHOD_NONE
    ext = path.rsplit(".", 1)[-1].lower()
    if ext in _RAW_EXT:
        return METHOD_NONE
    if ext in _ZSTD_EXT:
        return METHOD_ZSTD
    return METHOD_LZ4


def _cctx() -> zstandard.ZstdCompressor:
    c = getattr(_tls, "cctx", None)
    if c is None:
        c = _tls.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return c


def _dctx() -> zstandard.ZstdDecompressor:
    d = getattr(_tls, "dctx", None)
    if d is None:
        d = _tls.dctx = zstandard.ZstdDecompressor()
    return d


def lz4_compress(data) -> bytes:
    return lz4.block.compress(data, store_size=True)


def zstd_compress(data) -> bytes:
    """Level 6 through the streaming encoder, as zstd::encode_all writes it."""
    obj = _cctx().compressobj()
    return obj.compress(data) + obj.flush()


def zstd_stream():
    """An incremental level-6 streaming encoder: .compress(chunk) / .flush()."""
    return _cctx().compressobj()


def compress_one(data, method: int) -> bytes:
    return lz4_compress(data) if method == METHOD_LZ4 else zstd_compress(data)


def compress_small(data, method: int) -> tuple[bytes | memoryview, int]:
    """(stored bytes, method actually recorded) for a file under 50 MiB: compressed output that
    is not smaller than the input is dropped for the raw bytes, recorded as method none."""
    if method == METHOD_NONE:
        return data, METHOD_NONE
    out = compress_one(data, method)
    if len(out) >= len(data):
        return data, METHOD_NONE
    return out, method


def frames(chunks: Iterator[bytes], size: int, method: int) -> Iterator[bytes]:
    """The framed payload of a >= 50 MiB file given as 64 KiB chunks (the last one shorter)."""
    yield U32.pack(-(-size // FRAME_SIZE))
    for chunk in chunks:
        cf = compress_one(chunk, method)
        yield U32.pack(len(cf)) + cf


# -- decoding ---------------------------------------------------------------------------------
def _read_exact(src: BinaryIO, n: int, what: str) -> bytes:
    b = src.read(n)
    if len(b) != n:
        raise CorruptionError(f"Engram payload ends inside {what}")
    return b


def _zstd_bounded(src, limit: int, where: str) -> Iterator[bytes]:
    """Zstd output of `src` (one or more frames), at most `limit` bytes, in pieces."""
    try:
        reader = _dctx().stream_reader(src, read_across_frames=True, closefd=False)
        produced = 0
        while True:
            piece = reader.read(min(READ_BLOCK, limit - produced + 1))
            if not piece:
                return
            produced += len(piece)
            if produced > limit:
                raise CorruptionError(f"{where}: decompressed output exceeds the declared size "
                                      f"{limit} (a decompression bomb?)")
            yield piece
    except zstandard.ZstdError as e:
        raise CorruptionError(f"{where}: Zstd data is damaged ({e})") from None


def _lz4_block(buf: bytes, expect: int, where: str) -> bytes:
    if len(buf) < 4:
        raise CorruptionError(f"{where}: LZ4 payload shorter than its size prefix")
    declared = U32.unpack_from(buf)[0]
    if declared != expect:
        raise CorruptionError(f"{where}: LZ4 size prefix {declared} differs from the entry's "
                              f"size {expect}")
    try:
        out = lz4.block.decompress(buf)
    except (lz4.block.LZ4BlockError, ValueError, MemoryError) as e:
        raise CorruptionError(f"{where}: LZ4 data is damaged ({e})") from None
    if len(out) != expect:
        raise CorruptionError(f"{where}: LZ4 output is {len(out)} bytes, not {expect}")
    return out


def decode(src: BinaryIO, stored: int, size: int, method: int, where: str) -> Iterator[bytes]:
    """The uncompressed content, in pieces, of a payload of `stored` bytes read from `src`;
    exactly `size` bytes or CorruptionError (never more than `size` produced)."""
    if method == METHOD_NONE:
        left = stored
        while left:
            piece = _read_exact(src, min(READ_BLOCK, left), "its data")
            left -= len(piece)
            yield piece
        return
    if size >= FRAME_THRESHOLD:
        yield from _decode_frames(src, stored, size, method, where)
        return
    produced = 0
    if method == METHOD_LZ4:
        out = _lz4_block(_read_exact(src, stored, "its data"), size, where)
        produced = len(out)
        yield out
    else:
        for piece in _zstd_bounded(_Limited(src, stored), size, where):
            produced += len(piece)
            yield piece
    if produced != size:
        raise CorruptionError(f"{where}: decompressed to {produced} bytes, the entry declares "
                              f"{size}")


def _decode_frames(src, stored: int, size: int, method: int, where: str) -> Iterator[bytes]:
    count = U32.unpack(_read_exact(src, 4, "the frame count"))[0]
    want = -(-size // FRAME_SIZE)
    if count != want:
        raise CorruptionError(f"{where}: {count} frames for {size} bytes (expected {want})")
    left = stored - 4
    produced = 0
    for i in range(count):
        if left < 4:
            raise CorruptionError(f"{where}: payload ends before frame {i}")
        flen = U32.unpack(_read_exact(src, 4, "a frame length"))[0]
        left -= 4
        if flen > left or flen > FRAME_MAX_STORED:
            raise CorruptionError(f"{where}: frame {i} claims {flen} bytes "
                                  f"({left} left in the payload)")
        buf = _read_exact(src, flen, f"frame {i}")
        left -= flen
        expect = min(FRAME_SIZE, size - produced)
        if method == METHOD_LZ4:
            out = _lz4_block(buf, expect, f"{where} frame {i}")
        else:
            out = b"".join(_zstd_bounded(_Limited(BytesSrc(buf), flen), expect, f"{where} frame {i}"))
            if len(out) != expect:
                raise CorruptionError(f"{where}: frame {i} decompressed to {len(out)} bytes, "
                                      f"not {expect}")
        produced += len(out)
        yield out
    if left:
        raise CorruptionError(f"{where}: {left} stray bytes after the last frame")


class BytesSrc:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = len(self.buf) - self.pos
        b = self.buf[self.pos:self.pos + n]
        self.pos += len(b)
        return b


class _Limited:
    """At most `left` bytes of `src` (so a decoder never reads past its payload)."""

    __slots__ = ("src", "left")

    def __init__(self, src, left: int):
        self.src, self.left = src, left

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self.left:
            n = self.left
        if n == 0:
            return b""
        b = self.src.read(n)
        self.left -= len(b)
        return b
