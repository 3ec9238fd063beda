"""Shared fixtures for the API, error, stream and state-machine tests."""
import os

import pytest

import cartridge


@pytest.fixture
def cart_path(tmp_path):
    """Path of a not-yet-existing archive inside a fresh temporary directory."""
    return str(tmp_path / "test.cart")


@pytest.fixture
def cart(cart_path, request):
    """A fresh read-write archive (mode "a", at cart_path), closed after the test; the one
    every test file uses. A module may set CART_OPTIONS (keywords for cartridge.open, e.g.
    {"sync": "off"}), and prepares contents by overriding `cart` with a fixture that takes
    this one (`def cart(cart): cart.write(...); return cart`)."""
    c = cartridge.open(cart_path, "a", **getattr(request.module, "CART_OPTIONS", {}))
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def rng():
    """Deterministic random bytes generator: rng(n) -> n bytes."""
    import random

    r = random.Random(12345)

    def make(n: int) -> bytes:
        return r.randbytes(n)

    return make


def reopen(c, mode="a", **kw):
    """Close `c` and open its file again."""
    path = c.path
    c.close()
    return cartridge.open(path, mode, **kw)


def file_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def patch_file(path: str, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)
