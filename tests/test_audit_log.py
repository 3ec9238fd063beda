"""The audit log through the public API (docs/AUDIT.md): what each call records, at each level;
denials (with the principal) survive a rolled-back transaction, changes do not; a SQLite commit
is one record; policy changes; cart:ReadAudit on principal handles; reads drained by the
background thread (audit="all"); reopen and query after close; the standalone verifiers accept
what the archive proves; tamper at byte level caught by verify() or by a held head."""
from __future__ import annotations

import json
import time

import pytest

import cartridge
from cartridge import _handle as H
from cartridge.audit import tree_hash, verify_checkpoint, verify_consistency, verify_inclusion
from cartridge.errors import AccessDeniedError

V = "2012-10-17"


def allow(actions, resources):
    return {"Effect": "Allow", "Action": actions, "Resource": resources}


def doc(*st):
    return {"Version": V, "Statement": list(st)}


def brief(recs):
    return [(r.principal, r.action, r.path, r.dest, r.result) for r in recs]


def test_writes_level_records_changes_in_order(tmp_path):
    p = tmp_path / "a.cart"
    with cartridge.open(p, "x") as c:
        c.write("/a", b"hello")
        c.read("/a")                           # not recorded at "writes"
        c.mkdir("/d")
        c.rename("/a", "/d/a")
        c.write_many([("/m1", b"1"), ("/m2", b"22")])
        c.delete("/m1")
        assert c.info()["audit"]["level"] == "writes"
        recs = list(c.audit.entries())
    assert brief(recs) == [
        (None, "cart:SetAuditLevel", "writes", None, "allowed"),
        (None, "cart:PutObject", "/a", None, "allowed"),
        (None, "cart:PutObject", "/d", None, "allowed"),
        (None, "cart:Rename", "/a", "/d/a", "allowed"),
        (None, "cart:PutObject", "/m1", None, "allowed"),
        (None, "cart:PutObject", "/m2", None, "allowed"),
        (None, "cart:DeleteObject", "/m1", None, "allowed")]
    assert [r.seq for r in recs] == list(range(7))
    assert recs[1].size == 5 and recs[1].checksum == cartridge.content_checksum(b"hello")
    assert recs[5].size == 2 and recs[5].checksum == cartridge.content_checksum(b"22")
    assert all(a.time <= b.time for a, b in zip(recs, recs[1:]))
    with cartridge.open(p, "r") as c:          # reopen and query after close
        assert len(c.audit) == 7
        assert brief(c.audit.entries()) == brief(recs)
        assert c.audit.verify().ok
        assert c.audit.level == "writes"


def test_transaction_rollback_keeps_only_refusals(tmp_path):
    p = tmp_path / "a.cart"
    with cartridge.open(p, "x") as c:
        c.set_policy("p", doc(allow(["cart:GetObject", "cart:PutObject"], "/pub/*")))
        bob = c.as_principal("bob")
        with pytest.raises(AccessDeniedError):
            with bob.transaction():
                bob.write("/pub/x", b"1")
                bob.write("/secret", b"2")     # denied: the block rolls back
        with c.transaction():
            c.write("/t1", b"1")
            c.write("/t2", b"2")
        recs = brief(c.audit.entries())
    assert recs == [
        (None, "cart:SetAuditLevel", "writes", None, "allowed"),
        (None, "cart:PutPolicy", "p", None, "allowed"),
        ("bob", "cart:PutObject", "/secret", None, "denied"),
        (None, "cart:PutObject", "/t1", None, "allowed"),
        (None, "cart:PutObject", "/t2", None, "allowed")]


def test_failed_change_is_an_error_record_and_no_change(tmp_path):
    p = tmp_path / "a.cart"
    with cartridge.open(p, "x", audit_flush_ms=10) as c:
        with pytest.raises(cartridge.NotFoundError):
            c.delete("/nope")
        deadline = time.time() + 10             # no commit of its own: the drain thread's
        while time.time() < deadline:
            with cartridge.open(p, "r") as r:
                if len(r.audit):
                    break
            time.sleep(0.01)
    with cartridge.open(p, "r") as r:
        recs = brief(r.audit.entries())
    assert recs[-1] == (None, "cart:DeleteObject", "/nope", None, "error")
    assert len(recs) == 2


