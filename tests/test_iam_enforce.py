"""IAM policies persisted in the archive and enforced on every call of a principal handle."""
from __future__ import annotations

import inspect
import json

import pytest

import cartridge
from cartridge import AccessDeniedError, NotFoundError, PolicyError
from cartridge._handle import engine
from cartridge.guard import PrincipalCartridge

V = "2012-10-17"


def allow(actions, resources, **extra):
    return {"Effect": "Allow", "Action": actions, "Resource": resources, **extra}


def deny(actions, resources, **extra):
    return {"Effect": "Deny", "Action": actions, "Resource": resources, **extra}


def doc(*statements):
    return {"Version": V, "Statement": list(statements)}


CART_OPTIONS = {"sync": "off"}     # the shared `cart` fixture (conftest.py), without fsyncs


@pytest.fixture
def cart(cart):
    """The shared fixture's archive (conftest.py) with a few files."""
    cart.write("/public/a.txt", b"public")
    cart.write("/secret/s.txt", b"secret")
    cart.write("/home/alice/notes", b"alice's")
    cart.write("/home/bob/notes", b"bob's")
    return cart


def test_no_policies_means_principals_may_do_everything(cart):
    alice = cart.as_principal("alice")
    assert alice.read("/secret/s.txt") == b"secret"
    alice.write("/new", b"x")
    assert cart.read("/new") == b"x"


def test_with_policies_anything_not_allowed_is_denied(cart):
    cart.set_policy("readers", doc(allow("cart:GetObject", "/public/*")))
    alice = cart.as_principal("alice")
    assert alice.read("/public/a.txt") == b"public"
    with pytest.raises(AccessDeniedError, match="cart:GetObject.*/secret/s.txt"):
        alice.read("/secret/s.txt")
    with pytest.raises(AccessDeniedError, match="PutObject"):
        alice.write("/public/b.txt", b"x")
    assert not cart.exists("/public/b.txt")
    # the owner is never restricted
    assert cart.read("/secret/s.txt") == b"secret"


def test_policies_persist_and_stay_out_of_the_user_namespace(tmp_path):
    path = tmp_path / "p.cart"
    with cartridge.open(path, "a") as c:
        c.write("/f", b"1")
        c.set_policy("readers", doc(allow("cart:GetObject", "/*")))
        c.set_policy("Writers.v2", doc(allow("cart:PutObject", "/w/*")))
        info = c.info()
    assert (info["files"], info["directories"], info["total_bytes"]) == (1, 0, 1)
    with cartridge.open(path, "r") as c:
        assert sorted(c.policies()) == ["Writers.v2", "readers"]
        assert c.get_policy("readers")["Statement"][0]["Effect"] == "Allow"
        assert c.listdir("/") == ["f"]
        assert [i.path for i in c.scan("/")] == ["/f"]
        assert c.verify().ok
        assert c.as_principal("x").read("/f") == b"1"
        with pytest.raises(AccessDeniedError):
            c.as_principal("x").write("/f", b"")       # checked before the read-only refusal
    with cartridge.open(path, "a") as c:
        c.delete_policy("readers")
        with pytest.raises(NotFoundError):
            c.get_policy("readers")
        with pytest.raises(NotFoundError):
            c.delete_policy("readers")
        assert list(c.policies()) == ["Writers.v2"]
        assert c.verify().ok


def test_counts_ignore_policy_entries(tmp_path):
    # audit="off": after the first commit (which records the level) no audit entries change
    with cartridge.open(tmp_path / "c.cart", "a", audit="off") as c:
        c.write("/f", b"12345")
        before = c.info()
        c.set_policy("p", doc(allow("cart:*", "*")))
        after = c.info()
    for key in ("files", "total_bytes", "directories"):
        assert before[key] == after[key], key
    assert after["catalog_entries"] == before["catalog_entries"] + 1


@pytest.mark.parametrize("name", ["", "a b", "x/y", "é", "a" * 129, None, 3])
def test_bad_policy_names(cart, name):
    with pytest.raises(PolicyError):
        cart.set_policy(name, doc(allow("cart:GetObject", "/*")))


