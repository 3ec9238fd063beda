"""EngramReader: a strict reader of Engram v1.x archives (docs/ENGRAM.md, "Reading").

Unlike engram-rs, everything structural is checked when the archive is opened, before any
content is read: the header and ENDR agree, the central directory fits the file exactly, every
entry's offsets and sizes lie inside the file and no two entries overlap, every member name is
a safe relative path named once, and every declared size is within the caps of
layout.Limits (entry count, file and total size, compression ratio). Decoding never produces
more than the declared size; the CRC and size are checked at the end of every read. Reads use
positional I/O (os.pread), so one reader may be shared by threads.
"""
from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import stat
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import (
    ClosedError,
    CorruptionError,
    DecryptionError,
    NotADatabaseError,
    NotAnEngramError,
    NotFoundError,
    PathIsDirectoryError,
    UnsupportedVersionError,
)
from . import codec, crypto
from . import manifest as MF
from .layout import (
    CENT_SIZE,
    DEFAULT_LIMITS,
    ENC_ARCHIVE,
    ENC_NAMES,
    ENC_PER_FILE,
    ENDR_SIZE,
    FRAME_SIZE,
    FRAME_THRESHOLD,
    HEADER_SIZE,
    LOCA,
    LOCA_FIXED,
    MAGIC,
    MANIFEST_NAME,
    METHOD_BY_NAME,
    METHOD_NONE,
    NONCE_SIZE,
    PER_FILE_OVERHEAD,
    TAG_SIZE,
    EntryInfo,
    Limits,
    unpack_cent,
    unpack_endr,
    unpack_header,
    unpack_loca,
)

IN_MEMORY_MAX = 32 << 20        # decrypted bodies/payloads up to this stay in memory
CD_BATCH = 4096
SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass
class EngramReport:
    """What EngramReader.verify() found. ok: no problem at all (and, when public keys were
    given, a valid signature by one of them)."""

    ok: bool
    problems: list[str]
    entries: int
    size: int                         # total uncompressed bytes
    encryption: str | None
    manifest: bool                    # manifest.json present and parsed
    signatures: list[dict] = field(default_factory=list)   # public_key, signer, valid, trusted
    signed: bool = False              # engram-rs is_fully_signed: >= 1 signature, all valid
    trusted: bool | None = None       # a valid signature by a given key (None: none given)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "problems": list(self.problems), "entries": self.entries,
                "size": self.size, "encryption": self.encryption, "manifest": self.manifest,
                "signatures": [dict(s) for s in self.signatures], "signed": self.signed,
                "trusted": self.trusted}