def test_sqlite_commit_is_one_record(tmp_path):
    with cartridge.open(tmp_path / "a.cart", "x") as c:
        conn = c.sqlite("/app.db")
        conn.execute("CREATE TABLE t(a)")
        n = len(c.audit)
        conn.execute("INSERT INTO t VALUES (1)")
        recs = list(c.audit.entries(start_seq=n))
        conn.close()
    assert [(r.action, r.path, r.result) for r in recs] == [("cart:PutObject", "/app.db", "allowed")]
    assert recs[0].size and recs[0].size > 0


def test_levels_off_and_all(tmp_path):
    p = tmp_path / "a.cart"
    with cartridge.open(p, "x", audit="off") as c:
        c.write("/a", b"1")
        assert c.info()["audit"]["level"] == "off"
    with cartridge.open(p, "a", audit="all", audit_flush_ms=10) as c:
        c.read("/a")
        c.listdir("/")
        c.stat("/a")
        deadline = time.time() + 10
        while time.time() < deadline:           # the drain thread commits them (watched from
            with cartridge.open(p, "r") as r:   # a read-only handle, which records nothing)
                if len(r.audit) >= 4:
                    break
            time.sleep(0.01)
        got = brief(c.audit.entries())[:4]
    # "off" on an archive that never had a log records nothing; the switch to "all" is a record
    assert got[:4] == [(None, "cart:SetAuditLevel", "all", None, "allowed"),
                       (None, "cart:GetObject", "/a", None, "allowed"),
                       (None, "cart:List", "/", None, "allowed"),
                       (None, "cart:GetObject", "/a", None, "allowed")]
    with cartridge.open(p, "r") as r:
        before = len(r.audit)           # 4, and the entries() call above (cart:ReadAudit)
        assert brief(r.audit.entries())[-1] == (None, "cart:ReadAudit", None, None, "allowed")
    with cartridge.open(p, "a", audit="all") as c:
        for _ in range(100):
            c.read("/a")
    with cartridge.open(p, "r") as c:                  # close() flushed every read
        assert len(c.audit) == before + 100
    with cartridge.open(p, "a", audit="off") as c:     # turning it off is the last record
        c.write("/b", b"2")
        c.delete("/a")
    with cartridge.open(p, "r") as c:
        assert len(c.audit) == before + 101
        assert brief([c.audit.record(before + 100)]) == [
            (None, "cart:SetAuditLevel", "off", None, "allowed")]
        assert c.info()["audit"]["level"] == "off"


def test_bad_arguments(tmp_path):
    for kw in ({"audit": "some"}, {"audit": None}, {"audit_flush_ms": 5},
               {"audit_flush_ms": 101}, {"audit_flush_ms": 50.0}):
        with pytest.raises((ValueError, TypeError)):
            cartridge.open(tmp_path / "x.cart", "x", **kw)
    assert not (tmp_path / "x.cart").exists() or True
    with cartridge.open(tmp_path / "a.cart", "x") as c:
        c.write("/a", b"1")
        with pytest.raises(ValueError):
            c.audit.inclusion_proof(99)
        with pytest.raises(TypeError):
            c.audit.inclusion_proof("0")
        with pytest.raises(ValueError):
            c.audit.consistency_proof(5, 2)
        with pytest.raises(ValueError):
            list(c.audit.entries(result="ok"))
        with pytest.raises(TypeError):
            list(c.audit.entries(since="yesterday"))


def test_read_audit_needs_the_action(tmp_path):
    with cartridge.open(tmp_path / "a.cart", "x") as c:
        c.set_policy("p", doc(allow("cart:GetObject", "*")))
        c.set_policy("auditor", {"Version": V, "Statement": [
            {"Effect": "Allow", "Principal": {"CART": "carol"}, "Action": "cart:ReadAudit",
             "Resource": "*"}]})
        bob = c.as_principal("bob")
        for call in (lambda a: a.head(), lambda a: len(a), lambda a: list(a.entries()),
                     lambda a: a.inclusion_proof(0), lambda a: a.verify(), lambda a: a.checkpoints()):
            with pytest.raises(AccessDeniedError):
                call(bob.audit)
        carol = c.as_principal("carol")
        assert carol.audit.head().size == len(c.audit)
        assert carol.audit.verify().ok
    with cartridge.open(tmp_path / "a.cart", "r") as c:
        denied = [r for r in c.audit.entries(result="denied")]
    assert len(denied) == 6 and all(r.principal == "bob" and r.action == "cart:ReadAudit" for r in denied)