@pytest.mark.parametrize("bad", [
    "not json", {"Statement": []}, {"Version": V, "Statement": [{"Effect": "Maybe",
                                                                   "Action": "*",
                                                                   "Resource": "*"}]},
    {"Version": V, "Statement": [{"Effect": "Allow", "Action": "cart:GetObject",
                                  "Resource": "/a", "Condition": {"NoSuchOp": {"k": "v"}}}]},
])
def test_malformed_documents_are_refused_and_nothing_is_stored(cart, bad):
    with pytest.raises(PolicyError):
        cart.set_policy("p", bad)
    assert cart.policies() == {}


def test_principal_handle_has_the_whole_api():
    public = {n for n, v in inspect.getmembers(cartridge.Cartridge)
              if not n.startswith("_") and (callable(v) or isinstance(v, property))}
    missing = public - {n for n in dir(PrincipalCartridge) if not n.startswith("_")}
    assert not missing


# -- path spellings never reach bytes under different rules -----------------------------------
SPELLINGS = ["/secret/s.txt", "secret/s.txt", "//secret//s.txt", "/./secret/./s.txt",
             "/secret/x/../s.txt", "/public/../secret/s.txt", "/secret/s.txt/", "secret//s.txt/."]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_path_spellings_cannot_bypass_a_deny(cart, spelling):
    cart.set_policy("p", doc(allow("cart:*", "/*"), deny("cart:*", "/secret/*")))
    alice = cart.as_principal("alice")
    try:
        cartridge.normalize_path(spelling)
    except cartridge.InvalidPathError:
        with pytest.raises(cartridge.InvalidPathError):
            alice.read(spelling)
        return
    for call in (lambda: alice.read(spelling), lambda: alice.stat(spelling),
                 lambda: alice.exists(spelling), lambda: alice.open(spelling).read(),
                 lambda: alice.write(spelling, b"x"), lambda: alice.delete(spelling),
                 lambda: alice.readinto(spelling, bytearray(10))):
        with pytest.raises(AccessDeniedError):
            call()
    assert cart.read("/secret/s.txt") == b"secret"


def test_case_and_lookalikes_are_different_resources(cart):
    cart.set_policy("p", doc(allow("cart:*", "/*"), deny("cart:GetObject", "/secret/*")))
    alice = cart.as_principal("alice")
    cart.write("/SECRET/s.txt", b"other file")
    cart.write("/s\u0435cret/s.txt", b"cyrillic e")     # a look-alike is another path
    assert alice.read("/SECRET/s.txt") == b"other file"
    assert alice.read("/s\u0435cret/s.txt") == b"cyrillic e"
    with pytest.raises(AccessDeniedError):
        alice.read("/secret/s.txt")


def test_action_names_are_case_insensitive_resources_are_not(cart):
    cart.set_policy("p", doc(allow("CART:getobject", "/Public/*")))
    alice = cart.as_principal("alice")
    cart.write("/Public/x", b"1")
    assert alice.read("/Public/x") == b"1"
    with pytest.raises(AccessDeniedError):
        alice.read("/public/a.txt")


# -- renames ----------------------------------------------------------------------------------------
def test_rename_out_of_and_into_protected_trees(cart):
    cart.set_policy("p", doc(allow("cart:*", "/*"), deny("cart:*", "/secret/*")))
    alice = cart.as_principal("alice")
    with pytest.raises(AccessDeniedError):
        alice.rename("/secret/s.txt", "/public/stolen")
    with pytest.raises(AccessDeniedError):
        alice.rename("/public/a.txt", "/secret/planted")
    with pytest.raises(AccessDeniedError):
        alice.rename("/secret", "/public/dir")            # the directory as a whole
    with pytest.raises(AccessDeniedError):
        alice.rename("/public", "/secret/inner")
    with pytest.raises(AccessDeniedError):
        alice.delete("/secret", recursive=True)
    assert cart.read("/secret/s.txt") == b"secret"
    assert cart.read("/public/a.txt") == b"public"
    alice.rename("/public", "/open")                       # allowed on both sides
    assert cart.read("/open/a.txt") == b"public"


def test_rename_needs_get_and_delete_on_source(cart):
    cart.set_policy("p", doc(allow(["cart:GetObject", "cart:PutObject"], "/*")))
    alice = cart.as_principal("alice")
    with pytest.raises(AccessDeniedError, match="DeleteObject"):
        alice.rename("/public/a.txt", "/public/b.txt")
    cart.set_policy("p", doc(allow(["cart:DeleteObject", "cart:PutObject"], "/*")))
    with pytest.raises(AccessDeniedError, match="GetObject"):
        alice.rename("/public/a.txt", "/public/b.txt")
    cart.set_policy("p", doc(allow(["cart:DeleteObject", "cart:GetObject"], "/*")))
    with pytest.raises(AccessDeniedError, match="PutObject"):
        alice.rename("/public/a.txt", "/public/b.txt")
    cart.set_policy("p", doc(allow(["cart:DeleteObject", "cart:GetObject", "cart:PutObject"],
                                   "/*")))
    alice.rename("/public/a.txt", "/public/b.txt")
    assert cart.read("/public/b.txt") == b"public"


