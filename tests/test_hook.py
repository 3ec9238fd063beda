"""The operation hook of the handle contract (cartridge/_handle.py): every call of every handle
reports (principal, action, path, result, size) to its subscribers."""
from __future__ import annotations

import pytest

import cartridge
from cartridge import _handle as H
from cartridge.guard import PrincipalCartridge

# the hook on its own: the shared `cart` fixture without the audit log's own subscription
CART_OPTIONS = {"audit": "off"}

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


# -- the Event: which archive, IAM actions, transactions, pre-commit delivery ----------------
@pytest.fixture
def events():
    got: list[H.Event] = []
    unsubscribe = H.subscribe(got.append)
    yield got
    unsubscribe()


def test_events_name_the_archive_and_the_iam_action(cart, events):
    alice = cart.as_principal("alice")
    events.clear()
    cart.write("/a//b.txt", b"hello")
    alice.read("a/b.txt")
    cart.rename("/a/b.txt", "c.txt")
    cart.listdir("/")
    cart.delete("/c.txt")
    cart.set_policy("p", ALLOW_READ)
    got = [(e.principal, e.method, e.action, e.path, e.dest) for e in events]
    assert got == [
        (None, "write", "cart:PutObject", "/a/b.txt", None),
        ("alice", "read", "cart:GetObject", "/a/b.txt", None),
        (None, "rename", H.RENAME, "/a/b.txt", "/c.txt"),
        (None, "listdir", "cart:List", "/", None),
        (None, "delete", "cart:DeleteObject", "/c.txt", None),
        (None, "set_policy", "cart:PutPolicy", "p", None),
    ]
    assert all(e.archive is cart for e in events)       # the principal's too
    assert [e.changed for e in events] == [True, False, True, False, True, True]


def test_two_archives_are_told_apart(tmp_path, events):
    with cartridge.open(tmp_path / "1.cart", "a") as one, cartridge.open(tmp_path / "2.cart", "a") as two:
        one.write("/x", b"1")
        two.write("/x", b"2")
        assert [e.archive for e in events] == [one, two]


def test_write_checksum_matches_stat(cart, events):
    cart.write("/small", b"abc")
    cart.write("/big", bytes(range(256)) * 1000)
    with cart.open("/streamed", "wb") as s:
        s.write(b"z" * 200_000)
    sums = [e.checksum for e in events if e.changed]
    assert sums == [cart.stat(p).checksum for p in ("/small", "/big", "/streamed")]
    assert [e.size for e in events if e.changed] == [3, 256_000, 200_000]


def test_a_change_is_reported_before_its_commit(cart, events):
    gens = []
    off = H.subscribe(lambda e: gens.append((e.method, H.engine(e.archive).root.generation)))
    g = H.engine(cart).root.generation
    cart.write("/a", b"1")
    cart.exists("/a")
    off()
    assert gens == [("write", g), ("exists", g + 1)]


def test_transaction_events_and_rollback(cart, events):
    with cart.transaction():
        cart.write("/kept", b"k")
    with pytest.raises(RuntimeError):
        with cart.transaction():
            cart.write("/gone", b"g")
            cart.mkdir("/gone-dir")
            raise RuntimeError("abandon")
    got = [(e.method, e.path, e.result, e.changed, e.transaction) for e in events]
    assert not cart.exists("/gone")
    assert got == [
        ("write", "/kept", "ok", True, 1),
        ("transaction", None, "ok", True, 1),
        ("write", "/gone", "ok", True, 2),
        ("mkdir", "/gone-dir", "ok", True, 2),
        ("transaction", None, "RuntimeError", False, 2),
    ]


def test_denial_in_a_transaction_rolls_back_and_is_reported(cart, events):
    cart.set_policy("read-pub", ALLOW_READ)
    alice = cart.as_principal("alice")
    events.clear()
    with pytest.raises(cartridge.AccessDeniedError):
        with alice.transaction():
            cart.write("/pub/by-owner", b"o")
            alice.write("/pub/y", b"1234")
    got = [(e.principal, e.method, e.action, e.result, e.refused, e.transaction) for e in events]
    assert got == [
        (None, "write", "cart:PutObject", "ok", None, 1),
        ("alice", "write", "cart:PutObject", "denied", ("cart:PutObject", "/pub/y"), 1),
        ("alice", "transaction", None, "denied", None, 1),
    ]
    assert not cart.exists("/pub/by-owner")