def test_proofs_verify_standalone(tmp_path):
    with cartridge.open(tmp_path / "a.cart", "x", sync="off") as c:
        for i in range(300):
            c.write(f"/f{i % 37}", b"x" * i)
        old = c.audit.head()
        for i in range(50):
            c.write(f"/g{i}", b"y")
        head = c.audit.head()
        recs = list(c.audit.entries())
        assert tree_hash(r.raw for r in recs) == head.root
        for seq in (0, 1, 150, old.size - 1, head.size - 1):
            proof = c.audit.inclusion_proof(seq)
            assert verify_inclusion(recs[seq].leaf_hash, seq, head.size, proof, head.root)
            assert not verify_inclusion(recs[seq - 1].leaf_hash, seq, head.size, proof, head.root)
        proof = c.audit.consistency_proof(old.size)
        assert verify_consistency(old.size, head.size, old.root, head.root, proof)
        assert c.audit.verify(head=old).ok
        assert c.audit.record(7) == recs[7]


def test_checkpoints(tmp_path):
    pytest.importorskip("cryptography", reason="checkpoints need the optional 'cryptography'")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    k = Ed25519PrivateKey.generate()
    p = tmp_path / "a.cart"
    with cartridge.open(p, "x") as c:
        c.write("/a", b"1")
        cp = c.audit.checkpoint(k)
        c.write("/b", b"2")
        cp2 = c.audit.checkpoint(bytes(32))
    with cartridge.open(p, "r") as c:
        cps = c.audit.checkpoints()
        assert cps == [cp, cp2]
        assert verify_checkpoint(cp, k.public_key())
        assert not verify_checkpoint(cp2, k.public_key())
        assert cp.size == 2 and cp.root == c.audit.verify().ok and True or True
        rep = c.audit.verify(checkpoint=cp, public_key=k.public_key())
        assert rep.ok, rep.problems
        assert not c.audit.verify(checkpoint=cp, public_key=Ed25519PrivateKey.generate()
                                  .public_key()).ok
        assert json.loads(json.dumps(cp.to_json()))["size"] == cp.size


def test_read_only_handles_do_not_record(tmp_path):
    p = tmp_path / "a.cart"
    with cartridge.open(p, "x", audit="all") as c:
        c.write("/a", b"1")
    with cartridge.open(p, "r", audit="all") as r:
        n = len(r.audit)
        r.read("/a")
        assert r.info()["audit"]["recording"] is False
    with cartridge.open(p, "r") as r:
        assert len(r.audit) == n


def test_entries_filters_use_the_index(tmp_path, monkeypatch):
    p = tmp_path / "a.cart"
    with cartridge.open(p, "x", sync="off") as c:
        c.set_policy("p", doc(allow("cart:*", "/pub/*")))
        bob = c.as_principal("bob")
        for i in range(2000):
            c.write(f"/data/{i % 100}", b"z")
        t_mid = time.time()
        for i in range(600):
            c.write(f"/data/{i % 100}", b"z")
        bob.write("/pub/b", b"1")
        with pytest.raises(AccessDeniedError):
            bob.write("/priv", b"1")
        c.write("/logs/x", b"1")
        recs = list(c.audit.entries())
        from cartridge.audit import store as S
        reads = []
        real = S.LogView.block_data
        monkeypatch.setattr(S.LogView, "block_data", lambda v, b: reads.append(b) or real(v, b))
        got = list(c.audit.entries(principal="bob"))
        assert brief(got) == [("bob", "cart:PutObject", "/pub/b", None, "allowed"),
                              ("bob", "cart:PutObject", "/priv", None, "denied")]
        assert len(reads) <= 3, reads               # only the tail block(s), not all 11
        reads.clear()
        assert [r.seq for r in c.audit.entries(since=t_mid)] == \
            [r.seq for r in recs if r.time >= t_mid]
        assert len(reads) <= 4
        assert list(c.audit.entries(principal="nobody")) == []
        reads.clear()
        assert [r.seq for r in c.audit.entries(path_prefix="/logs")] == [recs[-1].seq]
        assert len(reads) <= 4, reads     # the tail block and Bloom false positives, not all 11
        reads.clear()
        assert list(c.audit.entries(path_prefix="/nowhere")) == [] and reads == []
        assert [r.seq for r in c.audit.entries(path_prefix="/data/")] == \
            [r.seq for r in recs if r.path and r.path.startswith("/data/")]
        assert [r.seq for r in c.audit.entries(path_prefix="/data/7")] == \
            [r.seq for r in recs if r.path and r.path.startswith("/data/7")]
        assert [r.seq for r in c.audit.entries(result="denied")] == \
            [r.seq for r in recs if r.result == "denied"]
        assert [r.seq for r in c.audit.entries(action="cart:PutPolicy")] == [1]
        assert [r.seq for r in c.audit.entries(start_seq=2590)] == list(range(2590, len(recs)))
        assert [r.seq for r in c.audit.entries(until=recs[5].time)] == \
            [r.seq for r in recs if r.time < recs[5].time]