# -- listing ----------------------------------------------------------------------------------------
def test_listing_a_protected_directory(cart):
    cart.set_policy("p", doc(allow("cart:List", "/*"), deny("cart:List", "/secret/")))
    alice = cart.as_principal("alice")
    assert alice.listdir("/") == ["home", "public", "secret"]
    with pytest.raises(AccessDeniedError, match="cart:List"):
        alice.listdir("/secret")
    with pytest.raises(AccessDeniedError):
        alice.listdir("secret/")
    with pytest.raises(AccessDeniedError):
        list(alice.walk("/"))                 # walking reaches /secret
    with pytest.raises(AccessDeniedError):
        list(alice.scan("/"))                 # scanning would reveal /secret/s.txt
    with pytest.raises(AccessDeniedError):
        list(alice.scan("/secret/"))
    assert [i.path for i in alice.scan("/public/")] == ["/public/a.txt"]


def test_list_prefix_condition(cart):
    cart.set_policy("p", doc(allow("cart:List", "/home/*",
                                   Condition={"StringLike": {"cart:prefix": "/home/${cart:username}/*"}})))
    alice = cart.as_principal("alice")
    assert alice.listdir("/home/alice") == ["notes"]
    with pytest.raises(AccessDeniedError):
        alice.listdir("/home/bob")


def test_listing_needs_list_not_get(cart):
    cart.set_policy("p", doc(allow("cart:GetObject", "/*")))
    alice = cart.as_principal("alice")
    assert alice.read("/public/a.txt") == b"public"
    with pytest.raises(AccessDeniedError):
        alice.listdir("/public")


# -- transactions -----------------------------------------------------------------------------------
def test_transaction_with_a_denied_step_rolls_back_whole(cart):
    cart.set_policy("p", doc(allow("cart:*", "/*"), deny("cart:PutObject", "/secret/*")))
    alice = cart.as_principal("alice")
    with pytest.raises(AccessDeniedError):
        with alice.transaction():
            alice.write("/public/one", b"1")
            alice.delete("/public/a.txt")
            alice.write("/secret/two", b"2")
    assert not cart.exists("/public/one")
    assert cart.read("/public/a.txt") == b"public"
    assert not cart.exists("/secret/two")


def test_a_caught_denial_still_aborts_the_transaction(cart):
    cart.set_policy("p", doc(allow("cart:*", "/*"), deny("cart:PutObject", "/secret/*")))
    alice = cart.as_principal("alice")
    with pytest.raises(cartridge.TransactionAbortedError):
        with alice.transaction():
            alice.write("/public/one", b"1")
            try:
                alice.write("/secret/two", b"2")
            except AccessDeniedError:
                pass
            alice.write("/public/three", b"3")
    assert not cart.exists("/public/one")
    assert not cart.exists("/public/three")


# -- caching never outlives a change ----------------------------------------------------------------
def test_policy_replaced_while_decisions_are_cached(cart):
    cart.set_policy("p", doc(allow("cart:GetObject", "/*")))
    alice = cart.as_principal("alice")
    for _ in range(3):
        assert alice.read("/secret/s.txt") == b"secret"
    cart.set_policy("p", doc(allow("cart:GetObject", "/public/*")))
    with pytest.raises(AccessDeniedError):
        alice.read("/secret/s.txt")
    cart.delete_policy("p")                       # no policies at all: everything allowed
    assert alice.read("/secret/s.txt") == b"secret"
    cart.set_policy("q", doc(deny("cart:GetObject", "/secret/*"), allow("cart:*", "*")))
    with pytest.raises(AccessDeniedError):
        alice.read("/secret/s.txt")