def test_principal_denials_carry_the_refused_action(cart, events):
    cart.write("/pub/x", b"abc")
    cart.set_policy("read-pub", ALLOW_READ)
    alice = cart.as_principal("alice")
    events.clear()
    with pytest.raises(cartridge.AccessDeniedError):
        alice.rename("/pub/x", "/pub/z")
    with pytest.raises(cartridge.AccessDeniedError):
        alice.delete("/pub/x")
    with pytest.raises(cartridge.AccessDeniedError):
        alice.listdir("/")
    with pytest.raises(cartridge.AccessDeniedError):
        alice.set_policy("mine", ALLOW_READ)
    got = [(e.method, e.action, e.path, e.dest, e.result, e.refused) for e in events]
    assert got == [
        ("rename", H.RENAME, "/pub/x", "/pub/z", "denied", ("cart:DeleteObject", "/pub/x")),
        ("delete", "cart:DeleteObject", "/pub/x", None, "denied", ("cart:DeleteObject", "/pub/x")),
        ("listdir", "cart:List", "/", None, "denied", ("cart:List", "/")),
        ("set_policy", "cart:PutPolicy", "mine", None, "denied", ("cart:PutPolicy", "/")),
    ]
    assert all(e.principal == "alice" and not e.changed for e in events)


def test_a_failed_commit_is_reported_again(cart, events):
    class Refuse:
        def before_commit(self, eng):
            raise OSError("disk full")

        def after_rollback(self, eng):
            pass

    remove = H.add_participant(cart, Refuse())
    with pytest.raises(OSError):
        cart.write("/a", b"1")
    remove()
    assert [(e.method, e.result, e.changed) for e in events] == [
        ("write", "ok", True), ("write", "OSError", False)]


def test_generator_closed_early_is_reported(cart, events):
    cart.mkdir("/d")
    cart.write("/d/f", b"1")
    events.clear()
    assert next(iter(cart.walk("/"))) == ("/", ["d"], [])
    it = cart.scan("/")
    next(it)
    it.close()
    got = [(e.method, e.path, e.result, e.size) for e in events]
    assert got == [("walk", "/", "ok", 1), ("scan", "/", "ok", 1)]


def test_partly_read_stream_reports_bytes_read(cart, events):
    cart.write("/big", b"x" * 100_000)
    events.clear()
    with cart.open("/big", "rb") as r:
        r.read(10)
        r.readinto(bytearray(90))
    with cart.open("/big", "rb"):
        pass
    got = [(e.method, e.action, e.path, e.size, e.changed) for e in events if e.method == "stream_close"]
    assert got == [("stream_close", "cart:GetObject", "/big", 100, False),
                   ("stream_close", "cart:GetObject", "/big", 0, False)]


def test_write_many_reports_each_file(cart, events):
    data = {"/m/a": b"1", "/m/b": b"2" * 70_000, "m//c": b""}
    cart.write_many(data.items())
    (ev,) = events
    assert ev.method == "write_many" and ev.action == "cart:PutObject" and ev.changed
    assert ev.size == 70_001
    assert ev.files == tuple(H.FileWrite(p, cart.stat(p).size, cart.stat(p).checksum)
                             for p in ("/m/a", "/m/b", "/m/c"))


def test_close_reports_the_streams_it_publishes(cart_path, events):
    cart = cartridge.open(cart_path, "a")
    s = cart.open("/left", "wb")
    s.write(b"abc")
    cart.close()
    got = [(e.method, e.path, e.result, e.changed, e.size) for e in events]
    assert got == [("open", "/left", "ok", False, None), ("stream_close", "/left", "ok", True, 3),
                   ("close", None, "ok", False, None)]


def test_sqlite_commit_is_one_event_with_its_files(cart, events):
    db = cart.sqlite("/app.db")
    events.clear()
    db.execute("CREATE TABLE t(a)")
    commits = [e for e in events if e.method == "sqlite_commit"]
    assert commits and all(e.action == "cart:PutObject" and e.path == "/app.db" and e.changed
                           for e in commits)
    last = commits[-1]
    assert H.FileWrite("/app.db", cart.stat("/app.db").size, cart.stat("/app.db").checksum) \
        in last.files
    db.close()


def test_sqlite_publish_refused_is_a_denied_commit(cart, events):
    allow = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["cart:GetObject", "cart:PutObject"], "Resource": "/db*"}]}
    cart.set_policy("db", allow)
    bob = cart.as_principal("bob")
    conn = bob.sqlite("/db")
    conn.execute("CREATE TABLE t(a)")
    cart.set_policy("db", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "cart:GetObject", "Resource": "/db*"}]})
    events.clear()
    with pytest.raises(cartridge.AccessDeniedError):
        conn.execute("INSERT INTO t VALUES (1)")
    denied = [e for e in events if e.result == "denied"]
    assert denied and denied[0].method == "sqlite_commit" and denied[0].principal == "bob"
    assert denied[0].refused is not None and denied[0].refused[0] == "cart:PutObject"
    assert not denied[0].changed
    conn.close()