class _Source:
    """Positional reads of the (plaintext) archive: offsets are file offsets."""

    def __init__(self, fd: int, base: int = 0, mem: bytes | None = None, tmp: Any = None):
        self.fd, self.base, self.mem, self.tmp = fd, base, mem, tmp

    def pread(self, off: int, n: int) -> bytes:
        if self.mem is not None:
            off -= self.base
            return self.mem[off:off + n]
        fd = self.fd if self.tmp is None else self.tmp.fileno()
        b = os.pread(fd, n, off - self.base)
        if len(b) < n:                      # a short read (large n): go on until n or EOF
            parts = [b]
            got = len(b)
            while got < n:
                more = os.pread(fd, n - got, off - self.base + got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            b = b"".join(parts)
        return b

    def close(self) -> None:
        if self.tmp is not None:
            self.tmp.close()
            self.tmp = None


class _Window:
    """A file-like read() over [off, off + n) of a source."""

    __slots__ = ("src", "pos", "end")

    def __init__(self, src: _Source, off: int, n: int):
        self.src, self.pos, self.end = src, off, off + n

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self.end - self.pos:
            n = self.end - self.pos
        if n <= 0:
            return b""
        b = self.src.pread(self.pos, n)
        self.pos += len(b)
        return b


class EngramReader:
    """An open Engram archive (see cartridge.engram.open)."""

    def __init__(self, path: str | os.PathLike, key: Any = None, *,
                 limits: Limits = DEFAULT_LIMITS):
        self.path = os.fspath(path)
        self._key = None if key is None else crypto.check_key(key)
        self.limits = limits
        self._fd = -1
        self._src: _Source | None = None
        try:
            # O_NONBLOCK: a FIFO named here must not block the open (it is refused below)
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0)
                               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"{self.path}: no such file") from None
        mode = os.fstat(self._fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(self._fd)
            self._fd = -1
            if stat.S_ISDIR(mode):
                raise PathIsDirectoryError(f"{self.path} is a directory, not an Engram")
            raise NotAnEngramError(f"{self.path} is not a regular file")
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # -- the up-front checks --------------------------------------------------------------------
    def _open(self) -> None:
        size = os.fstat(self._fd).st_size
        self.file_size = size
        head = os.pread(self._fd, HEADER_SIZE, 0)
        if len(head) < len(MAGIC) or head[:len(MAGIC)] != MAGIC:
            raise NotAnEngramError(f"{self.path}: not an Engram archive (bad magic)")
        if len(head) < HEADER_SIZE:
            raise CorruptionError(f"{self.path}: Engram cut short inside its header")
        hdr = unpack_header(head)
        if hdr.major != 1:
            raise UnsupportedVersionError(f"{self.path}: Engram format version "
                                          f"{hdr.major}.{hdr.minor}; this reader reads 1.x")
        self.version = (hdr.major, hdr.minor)
        enc = hdr.flags & 3
        if enc == 3:
            raise CorruptionError(f"{self.path}: Engram header names encryption mode 3")
        self._enc = enc
        if size < HEADER_SIZE + ENDR_SIZE:
            raise CorruptionError(f"{self.path}: Engram too small to hold its end record")
        endr = unpack_endr(os.pread(self._fd, ENDR_SIZE, size - ENDR_SIZE))
        if (endr.major, endr.minor, endr.cd_offset, endr.cd_size, endr.entries) != \
                (hdr.major, hdr.minor, hdr.cd_offset, hdr.cd_size, hdr.entries):
            raise CorruptionError(f"{self.path}: ENDR does not match the header (central "
                                  "directory offset, size, count or version mismatch)")
        n = hdr.entries
        if n > self.limits.max_entries:
            raise CorruptionError(f"{self.path}: {n} entries, past the cap of "
                                  f"{self.limits.max_entries}")
        if hdr.cd_size != CENT_SIZE * n:
            raise CorruptionError(f"{self.path}: central directory size {hdr.cd_size} is not "
                                  f"{CENT_SIZE} x {n} entries")
        if enc == ENC_ARCHIVE:
            body_end = size - ENDR_SIZE - NONCE_SIZE - TAG_SIZE
            if body_end < HEADER_SIZE:
                raise CorruptionError(f"{self.path}: archive-encrypted Engram too short")
        else:
            body_end = size - ENDR_SIZE
        if hdr.cd_offset < HEADER_SIZE or hdr.cd_offset + hdr.cd_size != body_end:
            raise CorruptionError(f"{self.path}: central directory at {hdr.cd_offset} "
                                  f"(+{hdr.cd_size}) does not end where the end record starts")
        self._cd_offset = hdr.cd_offset
        self._src = self._decrypt_body(body_end) if enc == ENC_ARCHIVE else _Source(self._fd)
        self._entries: list[EntryInfo] = []
        self._by_name: dict[str, EntryInfo] = {}
        self._parse_cd(n)

    def _decrypt_body(self, body_end: int) -> _Source:
        """Archive mode: the whole body is one AES-GCM message; it is authenticated before a
        byte of it is parsed (in memory when small, else through an anonymous temp file)."""
        if self._key is None:
            raise DecryptionError(f"{self.path}: the archive is encrypted: give its key (key=, --key)")
        nonce = os.pread(self._fd, NONCE_SIZE, HEADER_SIZE)
        ct_start = HEADER_SIZE + NONCE_SIZE
        ct_len = body_end - HEADER_SIZE
        tag = os.pread(self._fd, TAG_SIZE, ct_start + ct_len)
        dec = crypto.StreamDecryptor(self._key, nonce, self.path)
        tmp = None if ct_len <= IN_MEMORY_MAX else tempfile.TemporaryFile()
        parts = []
        pos = ct_start
        while pos < ct_start + ct_len:
            block = os.pread(self._fd, min(codec.READ_BLOCK, ct_start + ct_len - pos), pos)
            if not block:
                raise CorruptionError(f"{self.path}: file shrank while being read")
            pos += len(block)
            out = dec.update(block)
            if tmp is None:
                parts.append(out)
            else:
                tmp.write(out)
        try:
            dec.finalize(tag)
        except BaseException:
            if tmp is not None:
                tmp.close()
            raise
        if tmp is None:
            return _Source(self._fd, HEADER_SIZE, mem=b"".join(parts))
        tmp.flush()
        return _Source(self._fd, HEADER_SIZE, tmp=tmp)

    def _parse_cd(self, n: int) -> None:
        lim = self.limits
        total = 0
        src = self._src
        assert src is not None
        for start in range(0, n, CD_BATCH):
            count = min(CD_BATCH, n - start)
            raw = src.pread(self._cd_offset + start * CENT_SIZE, count * CENT_SIZE)
            if len(raw) != count * CENT_SIZE:
                raise CorruptionError(f"{self.path}: central directory cut short")
            for j in range(count):
                i = start + j
                e = unpack_cent(raw[j * CENT_SIZE:(j + 1) * CENT_SIZE], i)
                self._check_entry(e, i)
                total += e.size
                if total > lim.max_total_size:
                    raise CorruptionError(f"{self.path}: entries declare more than "
                                          f"{lim.max_total_size} bytes in total (the cap)")
                if e.path in self._by_name:
                    raise CorruptionError(f"{self.path}: {e.path!r} is named twice")
                self._by_name[e.path] = e
                self._entries.append(e)
        ends = sorted((e.offset, e.offset + LOCA_FIXED + len(e.path.encode()) + e.compressed_size,
                       e.path) for e in self._entries)
        prev_end, prev = HEADER_SIZE, None
        for off, end, path in ends:
            if off < prev_end:
                other = repr(prev) if prev else "the header"
                raise CorruptionError(f"{self.path}: entry {path!r} overlaps {other}")
            prev_end, prev = end, path
        self.total_size = total

    def _check_entry(self, e: EntryInfo, i: int) -> None:
        lim = self.limits
        where = f"{self.path}: entry {e.path!r}"
        if e.size > lim.max_file_size:
            raise CorruptionError(f"{where} declares {e.size} bytes, past the cap of "
                                  f"{lim.max_file_size}")
        plain = e.compressed_size
        if self._enc == ENC_PER_FILE:
            if plain < PER_FILE_OVERHEAD:
                raise CorruptionError(f"{where}: encrypted payload shorter than nonce and tag")
            plain -= PER_FILE_OVERHEAD
        method = METHOD_BY_NAME[e.method]
        if method == METHOD_NONE:
            if plain != e.size:
                raise CorruptionError(f"{where}: stored raw, but {plain} bytes stored for "
                                      f"{e.size}")
        else:
            ratio = lim.lz4_max_ratio if e.method == "lz4" else lim.zstd_max_ratio
            if e.size > plain * ratio + lim.ratio_slack:
                raise CorruptionError(f"{where}: {e.size} bytes from {plain} stored is past the "
                                      f"{e.method} ratio cap {ratio}:1 (a decompression bomb?)")
            if e.size >= FRAME_THRESHOLD:
                frames = -(-e.size // FRAME_SIZE)
                if not 4 + 4 * frames <= plain <= 4 + frames * (4 + codec.FRAME_MAX_STORED):
                    raise CorruptionError(f"{where}: {plain} bytes cannot hold its {frames} "
                                          "frames")
            elif plain >= e.size:
                # a writer keeps compressed output only when it is smaller; a larger payload
                # would only make a reader hold more than the file can be
                raise CorruptionError(f"{where}: {plain} bytes stored for {e.size} compressed")
        end = e.offset + LOCA_FIXED + len(e.path.encode()) + e.compressed_size
        if e.offset < HEADER_SIZE or end > self._cd_offset:
            raise CorruptionError(f"{where}: data at {e.offset}..{end} lies outside the entries' "
                                  f"area (64..{self._cd_offset})")

    # -- the listing ------------------------------------------------------------------------------
    @property
    def encryption(self) -> str | None:
        """None, "archive" or "per-file"."""
        return ENC_NAMES[self._enc]

    def namelist(self) -> list[str]:
        return [e.path for e in self._entries]

    def infolist(self) -> list[EntryInfo]:
        return list(self._entries)

    def getinfo(self, name: str) -> EntryInfo:
        if not isinstance(name, str):
            raise TypeError(f"member name must be a str, not {type(name).__name__}")
        e = self._by_name.get(name)
        if e is None:
            raise NotFoundError(f"{self.path}: no member {name!r}")
        return e

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self._entries)

    # -- content ------------------------------------------------------------------------------
    def _source(self) -> _Source:
        if self._src is None:
            raise ClosedError(f"{self.path}: the Engram reader is closed")
        return self._src

    def _payload(self, e: EntryInfo) -> tuple[Any, int]:
        """A read()-able source of the entry's stored payload (decrypted, authenticated) and its
        length, after checking its LOCA header against the central directory."""
        src = self._source()
        raw = e.path.encode("utf-8")
        loca = src.pread(e.offset, LOCA_FIXED + len(raw))
        if len(loca) != LOCA_FIXED + len(raw):
            raise CorruptionError(f"{self.path}: {e.path!r}: local header cut short")
        size, csize, crc, _mtime, method, plen = unpack_loca(loca[:LOCA.size])
        if (size, csize, crc, method, plen) != (e.size, e.compressed_size, e.crc,
                                                METHOD_BY_NAME[e.method], len(raw)) \
                or loca[LOCA.size:LOCA.size + plen] != raw or loca[-1] != 0:
            raise CorruptionError(f"{self.path}: {e.path!r}: LOCA header does not match the "
                                  "central directory (path, sizes, CRC or method mismatch)")
        start = e.offset + len(loca)
        if self._enc != ENC_PER_FILE:
            return _Window(src, start, e.compressed_size), e.compressed_size
        if self._key is None:
            raise DecryptionError(f"{self.path}: {e.path!r} is encrypted: give its key (key=, --key)")
        where = f"{self.path}: {e.path!r}"
        if e.compressed_size <= IN_MEMORY_MAX:
            plain = crypto.decrypt(self._key, src.pread(start, e.compressed_size), where)
            return codec.BytesSrc(plain), len(plain)
        nonce = src.pread(start, NONCE_SIZE)
        ct_len = e.compressed_size - PER_FILE_OVERHEAD
        dec = crypto.StreamDecryptor(self._key, nonce, where)
        tmp = tempfile.TemporaryFile()
        try:
            win = _Window(src, start + NONCE_SIZE, ct_len)
            while True:
                block = win.read(codec.READ_BLOCK)
                if not block:
                    break
                tmp.write(dec.update(block))
            dec.finalize(src.pread(start + NONCE_SIZE + ct_len, TAG_SIZE))
            tmp.seek(0)
        except BaseException:
            tmp.close()
            raise
        return tmp, ct_len

    def _content(self, e: EntryInfo) -> Iterator[bytes]:
        """The entry's content in pieces; CorruptionError at the end if CRC or size is wrong."""
        payload, n = self._payload(e)
        where = f"{self.path}: {e.path!r}"
        crc = 0
        got = 0
        try:
            for piece in codec.decode(payload, n, e.size, METHOD_BY_NAME[e.method], where):
                crc = zlib.crc32(piece, crc)
                got += len(piece)
                if got > e.size:
                    raise CorruptionError(f"{where}: content longer than its declared size")
                yield piece
        finally:
            close = getattr(payload, "close", None)
            if close is not None:
                close()
        if got != e.size:
            raise CorruptionError(f"{where}: {got} bytes read, {e.size} declared")
        if crc != e.crc:
            raise CorruptionError(f"{where}: CRC mismatch (expected {e.crc:08x}, got {crc:08x})")

    def read(self, name: str) -> bytes:
        """The whole content of member `name`, checked (CRC, size)."""
        e = self.getinfo(name)
        return b"".join(self._content(e))

    def open(self, name: str) -> io.BufferedReader:
        """A streaming binary file object on member `name`: content is decoded as it is read
        (frame by frame for framed files), so memory stays bounded. The CRC and size are
        checked when the end is reached; a mismatch raises CorruptionError from that read."""
        e = self.getinfo(name)
        return io.BufferedReader(_EntryStream(self._content(e)), buffer_size=FRAME_SIZE)

    def manifest(self) -> dict | None:
        """manifest.json parsed into engram-rs's schema (unknown fields dropped), or None when
        the archive has none; CorruptionError when it does not parse."""
        e = self._by_name.get(MANIFEST_NAME)
        if e is None:
            return None
        if e.size > self.limits.max_manifest_size:
            raise CorruptionError(f"{self.path}: manifest.json is {e.size} bytes, past the cap "
                                  f"of {self.limits.max_manifest_size}")
        return MF.parse(self.read(MANIFEST_NAME))

    # -- verification ---------------------------------------------------------------------------
    def verify(self, public_keys: Sequence[Any] | None = None) -> EngramReport:
        """Check everything: every entry's LOCA, content, CRC and size; manifest.json against
        the content (every entry listed, every listed SHA-256 and size right, nothing listed
        that is missing); every signature; and with `public_keys` (keys, raw bytes, hex or key
        files), that a valid signature is by one of them. Problems are reported, not raised
        (except a closed reader)."""
        problems: list[str] = []
        digests: dict[str, tuple[str, int]] = {}
        for e in self._entries:
            h = hashlib.sha256()
            try:
                for piece in self._content(e):
                    h.update(piece)
            except (CorruptionError, DecryptionError) as exc:
                problems.append(str(exc))
                continue
            digests[e.path] = (h.hexdigest(), e.size)
        report = EngramReport(False, problems, len(self._entries), self.total_size,
                              self.encryption, False)
        trusted_keys = None
        if public_keys is not None:
            if isinstance(public_keys, (str, bytes, bytearray)):
                public_keys = [public_keys]
            trusted_keys = {crypto.public_hex(crypto.load_public_key(k)) for k in public_keys}
        m = None
        if MANIFEST_NAME in self._by_name and MANIFEST_NAME in digests:
            try:
                m = self.manifest()
            except CorruptionError as exc:
                problems.append(str(exc))
        elif MANIFEST_NAME not in self._by_name and trusted_keys is not None:
            problems.append("no manifest.json, so no signature to check")
        if m is not None:
            report.manifest = True
            self._check_listing(m, digests, problems)
            valid = MF.verify_signatures(m)
            for s, ok in zip(m["signatures"], valid):
                pk = s["public_key"].lower()
                trusted = None if trusted_keys is None else (ok and pk in trusted_keys)
                report.signatures.append({"public_key": s["public_key"], "signer": s.get("signer"),
                                          "timestamp": s["timestamp"], "valid": ok,
                                          "trusted": trusted})
                if not ok:
                    problems.append(f"signature by {s['public_key'][:16]}... does not verify")
            report.signed = bool(valid) and all(valid)
            if trusted_keys is not None:
                report.trusted = any(s["trusted"] for s in report.signatures)
        if trusted_keys is not None:
            if not report.trusted:
                report.trusted = False
                problems.append("no valid signature by a trusted key")
        report.ok = not problems
        return report

    def _check_listing(self, m: dict, digests: dict[str, tuple[str, int]],
                       problems: list[str]) -> None:
        listed: dict[str, dict] = {}
        for f in m["files"]:
            if f["path"] in listed:
                problems.append(f"manifest lists {f['path']!r} twice")
            listed[f["path"]] = f
        for e in self._entries:
            if e.path == MANIFEST_NAME:
                continue
            f = listed.get(e.path)
            if f is None:
                problems.append(f"{e.path!r} is not listed in the manifest")
                continue
            got = digests.get(e.path)
            if got is None:
                continue                       # unreadable: reported already
            if f["sha256"].lower() != got[0] or f["size"] != got[1]:
                problems.append(f"{e.path!r}: content does not match the manifest's SHA-256 "
                                "and size")
        for path in listed:
            if path not in self._by_name:
                problems.append(f"manifest lists {path!r}, which is not in the archive")

    # -- SQLite -----------------------------------------------------------------------------
    def sqlite(self, name: str) -> sqlite3.Connection:
        """Member `name` opened read-only with the stdlib sqlite3 module (in memory, as
        engram-rs's VFS extracts it; a WAL-mode image is opened as a rollback-journal one)."""
        data = bytearray(self.read(name))
        if not data.startswith(SQLITE_MAGIC):
            raise NotADatabaseError(f"{self.path}: {name!r} is not an SQLite database")
        if len(data) >= 20 and data[18] == 2 and data[19] == 2:
            data[18] = data[19] = 1
        if hasattr(sqlite3.Connection, "deserialize"):      # Python 3.11+
            conn = sqlite3.connect(":memory:", check_same_thread=False)
            conn.deserialize(bytes(data))                    # type: ignore[attr-defined,unused-ignore]
        else:                                          # Python < 3.11: a temp file, read-only
            fd, tmp = tempfile.mkstemp(suffix=".db")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                conn = sqlite3.connect(f"file:{tmp}?mode=ro", uri=True, check_same_thread=False)
                conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            finally:
                os.remove(tmp)
        conn.execute("PRAGMA query_only = ON")
        return conn

    # -- life -------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        if self._src is not None:
            self._src.close()
            self._src = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> EngramReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"<cartridge.engram.EngramReader {self.path!r} entries={len(self._entries)}>"


class _EntryStream(io.RawIOBase):
    def __init__(self, pieces: Iterator[bytes]):
        self._it: Iterator[bytes] | None = pieces
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not len(self._buf):
            if self._it is None:
                return 0
            try:
                self._buf = memoryview(next(self._it))
            except StopIteration:
                self._it = None
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        if self._it is not None:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()
            self._it = None
        super().close()


def open(path: str | os.PathLike, key: Any = None, *, limits: Limits = DEFAULT_LIMITS) \
        -> EngramReader:
    """Open an Engram archive for reading (see EngramReader); `key`: the 32-byte AES key of an
    encrypted archive."""
    return EngramReader(path, key, limits=limits)