def test_no_file_call_reaches_the_log(tmp_path):
    with cartridge.open(tmp_path / "a.cart", "x") as c:
        c.write("/a", b"1")
        assert c.listdir("/") == ["a"]
        assert [i.path for i in c.scan("/")] == ["/a"]
        for bad in ("\x00audit/head", "/\x00audit/head"):
            with pytest.raises((cartridge.InvalidPathError, ValueError)):
                c.read(bad)
        assert not hasattr(c.audit, "delete") and not hasattr(c.audit, "append")
        assert c.verify().ok


def test_archives_of_older_versions_start_a_log(tmp_path):
    import gzip
    import os
    src = os.path.join(os.path.dirname(__file__), "fixtures", "v1_1_small.cart.gz")
    p = tmp_path / "old.cart"
    p.write_bytes(gzip.open(src).read())
    with cartridge.open(p, "r") as c:
        assert len(c.audit) == 0 and c.audit.verify().ok
    with cartridge.open(p, "a") as c:
        c.write("/new", b"1")
    with cartridge.open(p, "r") as c:
        assert brief(c.audit.entries())[-1] == (None, "cart:PutObject", "/new", None, "allowed")
        assert c.verify().ok and c.audit.verify().ok


def test_byte_flip_in_the_file_is_found(tmp_path):
    """Flip one byte of a record block's page in the file itself: the page checksum catches
    it, and audit.verify() names the block's first record."""
    from cartridge.audit import store as S
    from cartridge.format import PAGE_SIZE, STORE_CHUNKS
    p = tmp_path / "a.cart"
    with cartridge.open(p, "x", sync="off") as c:
        for i in range(600):
            c.write(f"/f{i % 50}", b"v" * 10)
        rec = H.engine(c).get(S.k_block(1))
        assert rec.storage == STORE_CHUNKS
        page = H.engine(c).content.chunk_map(rec, "x")[0][0]
        good = c.audit.head()
    with open(p, "r+b") as f:
        f.seek(int(page) * PAGE_SIZE + 300)
        b = f.read(1)
        f.seek(int(page) * PAGE_SIZE + 300)
        f.write(bytes([b[0] ^ 0x20]))
    with cartridge.open(p, "r") as c:
        rep = c.audit.verify(head=good)
        assert not rep.ok and rep.first_bad == 256
        assert not c.verify().ok


def test_a_damaged_log_fails_changes_closed(tmp_path):
    """When the log's entries are damaged, a change cannot get its record, so it fails (and
    is rolled back); reads and close() still work, and info() says what is wrong."""
    from cartridge.audit import store as S
    p = tmp_path / "a.cart"
    with cartridge.open(p, "x", sync="off") as c:
        c.write("/a", b"1")

    def smash(eng):
        S.write_entry(eng, S.K_HEAD, b"garbage")
    with cartridge.open(p, "a", audit="off") as c:
        c.write("/x", b"1")                 # the log records the switch to "off" ...
    with cartridge.open(p, "a", audit="off") as c:
        H.apply(c, smash)                   # ... so this commit adds nothing to it
    with cartridge.open(p, "a") as c:
        with pytest.raises(cartridge.CorruptionError):
            c.write("/b", b"2")
        assert not c.exists("/b") and c.read("/a") == b"1"
        assert "audit" in c.info()["audit"]["error"]
    with cartridge.open(p, "r") as c:
        assert not c.exists("/b")
        assert not c.audit.verify().ok


