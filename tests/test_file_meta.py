"""Mode bits and mtimes set through the public API (issue 19 item 10): write(), write_many()
and write streams, on owner and principal handles; bad values refused; defaults unchanged."""
from __future__ import annotations

import time

import pytest

import cartridge
from cartridge import AccessDeniedError

BIG = 200_000          # several chunks: the chunked store paths


CART_OPTIONS = {"sync": "off"}     # the shared `cart` fixture (conftest.py), without fsyncs


def test_write_sets_mode_and_mtime(cart):
    cart.write("/x", b"hi", mode=0o755, mtime=1_000_000_000.25)
    st = cart.stat("/x")
    assert st.mode == 0o100755 and st.is_file
    assert st.mtime == pytest.approx(1_000_000_000.25, abs=1e-6)
    cart.write("/big", b"b" * BIG, mode=0o600, mtime=42)
    assert cart.stat("/big").mode == 0o100600 and cart.stat("/big").mtime == 42.0
    cart.write("/neg", b"", mtime=-86400.5)          # before 1970 is storable
    assert cart.stat("/neg").mtime == -86400.5


def test_defaults_unchanged(cart):
    before = time.time()
    cart.write("/x", b"1")
    st = cart.stat("/x")
    assert st.mode == 0o100644 and st.mtime >= before - 1
    cart.write("/x", b"2", mode=0o700, mtime=5)
    cart.write("/x", b"3")                     # a replaced file keeps its mode; mtime is now
    st = cart.stat("/x")
    assert st.mode == 0o100700 and st.mtime >= before - 1


def test_metadata_survives_reopen(tmp_path):
    path = tmp_path / "r.cart"
    with cartridge.open(path, "a") as c:
        c.write("/x", b"x", mode=0o751, mtime=123.5)
    with cartridge.open(path) as c:
        assert c.stat("/x").mode == 0o100751 and c.stat("/x").mtime == 123.5
        assert c.verify().ok


def test_write_many_per_item_and_keyword(cart):
    n = cart.write_many([
        ("/a", b"inline", {"mode": 0o700, "mtime": 5}),
        ("/b", b"c" * 5000),                          # one chunk, packed
        ("/c", b"d" * BIG, {"mtime": 7.25}),          # chunked
        ("/d", b"", {"mode": 0o755}),
    ], mode=0o640, mtime=99)
    assert n == 4
    got = {p: (cart.stat(p).mode, cart.stat(p).mtime) for p in "/a /b /c /d".split()}
    assert got == {"/a": (0o100700, 5.0), "/b": (0o100640, 99.0), "/c": (0o100640, 7.25),
                   "/d": (0o100755, 99.0)}
    assert cart.read("/c") == b"d" * BIG and cart.read("/b") == b"c" * 5000
    assert cart.verify().ok


def test_write_many_last_item_of_a_path_wins(cart):
    cart.write_many([("/a", b"1", {"mode": 0o700}), ("/a", b"2")])
    assert cart.stat("/a").mode == 0o100644 and cart.read("/a") == b"2"
    cart.write_many([("/b", b"1"), ("/b", b"2", {"mode": 0o711})])
    assert cart.stat("/b").mode == 0o100711


def test_write_many_without_metadata_unchanged(cart):
    cart.write("/old", b"o", mode=0o700, mtime=1)
    before = time.time()
    cart.write_many([("/old", b"n"), ("/new", b"n")])
    assert cart.stat("/old").mode == 0o100700 and cart.stat("/old").mtime >= before - 1
    assert cart.stat("/new").mode == 0o100644


def test_stream_sets_mode_and_mtime_at_publish(cart):
    with cart.open("/s", "wb", perm=0o711, mtime=123) as f:
        f.write(b"x" * BIG)
    assert cart.stat("/s").mode == 0o100711 and cart.stat("/s").mtime == 123.0
    with cart.open("/s", "ab", mtime=200.5) as f:
        f.write(b"y")
    assert cart.stat("/s").mode == 0o100711 and cart.stat("/s").mtime == 200.5
    with cart.open("/t", "wb", perm=0o600) as f:
        f.write(b"small")
    assert cart.stat("/t").mode == 0o100600
    with pytest.raises(ValueError, match="write streams"):
        cart.open("/t", "rb", perm=0o600)


BAD = [({"mode": 0o10000}, ValueError), ({"mode": -1}, ValueError), ({"mode": "755"}, TypeError),
       ({"mode": True}, TypeError), ({"mode": 7.0}, TypeError),
       ({"mtime": float("nan")}, ValueError), ({"mtime": float("inf")}, ValueError),
       ({"mtime": 1e300}, ValueError), ({"mtime": 10**12}, ValueError),
       ({"mtime": "1"}, TypeError), ({"mtime": False}, TypeError)]


@pytest.mark.parametrize("bad,exc", BAD)
def test_bad_values_raise_and_write_nothing(cart, bad, exc):
    with pytest.raises(exc):
        cart.write("/w", b"x", **bad)
    with pytest.raises(exc):
        cart.write_many([("/m", b"x")], **bad)
    with pytest.raises(exc):
        cart.write_many([("/m", b"x", bad)])
    perm = {"perm": bad["mode"]} if "mode" in bad else bad
    with pytest.raises(exc):
        cart.open("/o", "wb", **perm)
    assert cart.listdir("/") == []


def test_write_many_bad_meta_shape(cart):
    with pytest.raises(ValueError, match="mode.*mtime"):
        cart.write_many([("/a", b"x", {"owner": 1})])
    with pytest.raises(TypeError, match="mapping"):
        cart.write_many([("/a", b"x", 0o755)])
    with pytest.raises(TypeError, match="pairs"):
        cart.write_many([("/a", b"x", {}, 4)])
    assert cart.listdir("/") == []


def test_principal_passes_metadata_through_with_put_check(cart):
    cart.set_policy("p", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["cart:PutObject", "cart:GetObject"], "Resource": "/ok/*"}]})
    alice = cart.as_principal("alice")
    alice.write("/ok/a", b"a", mode=0o755, mtime=10)
    alice.write_many([("/ok/b", b"b", {"mode": 0o700})], mtime=11)
    with alice.open("/ok/c", "wb", perm=0o711, mtime=12) as f:
        f.write(b"c")
    assert [(cart.stat(p).mode, cart.stat(p).mtime) for p in ("/ok/a", "/ok/b", "/ok/c")] == \
        [(0o100755, 10.0), (0o100700, 11.0), (0o100711, 12.0)]
    with pytest.raises(AccessDeniedError):
        alice.write("/no", b"x", mode=0o755)
    with pytest.raises(AccessDeniedError):
        alice.write_many([("/ok/d", b"d"), ("/no", b"x", {"mode": 0o755})])
    with pytest.raises(AccessDeniedError):
        alice.open("/no", "wb", perm=0o755)
    assert not cart.exists("/no") and not cart.exists("/ok/d")
    with pytest.raises(ValueError):
        alice.write("/ok/e", b"x", mode=0o17777)
