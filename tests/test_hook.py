"""The operation hook of the handle contract (cartridge/_handle.py): every call of every handle
reports (principal, action, path, result, size) to its subscribers."""
from __future__ import annotations

import pytest

import cartridge
from cartridge import _handle as H
from cartridge.guard import PrincipalCartridge

ALLOW_READ = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "cart:GetObject", "Resource": "/pub/*"}]}


@pytest.fixture
def seen():
    events: list[tuple] = []
    unsubscribe = H.subscribe(lambda ev: events.append(ev.brief))
    yield events
    unsubscribe()


def test_no_subscriber_no_wrapper():
    assert not H.hooks
    assert not hasattr(cartridge.Cartridge.read, "__wrapped__")   # the plain method runs


def test_owner_calls(tmp_path, seen):
    with cartridge.open(tmp_path / "a.cart", "a") as cart:
        cart.write("/a.txt", b"hello")
        assert cart.read("/a.txt") == b"hello"
        cart.mkdir("/d")
        cart.rename("/a.txt", "/d/b.txt")
        cart.delete("/d/b.txt")
        with pytest.raises(cartridge.NotFoundError):
            cart.read("/missing")
        assert list(cart.walk("/")) == [("/", ["d"], []), ("/d", [], [])]
    assert seen == [
        (None, "write", "/a.txt", "ok", 5),
        (None, "read", "/a.txt", "ok", 5),
        (None, "mkdir", "/d", "ok", None),
        (None, "rename", "/a.txt", "ok", None),
        (None, "delete", "/d/b.txt", "ok", None),
        (None, "read", "/missing", "NotFoundError", None),
        (None, "walk", "/", "ok", 2),
        (None, "close", None, "ok", None),
    ]


def test_read_only_handle(tmp_path, seen):
    with cartridge.open(tmp_path / "a.cart", "a") as cart:
        cart.write("/a", b"xy")
    seen.clear()
    with cartridge.open(tmp_path / "a.cart", "r") as ro:
        assert ro.read("/a") == b"xy"
        with pytest.raises(cartridge.ReadOnlyError):
            ro.write("/b", b"1")
    assert seen[:2] == [(None, "read", "/a", "ok", 2), (None, "write", "/b", "ReadOnlyError", 1)]


def test_principal_allowed_and_denied(tmp_path, seen):
    with cartridge.open(tmp_path / "a.cart", "a") as cart:
        cart.write("/pub/x", b"abc")
        cart.write("/secret", b"s")
        cart.set_policy("read-pub", ALLOW_READ)
        alice = cart.as_principal("alice")
        assert isinstance(alice, PrincipalCartridge)
        seen.clear()
        assert alice.read("/pub/x") == b"abc"
        assert alice.read("/pub/x") == b"abc"          # the memoised fast path is reported too
        with pytest.raises(cartridge.AccessDeniedError):
            alice.read("/secret")
        with pytest.raises(cartridge.AccessDeniedError):
            alice.write("/pub/y", b"1234")
        # one report per call: the owner's method run by the principal is not reported again
        assert seen == [
            ("alice", "read", "/pub/x", "ok", 3),
            ("alice", "read", "/pub/x", "ok", 3),
            ("alice", "read", "/secret", "denied", None),
            ("alice", "write", "/pub/y", "denied", 4),
        ]


def test_stream_close(tmp_path, seen):
    with cartridge.open(tmp_path / "a.cart", "a") as cart:
        s = cart.open("/s.bin", "wb")
        s.write(b"x" * 1000)
        s.close()
        with cart.open("/s.bin", "rb") as r:
            assert len(r.read()) == 1000
        bob = cart.as_principal("bob")
        with bob.open("/t.bin", "wb") as w:
            w.write(b"yy")
    assert (None, "stream_close", "/s.bin", "ok", 1000) in seen
    assert [e for e in seen if e[1] == "stream_close"] == [
        (None, "stream_close", "/s.bin", "ok", 1000),
        (None, "stream_close", "/s.bin", "ok", 1000),
        ("bob", "stream_close", "/t.bin", "ok", 2),
    ]


def test_sqlite_commit(tmp_path, seen):
    with cartridge.open(tmp_path / "a.cart", "a") as cart:
        conn = cart.sqlite("/app.db")
        seen.clear()
        conn.execute("CREATE TABLE t(a)")
        conn.execute("INSERT INTO t VALUES (1)")
        commits = [e for e in seen if e[1] == "sqlite_commit"]
        assert commits and all(e[0] is None and e[2] == "/app.db" and e[3] == "ok" for e in commits)
        assert commits[-1][4] == cart.stat("/app.db").size
        conn.close()
        carol = cart.as_principal("carol")
        c2 = carol.sqlite("/app.db")
        seen.clear()
        c2.execute("INSERT INTO t VALUES (2)")
        assert [e[:4] for e in seen if e[1] == "sqlite_commit"] == \
            [("carol", "sqlite_commit", "/app.db", "ok")]
        c2.close()


def test_unsubscribe_restores_the_methods(tmp_path):
    events: list = []
    raw = cartridge.Cartridge.read
    off = H.subscribe(lambda ev: events.append(ev.brief))
    assert cartridge.Cartridge.read is not raw and cartridge.Cartridge.read.__wrapped__ is raw
    off()
    assert not H.hooks
    assert cartridge.Cartridge.read is raw
    with cartridge.open(tmp_path / "a.cart", "a") as cart:
        cart.write("/a", b"1")
    assert events == []
