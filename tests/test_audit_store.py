"""The audit log's on-disk store (docs/FORMAT.md §13.3-13.7), driven directly on an engine:
records round-trip, proofs equal an in-memory tree's at every boundary, verify() finds every
kind of damage, rollbacks leave no trace, and a reopened log continues where it stopped."""
from __future__ import annotations

import random

import pytest

import cartridge
from cartridge import _handle as H
from cartridge.audit import merkle
from cartridge.audit import record as R
from cartridge.audit import store as S
from cartridge.errors import CorruptionError

OFF = {"audit": "off"}      # the store is driven by hand: no recording by the handle


def entry(rng, i):
    return (1_700_000_000_000_000 + i * 7 - (rng.random() < 0.05) * 100,
            rng.choice([None, "bob", "alice"]),
            rng.choice(["cart:PutObject", "cart:GetObject", "cart:Rename", "cart:List"]),
            rng.choice([f"/p/{rng.randrange(300)}", None, "/ü/ß"]),
            rng.choice([None, "/dst"]), rng.choice(["allowed", "denied", "error"]),
            rng.choice([None, rng.randrange(1 << 40)]),
            rng.choice([None, f"{rng.getrandbits(64):016x}"]))


def append(c, ents):
    def go(eng):
        return S.LogWriter(eng).append(ents, "off")     # level off: reopening with off adds nothing
    return H.apply(c, go)


@pytest.fixture
def log(tmp_path):
    path = str(tmp_path / "a.cart")
    rng = random.Random(7)
    ents = [entry(rng, i) for i in range(1200)]
    with cartridge.open(path, "x", **OFF) as c:
        pos = 0
        for n in (1, 15, 1, 240, 3, 256, 300, 384):
            append(c, ents[pos:pos + n])
            pos += n
    return path, ents


def view_of(c):
    return S.LogView(H.engine(c))