def test_policy_change_inside_a_rolled_back_transaction_is_forgotten(cart):
    cart.set_policy("p", doc(allow("cart:GetObject", "/*")))
    alice = cart.as_principal("alice")
    assert alice.read("/secret/s.txt") == b"secret"
    with pytest.raises(RuntimeError):
        with cart.transaction():
            cart.set_policy("p", doc(allow("cart:GetObject", "/public/*")))
            with pytest.raises(AccessDeniedError):
                alice.read("/secret/s.txt")           # the transaction's own view applies
            raise RuntimeError("roll back")
    assert alice.read("/secret/s.txt") == b"secret"


def test_another_process_policy_change_reaches_a_reader(tmp_path):
    path = tmp_path / "r.cart"
    with cartridge.open(path, "a") as w:
        w.write("/f", b"data")
        w.set_policy("p", doc(allow("cart:GetObject", "/*")))
        with cartridge.open(path, "r", principal="alice") as r:
            assert r.read("/f") == b"data"
            w.set_policy("p", doc(deny("cart:GetObject", "/f"), allow("cart:*", "*")))
            with pytest.raises(AccessDeniedError):
                r.read("/f")


def test_tags_and_context_are_part_of_the_decision(cart):
    cart.set_policy("p", doc(allow("cart:GetObject", "/secret/*",
                                   Condition={"StringEquals": {"cart:PrincipalTag/team": "red"}})))
    assert cart.as_principal("a", tags={"team": "red"}).read("/secret/s.txt") == b"secret"
    with pytest.raises(AccessDeniedError):
        cart.as_principal("a", tags={"team": "blue"}).read("/secret/s.txt")
    with pytest.raises(AccessDeniedError):
        cart.as_principal("a").read("/secret/s.txt")


def test_conditional_deny_denies(cart):
    cart.set_policy("p", doc(
        allow("cart:*", "*"),
        deny("cart:GetObject", "/secret/*",
             Condition={"NotIpAddress": {"cart:SourceIp": "10.0.0.0/8"}})))
    inside = cart.as_principal("a", context={"cart:SourceIp": "10.1.2.3"})
    outside = cart.as_principal("a", context={"cart:SourceIp": "192.168.0.1"})
    assert inside.read("/secret/s.txt") == b"secret"
    with pytest.raises(AccessDeniedError, match="explicitly denied"):
        outside.read("/secret/s.txt")
    # the key missing: a negated operator matches, so the Deny applies
    with pytest.raises(AccessDeniedError):
        cart.as_principal("a").read("/secret/s.txt")


def test_object_size_condition_on_write_and_streams(cart):
    cart.set_policy("p", doc(allow("cart:*", "*"),
                             deny("cart:PutObject", "/*",
                                  Condition={"NumericGreaterThan": {"cart:ObjectSize": "100"}})))
    alice = cart.as_principal("alice")
    alice.write("/small", b"x" * 100)
    with pytest.raises(AccessDeniedError):
        alice.write("/big", b"x" * 101)
    with alice.open("/streamed", "wb") as f:
        f.write(b"y" * 50)
    assert cart.read("/streamed") == b"y" * 50
    f = alice.open("/streamed-big", "wb")
    f.write(b"z" * 500)
    with pytest.raises(AccessDeniedError):
        f.close()
    assert not cart.exists("/streamed-big")
    assert cart.verify().ok


def test_home_directories_by_username_variable(cart):
    cart.set_policy("p", doc(allow(["cart:GetObject", "cart:PutObject"],
                                   "/home/${cart:username}/*")))
    alice = cart.as_principal("alice")
    assert alice.read("/home/alice/notes") == b"alice's"
    alice.write("/home/alice/more", b"1")
    with pytest.raises(AccessDeniedError):
        alice.read("/home/bob/notes")


