"""Engram v1.0 on-disk records (docs/ENGRAM.md; the byte-level reference is engram-rs 1.x as
it writes and reads, not its own specification): constants, the four packed records (file
header, LOCA, CENT, ENDR), member path rules and the reader's documented caps.

Everything is little-endian and packed:
    Header(64) | {LOCA(41 + path_len) + payload} x n | CENT(320) x n | ENDR(64)
Archive-encrypted: Header(64) | nonce(12) | AES-GCM(LOCAs + CENTs) + tag(16) | ENDR(64).
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import CorruptionError, InvalidPathError

MAGIC = b"\x89ENG\r\n\x1a\n"
VERSION = (1, 0)
LOCA_SIG, CENT_SIG, ENDR_SIG = b"LOCA", b"CENT", b"ENDR"

HEADER = struct.Struct("<8sHHIQQIII20s")        # magic major minor crc cd_off cd_size n cver flags
LOCA = struct.Struct("<4sQQIQBBHI")              # + path + NUL
CENT = struct.Struct("<4sQQQIQBBH256s20s")
ENDR = struct.Struct("<4sHHQQII32s")
assert (HEADER.size, LOCA.size, CENT.size, ENDR.size) == (64, 40, 320, 64)

HEADER_SIZE = 64
ENDR_SIZE = 64
CENT_SIZE = 320
LOCA_FIXED = LOCA.size + 1                       # fixed part plus the path's NUL terminator

METHOD_NONE, METHOD_LZ4, METHOD_ZSTD = 0, 1, 2
METHOD_NAMES = {METHOD_NONE: "none", METHOD_LZ4: "lz4", METHOD_ZSTD: "zstd"}
METHOD_BY_NAME = {v: k for k, v in METHOD_NAMES.items()}

ENC_NONE, ENC_ARCHIVE, ENC_PER_FILE = 0, 1, 2
ENC_NAMES = {ENC_NONE: None, ENC_ARCHIVE: "archive", ENC_PER_FILE: "per-file"}

NONCE_SIZE, TAG_SIZE, KEY_SIZE = 12, 16, 32
PER_FILE_OVERHEAD = NONCE_SIZE + TAG_SIZE          # 28 bytes: nonce || ciphertext || tag

FRAME_THRESHOLD = 52_428_800                     # 50 MiB: at or above, LZ4/Zstd files are framed
FRAME_SIZE = 65_536
ZSTD_LEVEL = 6
AUTO_MIN_SIZE = 4096                             # auto compression stores smaller files raw
MAX_PATH_BYTES = 255

MANIFEST_NAME = "manifest.json"
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]|(?:^|/)\.{0,2}(?:/|$)")    # control, '\', bad segment


@dataclass(frozen=True)
class Limits:
    """The strict reader's caps on what a (hostile) archive may declare; every one is checked
    from the central directory before a byte of content is read. The defaults accept any
    archive engram-rs writes up to these sizes."""

    max_entries: int = 1_000_000                 # entries in the central directory
    max_file_size: int = 1 << 40                 # 1 TiB: one entry's uncompressed size
    max_total_size: int = 1 << 42                # 4 TiB: the sum of the uncompressed sizes
    max_manifest_size: int = 64 << 20            # manifest.json (parsed in memory)
    lz4_max_ratio: int = 256                     # LZ4 cannot expand past ~255:1
    zstd_max_ratio: int = 40_000                 # Zstd RLE blocks reach ~32,768:1
    ratio_slack: int = 1 << 16                   # small entries may exceed the ratio by this


DEFAULT_LIMITS = Limits()


class EntryInfo(NamedTuple):
    """One archive member as the central directory describes it."""

    path: str
    size: int               # uncompressed bytes
    compressed_size: int    # stored payload bytes (with nonce and tag when per-file encrypted)
    method: str             # "none", "lz4" or "zstd"
    mtime: int              # Unix seconds
    crc: int                # CRC-32 (zlib) of the uncompressed content
    offset: int             # file offset of the entry's LOCA header

    @property
    def framed(self) -> bool:
        """Stored as 64 KiB frames (the reader decides from the size and method alone)."""
        return self.size >= FRAME_THRESHOLD and self.method != "none"


# -- paths ----------------------------------------------------------------------------------
def path_problem(path: str) -> str | None:
    """Why `path` is not a safe Engram member name (None: it is). Safe: relative, '/'-separated,
    no empty, '.' or '..' segment, no backslash, NUL or other control character, 1..255 UTF-8
    bytes. engram-rs accepts all of these; this reader and writer do not."""
    if not path:
        return "empty path"
    try:
        raw = path.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if len(raw) > MAX_PATH_BYTES:
        return f"longer than {MAX_PATH_BYTES} UTF-8 bytes"
    if path.startswith("/"):
        return "absolute path"
    if _UNSAFE.search(path) is None:
        return None
    if "\\" in path:
        return "backslash in path"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "NUL or control character in path"
    for seg in path.split("/"):
        if seg in ("", ".", ".."):
            return f"{seg!r} segment in path" if seg else "empty segment in path"
    return None  # pragma: no cover - the pattern and the checks above agree


def check_member_path(path: str) -> str:
    """`path` if safe to write as a member name, else InvalidPathError."""
    if not isinstance(path, str):
        raise TypeError(f"member path must be a str, not {type(path).__name__}")
    why = path_problem(path)
    if why is not None:
        raise InvalidPathError(f"cannot store {path!r} in an Engram: {why}")
    return path


# -- records ----------------------------------------------------------------------------------
def pack_header(cd_offset: int, cd_size: int, count: int, flags: int) -> bytes:
    return HEADER.pack(MAGIC, VERSION[0], VERSION[1], 0, cd_offset, cd_size, count, 0, flags,
                       b"\0" * 20)


def pack_endr(cd_offset: int, cd_size: int, count: int) -> bytes:
    return ENDR.pack(ENDR_SIG, VERSION[0], VERSION[1], cd_offset, cd_size, count, 0, b"\0" * 32)


def pack_loca(path: bytes, size: int, csize: int, crc: int, mtime: int, method: int) -> bytes:
    return LOCA.pack(LOCA_SIG, size, csize, crc, mtime, method, 0, len(path), 0) + path + b"\0"


def pack_cent(e: EntryInfo) -> bytes:
    raw = e.path.encode("utf-8")
    return CENT.pack(CENT_SIG, e.offset, e.size, e.compressed_size, e.crc, e.mtime,
                     METHOD_BY_NAME[e.method], 0, len(raw), raw, b"\0" * 20)


class Header(NamedTuple):
    major: int
    minor: int
    cd_offset: int
    cd_size: int
    entries: int
    flags: int


def unpack_header(raw: bytes) -> Header:
    magic, major, minor, _crc, cd_off, cd_size, n, _cv, flags, _r = HEADER.unpack(raw)
    return Header(major, minor, cd_off, cd_size, n, flags)


def unpack_endr(raw: bytes) -> Header:
    sig, major, minor, cd_off, cd_size, n, _crc, _r = ENDR.unpack(raw)
    if sig != ENDR_SIG:
        raise CorruptionError("Engram: invalid end record signature (expected ENDR): the file is "
                              "truncated or not finished")
    return Header(major, minor, cd_off, cd_size, n, -1)


def unpack_cent(raw: bytes, i: int) -> EntryInfo:
    sig, off, size, csize, crc, mtime, method, _fl, plen, pbuf, _r = CENT.unpack(raw)
    where = f"Engram central directory entry {i}"
    if sig != CENT_SIG:
        raise CorruptionError(f"{where}: invalid central directory entry signature")
    if method not in METHOD_NAMES:
        raise CorruptionError(f"{where}: unknown compression method {method}")
    if plen == 0 or plen > MAX_PATH_BYTES:
        raise CorruptionError(f"{where}: path length {plen} outside 1..{MAX_PATH_BYTES}")
    try:
        path = pbuf[:plen].decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptionError(f"{where}: path is not valid UTF-8") from None
    why = path_problem(path)
    if why is not None:
        raise CorruptionError(f"{where}: unsafe path {path!r} ({why})")
    return EntryInfo(path, size, csize, METHOD_NAMES[method], mtime, crc, off)


def unpack_loca(raw: bytes) -> tuple[int, int, int, int, int, int]:
    """(size, compressed_size, crc, mtime, method, path_len) of a LOCA's fixed part."""
    sig, size, csize, crc, mtime, method, _fl, plen, _r = LOCA.unpack(raw)
    if sig != LOCA_SIG:
        raise CorruptionError("Engram: invalid local entry signature (expected LOCA)")
    return size, csize, crc, mtime, method, plen
