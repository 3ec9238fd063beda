"""Pre-commit participants (cartridge/_handle.py add_participant): called inside EVERY commit,
before anything is written, with the engine, so what they stage lands in that same commit; told
of every rollback. The test participant stamps each commit with a digest of everything else in
the catalog: a commit path that skipped it leaves a stamp that no longer matches, and the crash
simulator shows the stamp and the change it describes land together at every cut."""
from __future__ import annotations

import hashlib
import os
import warnings

import pytest

import cartridge
from cartridge import _handle as H
from cartridge.format import DEFAULT_MODE_FILE, KIND_FILE, STORE_INLINE
from cartridge.records import Record, max_payload
from cartridge.testing.crash import CrashRecorder

STAMP = b"\x00test-stamp"
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "cart:*", "Resource": "*"}]}


def digest(eng) -> bytes:
    """SHA-256 over every catalog entry but the stamp (files, directories, policies)."""
    h = hashlib.sha256()
    for k, rec in eng.items(b""):
        if k != STAMP:
            h.update(k + b"\0" + rec.encode())
    return h.digest()


def stamp_of(eng) -> bytes | None:
    rec = eng.get(STAMP)
    return None if rec is None else rec.payload


class Stamper:
    """Stages the digest of the catalog as a system entry in every commit that changes it."""

    def __init__(self):
        self.calls: list[int] = []          # generation each before_commit saw
        self.rollbacks = 0

    def before_commit(self, eng) -> None:
        self.calls.append(eng.root.generation)
        d = digest(eng)
        if stamp_of(eng) != d:
            eng.put(STAMP, Record(KIND_FILE, STORE_INLINE, DEFAULT_MODE_FILE, len(d), 0, 0, 0, d))

    def after_rollback(self, eng) -> None:
        self.rollbacks += 1