def test_every_call_is_checked(cart):
    """With only an unrelated Allow stored, every call on a principal handle is refused."""
    cart.set_policy("p", doc(allow("cart:GetObject", "/nothing-here")))
    a = cart.as_principal("a")
    calls = {
        "read": lambda: a.read("/public/a.txt"),
        "readinto": lambda: a.readinto("/public/a.txt", bytearray(8)),
        "open rb": lambda: a.open("/public/a.txt"),
        "open wb": lambda: a.open("/public/n", "wb"),
        "open ab": lambda: a.open("/public/a.txt", "ab"),
        "open r+b": lambda: a.open("/public/a.txt", "r+b"),
        "exists": lambda: a.exists("/public/a.txt"),
        "exists missing": lambda: a.exists("/nope"),
        "isfile": lambda: a.isfile("/public/a.txt"),
        "isdir": lambda: a.isdir("/public"),
        "stat": lambda: a.stat("/public/a.txt"),
        "listdir": lambda: a.listdir("/"),
        "walk": lambda: next(a.walk("/")),
        "scan": lambda: next(a.scan("/")),
        "mkdir": lambda: a.mkdir("/d"),
        "write": lambda: a.write("/public/n", b""),
        "delete": lambda: a.delete("/public/a.txt"),
        "delete tree": lambda: a.delete("/public", recursive=True),
        "rename": lambda: a.rename("/public/a.txt", "/public/b"),
        "set_policy": lambda: a.set_policy("q", doc(allow("cart:*", "*"))),
        "delete_policy": lambda: a.delete_policy("p"),
        "get_policy": lambda: a.get_policy("p"),
        "policies": lambda: a.policies(),
        "info": lambda: a.info(),
        "verify": lambda: a.verify(),
        "as_principal": lambda: a.as_principal("root"),
        "check_access": lambda: a.check_access("a", "cart:GetObject", "/"),
    }
    for name, call in calls.items():
        with pytest.raises(AccessDeniedError):
            call()
            pytest.fail(f"{name} was not checked")
    assert list(cart.policies()) == ["p"]
    assert cart.read("/public/a.txt") == b"public"


def test_open_with_principal(tmp_path):
    path = tmp_path / "o.cart"
    with cartridge.open(path, "a") as c:
        c.write("/a", b"1")
        c.set_policy("p", doc(allow("cart:GetObject", "/a")))
    with cartridge.open(path, "a", principal="bob") as b:
        assert b.read("/a") == b"1"
        with pytest.raises(AccessDeniedError):
            b.write("/b", b"2")
    assert b.closed
    with pytest.raises(ValueError):
        cartridge.open(path, "r", tags={"a": "b"})


def test_check_access_explains(cart):
    cart.set_policy("p", doc({"Sid": "ReadPublic", **allow("cart:GetObject", "/public/*")},
                             {"Sid": "NoSecret", **deny("cart:*", "/secret/*")}))
    r = cart.check_access("alice", "cart:GetObject", "/public/a.txt")
    assert r.decision == "Allow" and "ReadPublic" in str(r.statements)
    r = cart.check_access("alice", "cart:GetObject", "secret//s.txt")
    assert r.decision == "ExplicitDeny" and "NoSecret" in str(r.statements)
    r = cart.check_access("alice", "cart:PutObject", "/public/a.txt")
    assert r.decision == "ImplicitDeny"


def test_stored_document_round_trips(cart):
    d = doc({"Sid": "A", **allow(["cart:GetObject", "cart:List"], ["/a/*", "/b/"])})
    cart.set_policy("p", json.dumps(d))
    got = cart.get_policy("p")
    assert got["Statement"][0]["Sid"] == "A"
    cart.mkdir("/b")
    cart.write("/a/f", b"1")
    x = cart.as_principal("x")
    assert x.listdir("/b") == [] and x.read("/a/f") == b"1"
    assert x.listdir("/a") == ["f"]            # "/a/*" matches the resource "/a/"
    with pytest.raises(AccessDeniedError):
        x.listdir("/")


# -- SQLite ----------------------------------------------------------------------------------------
def _db(cart, path="/app.db", rows=3, journal=None):
    conn = cart.sqlite(path)
    if journal:
        conn.execute(f"PRAGMA journal_mode={journal}").fetchall()
    conn.execute("CREATE TABLE t(a)")
    with conn:
        conn.executemany("INSERT INTO t VALUES(?)", [(i,) for i in range(rows)])
    return conn


def test_sqlite_read_only_when_put_is_denied(cart):
    _db(cart).close()
    cart.set_policy("p", doc(allow("cart:GetObject", "/app.db")))
    conn = cart.as_principal("a").sqlite("/app.db")
    assert conn.execute("SELECT count(*) FROM t").fetchall() == [(3,)]
    import apsw
    with pytest.raises(apsw.ReadOnlyError):
        conn.execute("INSERT INTO t VALUES(9)")
    conn.close()
    with cartridge.open(cart.path, "r") as r:     # nothing changed
        c2 = r.sqlite("/app.db")
        assert c2.execute("SELECT count(*) FROM t").fetchall() == [(3,)]
        c2.close()


def test_sqlite_denied_without_get(cart):
    _db(cart).close()
    cart.set_policy("p", doc(allow("cart:*", "/public/*")))
    with pytest.raises(AccessDeniedError):
        cart.as_principal("a").sqlite("/app.db")


