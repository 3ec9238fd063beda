"""The audit record's canonical bytes (docs/FORMAT.md §13.2): round trip, exact layout, leaf
hash, and rejection of every non-canonical or malformed encoding."""
from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cartridge.audit import record as R
from cartridge.errors import CorruptionError


def test_layout_byte_by_byte():
    raw = R.encode(5, 1_700_000_000_123_456, "alice", "cart:PutObject", "/a/b", None, "allowed",
                   4096, "00000000deadbeef")
    want = (bytes([1, 0, R.F_PRINCIPAL | R.F_PATH | R.F_SIZE | R.F_CHECKSUM, 14])
            + struct.pack("<Qq", 5, 1_700_000_000_123_456) + b"cart:PutObject"
            + struct.pack("<H", 5) + b"alice" + struct.pack("<H", 4) + b"/a/b"
            + struct.pack("<Q", 4096) + struct.pack("<Q", 0xdeadbeef))
    assert raw == want
    rec = R.decode(raw)
    assert rec == (5, 1_700_000_000.123456, "alice", "cart:PutObject", "/a/b", None, "allowed",
                   4096, "00000000deadbeef", raw)
    assert rec.time_us == 1_700_000_000_123_456
    assert rec.leaf_hash == hashlib.sha256(b"\x00" + raw).digest()


def test_rename_and_owner():
    raw = R.encode(0, 0, None, "cart:Rename", "/x", "/y", "denied", None, None)
    rec = R.decode(raw)
    assert (rec.principal, rec.path, rec.dest, rec.result, rec.size, rec.checksum) == (
        None, "/x", "/y", "denied", None, None)


names = st.text(max_size=20) | st.none()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**63 - 1), st.integers(-(2**61), 2**61), names,
       st.sampled_from(["cart:GetObject", "cart:List", "x"]), names, names,
       st.sampled_from(R.RESULTS), st.integers(0, 2**64 - 1) | st.none(),
       st.integers(0, 2**64 - 1).map(lambda c: f"{c:016x}") | st.none())
def test_round_trip(seq, t, principal, action, path, dest, result, size, csum):
    raw = R.encode(seq, t, principal, action, path, dest, result, size, csum)
    rec = R.decode(raw)
    assert rec == R.make(seq, t, principal, action, path, dest, result, size, csum)
    assert rec.raw == raw


def test_rejects_non_canonical():
    raw = R.encode(1, 2, "p", "cart:List", "/", None, "allowed", 3, None)
    bad = [raw + b"\x00", raw[:-1], b"", b"\x02" + raw[1:], raw[:1] + b"\x03" + raw[2:],
           raw[:2] + bytes([raw[2] | 0x80]) + raw[3:], raw[:3] + b"\x00" + raw[4:],
           raw[:3] + b"\xff" + raw[4:], raw[:2] + bytes([raw[2] | R.F_CHECKSUM]) + raw[3:]]
    for b in bad:
        with pytest.raises(CorruptionError):
            R.decode(b)
    # a string whose UTF-8 is invalid
    x = R.encode(1, 2, "p", "cart:List", None, None, "allowed", None, None)
    with pytest.raises(CorruptionError):
        R.decode(x[:-1] + b"\xff")
    # an action with a non-printable byte
    y = bytearray(R.encode(1, 2, None, "ab", None, None, "allowed", None, None))
    y[R.RAW_HEAD.size] = 0x20
    with pytest.raises(CorruptionError):
        R.decode(bytes(y))


def test_bad_arguments():
    good = dict(seq=0, time_us=0, principal=None, action="a", path=None, dest=None,
                result="allowed", size=None, checksum=None)
    for k, v, exc in (("seq", -1, ValueError), ("seq", 1.0, ValueError), ("action", "", ValueError),
                      ("action", "a b", ValueError), ("action", "cart:Pütt", ValueError),
                      ("action", 3, TypeError),
                      ("action", "x" * 65, ValueError), ("result", "ok", ValueError),
                      ("size", -1, ValueError), ("size", 2**64, ValueError),
                      ("checksum", "xyz", ValueError), ("checksum", "g" * 16, ValueError),
                      ("path", 3, TypeError), ("path", "x" * 5000, ValueError),
                      ("time_us", 2**62, ValueError)):
        with pytest.raises(exc):
            R.encode(**{**good, k: v})
