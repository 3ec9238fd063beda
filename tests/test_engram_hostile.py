"""The strict Engram reader against hostile archives: each case is refused with one clear
error from cartridge's hierarchy as soon as it is opened (or, for content, read), from small
inputs that would otherwise allocate, decode or write far more than they hold
(docs/ENGRAM.md, "Stricter than the reference")."""
from __future__ import annotations

import io
import random
import struct

import pytest

pytest.importorskip("lz4", reason="the engram extra (lz4) is not installed")
pytest.importorskip("zstandard", reason="the engram extra (zstandard) is not installed")
pytest.importorskip("cryptography", reason="the engram extra (cryptography) is not installed")

import lz4.block
import zstandard

from cartridge import engram
from cartridge.engram import EngramWriter, Limits
from cartridge.engram.layout import pack_endr, pack_header, pack_loca
from cartridge.errors import (
    CartridgeError,
    CorruptionError,
    NotAnEngramError,
    UnsupportedVersionError,
)

pytestmark = pytest.mark.timeout(60)


def build(files) -> bytes:
    b = io.BytesIO()
    with EngramWriter(b, mtime=1) as w:
        for item in files:
            w.add(item[0], item[1], compression=item[2] if len(item) > 2 else "auto")
    return b.getvalue()


def forge(entries, *, count=None, cd_size=None, flags=0, major=1) -> bytes:
    """An archive from raw parts: entries are (path bytes, payload, size, crc, method); the
    CENT of each says what the tuple says, whatever the payload is."""
    body = b""
    cents = []
    for path, payload, size, crc, method in entries:
        off = 64 + len(body)
        body += pack_loca(path, size, len(payload), crc, 1, method) + payload
        cents.append((off, path, size, len(payload), crc, method))
    cd_off = 64 + len(body)
    cd = b""
    for off, path, size, csize, crc, method in cents:
        cd += struct.pack("<4sQQQIQBBH256s20s", b"CENT", off, size, csize, crc, 1, method, 0,
                          len(path), path[:256], b"\0" * 20)
    n = len(entries) if count is None else count
    size = len(cd) if cd_size is None else cd_size
    head = bytearray(pack_header(cd_off, size, n, flags))
    struct.pack_into("<H", head, 8, major)
    endr = bytearray(pack_endr(cd_off, size, n))
    struct.pack_into("<H", endr, 4, major)
    return bytes(head) + body + cd + bytes(endr)


def refuse(tmp_path, raw, exc=CorruptionError, match=None, limits=None):
    p = tmp_path / "h.eng"
    p.write_bytes(raw)
    with pytest.raises(exc, match=match):
        r = engram.open(p, limits=limits or engram.DEFAULT_LIMITS)
        try:
            for e in r.infolist():
                r.read(e.path)
        finally:
            r.close()


def test_forge_makes_valid_archives(tmp_path):
    import zlib
    raw = forge([(b"a.txt", b"hello", 5, zlib.crc32(b"hello"), 0)])
    p = tmp_path / "ok.eng"
    p.write_bytes(raw)
    with engram.open(p) as r:
        assert r.read("a.txt") == b"hello"


# -- the header --------------------------------------------------------------------------------------
def test_bad_magic(tmp_path):
    refuse(tmp_path, b"PK\x03\x04" + bytes(200), NotAnEngramError)


def test_newer_major(tmp_path):
    refuse(tmp_path, forge([], major=2), UnsupportedVersionError)


def test_major_zero(tmp_path):
    refuse(tmp_path, forge([], major=0), UnsupportedVersionError)


def test_encryption_mode_three(tmp_path):
    refuse(tmp_path, forge([], flags=3), CorruptionError, "mode 3")


# -- sizes and offsets ---------------------------------------------------------------------------------
def test_cd_offset_past_file(tmp_path):
    raw = bytearray(forge([]))
    struct.pack_into("<Q", raw, 16, 1 << 60)
    struct.pack_into("<Q", raw, len(raw) - 56, 1 << 60)
    refuse(tmp_path, bytes(raw), CorruptionError, "central directory")


def test_entry_count_past_cap_without_allocating(tmp_path):
    n = 0xFFFFFFFF
    refuse(tmp_path, forge([], count=n, cd_size=320 * n), CorruptionError, "cap")


def test_entry_count_past_configured_cap(tmp_path):
    raw = build([(f"f{i}", b"x") for i in range(11)])
    refuse(tmp_path, raw, CorruptionError, "cap", Limits(max_entries=10))