def test_sqlite_write_allowed(cart):
    _db(cart).close()
    cart.set_policy("p", doc(allow(["cart:GetObject", "cart:PutObject"], "/app.db")))
    conn = cart.as_principal("a").sqlite("/app.db")
    with conn:
        conn.execute("INSERT INTO t VALUES(9)")
    conn.close()
    c2 = cart.sqlite("/app.db")
    assert c2.execute("SELECT count(*) FROM t").fetchall() == [(4,)]
    c2.close()


def test_sqlite_attach_of_a_protected_database_is_refused(cart):
    _db(cart, "/app.db").close()
    _db(cart, "/secret.db").close()
    cart.set_policy("p", doc(allow(["cart:GetObject", "cart:PutObject"], "/app.db")))
    conn = cart.as_principal("a").sqlite("/app.db")
    with pytest.raises(AccessDeniedError, match="secret.db"):
        conn.execute("ATTACH '/secret.db' AS s").fetchall()
        conn.execute("SELECT count(*) FROM s.t").fetchall()
    assert conn.execute("SELECT count(*) FROM t").fetchall() == [(3,)]
    conn.close()


@pytest.mark.parametrize("journal", ["WAL", "DELETE", "PERSIST"])
def test_sqlite_journal_and_wal_members_follow_their_database(cart, journal):
    conn = _db(cart, journal=journal)
    if journal == "WAL":
        with conn:
            conn.execute("INSERT INTO t VALUES(42)")      # left in the WAL member
    companion = "/app.db-wal" if journal == "WAL" else "/app.db-journal"
    # protect only the database by its exact name: its journal/WAL is protected with it
    cart.set_policy("p", doc(allow("cart:*", "*"), deny("cart:*", "/app.db")))
    a = cart.as_principal("a")
    if journal == "WAL":
        assert cart.exists(companion)
    for call in (lambda: a.read(companion), lambda: a.stat(companion),
                 lambda: a.write(companion, b"x"), lambda: a.delete(companion),
                 lambda: a.rename(companion, "/stolen"), lambda: a.sqlite("/app.db")):
        with pytest.raises(AccessDeniedError):
            call()
    conn.close()


def test_sqlite_connection_in_a_transaction_with_a_denied_step(cart):
    _db(cart).close()
    cart.set_policy("p", doc(allow(["cart:GetObject", "cart:PutObject"], ["/app.db", "/ok/*"])))
    a = cart.as_principal("a")
    conn = a.sqlite("/app.db")
    with pytest.raises(AccessDeniedError):
        with a.transaction():
            a.write("/ok/f", b"1")
            conn.execute("INSERT INTO t VALUES(7)")
            a.write("/denied/f", b"2")
    assert not cart.exists("/ok/f")
    assert conn.execute("SELECT count(*) FROM t").fetchall() == [(3,)]
    conn.close()


# -- found by review: each of these was a way around the checks --------------------------------
def test_sqlite_uri_attach_cannot_name_another_vfs(cart, tmp_path):
    _db(cart, "/pub.db").close()
    _db(cart, "/secret/s.db").close()
    cart.set_policy("p", doc(allow(["cart:GetObject", "cart:PutObject"], "/pub.db")))
    conn = cart.as_principal("eve").sqlite("/pub.db")
    host = tmp_path / "host.db"
    for sql in (f"ATTACH 'file:/secret/s.db?vfs=cartridge&cartridge={cart.path}' AS s",
                f"ATTACH 'file:{host}?vfs=unix' AS h",
                f"VACUUM INTO 'file:{host}?vfs=unix'",
                f"VACUUM INTO 'file:/secret/planted.db?vfs=cartridge&cartridge={cart.path}'"):
        with pytest.raises(AccessDeniedError):
            conn.execute(sql).fetchall()
    assert not host.exists()
    assert cart.listdir("/secret") == ["s.db", "s.txt"]
    conn.close()


def test_identity_of_a_handle_cannot_be_changed(cart):
    cart.set_policy("p", doc(allow("cart:GetObject", "/home/${cart:username}/*")))
    ann = cart.as_principal("ann", tags={"team": "red"}, context={"k": "v"})
    with pytest.raises(AttributeError):
        ann.principal = "bob"
    with pytest.raises(TypeError):
        ann.tags["team"] = "blue"
    with pytest.raises(TypeError):
        ann.context["k"] = "w"
    with pytest.raises(AccessDeniedError):
        ann.read("/home/bob/notes")


