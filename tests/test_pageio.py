"""The SQLite page I/O kernel (cartridge/_core/pageio.pyx) against a bytearray model."""
from __future__ import annotations

import random

import pytest

from cartridge._core.pageio import Overlay, StatementGuard

CHUNK = 1 << 16


class Model(Overlay):
    """An overlay over a fixed committed content, the way Member uses it."""

    def __init__(self, base: bytes):
        self.base = base
        self.exists = True
        self.size = len(base)
        self.nbase = -(-len(base) // CHUNK)
        self.fetched = 0
        self.spills = 0

    def _base_chunk(self, i):
        self.fetched += 1
        return self.base[i * CHUNK:(i + 1) * CHUNK]

    def _chunk(self, i):
        buf = self.dirty.get(i)
        if buf is not None:
            return buf
        return self._base_chunk(i) if i < self.nbase else b""

    def _spill(self):
        self.spills += 1


def test_random_reads_and_writes_match_a_bytearray():
    rng = random.Random(5)
    base = bytes(rng.randrange(256) for _ in range(3 * CHUNK + 1000))
    m = Model(base)
    model = bytearray(base)
    for _ in range(400):
        if rng.random() < 0.5:
            page = rng.choice([512, 4096, 65536])
            off = rng.randrange(0, 5 * CHUNK) // page * page if rng.random() < 0.7 else \
                rng.randrange(0, 5 * CHUNK)
            data = bytes([rng.randrange(256)]) * rng.choice([1, 100, page, 2 * CHUNK + 7])
            m.write(data, off)
            if off > len(model):
                model.extend(bytes(off - len(model)))
            model[off:off + len(data)] = data
        else:
            off = rng.randrange(0, 6 * CHUNK)
            n = rng.choice([1, 100, 4096, CHUNK, 3 * CHUNK])
            got = m.read(n, off)
            assert isinstance(got, bytes)
            assert got == bytes(model[off:off + n])
        assert m.size == len(model)
    assert m.changed


def test_short_dirty_chunk_reads_zeros_after_it_and_writes_past_the_end():
    m = Model(b"")
    m.exists = False
    m.write(b"ab", 10)
    assert m.exists and m.size == 12
    assert m.read(100, 0) == bytes(10) + b"ab"
    m.write(b"z", CHUNK + 5)                 # leaves a hole in chunk 1: zeros
    assert m.read(CHUNK + 6, 0) == bytes(10) + b"ab" + bytes(CHUNK - 12) + bytes(5) + b"z"
    assert m.read(10, m.size) == b""
    assert m.read(0, 0) == b""


def test_whole_chunk_write_is_not_read_first_and_spill_is_asked_for():
    m = Model(bytes(2 * CHUNK))
    m.spill_at = 1
    m.write(b"x" * CHUNK, CHUNK)
    assert m.fetched == 0 and m.spills == 0
    m.write(b"y" * CHUNK, 0)
    assert m.fetched == 0 and m.spills == 1
    assert m.read(2, CHUNK - 1) == b"yx"


def test_poisoned_member_ignores_writes_and_bad_input_raises():
    m = Model(b"abc")
    m.poisoned = True
    m.write(b"zzz", 0)
    assert m.read(3, 0) == b"abc" and not m.changed
    m.poisoned = False
    with pytest.raises(ValueError):
        m.write(b"x", -1)
    with pytest.raises(TypeError):
        m.write(12, 0)
    with pytest.raises(ValueError):             # past the largest offset: refused, not wrapped
        m.write(b"x" * 100, 2**63 - 50)
    assert m.read(3, 0) == b"abc" and m.size == 3
    assert m.read(2**63 - 1, 1) == b"bc"        # a huge amount is clipped at the end


class Recording(StatementGuard):
    def __init__(self):
        self.f = None
        self.seen = []

    def slow(self, cursor, sql, bindings):
        self.seen.append(sql)
        return True


def test_statement_guard_only_takes_the_slow_path_when_it_must():
    g = Recording()
    assert g(None, "INSERT INTO t VALUES(1)", None) is True
    assert g.seen == []
    g(None, "PRAGMA journal_mode=WAL", None)
    g(None, "pragma journal_mode = wal", None)
    assert len(g.seen) == 2
    g.pending = True
    g(None, "SELECT 1", None)
    assert g.seen[-1] == "SELECT 1"


def test_statement_guard_remembers_plain_sql_but_still_sees_wal():
    g = Recording()
    for _ in range(3):
        g(None, "INSERT INTO t VALUES(?)", None)
    g(None, "PRAGMA journal_mode=wal", None)
    g(None, "INSERT INTO t VALUES(?)", None)
    g(None, "PRAGMA journal_mode=wal", None)
    assert g.seen == ["PRAGMA journal_mode=wal"] * 2