def test_count_not_matching_cd_size(tmp_path):
    refuse(tmp_path, forge([], count=1000, cd_size=0), CorruptionError, "320")


def test_data_offset_past_file(tmp_path):
    raw = bytearray(build([("a.txt", b"hello")]))
    cd = struct.unpack_from("<Q", raw, 16)[0]
    struct.pack_into("<Q", raw, cd + 4, 1 << 62)
    refuse(tmp_path, bytes(raw), CorruptionError, "outside")


def test_compressed_size_past_file(tmp_path):
    raw = forge([(b"a.bin", b"\0" * 8, 1 << 20, 0, 1)])
    raw = bytearray(raw)
    cd = struct.unpack_from("<Q", raw, 16)[0]
    struct.pack_into("<Q", raw, cd + 20, 1 << 40)
    refuse(tmp_path, bytes(raw), CorruptionError)


def test_raw_entry_size_must_equal_stored(tmp_path):
    refuse(tmp_path, forge([(b"a.txt", b"hello", 1 << 40, 0, 0)]), CorruptionError)


def test_overlapping_entries(tmp_path):
    raw = bytearray(build([("a.txt", b"hello"), ("b.txt", b"world")]))
    cd = struct.unpack_from("<Q", raw, 16)[0]
    struct.pack_into("<Q", raw, cd + 320 + 4, 64)       # b.txt's CENT points at a.txt's LOCA
    refuse(tmp_path, bytes(raw), CorruptionError, "overlaps")


def test_entry_inside_header(tmp_path):
    raw = bytearray(build([("a.txt", b"hello")]))
    cd = struct.unpack_from("<Q", raw, 16)[0]
    struct.pack_into("<Q", raw, cd + 4, 10)
    refuse(tmp_path, bytes(raw), CorruptionError)


def test_crc_mismatch(tmp_path):
    raw = build([("a.txt", b"hello")])
    raw = raw.replace(struct.pack("<I", __import__("zlib").crc32(b"hello")), b"\1\2\3\4")
    refuse(tmp_path, raw, CorruptionError, "CRC")


def test_loca_disagrees_with_cent(tmp_path):
    raw = bytearray(build([("a.txt", b"hello")]))
    raw[64 + 24] ^= 0xFF                                  # LOCA mtime is not compared...
    p = tmp_path / "m.eng"
    p.write_bytes(bytes(raw))
    with engram.open(p) as r:
        assert r.read("a.txt") == b"hello"
    raw[64 + 20] ^= 0xFF                                  # ...its CRC is
    refuse(tmp_path, bytes(raw), CorruptionError, "LOCA")


# -- decompression bombs ------------------------------------------------------------------------------
def test_declared_size_past_ratio_cap(tmp_path):
    payload = lz4.block.compress(b"\0" * 1000, store_size=True)
    refuse(tmp_path, forge([(b"bomb.bin", payload, 1 << 40, 0, 1)]), CorruptionError, "ratio")


def test_zstd_declared_size_past_ratio_cap(tmp_path):
    payload = zstandard.ZstdCompressor().compress(b"\0" * 1000)
    refuse(tmp_path, forge([(b"bomb.txt", payload, 1 << 36, 0, 2)]), CorruptionError, "ratio")


def test_file_size_cap(tmp_path):
    payload = zstandard.ZstdCompressor().compress(b"\0" * 100_000)
    refuse(tmp_path, forge([(b"a.txt", payload, 100_000, 0, 2)]), CorruptionError, "cap",
           Limits(max_file_size=50_000))


def test_total_size_cap(tmp_path):
    raw = build([(f"f{i}.bin", b"x" * 100, "none") for i in range(5)])
    refuse(tmp_path, raw, CorruptionError, "total", Limits(max_total_size=400))


def test_zstd_output_past_declared_size(tmp_path):
    # 8 MiB of zeros in ~300 bytes, declared as 1000 bytes: decoding stops at 1001
    payload = zstandard.ZstdCompressor().compressobj()
    payload = payload.compress(b"\0" * (8 << 20)) + payload.flush()
    refuse(tmp_path, forge([(b"bomb.txt", payload, 1000, 0, 2)]), CorruptionError,
           "exceeds the declared size")


def test_compressed_payload_larger_than_its_content(tmp_path):
    """A compressed entry is never larger than its content (writers store such data raw), so
    a huge payload declaring a tiny size is refused before it is read into memory."""
    payload = struct.pack("<I", 10) + bytes(200_000)
    refuse(tmp_path, forge([(b"big.bin", payload, 10, 0, 1)]), CorruptionError, "stored for 10")
    refuse(tmp_path, forge([(b"big.txt", bytes(200_000), 10, 0, 2)]), CorruptionError)