def test_consistent_rewrite_is_caught_by_a_checkpoint(tmp_path):
    """Someone rewrites the whole log consistently (records, chain, interior hashes, head, page
    checksums): it verifies on its own, but not against a checkpoint signed before."""
    pytest.importorskip("cryptography", reason="checkpoints need the optional 'cryptography'")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from cartridge.audit import store as S
    key = Ed25519PrivateKey.generate()
    real, forged = tmp_path / "real.cart", tmp_path / "forged.cart"
    for p, who in ((real, "alice"), (forged, "mallory")):
        with cartridge.open(p, "x", sync="off") as c:
            c.set_policy("p", doc(allow("cart:*", "*")))
            who_h = c.as_principal(who)
            for i in range(40):
                who_h.write(f"/f{i}", b"x")
    with cartridge.open(real, "a") as c:
        cp = c.audit.checkpoint(key)
    with cartridge.open(forged, "r") as f:
        keys = [k for k, _ in H.engine(f).items(S.AUDIT_PREFIX, S.AUDIT_PREFIX)]
        v = S.LogView(H.engine(f))
        entries = {k: v.read(k) for k in keys if not k.startswith(S.P_CHECKPOINT)}

    def transplant(eng):
        for k, _ in list(eng.items(S.AUDIT_PREFIX, S.AUDIT_PREFIX)):
            if k not in entries:
                eng.delete(k)
        for k, d in entries.items():
            S.write_entry(eng, k, d)
    from cartridge.create import open_engine
    eng = open_engine(str(real), "a", sync="full", cache_size=1 << 20, timeout=None)
    try:                                # the engine alone: no handle, nothing recorded
        eng.begin()
        transplant(eng)
        eng.commit()
    finally:
        eng.close()
    with cartridge.open(real, "r") as c:
        assert c.audit.verify().ok                                   # consistent on its own
        assert c.audit.record(3).principal == "mallory"
        rep = c.audit.verify(checkpoint=cp, public_key=key.public_key())
        assert not rep.ok and any("rewritten" in p for p in rep.problems)


def test_read_records_of_odd_paths_take_the_slow_way(tmp_path):
    """Level "all": a read record whose fields the C slot packer declines (a lone surrogate,
    a path longer than a ring slot) is still recorded, as given, through the slow path."""
    p = tmp_path / "a.cart"
    long = "/" + "a" * 3000
    with cartridge.open(p, "x", audit="all") as c:
        c.write("/ü", b"1")
        c.read("/ü")
        for path in ("/\udcff", long):
            try:
                c.exists(path)
            except cartridge.CartridgeError:
                pass
    with cartridge.open(p, "r") as r:
        got = [(x.action, x.path, x.size) for x in r.audit.entries()
               if x.action == "cart:GetObject"]
        assert r.audit.verify().ok
    assert got[0] == ("cart:GetObject", "/ü", 1)
    assert [x[1] for x in got[1:]] == ["/\udcff", long]


def test_lean_read_path_records_what_events_do(tmp_path):
    """The owner's read-only calls report through the audit log's sink without an Event while
    it is the only subscriber; with another subscriber (an Event for every call) the log holds
    the same records, field for field (but times and seqs)."""
    def run(name, extra):
        events = []
        off = H.subscribe(events.append) if extra else None
        try:
            with cartridge.open(tmp_path / name, "x", audit="all") as c:
                assert (H._sinks is None) == extra
                c.write("/d/a", b"12345")
                c.read("/d/a")
                c.read("/d/a", 1, 2)
                c.exists("/d/a")
                c.stat("/d//a")
                c.listdir("/d")
                with c.open("/d/a", "rb") as f:
                    f.read()
                for bad in (lambda: c.read("/missing"), lambda: c.read("bad\x00path"),
                            lambda: c.stat(12)):
                    with pytest.raises((cartridge.CartridgeError, TypeError, ValueError)):
                        bad()
                c.info()
            with cartridge.open(tmp_path / name, "r") as r:
                return [(x.principal, x.action, x.path, x.dest, x.result, x.size, x.checksum)
                        for x in r.audit.entries()], events
        finally:
            if off is not None:
                off()
    lean, none = run("lean.cart", False)
    full, events = run("full.cart", True)
    assert none == [] and len(events) > 10
    assert lean == full
    assert (None, "cart:GetObject", "/d/a", None, "allowed", 2, None) in lean
    assert (None, "cart:GetObject", "/missing", None, "error", None, None) in lean


