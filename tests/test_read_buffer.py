"""Cartridge.read_buffer: the zero-copy read API (memoryview of verified bytes)."""
import random

import numpy as np
import pytest

import cartridge
from cartridge._handle import engine
from cartridge.format import CHUNK_SIZE

SIZES = [0, 1, 100, 4096, 5000, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 17,
         40 * CHUNK_SIZE + 5]


@pytest.fixture
def files(cart):
    rng = np.random.default_rng(3)
    data = {f"/f{n}": rng.bytes(n) for n in SIZES}
    with cart.transaction():
        for p, d in data.items():
            cart.write(p, d)
    return cart, data


def test_whole_files(files):
    cart, data = files
    for p, d in data.items():
        mv = cart.read_buffer(p)
        assert isinstance(mv, memoryview)
        assert mv.nbytes == len(d)
        assert mv.format == "B" and mv.ndim == 1 and mv.contiguous
        assert bytes(mv) == d


def test_ranges_match_read(files):
    cart, data = files
    r = random.Random(5)
    for p, d in data.items():
        n = len(d)
        for _ in range(25):
            off = r.randrange(n + 10) if n else r.randrange(3)
            size = r.choice([-1, None, 0, 1, r.randrange(n + 2) if n else 1, 2 * CHUNK_SIZE])
            assert bytes(cart.read_buffer(p, off, size)) == cart.read(p, off, size), (p, off, size)


def test_large_buffer_is_writable_and_owned(files):
    cart, data = files
    p = f"/f{40 * CHUNK_SIZE + 5}"
    mv = cart.read_buffer(p)
    assert not mv.readonly           # a fresh buffer the caller owns
    mv[0] ^= 0xFF
    assert cart.read(p) == data[p]   # changing it changes nothing in the archive


def test_view_survives_replacement(files):
    cart, data = files
    p = f"/f{40 * CHUNK_SIZE + 5}"
    mv = cart.read_buffer(p)
    cart.write(p, b"other")
    cart.delete(f"/f{3 * CHUNK_SIZE + 17}")
    cart.write("/new", bytes(len(data[p])))   # may reuse the freed pages
    assert bytes(mv) == data[p]


def test_errors(files):
    cart, _ = files
    cart.mkdir("/dir")
    with pytest.raises(cartridge.NotFoundError):
        cart.read_buffer("/missing")
    with pytest.raises(cartridge.PathIsDirectoryError):
        cart.read_buffer("/dir")
    with pytest.raises(ValueError):
        cart.read_buffer("/f100", -1)
    with pytest.raises(cartridge.InvalidPathError):
        cart.read_buffer("/f100/")


def test_read_only_handle_and_closed(files):
    cart, data = files
    cart.commit()
    with cartridge.open(cart.path, "r") as ro:
        for p, d in data.items():
            assert bytes(ro.read_buffer(p)) == d
    ro_closed = cartridge.open(cart.path, "r")
    ro_closed.close()
    with pytest.raises(cartridge.ClosedError):
        ro_closed.read_buffer("/f1")


def _flip(path, byte_offset):
    with open(path, "r+b") as f:
        f.seek(byte_offset)
        b = f.read(1)
        f.seek(byte_offset)
        f.write(bytes([b[0] ^ 0x55]))


@pytest.mark.parametrize("chunk", [0, 5, 39, 40])
def test_corrupted_chunk_raises(tmp_path, chunk):
    """A damaged chunk raises CorruptionError and never comes back as bytes: whole-file and
    ranged reads over it fail, ranges that avoid it still read right."""
    path = str(tmp_path / "c.cart")
    data = np.random.default_rng(chunk).bytes(40 * CHUNK_SIZE + 5)
    with cartridge.open(path, "w") as c:
        c.write("/big", data)
        rec = engine(c).get(b"/big")
        start = int(engine(c).content.chunk_map(rec, "")[chunk, 0])
    _flip(path, start * 4096 + 3)
    with cartridge.open(path, "r") as c:
        with pytest.raises(cartridge.CorruptionError, match=f"chunk {chunk}"):
            c.read_buffer("/big")
        lo = chunk * CHUNK_SIZE
        with pytest.raises(cartridge.CorruptionError):
            c.read_buffer("/big", lo + 1, 10)
        with pytest.raises(cartridge.CorruptionError):
            c.read_buffer("/big", max(0, lo - 5 * CHUNK_SIZE), 6 * CHUNK_SIZE)
        if chunk:
            assert bytes(c.read_buffer("/big", 0, lo)) == data[:lo]


def test_corrupted_small_file_raises(tmp_path):
    path = str(tmp_path / "s.cart")
    with cartridge.open(path, "w") as c:
        c.write("/s", b"x" * 5000)
        rec = engine(c).get(b"/s")
        start = rec.chunk_key >> 64
    _flip(path, start * 4096 + 10)
    with cartridge.open(path, "r") as c, pytest.raises(cartridge.CorruptionError):
        c.read_buffer("/s")


def test_principal_handle_checks_get(cart):
    cart.write("/public/a", b"a" * 100_000)
    cart.write("/secret/b", b"b" * 100_000)
    cart.set_policy("p", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "cart:GetObject", "Resource": "/public/*"}]})
    alice = cart.as_principal("alice")
    assert bytes(alice.read_buffer("/public/a")) == b"a" * 100_000
    with pytest.raises(cartridge.AccessDeniedError):
        alice.read_buffer("/secret/b")