def test_framed_payload_past_its_frames(tmp_path):
    size = 52_428_800
    refuse(tmp_path, _framed(bytes(4 + 800 * (4 + 65536 + 4096) + 1), size), CorruptionError,
           "cannot hold")


def test_lz4_prefix_past_declared_size(tmp_path):
    payload = lz4.block.compress(b"\0" * 100_000, store_size=True)
    refuse(tmp_path, forge([(b"bomb.bin", payload, 1000, 0, 1)]), CorruptionError, "prefix")


def test_lz4_prefix_lies(tmp_path):
    body = lz4.block.compress(b"\0" * 1000, store_size=False)
    payload = struct.pack("<I", 4000) + body
    refuse(tmp_path, forge([(b"bomb.bin", payload, 4000, 0, 1)]), CorruptionError, "LZ4")


def _framed(frames_payload: bytes, size: int) -> bytes:
    return forge([(b"big.bin", frames_payload, size, 0, 1)])


def test_frame_count_wrong(tmp_path):
    size = 52_428_800
    one = lz4.block.compress(b"\0" * 65536, store_size=True)
    payload = struct.pack("<I", 10**9) + (struct.pack("<I", len(one)) + one) * 800
    refuse(tmp_path, _framed(payload, size), CorruptionError, "frames")


def test_frame_length_past_payload(tmp_path):
    size = 52_428_800
    one = lz4.block.compress(b"\0" * 65536, store_size=True)
    payload = struct.pack("<I", 800) + struct.pack("<I", 1 << 31) + one * 800
    refuse(tmp_path, _framed(payload, size), CorruptionError, "frame 0")


def test_frame_output_past_frame_size(tmp_path):
    size = 52_428_800
    big = lz4.block.compress(b"\0" * 200_000, store_size=True)
    payload = struct.pack("<I", 800) + (struct.pack("<I", len(big)) + big) * 800
    refuse(tmp_path, _framed(payload, size), CorruptionError, "frame 0")


# -- paths (zip slip) ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [b"/etc/passwd", b"../../etc/pa", b"a/../../b", b"C:\\evil.dll",
                                 b"a\0/../../b", b"./a", b"a//b", b"dir/", b"\xff\xfe.txt",
                                 b"a\nb", b".."])
def test_unsafe_paths(bad, tmp_path):
    import zlib
    refuse(tmp_path, forge([(bad, b"x", 1, zlib.crc32(b"x"), 0)]), CorruptionError)


def test_path_len_256_and_past(tmp_path):
    import zlib
    raw = bytearray(forge([(b"p" * 255, b"x", 1, zlib.crc32(b"x"), 0)]))
    cd = struct.unpack_from("<Q", raw, 16)[0]
    for plen in (256, 300, 0xFFFF, 0):
        struct.pack_into("<H", raw, cd + 42, plen)
        refuse(tmp_path, bytes(raw), CorruptionError, "path length")


def test_duplicate_names(tmp_path):
    raw = build([("a.txt", b"first"), ("b.txt", b"secnd")]).replace(b"b.txt", b"a.txt")
    refuse(tmp_path, raw, CorruptionError, "twice")


def test_backslash_variant_is_a_duplicate_in_rust_and_refused_here(tmp_path):
    raw = build([("dir/file.txt", b"1"), ("dir_file.txt", b"2")]).replace(b"dir_file", b"dir\\file")
    refuse(tmp_path, raw, CorruptionError, "backslash")


# -- random damage never escapes the hierarchy ---------------------------------------------------
def test_random_damage_raises_only_cartridge_errors(tmp_path):
    base = build([("a.txt", b"hello " * 1000), ("b.bin", bytes(range(256)) * 40),
                  ("c.json", b'{"k": 1}' * 800), ("d.txt", b"tiny")])
    rng = random.Random(15)
    p = tmp_path / "fz.eng"
    for _ in range(400):
        raw = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            i = rng.randrange(len(raw))
            if op < 0.6:
                raw[i] = rng.randrange(256)
            elif op < 0.8:
                del raw[i:i + rng.randint(1, 64)]
            else:
                raw[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        p.write_bytes(bytes(raw))
        try:
            with engram.open(p) as r:
                for e in r.infolist():
                    r.read(e.path)
                r.verify()
        except CartridgeError:
            pass