def test_a_denial_outside_any_call_is_its_own_event(cart, events):
    """A member SQLite opens later (ATTACH) is checked by the principal's VFS outside any
    reported call: the denial is reported on its own."""
    c = cart.sqlite("/secret.db")
    c.execute("CREATE TABLE s(x)")
    c.close()
    cart.set_policy("db", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["cart:GetObject", "cart:PutObject"], "Resource": "/pub.db*"}]})
    conn = cart.as_principal("eve").sqlite("/pub.db")
    events.clear()
    with pytest.raises(cartridge.AccessDeniedError):
        conn.execute("ATTACH '/secret.db' AS s").fetchall()
    assert [(e.principal, e.method, e.action, e.path, e.result, e.refused, e.archive is cart)
            for e in events] == [
        ("eve", "sqlite_open", "cart:GetObject", "/secret.db", "denied",
         ("cart:GetObject", "/secret.db"), True)]
    conn.close()


def test_changes_only_subscribers_leave_the_reads_unwrapped(cart):
    raw_read, raw_write = cartridge.Cartridge.read, cartridge.Cartridge.write
    got: list[H.Event] = []
    off = H.subscribe(got.append, changes_only=True)
    try:
        assert cartridge.Cartridge.read is raw_read             # a cached read costs nothing
        assert not hasattr(PrincipalCartridge.read, "__wrapped__")
        assert cartridge.Cartridge.write is not raw_write
        cart.write("/pub/x", b"abc")
        cart.read("/pub/x")
        cart.listdir("/")
        with pytest.raises(cartridge.NotFoundError):
            cart.delete("/missing")                       # a failed change attempt: reported
        cart.set_policy("read-pub", ALLOW_READ)
        alice = cart.as_principal("alice")
        alice.read("/pub/x")
        with pytest.raises(cartridge.AccessDeniedError):
            alice.read("/secret")                          # a denial outside a reported call
        with pytest.raises(cartridge.AccessDeniedError):
            alice.write("/pub/y", b"1")
        with cart.transaction():
            cart.write("/t", b"t")
        everything: list[H.Event] = []
        off_all = H.subscribe(everything.append)          # someone wants everything: reads too
        assert cartridge.Cartridge.read is not raw_read
        cart.read("/pub/x")
        off_all()
        assert cartridge.Cartridge.read is raw_read
        assert [e.method for e in everything] == ["read"]
    finally:
        off()
    assert [(e.principal, e.method, e.action, e.path, e.result) for e in got] == [
        (None, "write", "cart:PutObject", "/pub/x", "ok"),
        (None, "delete", "cart:DeleteObject", "/missing", "NotFoundError"),
        (None, "set_policy", "cart:PutPolicy", "read-pub", "ok"),
        ("alice", "check", "cart:GetObject", "/secret", "denied"),
        ("alice", "write", "cart:PutObject", "/pub/y", "denied"),
        (None, "write", "cart:PutObject", "/t", "ok"),
        (None, "transaction", None, None, "ok"),
    ]
    assert cartridge.Cartridge.write is raw_write


# public calls that are not one reported operation: transaction() is reported as the
# "transaction" event at the end of its block (docs/ARCHITECTURE.md)
NOT_AN_OP = {"transaction"}


def test_every_public_call_is_in_handle_ops():
    """Issue 12 item 1 for every call added since (snapshots, compaction, freeze, Engram
    export): each public method of Cartridge has an entry in _handle.HANDLE_OPS, its guarded
    twin on PrincipalCartridge, and a known IAM action (None only for as_principal, commit,
    close)."""
    from cartridge.iam.actions import ACTIONS
    public = {n for n, v in vars(cartridge.Cartridge).items()
              if not n.startswith("_") and callable(v)}
    assert public - NOT_AN_OP <= set(H.HANDLE_OPS), sorted(public - NOT_AN_OP - set(H.HANDLE_OPS))
    assert set(H.HANDLE_OPS) <= public
    principal = {n for n, v in vars(PrincipalCartridge).items() if not n.startswith("_")}
    assert public <= principal, sorted(public - principal)
    for name, op in H.HANDLE_OPS.items():
        if callable(op.action):
            continue                    # open(): the action depends on the mode
        if op.action is None:
            assert name in {"as_principal", "commit", "close"}, name
        elif name == "rename":          # the event names it; IAM checks Get/Put/Delete
            assert op.action == "cart:Rename"
        else:
            assert op.action in ACTIONS, (name, op.action)