def test_object_size_condition_holds_for_renames_and_sqlite(cart):
    cart.set_policy("p", doc(allow("cart:*", "*"),
                             deny("cart:PutObject", "/up/*",
                                  Condition={"NumericGreaterThan": {"cart:ObjectSize": "10"}})))
    a = cart.as_principal("a")
    a.write("/stage/big", b"x" * 100)
    with pytest.raises(AccessDeniedError):
        a.rename("/stage/big", "/up/big")
    a.mkdir("/stage/dir")
    a.write("/stage/dir/big", b"x" * 100)
    with pytest.raises(AccessDeniedError):
        a.rename("/stage/dir", "/up/dir")
    a.write("/up/small", b"x" * 10)                  # within the limit
    with a.open("/up/stream", "wb") as f:            # opening is creating an empty file
        f.write(b"y" * 5)
    with pytest.raises(AccessDeniedError):
        with a.open("/up/stream", "ab") as f:
            f.write(b"z" * 50)
    assert cart.read("/up/stream") == b"y" * 5
    conn = a.sqlite("/up/db.sqlite")                 # grows past 10 bytes at its first commit
    with pytest.raises(AccessDeniedError):
        conn.execute("CREATE TABLE t(a)")
    conn.close()
    assert cart.exists("/stage/big") and not cart.exists("/up/big")


def test_journal_names_opened_as_databases_follow_the_database(cart):
    _db(cart, "/data/secret.db").close()
    cart.set_policy("p", doc(allow("cart:*", "*"), deny("cart:PutObject", "/data/secret.db")))
    conn = cart.as_principal("a").sqlite("/pub.db")
    import apsw
    for name in ("/data/secret.db-wal", "/data/secret.db-journal"):
        with pytest.raises((apsw.ReadOnlyError, apsw.CantOpenError, AccessDeniedError)):
            conn.execute(f"ATTACH '{name}' AS x")          # cannot be created: read-only
            conn.execute("CREATE TABLE x.t(a)")
        assert not cart.exists(name)
    conn.close()
    owner = cart.sqlite("/data/secret.db")
    assert owner.execute("SELECT count(*) FROM t").fetchall() == [(3,)]
    owner.close()


def test_sqlite_rights_are_checked_again_at_each_commit(cart):
    _db(cart, "/app.db").close()
    a = cart.as_principal("a")
    cart.set_policy("p", doc(allow("cart:*", "*")))
    conn = a.sqlite("/app.db")
    with conn:
        conn.execute("INSERT INTO t VALUES(10)")
    cart.set_policy("p", doc(allow("cart:*", "*"), deny("cart:PutObject", "/app.db")))
    with pytest.raises(AccessDeniedError):
        conn.execute("INSERT INTO t VALUES(11)")              # autocommit
    import apsw
    with pytest.raises((AccessDeniedError, apsw.Error)) as e:
        with conn:                                             # apsw's savepoint block
            conn.execute("INSERT INTO t VALUES(12)")
    assert isinstance(e.value, AccessDeniedError) or \
        isinstance(e.value.__context__, AccessDeniedError)
    assert conn.execute("SELECT count(*) FROM t").fetchall() == [(4,)]
    conn.close()
    owner = cart.sqlite("/app.db")
    assert owner.execute("SELECT count(*) FROM t").fetchall() == [(4,)]
    owner.close()


def test_reader_decides_and_reads_on_one_state(tmp_path, monkeypatch):
    """A read-only principal handle refreshes once per call: the policy check and the read
    cannot see two different commits."""
    path = tmp_path / "r.cart"
    with cartridge.open(path, "a") as w:
        w.write("/f", b"old")
        w.set_policy("p", doc(allow("cart:GetObject", "/f")))
        r = cartridge.open(path, "r", principal="a")
        eng = engine(r)
        calls = []
        real = eng.refresh
        monkeypatch.setattr(eng, "refresh", lambda: (calls.append(1), real())[1])
        assert r.read("/f") == b"old"
        assert r.stat("/f").size == 3
        assert len(calls) == 2                   # one refresh per call, not one per step
        w.write("/f", b"new!")
        w.set_policy("p", doc(deny("cart:GetObject", "/f"), allow("cart:*", "*")))
        with pytest.raises(AccessDeniedError):
            r.read("/f")
        r.close()