def consistent(path: str) -> bytes:
    """Open the file read-only: its stamp must describe exactly what it holds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cartridge.open(path, "r") as ro:
            eng = H.engine(ro)
            st = stamp_of(eng)
            d = digest(eng)
            assert st == d, "a commit landed without its participant's entry"
            return d


@pytest.fixture
def stamped(cart):
    st = Stamper()
    remove = H.add_participant(cart, st)
    yield cart, st
    remove()


def generation(cart) -> int:
    return H.engine(cart).root.generation


def check_every_commit_seen(cart, st: Stamper, before: int) -> None:
    """Each generation committed since `before` was preceded by a before_commit call."""
    now = generation(cart)
    assert now > before, "the operation committed nothing"
    for g in range(before, now):
        assert g in st.calls, f"commit to generation {g + 1} ran without the participant"
    consistent(cart.path)


def _sqlite_owner(cart):
    db = cart.sqlite("/own.db")
    db.execute("CREATE TABLE t(x)")
    db.execute("INSERT INTO t VALUES (1)")
    db.close()


def _sqlite_principal(cart):
    cart.set_policy("all", ALLOW_ALL)
    db = cart.as_principal("pat").sqlite("/p.db")
    db.execute("CREATE TABLE t(x)")
    db.execute("INSERT INTO t VALUES (2)")
    db.close()


def _sqlite_uri(cart):
    import apsw

    import cartridge.sqlite as S

    S.register()
    db = apsw.Connection(f"file:{cart.path}::/uri.db?vfs=cartridge", flags=apsw.SQLITE_OPEN_URI
                         | apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
    db.execute("CREATE TABLE t(x)")
    db.execute("INSERT INTO t VALUES (3)")
    db.close()


def _txn(cart):
    with cart.transaction():
        cart.write("/t1", b"a")
        cart.write("/t2", os.urandom(70_000))


def _commit_inside(cart):
    with cart.transaction():
        cart.write("/c1", b"one")
        cart.commit()
        cart.write("/c2", b"two")


def _stream(cart):
    with cart.open("/s.bin", "wb") as s:
        s.write(os.urandom(200_000))


def _principal_write(cart):
    cart.as_principal("pat").write("/pw", b"by pat")


PATHS = {
    "write": lambda c: c.write("/w", b"x" * 5000),
    "write_many": lambda c: c.write_many([("/m1", b"1"), ("/m2", b"2" * 9000)]),
    "mkdir": lambda c: c.mkdir("/dir"),
    "delete": lambda c: (c.write("/del", b"d"), c.delete("/del")),
    "rename": lambda c: (c.write("/r1", b"r"), c.rename("/r1", "/r2")),
    "transaction": _txn,
    "commit_in_transaction": _commit_inside,
    "stream": _stream,
    "principal_write": _principal_write,
    "set_policy": lambda c: c.set_policy("all", ALLOW_ALL),
    "delete_policy": lambda c: (c.set_policy("x", ALLOW_ALL), c.delete_policy("x")),
    "sqlite_owner": _sqlite_owner,
    "sqlite_principal": _sqlite_principal,
    "sqlite_uri": _sqlite_uri,
}


@pytest.mark.parametrize("name", sorted(PATHS))
def test_participant_sees_every_commit_path(stamped, name):
    cart, st = stamped
    before = generation(cart)
    PATHS[name](cart)
    check_every_commit_seen(cart, st, before)


def test_close_is_a_commit_point(cart_path):
    """close(): a stream it closes publishes in a commit the participant sees, then one more
    commit point lets participants flush (nothing is written if they stage nothing)."""
    cart = cartridge.open(cart_path, "a")
    st = Stamper()
    H.add_participant(cart, st)
    s = cart.open("/left-open", "wb")
    s.write(b"published by close()")
    before = generation(cart)
    n = len(st.calls)
    cart.close()
    assert len(st.calls) >= n + 2           # the stream's publish, then the closing point
    consistent(cart_path)
    with cartridge.open(cart_path, "r") as ro:
        assert ro.read("/left-open") == b"published by close()"
        assert H.engine(ro).root.generation > before


def test_flush_runs_a_commit_only_when_something_is_staged(stamped):
    cart, st = stamped
    cart.write("/a", b"1")
    g = generation(cart)
    n = len(st.calls)
    assert H.flush(cart) is True
    assert len(st.calls) == n + 1 and generation(cart) == g      # nothing staged: no commit
    with cart.transaction():
        assert H.flush(cart) is False                             # its own commit will come
    with cartridge.open(cart.path, "r") as ro:
        assert H.flush(ro) is False


def test_rollback_is_notified_and_nothing_is_staged(stamped):
    cart, st = stamped
    cart.write("/keep", b"k")
    d = consistent(cart.path)
    g = generation(cart)
    with pytest.raises(RuntimeError):
        with cart.transaction():
            cart.write("/gone", b"g")
            raise RuntimeError("abandon")
    assert st.rollbacks == 1 and generation(cart) == g
    assert consistent(cart.path) == d
    with pytest.raises(cartridge.InvalidPathError):
        cart.write("/", b"x")               # refused before any change: no rollback
    with pytest.raises(cartridge.NotFoundError):
        cart.rename("/nope", "/n2")
    assert st.rollbacks == 1


def test_a_participant_that_raises_rolls_the_commit_back(cart):
    class Refuse:
        rolled = 0

        def before_commit(self, eng):
            raise OSError("disk full")

        def after_rollback(self, eng):
            Refuse.rolled += 1

    cart.write("/a", b"1")
    base = H.participants(cart)             # the archive's own (the audit log)
    remove = H.add_participant(cart, Refuse())
    with pytest.raises(OSError):
        cart.write("/b", b"2")
    remove()
    assert Refuse.rolled == 1
    assert not cart.exists("/b") and cart.read("/a") == b"1"
    cart.write("/c", b"3")                  # the handle goes on
    assert H.participants(cart) == base


def test_principal_and_owner_share_the_participants(cart):
    alice = cart.as_principal("alice")
    base = H.participants(cart)             # the archive's own (the audit log)
    st = Stamper()
    remove = H.add_participant(alice, st)
    assert H.participants(cart) == base + [st]
    cart.write("/o", b"1")
    assert st.calls
    remove()
    assert H.participants(cart) == base


# -- the crash simulator: the stamp and its change land together, at every cut ----------------
def _crash_workload(kind: str, cart) -> None:
    if kind == "single":
        for i in range(4):
            cart.write(f"/f{i}", os.urandom(3000 + 40_000 * i))
        cart.delete("/f1")
    elif kind == "transaction":
        for j in range(3):
            with cart.transaction():
                for i in range(3):
                    cart.write(f"/t{j}/{i}", os.urandom(5000 * (i + 1)))
                cart.rename(f"/t{j}/0", f"/t{j}/moved")
    elif kind == "stream":
        for j in range(3):
            with cart.open(f"/s{j}", "wb") as s:
                for _ in range(3):
                    s.write(os.urandom(50_000))
    elif kind == "sqlite":
        db = cart.sqlite("/db")
        db.execute("CREATE TABLE t(x)")
        for i in range(3):
            db.execute("INSERT INTO t VALUES (?)", (os.urandom(3000 * (i + 1)),))
        db.close()


@pytest.mark.parametrize("sync", ["full", "normal"])
@pytest.mark.parametrize("kind", ["single", "transaction", "stream", "sqlite"])
def test_stamp_is_atomic_with_the_change_at_every_cut(tmp_path, kind, sync):
    path = str(tmp_path / "a.cart")
    cart = cartridge.open(path, "w", sync=sync)
    H.add_participant(cart, Stamper())
    cart.write("/seed", b"s")
    rec = CrashRecorder(cart)
    _crash_workload(kind, cart)
    rec.detach()
    cart.close()
    img_path = str(tmp_path / "img.cart")
    seen = set()
    models = [("killed", None), ("power", None)]
    import random
    models += [("power", random.Random(s)) for s in range(2)]
    checked = 0
    for model, rng in models:
        for cut in rec.cuts():
            img = rec.image(cut, model, rng)
            with open(img_path, "wb") as f:
                f.write(img)
            seen.add(consistent(img_path))
            checked += 1
    assert len(seen) >= 4 and checked > len(rec.log)   # many different committed states


# -- the audit log's pattern, end to end: records written in the commit of their change -------
LOG = b"\x00test-log"


class MiniAudit:
    """A subscriber (changes only) and a participant: change records go into the commit of
    their change, records of a rolled-back change are dropped, refusals are kept."""

    def __init__(self, cart):
        self.cart = cart
        # records not yet committed, in the order of the events: (line, of a change); a
        # rollback drops the changes' records and keeps the refusals
        self.queue: list[tuple[str, bool]] = []
        self.off = H.subscribe(self.on_event, changes_only=True)
        self.remove = H.add_participant(cart, self)

    def close(self):
        self.off()
        self.remove()

    def on_event(self, ev: H.Event) -> None:
        if ev.archive is not self.cart or ev.method == "transaction":
            return
        line = f"{ev.principal}|{ev.action}|{ev.path}|{ev.result}"
        self.queue.append((line, ev.changed))

    def before_commit(self, eng) -> None:
        new = [line for line, _ in self.queue]
        if not new:
            return
        self.queue = []
        old = read_log(eng)
        data = "\n".join(old + new).encode()
        storage, payload, csum, _ = eng.content.store(data, max_payload(len(LOG)))
        prev = eng.get(LOG)
        eng.put(LOG, Record(KIND_FILE, storage, DEFAULT_MODE_FILE, len(data), 0, 0, csum, payload))
        if prev is not None:
            eng.content.free(prev, eng.where(LOG))

    def after_rollback(self, eng) -> None:
        self.queue = [q for q in self.queue if not q[1]]


def read_log(eng) -> list[str]:
    rec = eng.get(LOG)
    if rec is None or rec.size == 0:
        return []
    return eng.content.read(rec, 0, -1, "log").decode().split("\n")


def test_mini_audit_records_commit_with_their_changes(cart):
    audit = MiniAudit(cart)
    cart.set_policy("pub", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "cart:*", "Resource": "/pub/*"}]})
    cart.write("/pub/a", b"1")
    alice = cart.as_principal("alice")
    with pytest.raises(cartridge.AccessDeniedError):
        with alice.transaction():
            alice.write("/pub/b", b"2")           # rolled back: no record
            alice.write("/secret", b"3")          # refused: recorded
    with cart.transaction():
        cart.write("/pub/c", b"4")
    H.flush(cart)
    audit.close()
    with cartridge.open(cart.path, "r") as ro:
        log = read_log(H.engine(ro))
    assert log == [
        "None|cart:PutPolicy|pub|ok",
        "None|cart:PutObject|/pub/a|ok",
        "alice|cart:PutObject|/secret|denied",
        "None|cart:PutObject|/pub/c|ok",
    ]


@pytest.mark.parametrize("sync", ["full", "normal"])
def test_mini_audit_no_change_without_its_record_at_any_cut(tmp_path, sync):
    path = str(tmp_path / "a.cart")
    cart = cartridge.open(path, "w", sync=sync)
    audit = MiniAudit(cart)
    rec = CrashRecorder(cart)
    for i in range(3):
        cart.write(f"/w{i}", os.urandom(2000 + 30_000 * i))
    with cart.transaction():
        cart.write("/t0", b"t")
        cart.write("/t1", os.urandom(70_000))
    with cart.open("/s", "wb") as s:
        s.write(os.urandom(100_000))
    rec.detach()
    audit.close()
    cart.close()
    img_path = str(tmp_path / "img.cart")
    states = set()
    for model in ("killed", "power"):
        for cut in rec.cuts():
            with open(img_path, "wb") as f:
                f.write(rec.image(cut, model))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with cartridge.open(img_path, "r") as ro:
                    files = {p for _, _, names in ro.walk("/") for p in ("/" + n for n in names)}
                    logged = {line.split("|")[2] for line in read_log(H.engine(ro))}
            assert files == logged, (model, cut)
            states.add(frozenset(files))
    assert len(states) == 6         # nothing, 3 single writes, the transaction, the stream


def test_mini_audit_under_threads(cart):
    """Writers on several threads, transactions committed and rolled back among them: every
    committed file has exactly one record, no rolled-back file has any."""
    import threading

    audit = MiniAudit(cart)
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(40):
                if i % 10 == 9:
                    try:
                        with cart.transaction():
                            cart.write(f"/t{t}/txn{i}", b"x")
                            if i % 20 == 19:
                                raise KeyError("roll back")
                    except KeyError:
                        pass
                else:
                    cart.write(f"/t{t}/f{i}", os.urandom(100 * i))
        except BaseException as e:     # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    H.flush(cart)
    audit.close()
    assert not errors
    files = {p for d, _, names in cart.walk("/") for p in (P_join(d, n) for n in names)}
    log = [line.split("|")[2] for line in read_log(H.engine(cart))]
    assert sorted(log) == sorted(files) and len(log) == len(set(log))
    assert len(files) == 4 * (36 + 2)


def P_join(d: str, n: str) -> str:
    return d.rstrip("/") + "/" + n


def test_a_refused_commit_inside_a_transaction_ends_it(cart):
    """commit() inside transaction() whose participant raises: the work so far is rolled back,
    so the rest of the block cannot go on as if it were there."""
    class RefuseOnce:
        armed = False

        def before_commit(self, eng):
            if self.armed:
                self.armed = False
                raise OSError("refused")

        def after_rollback(self, eng):
            pass

    p = RefuseOnce()
    remove = H.add_participant(cart, p)
    with pytest.raises(cartridge.TransactionAbortedError):
        with cart.transaction():
            cart.write("/a", b"1")
            p.armed = True
            with pytest.raises(OSError):
                cart.commit()
            cart.write("/b", b"2")
    remove()
    assert not cart.exists("/a") and not cart.exists("/b")
    cart.write("/c", b"3")