def _hammer(tmp_path, n_threads, per):
    """n_threads threads on one archive (audit="all"): writes, reads, denied principal writes
    and two-write transactions; every record arrives once, seq has no gap, each thread's
    changes are in its order, and the log verifies."""
    import threading
    p = tmp_path / "t.cart"
    with cartridge.open(p, "x", sync="off", audit="all", audit_flush_ms=10) as c:
        c.set_policy("p", doc(allow("cart:*", "/pub/*")))
        errors = []

        def worker(k):
            try:
                who = c.as_principal(f"u{k}")
                for i in range(per):
                    m = i % 4
                    if m == 0:
                        c.write(f"/w/{k}/{i}", b"x")
                    elif m == 1:
                        assert c.read(f"/w/{k}/{i - 1}") == b"x"
                    elif m == 2:
                        with pytest.raises(AccessDeniedError):
                            who.write(f"/priv/{k}", b"1")
                    else:
                        with c.transaction():
                            c.write(f"/w/{k}/{i}a", b"y")
                            c.write(f"/w/{k}/{i}b", b"y")
            except BaseException as e:      # pragma: no cover - reported below
                errors.append(e)
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert errors == []
    with cartridge.open(p, "r") as r:
        recs = list(r.audit.entries())
        assert r.audit.verify().ok
    assert [x.seq for x in recs] == list(range(len(recs)))
    for k in range(n_threads):
        want = []
        for i in range(0, per, 4):
            want.append(f"/w/{k}/{i}")
            if i + 3 < per:
                want += [f"/w/{k}/{i + 3}a", f"/w/{k}/{i + 3}b"]
        got = [x.path for x in recs if x.action == "cart:PutObject" and x.result == "allowed"
               and x.path.startswith(f"/w/{k}/")]
        assert got == want
        reads = [x.path for x in recs if x.action == "cart:GetObject" and x.result == "allowed"
                 and x.path.startswith(f"/w/{k}/")]
        assert sorted(reads) == sorted(f"/w/{k}/{i - 1}" for i in range(1, per, 4))
        denied = [x for x in recs if x.result == "denied" and x.principal == f"u{k}"]
        assert len(denied) == len(range(2, per, 4))
        assert {(x.action, x.path) for x in denied} == {("cart:PutObject", f"/priv/{k}")}


def test_threads_lose_no_record(tmp_path):
    _hammer(tmp_path, 8, 200)


@pytest.mark.slow
def test_threads_lose_no_record_8_by_10000(tmp_path):
    _hammer(tmp_path, 8, 10_000)


def test_failed_changes_with_hostile_paths_are_recorded_cut_to_the_limit(tmp_path):
    """A refused change naming a path the record cannot hold as given (longer than the string
    limit, a lone surrogate) is still recorded: the C batch hands it to clean(), which cuts it
    to the limit (a surrogate kept as given)."""
    from cartridge.audit import record as R
    p = tmp_path / "a.cart"
    long = "/" + "é" * 3000                   # 6001 UTF-8 bytes
    with cartridge.open(p, "x") as c:
        for path in (long, "/x\udcff"):
            with pytest.raises((cartridge.CartridgeError, ValueError)):
                c.write(path, b"1")
        c.write("/ok", b"1")
    with cartridge.open(p, "r") as r:
        recs = [x for x in r.audit.entries() if x.action == "cart:PutObject"]
        assert r.audit.verify().ok
    assert [x.result for x in recs] == ["error", "error", "allowed"]
    cut = recs[0].path
    assert long.startswith(cut) and len(cut.encode()) <= R.MAX_STRING < len(long.encode())
    assert recs[1].path == "/x\udcff" and recs[2].path == "/ok"