def test_round_trip_and_proofs(log):
    path, ents = log
    with cartridge.open(path, "r") as c:
        v = view_of(c)
        h = v.head()
        assert h.size == 1200
        recs = list(v.records(0, h.size))
        assert [r.seq for r in recs] == list(range(1200))
        last = 0
        for r, e in zip(recs, ents):
            assert (r.principal, r.action, r.path, r.dest, r.result, r.size, r.checksum) == e[1:]
            assert r.time_us == max(e[0], last)      # times never go back
            last = r.time_us
        t = merkle.MemoryTree(r.leaf_hash for r in recs)
        assert h.root == t.root() == merkle.tree_hash(r.raw for r in recs)
        for size in (1, 16, 17, 255, 256, 257, 1000, 1200):
            for seq in {0, size // 2, size - 1, 15, 16}:
                if seq < size:
                    assert v.inclusion_proof(seq, size) == t.inclusion_proof(seq, size)
            for old in {1, size // 3, size - 1, 16, 256}:
                if 0 < old <= size:
                    assert v.consistency_proof(old, size) == t.consistency_proof(old, size)
        assert S.verify_log(v).ok
        assert S.verify_log(v, S.TreeHead(1000, t.root(1000))).ok
        assert not S.verify_log(v, S.TreeHead(1000, t.root(999))).ok
        assert not S.verify_log(v, S.TreeHead(1201, t.root())).ok


def test_reopen_continues_and_rollback_leaves_nothing(log):
    path, ents = log
    with cartridge.open(path, "a", **OFF) as c:
        assert view_of(c).head().size == 1200
        with pytest.raises(RuntimeError):
            with c.transaction():
                append(c, ents[:50])
                raise RuntimeError("abort")
        assert view_of(c).head().size == 1200
        append(c, ents[:5])
        assert view_of(c).head().size == 1205
    with cartridge.open(path, "r") as c:
        v = view_of(c)
        assert v.head().size == 1205
        assert S.verify_log(v).ok
        assert c.verify().ok


def test_unknown_audit_keys_rejected():
    assert S.is_audit_key(S.k_block(3)) and S.is_audit_key(S.K_HEAD)
    assert S.is_audit_key(S.k_hash(8, 1)) and not S.is_audit_key(S.k_hash(5, 1))
    assert not S.is_audit_key(S.P_BLOCK + b"x") and not S.is_audit_key(b"\x00audit/zz")


def _rewrite(c, key, fn):
    def go(eng):
        data = S.LogView(eng).read(key)
        S.write_entry(eng, key, fn(data))
    H.apply(c, go)


@pytest.mark.parametrize("damage", ["flip", "delete", "swap", "truncate", "head_size"])
def test_damage_is_found(log, damage):
    path, _ = log
    with cartridge.open(path, "r") as c:
        good = view_of(c).tree_head()
    with cartridge.open(path, "a", **OFF) as c:
        if damage == "flip":            # a byte of record 300's block (block 1), checksums redone
            def flip(d):
                d = bytearray(d)
                d[S.BLOCK_HEAD.size + 40] ^= 0x04
                return bytes(d)
            _rewrite(c, S.k_block(1), flip)
        elif damage == "delete":        # drop a whole block
            H.apply(c, lambda eng: eng.delete(S.k_block(2)))
        elif damage == "swap":          # two blocks change places
            def swap(eng):
                v = S.LogView(eng)
                a, b = v.read(S.k_block(1)), v.read(S.k_block(2))
                S.write_entry(eng, S.k_block(1), b)
                S.write_entry(eng, S.k_block(2), a)
            H.apply(c, swap)
        elif damage == "truncate":      # the tail cut off, head rewritten to match
            def cut(eng):
                v = S.LogView(eng)
                h = v.head()
                eng.delete(S.k_block(4))
                S.write_entry(eng, S.K_HEAD, h._replace(size=1024).encode())
            H.apply(c, cut)
        else:
            def head(eng):
                h = S.LogView(eng).head()
                S.write_entry(eng, S.K_HEAD, h._replace(size=h.size + 1).encode())
            H.apply(c, head)
    with cartridge.open(path, "r") as c:
        v = view_of(c)
        rep = S.verify_log(v, good)
        assert not rep.ok and rep.problems
        if damage in ("flip", "swap"):
            assert rep.first_bad is not None and 256 <= rep.first_bad <= 511
        if damage == "delete":
            assert rep.first_bad == 512


def test_consistent_rewrite_needs_a_held_head(log):
    """Rewrite record 5 and everything derived from it (block, chain values, interior hashes,
    head) so that the log is self-consistent: verify() alone cannot tell, the held head can."""
    path, ents = log
    with cartridge.open(path, "r") as c:
        good = view_of(c).tree_head()
    # rebuild the whole log with record 5 changed, through the writer, in a new archive, then
    # transplant its entries
    forged = list(ents)
    forged[5] = (forged[5][0], "mallory") + forged[5][2:]
    other = path + ".forged"
    with cartridge.open(other, "x", **OFF) as f:
        append(f, forged)
        v = view_of(f)
        keys = [k for k, _ in H.engine(f).items(S.AUDIT_PREFIX, S.AUDIT_PREFIX)]
        entries = {k: v.read(k) for k in keys}

    def transplant(eng):
        for k, _ in list(eng.items(S.AUDIT_PREFIX, S.AUDIT_PREFIX)):
            if k not in entries:
                eng.delete(k)
        for k, d in entries.items():
            S.write_entry(eng, k, d)
    with cartridge.open(path, "a", **OFF) as c:
        H.apply(c, transplant)
    with cartridge.open(path, "r") as c:
        v = view_of(c)
        assert S.verify_log(v).ok                       # self-consistent ...
        assert v.record(5).principal == "mallory"
        rep = S.verify_log(v, good)                     # ... but not the history we saw
        assert not rep.ok and "rewritten" in rep.problems[0]
        assert c.verify().ok                            # the archive itself is sound


def test_hostile_contents():
    with pytest.raises(CorruptionError):
        S.parse_block(b"ALOG", 0, "x")
    good = bytearray(S.BLOCK_HEAD.pack(S.BLOCK_MAGIC, 1, 0, 0, bytes(32), S.BLOCK_HEAD.size,
                                       *([0] * 15), 5, *([0] * 15)))
    good += bytes([0, 0, 0])
    assert S.parse_block(bytes(good), 0, "x")[0] == 1
    for mutate in (lambda d: d + b"\x00", lambda d: d[:-1], lambda d: d[:4] + b"\x02" + d[5:],
                   lambda d: d[:8] + b"\x01" + d[9:], lambda d: d[:-3] + b"\xff" + d[-2:],
                   lambda d: d[:-2] + b"\x80\x80"):
        with pytest.raises(CorruptionError):
            S.parse_block(bytes(mutate(bytes(good))), 0, "x")
    with pytest.raises(CorruptionError):
        S.decode_head(b"AHED" + bytes(100), "x")
    with pytest.raises(CorruptionError):
        S.parse_strings(b"\xff\xff", "x")


def test_kernel_agrees_with_python_reader(log):
    """auditblock.block_records (C) against parse_block + to_record (Python): the same canonical
    bytes for every record, and the same verdict on mutated blocks."""
    from cartridge._core.auditblock import block_records
    path, _ = log
    rng = random.Random(5)
    with cartridge.open(path, "r") as c:
        v = view_of(c)
        for b in range(5):
            data = v.block_data(b)
            count, _, _, _, recs = S.parse_block(data, b, "x")
            want = [v.to_record(b * 256 + i, cc).raw for i, cc in enumerate(recs)]
            got = block_records(data, b, v.string_bytes, bytes(32), -(1 << 63))
            assert got[0] == count and got[2] == want
            assert got[3] == [merkle.hash_leaf(r) for r in want]
            for _ in range(150):
                d = bytearray(data)
                for _ in range(rng.randint(1, 3)):
                    d[rng.randrange(len(d))] = rng.randrange(256)
                if rng.random() < 0.2:
                    d = d[:rng.randrange(len(d))]
                py = ker = None
                try:
                    _, _, _, _, rr = S.parse_block(bytes(d), b, "x")
                    py = [v.to_record(b * 256 + i, cc).raw for i, cc in enumerate(rr)]
                except CorruptionError:
                    py = "bad"
                try:
                    ker = block_records(bytes(d), b, v.string_bytes, bytes(32), -(1 << 63))[2]
                except CorruptionError:
                    ker = "bad"
                assert py == ker


def test_many_strings_in_one_append_with_a_small_cache(tmp_path, monkeypatch):
    """More distinct strings in one commit than the writer's cache holds: strings it forgot
    are found again through the index entries staged in the same commit."""
    monkeypatch.setattr(S, "CACHE_STRINGS", 50)
    path = str(tmp_path / "a.cart")
    ents = [(1_700_000_000_000_000 + i, None, "cart:PutObject", f"/p{i % 300}", None,
             "allowed", 1, None) for i in range(1500)]
    with cartridge.open(path, "x", **OFF) as c:
        append(c, ents)
        append(c, ents[:10])
    with cartridge.open(path, "r") as c:
        v = view_of(c)
        assert v.head().size == 1510 and v.head().strings == 301    # 300 paths, 1 action
        assert [r.path for r in v.records(0, 1510)] == [e[3] for e in ents + ents[:10]]
        assert S.verify_log(v).ok


def test_block_summaries_written_in_c_match_the_records(log):
    """The C batch writer's block summaries (first/last time, result mask, Bloom filter of the
    string ids, FORMAT §13.5) against the same computed in Python from the stored records;
    the log of the fixture was written over several commits and a reopen."""
    path, _ents = log
    with cartridge.open(path, "r") as c:
        v = view_of(c)
        n = v.head().size
        assert n // S.BLOCK_RECORDS >= 4
        for b in range(n // S.BLOCK_RECORDS):
            _count, _chain, _offs, _bases, recs = S.parse_block(v.block_data(b), b, v.where)
            bloom = mask = 0
            for r in recs:
                mask |= 1 << r.result
                bloom = S.bloom_add(bloom, r.action)
                for bit, sid in ((R.F_PRINCIPAL, r.principal), (R.F_PATH, r.path),
                                 (R.F_DEST, r.dest)):
                    if r.flags & bit:
                        bloom = S.bloom_add(bloom, sid)
            assert v.summary(b) == (recs[0].time_us, recs[-1].time_us, mask, bloom)
