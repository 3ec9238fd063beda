"""Packs: small files sharing pages (issue 16, docs/FORMAT.md §14). Reads of every kind,
accounting of dead bytes, freeing, compaction, snapshots, crash cuts, a corruption sweep over
pack pages, hostile records, and the knobs."""
from __future__ import annotations

import hashlib
import io
import os
import random
import struct
import warnings

import numpy as np
import pytest

import cartridge
from cartridge import format as F
from cartridge import packs
from cartridge._handle import engine
from cartridge.errors import CorruptionError, UnsupportedVersionError
from cartridge.testing.crash import CrashRecorder

KIB = 1024


def files_of(c) -> dict[str, str]:
    return {i.path: hashlib.sha256(c.read(i.path)).hexdigest() for i in c.scan("/")}


def small_batch(rng: random.Random, n: int, lo: int = 1000, hi: int = 16 * KIB,
                prefix: str = "/p") -> dict[str, bytes]:
    return {f"{prefix}/{i:04d}": rng.randbytes(rng.randint(lo, hi)) for i in range(n)}


def packed_records(c) -> dict[str, object]:
    eng = engine(c)
    out = {}
    for info in c.scan("/"):
        rec = eng.get(cartridge.paths.to_key(info.path))
        if rec.storage == F.STORE_PACKED:
            out[info.path] = rec
    return out


def test_write_many_packs_and_every_read_path_works(tmp_path):
    rng = random.Random(1)
    files = small_batch(rng, 300)
    files["/big"] = rng.randbytes(100 * KIB)               # not packed: over PACK_MAX
    files["/tiny"] = b"inline"                             # inline
    with cartridge.open(tmp_path / "a.cart", "w") as c:
        c.write_many(files.items())
        info = c.info()
        assert info["packed_files"] == 300
        assert info["packs"] >= 1 and info["pack_pages"] <= 16 * info["packs"]
        content = sum(len(v) for k, v in files.items() if k.startswith("/p/"))
        assert info["pack_pages"] * 4096 < content * 1.1      # dense: no page per file
        assert info["pack_dead_bytes"] == 0
        assert set(packed_records(c)) == {k for k in files if k.startswith("/p/")}
        for p, data in files.items():
            assert c.read(p) == data
            assert c.read(p, offset=7, size=100) == data[7:107]
            assert c.read(p, offset=len(data) - 3) == data[-3:]
            buf = bytearray(len(data) + 5)
            assert c.readinto(p, buf) == len(data) and bytes(buf[:len(data)]) == data
            buf2 = bytearray(50)
            assert c.readinto(p, buf2, offset=20) == max(0, min(50, len(data) - 20))
            assert bytes(c.read_buffer(p)) == data
            assert bytes(c.read_buffer(p, 10, 2000)) == data[10:2010]
            with c.open(p, "rb") as f:
                assert f.read(11) == data[:11] and f.read() == data[11:]
            assert c.stat(p).checksum == cartridge.content_checksum(data)
        assert c.verify().ok
    with cartridge.open(tmp_path / "a.cart", "r") as r:    # another handle, cold cache
        for p, data in files.items():
            assert r.read(p) == data
        assert r.info()["packed_files"] == 300


def test_streams_on_a_packed_base(tmp_path):
    rng = random.Random(2)
    files = small_batch(rng, 20)
    with cartridge.open(tmp_path / "a.cart", "w") as c:
        c.write_many(files.items())
        before = c.info()
        with c.open("/p/0000", "ab") as f:
            f.write(b"tail")
        with c.open("/p/0001", "r+b") as f:
            f.seek(3)
            f.write(b"XYZ")
        files["/p/0000"] += b"tail"
        d = bytearray(files["/p/0001"])
        d[3:6] = b"XYZ"
        files["/p/0001"] = bytes(d)
        for p, data in files.items():
            assert c.read(p) == data
        after = c.info()
        assert after["packed_files"] == before["packed_files"] - 2      # now on their own pages
        assert after["pack_dead_bytes"] > 0
        assert c.verify().ok


def test_dead_bytes_and_a_pack_without_files_is_freed(tmp_path):
    rng = random.Random(3)
    a = small_batch(rng, 40, 3000, 3000, "/a")       # 40 x 3000 B: two packs
    b = small_batch(rng, 40, 3000, 3000, "/b")
    with cartridge.open(tmp_path / "a.cart", "w") as c:
        c.write_many(a.items())
        c.write_many(b.items())
        i0 = c.info()
        c.delete("/a/0000")
        i1 = c.info()
        assert i1["pack_dead_bytes"] == 3000 and i1["packed_files"] == 79
        assert i1["reclaimable_bytes"] >= 3000
        c.delete("/a", recursive=True)                # every file of the /a packs
        i2 = c.info()
        assert i2["packed_files"] == 40
        assert i2["packs"] < i0["packs"] and i2["pack_pages"] < i0["pack_pages"]
        assert i2["pack_dead_bytes"] == 0             # those packs are gone, not dead
        for p, data in b.items():
            assert c.read(p) == data
        c.rename("/b", "/c")                          # a rename keeps the pack reference
        assert c.info()["packed_files"] == 40 and c.info()["pack_dead_bytes"] == 0
        assert c.read("/c/0005") == b["/b/0005"]
        assert c.verify().ok
        c.write_many((p, b"x" * 1500) for p in [f"/c/{i:04d}" for i in range(40)])
        i3 = c.info()
        assert i3["packed_files"] == 40 and i3["pack_dead_bytes"] == 0
        assert c.verify().ok
        c.delete("/c", recursive=True)
        assert c.info()["packs"] == 0 and c.info()["pack_pages"] == 0
        assert c.verify().ok
        # no pack left: the PACKS feature flag is cleared (older writers may open it again)
        assert not engine(c).allocator.features & F.FEATURE_PACKS


def test_write_inside_a_transaction_packs_and_its_own_commit_does_not(tmp_path):
    rng = random.Random(15)
    files = small_batch(rng, 50, 1000, 6000)
    with cartridge.open(tmp_path / "a.cart", "w") as c:
        c.write("/own", b"o" * 3000)                   # its own commit: its own page run
        assert c.info()["packed_files"] == 0
        with c.transaction():
            for k, d in files.items():
                c.write(k, d)
                assert c.read(k) == d                  # read back from the open pack
                assert c.read(k, offset=5, size=9) == d[5:14]
            c.write("/p/0000", b"again" * 300)          # replaced inside the transaction
            files["/p/0000"] = b"again" * 300
            c.delete("/p/0001")
            del files["/p/0001"]
            for k, d in files.items():
                assert c.read(k) == d
        info = c.info()
        assert info["packed_files"] == 49
        # the packs were trimmed to what they hold: no 16-page reservation left behind
        content = sum(len(d) for d in files.values())
        assert info["pack_pages"] * 4096 < content + info["pack_dead_bytes"] + 4096 * info["packs"]
        for k, d in files.items():
            assert c.read(k) == d
        assert c.verify().ok
    with cartridge.open(tmp_path / "a.cart", "r") as r:
        for k, d in files.items():
            assert r.read(k) == d


def test_a_transaction_that_rolls_back_leaves_the_table_as_it_was(tmp_path):
    rng = random.Random(4)
    files = small_batch(rng, 30)
    with cartridge.open(tmp_path / "a.cart", "w") as c:
        c.write_many(files.items())
        before = c.info()
        with pytest.raises(RuntimeError):
            with c.transaction():
                c.delete("/p/0001")
                c.write_many(small_batch(rng, 10, prefix="/q").items())
                c.write("/q/single", b"s" * 2000)      # into the transaction's open pack
                raise RuntimeError("no")
        after = c.info()
        for k in ("packs", "packed_files", "pack_pages", "pack_dead_bytes"):
            assert after[k] == before[k], k
        assert files_of(c) == {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}
        assert c.verify().ok


def test_compaction_rewrites_sparse_packs_and_gives_the_space_back(tmp_path):
    rng = random.Random(5)
    files = small_batch(rng, 2000, 1000, 2000)
    p = tmp_path / "a.cart"
    with cartridge.open(p, "w") as c:
        c.write_many(files.items())
        first = os.path.getsize(p)
        for i in range(0, 2000):
            if i % 4:
                del files[f"/p/{i:04d}"]
        with c.transaction():
            for i in range(0, 2000):
                if i % 4:
                    c.delete(f"/p/{i:04d}")
        i0 = c.info()
        assert i0["pack_dead_bytes"] > 2 * i0["packed_files"] * 1000
        c.vacuum()
        i1 = c.info()
        assert i1["packed_files"] == 500
        assert i1["pack_dead_bytes"] < i0["pack_dead_bytes"] // 4
        assert i1["pack_pages"] < i0["pack_pages"] // 2
        assert os.path.getsize(p) < first // 2
        for k, data in files.items():
            assert c.read(k) == data
        assert c.verify().ok
        again = c.vacuum()                     # stable: nothing sparse left to rewrite
        assert again.done


def test_compaction_cycle_rewrites_sparse_packs_within_its_page_budget(tmp_path):
    """compact(max_pages=small) rewrites only as many sparse packs as its budget allows (one
    at least), places the rewrite below the cycle's limit (the file does not grow past it),
    and repeated calls finish the job."""
    rng = random.Random(15)
    files = small_batch(rng, 3000, 1000, 2000)
    p = tmp_path / "a.cart"
    with cartridge.open(p, "w") as c:
        c.write_many(files.items())
        with c.transaction():
            for i in range(3000):
                if i % 4:
                    c.delete(f"/p/{i:04d}")
                    del files[f"/p/{i:04d}"]
        eng = engine(c)
        n_sparse = len(eng.packs.sparse())
        assert n_sparse > 20
        slack = (16 + 2 * F.CHUNK_PAGES) * F.PAGE_SIZE      # the cycle's limit past its boundary
        cycles = 0
        while True:
            size0 = os.path.getsize(p)
            dead0 = c.info()["pack_dead_bytes"]
            left0 = len(eng.packs.sparse())
            st = c.compact(max_pages=8)
            cycles += 1
            left = len(eng.packs.sparse())
            # at most one 16-page pack fits in a budget of 8: one rewritten per cycle
            assert left0 - left <= 1
            assert dead0 - c.info()["pack_dead_bytes"] <= packs.PACK_BYTES
            assert os.path.getsize(p) <= size0 + slack
            if st.done or cycles > 20 * n_sparse:
                break
        assert cycles > n_sparse // 2
        assert not eng.packs.sparse()
        for k, data in files.items():
            assert c.read(k) == data
        assert c.verify().ok


def test_rewrite_everything_twice_then_vacuum_stays_small(tmp_path):
    """The issue's target as a test of the mechanism (the ratio itself: perf/pack_bench.py)."""
    rng = random.Random(6)
    names = [f"/d{i % 10}/f{i:05d}" for i in range(3000)]
    p = tmp_path / "a.cart"
    with cartridge.open(p, "w") as c:
        c.write_many((n, rng.randbytes(1024)) for n in names)
    first = os.path.getsize(p)
    with cartridge.open(p, "a") as c:
        for _ in range(2):
            c.write_many((n, rng.randbytes(1024)) for n in names)
        c.vacuum()
        assert c.verify().ok
    assert os.path.getsize(p) <= 1.1 * first


def test_snapshots_hold_packs_and_restore_brings_them_back(tmp_path):
    rng = random.Random(7)
    files = small_batch(rng, 100, 1000, 5000)
    with cartridge.open(tmp_path / "a.cart", "w") as c:
        c.write_many(files.items())
        want = files_of(c)
        c.snapshot("s")
        table = dict(engine(c).packs.table)
        c.write_many((k, b"new" * 400) for k in files)      # every old pack loses all files
        c.delete("/p/0003")
        assert not set(table) & set(engine(c).packs.table)  # the old packs left the table ...
        assert c.info()["held_pages"] >= sum(t.pages for t in table.values())   # ... held
        c.vacuum()                                          # never rewrites or moves them
        with c.at("s") as v:
            assert files_of(v) == want
        c.restore("s")
        assert files_of(c) == want
        assert set(table) <= set(engine(c).packs.table)
        assert c.info()["packed_files"] == 100
        assert c.verify().ok
        c.delete_snapshot("s")
        assert c.verify().ok
        c.vacuum()
        assert files_of(c) == want and c.verify().ok


def test_packing_off_and_the_threshold(tmp_path, monkeypatch):
    rng = random.Random(8)
    monkeypatch.setattr(packs, "PACK_MAX", 0)
    with cartridge.open(tmp_path / "a.cart", "w") as c:
        c.write_many(small_batch(rng, 10).items())
        assert c.info()["packed_files"] == 0 and c.info()["packs"] == 0
    monkeypatch.setattr(packs, "PACK_MAX", 4096)
    with cartridge.open(tmp_path / "b.cart", "w") as c:
        c.write_many([("/a", b"a" * 4096), ("/b", b"b" * 4097), ("/c", b"c" * 900)])
        recs = packed_records(c)
        assert set(recs) == {"/a"}
        assert c.verify().ok


def test_sqlite_member_written_with_write_many(tmp_path):
    pytest.importorskip("apsw")
    import sqlite3
    db = tmp_path / "x.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA page_size=1024")
    con.execute("CREATE TABLE t(x)")
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()
    con.close()
    image = db.read_bytes()
    assert 1000 < len(image) <= packs.PACK_MAX
    with cartridge.open(tmp_path / "a.cart", "w") as c:
        c.write_many([("/app.db", image), ("/other", b"o" * 2000)])
        assert set(packed_records(c)) == {"/app.db", "/other"}
        conn = c.sqlite("/app.db")
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
        with conn:
            conn.execute("INSERT INTO t VALUES (2)")
        assert conn.execute("SELECT count(*) FROM t").fetchall() == [(2,)]
        conn.close()
        assert set(packed_records(c)) == {"/other"}    # SQLite rewrote it on its own pages
        assert c.info()["pack_dead_bytes"] == len(image)
        assert c.read("/other") == b"o" * 2000
        assert c.verify().ok
        # a packed member changed inside an archive transaction (its stage runs in the
        # commit's participants, after which the pack table is written)
        c.write_many([("/b.db", image)])
        conn = c.sqlite("/b.db")
        with c.transaction():
            c.write("/side", b"side")
            conn.execute("INSERT INTO t VALUES (3)")
        conn.close()
        assert "/b.db" not in packed_records(c)
        rep = c.verify()
        assert rep.ok, rep.problems


def _pack_layout(path) -> tuple[dict, dict]:
    """{path: (file byte address, size)} of the packed files, and the pack table."""
    with cartridge.open(path, "r") as c:
        recs = packed_records(c)
        table = dict(engine(c).packs.table)
    out = {}
    for p, rec in recs.items():
        page, off = packs.ref(rec)
        out[p] = (page * 4096 + off, rec.size)
    return out, table


def test_corruption_sweep_over_pack_pages(tmp_path):
    """A flipped byte anywhere in a pack fails exactly the file whose bytes it hits (with
    CorruptionError, from read, readinto, read_buffer and streams alike); every other file of
    the same pack still reads; a byte no live file covers fails nothing."""
    rng = random.Random(9)
    files = small_batch(rng, 60, 1000, 7000)
    p = str(tmp_path / "a.cart")
    with cartridge.open(p, "w") as c:
        c.write_many(files.items())
        c.delete("/p/0004")                    # dead bytes inside a pack
        del files["/p/0004"]
        # one more commit, so that the previous commit (which deep verify also checks, open
        # falls back to it) no longer names /p/0004 either
        c.write("/x", b"x")
        files["/x"] = b"x"
    layout, table = _pack_layout(p)
    base = open(p, "rb").read()
    offsets = set()
    for page, pack in table.items():
        lo, hi = page * 4096, (page + pack.pages) * 4096
        offsets.update(rng.randrange(lo, hi) for _ in range(12))
        offsets.update((lo, hi - 1))
    for addr, size in layout.values():          # first and last byte of every file
        offsets.update((addr, addr + size - 1))
    img = str(tmp_path / "img.cart")
    for off in sorted(offsets):
        bad = bytearray(base)
        bad[off] ^= 0x5A
        with open(img, "wb") as f:
            f.write(bad)
        hit = {q for q, (addr, size) in layout.items() if addr <= off < addr + size}
        assert len(hit) <= 1
        with cartridge.open(img, "r") as c:
            for q, data in files.items():
                if q in hit:
                    with pytest.raises(CorruptionError):
                        c.read(q)
                    with pytest.raises(CorruptionError):
                        c.readinto(q, bytearray(len(data)))
                    with pytest.raises(CorruptionError):
                        c.read_buffer(q)
                    with pytest.raises(CorruptionError):
                        with c.open(q, "rb") as f:
                            f.read()
                else:
                    assert c.read(q) == data, (off, q)
            rep = c.verify()
            assert rep.ok == (not hit), (off, rep.problems)
            if hit:
                assert any("packed file" in m for m in rep.problems)


def test_hostile_packed_records_and_pack_entries(tmp_path):
    from cartridge.records import Record, decode
    rec = Record(F.KIND_FILE, F.STORE_PACKED, 0o100644, 100, 0, 0, 0, F.PACK_REF.pack(5, 0, 0))
    assert decode(rec.encode(), "x").chunk_key >> 127 == 1
    for payload, size in ((F.PACK_REF.pack(5, 65500, 0), 100),       # past 64 KiB
                          (F.PACK_REF.pack(0, 0, 0), 100),           # page 0
                          (F.PACK_REF.pack(1 << 48, 0, 0), 100),     # past 2^48
                          (F.PACK_REF.pack(5, 0, 1), 100),           # reserved set
                          (F.PACK_REF.pack(5, 0, 0)[:12], 100),      # short
                          (F.PACK_REF.pack(5, 0, 0), 0)):            # empty
        raw = F.RECORD.pack(F.KIND_FILE, F.STORE_PACKED, 0, 0o100644, size, 0, 0, 0) + payload
        with pytest.raises(CorruptionError):
            decode(raw, "hostile")
    for content in (struct.pack("<IIQQ", 0, 1, 10, 0), struct.pack("<IIQQ", 17, 1, 10, 0),
                    struct.pack("<IIQQ", 1, 0, 10, 0), struct.pack("<IIQQ", 1, 1, 4000, 200),
                    b"short"):
        r = Record(F.KIND_FILE, F.STORE_INLINE, 0o100644, len(content), 0, 0, 0, content)
        with pytest.raises(CorruptionError):
            packs.parse_entry(packs.pack_key(9), r, "hostile")
    # a pack-table entry whose counts disagree with the catalog: verify() says so
    p = tmp_path / "a.cart"
    with cartridge.open(p, "w") as c:
        c.write_many(small_batch(random.Random(10), 10).items())
        eng = engine(c)
        page = next(iter(eng.packs.table))
        eng.packs.table[page].live += 1
        eng.packs.dirty.add(page)
        c.write("/x", b"x")                        # commits the wrong count
        rep = c.verify()
        assert not rep.ok and any("pack table counts" in m for m in rep.problems)


def test_an_older_writer_refuses_an_archive_with_packs(tmp_path, monkeypatch):
    """A writer that does not know the PACKS feature flag (a 1.3 build) refuses to open an
    archive holding packs for writing; once the last pack is gone it opens again."""
    from cartridge import engine as E
    p = tmp_path / "a.cart"
    with cartridge.open(p, "w") as c:
        c.write_many(small_batch(random.Random(11), 5).items())
    monkeypatch.setattr(E, "KNOWN_FEATURES", F.FEATURE_SNAPSHOTS)
    with pytest.raises(UnsupportedVersionError):
        cartridge.open(p, "a")
    monkeypatch.setattr(E, "KNOWN_FEATURES", F.KNOWN_FEATURES)
    with cartridge.open(p, "a") as c:
        c.delete("/p", recursive=True)
    monkeypatch.setattr(E, "KNOWN_FEATURES", F.FEATURE_SNAPSHOTS)
    with cartridge.open(p, "a") as c:
        c.write("/ok", b"ok")


def _crash_workload(c, rng) -> list[dict]:
    """Fill packs, overwrite and delete in them, compact: the states each commit leaves."""
    states = [files_of(c)]
    names = [f"/w/{i:03d}" for i in range(120)]
    c.write_many((n, rng.randbytes(rng.randint(1000, 6000))) for n in names)
    states.append(files_of(c))
    c.write_many((n, rng.randbytes(1500)) for n in names[::3])
    states.append(files_of(c))
    with c.transaction():
        for n in names[1::3]:
            c.delete(n)
    states.append(files_of(c))
    with c.transaction():                       # write() calls share an open pack
        for n in names[2::3]:
            c.write(n, rng.randbytes(rng.randint(1000, 3000)))
        c.write("/w/new", b"n" * 2500)
    states.append(files_of(c))
    c.compact(max_pages=8)
    states.append(files_of(c))
    c.vacuum()
    states.append(files_of(c))
    return states


def test_every_cut_of_filling_overwriting_and_compacting_packs(tmp_path):
    p = str(tmp_path / "a.cart")
    with cartridge.open(p, "w") as c:
        c.write("/keep", b"k" * 5000)
    rng = random.Random(12)
    c = cartridge.open(p, "a")
    rec = CrashRecorder(c)
    start = len(rec.log)
    states = _crash_workload(c, rng)
    c.close()
    rec.detach()
    img_path = str(tmp_path / "img.cart")
    seen = set()
    n = 0
    for model, mrng in [("killed", None), ("power", None), ("power", random.Random(1))]:
        for cut in range(start, len(rec.log) + 1):
            img = rec.image(cut, model, mrng)
            if img in seen:
                continue
            seen.add(img)
            with open(img_path, "wb") as f:
                f.write(img)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with cartridge.open(img_path, "r") as r:
                    assert files_of(r) in states, (model, cut)
                    rep = r.verify()
                    assert rep.ok, (model, cut, rep.problems)
                with cartridge.open(img_path, "a") as w:
                    w.write_many([("/after/a", b"a" * 3000), ("/after/b", b"b" * 2000)])
                    w.vacuum()
                    assert w.verify().ok, (model, cut)
            n += 1
    assert n > 20


@pytest.mark.slow
def test_random_workload_against_a_model_many_rounds(tmp_path):
    """Long run: random batches, overwrites, deletes, renames, snapshots, restores and
    compactions of packed files, checked against a dict after every step."""
    rng = random.Random(13)
    model: dict[str, bytes] = {}
    snaps: dict[str, dict[str, bytes]] = {}
    p = tmp_path / "a.cart"
    c = cartridge.open(p, "w", sync="off")
    try:
        for step in range(400):
            op = rng.random()
            if op < 0.35:
                batch = {f"/r/{rng.randrange(300):03d}": rng.randbytes(rng.randint(900, 17000))
                         for _ in range(rng.randint(1, 40))}
                c.write_many(batch.items())
                model.update(batch)
            elif op < 0.55 and model:
                for k in rng.sample(sorted(model), min(len(model), rng.randint(1, 20))):
                    c.delete(k)
                    del model[k]
            elif op < 0.62 and model:
                k = rng.choice(sorted(model))
                d = f"/r/x{rng.randrange(1000)}"
                if d not in model:
                    c.rename(k, d)
                    model[d] = model.pop(k)
            elif op < 0.7:
                name = f"s{rng.randrange(3)}"
                if name in snaps:
                    c.delete_snapshot(name)
                    del snaps[name]
                else:
                    c.snapshot(name)
                    snaps[name] = dict(model)
            elif op < 0.75 and snaps:
                name = rng.choice(sorted(snaps))
                c.restore(name)
                model = dict(snaps[name])
            elif op < 0.85:
                c.compact(max_pages=rng.choice([5, 50, None]))
            elif op < 0.9:
                c.close()
                c = cartridge.open(p, "a", sync="off")
            else:                                  # write() calls sharing an open pack
                batch = {f"/r/{rng.randrange(300):03d}": rng.randbytes(rng.randint(900, 17000))
                         for _ in range(rng.randint(1, 30))}
                gone = rng.sample(sorted(model), min(len(model), 3))
                fail = rng.random() < 0.3
                try:
                    with c.transaction():
                        for k, d in batch.items():
                            c.write(k, d)
                        for k in gone:
                            if k not in batch:
                                c.delete(k)
                        if fail:
                            raise KeyboardInterrupt
                except KeyboardInterrupt:
                    pass
                else:
                    model.update(batch)
                    for k in gone:
                        if k not in batch:
                            del model[k]
            got = {i.path: c.read(i.path) for i in c.scan("/")}
            assert got == model, step
            if step % 25 == 0:
                rep = c.verify()
                assert rep.ok, (step, rep.problems)
        for name, m in snaps.items():
            with c.at(name) as v:
                assert {i.path: v.read(i.path) for i in v.scan("/")} == m
        assert c.verify().ok
    finally:
        c.close()


def test_info_figures_on_a_reader_and_numpy_free_paths(tmp_path):
    rng = random.Random(14)
    with cartridge.open(tmp_path / "a.cart", "w") as c:
        c.write_many(small_batch(rng, 50).items())
        c.delete("/p/0000")
        w = {k: c.info()[k] for k in ("packs", "packed_files", "pack_pages", "pack_dead_bytes")}
    with cartridge.open(tmp_path / "a.cart", "r") as r:
        got = {k: r.info()[k] for k in w}
    assert got == w and w["packed_files"] == 49 and w["pack_dead_bytes"] > 0
    assert isinstance(np.int64(1), np.integer) and io.BytesIO     # (imports used)


def test_cli_info_shows_the_pack_figures(tmp_path, capsys):
    import json

    from cartridge.cli import main
    p = str(tmp_path / "a.cart")
    with cartridge.open(p, "w") as c:
        c.write_many(small_batch(random.Random(17), 30).items())
        c.delete("/p/0002")
        want = c.info()
    assert main(["info", p, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for k in ("packs", "packed_files", "pack_pages", "pack_dead_bytes", "reclaimable_bytes"):
        assert doc[k] == want[k], k
    assert doc["packed_files"] == 29 and doc["pack_dead_bytes"] > 0
    assert main(["info", p]) == 0
    out = capsys.readouterr().out
    assert "packed_files:" in out and "pack_dead_bytes:" in out and "KiB)" in out


def test_restore_after_a_rename_keeps_the_pack_counts(tmp_path):
    """Found by the slow random workload: a packed file renamed after a snapshot comes back
    under its old name with restore(); the pack's live and dead bytes stay exact."""
    rng = random.Random(18)
    files = small_batch(rng, 12, 4000, 5000)
    with cartridge.open(tmp_path / "a.cart", "w") as c:
        c.write_many(files.items())
        before = c.info()
        c.snapshot("s")
        c.rename("/p/0000", "/p/zzzz")
        c.delete("/p/0005")
        c.restore("s")
        after = c.info()
        for k in ("packs", "packed_files", "pack_pages", "pack_dead_bytes"):
            assert after[k] == before[k], k
        rep = c.verify()
        assert rep.ok, rep.problems
        c.delete_snapshot("s")
        c.vacuum()
        assert c.verify().ok
        assert files_of(c) == {k: hashlib.sha256(d).hexdigest() for k, d in files.items()}


def test_hostile_pack_metadata_raises_only_archive_errors(tmp_path):
    """Bytes of the catalog leaves that hold packed records and pack-table entries overwritten
    with the page checksum re-sealed (so the hostile values get past the checksum into the
    decoders): reading, listing, verifying, writing and compacting raise only errors of the
    archive's hierarchy (never KeyError, IndexError, struct.error, a crash or a hang)."""
    from cartridge._core.checksum import seal_page
    from cartridge.errors import CartridgeError

    rng = random.Random(19)
    p = str(tmp_path / "a.cart")
    with cartridge.open(p, "w") as c:
        c.write_many(small_batch(rng, 40, 1000, 3000).items())
        c.delete("/p/0003")
    base = open(p, "rb").read()
    leaves = [n for n in range(1, len(base) // 4096)
              if base[n * 4096:n * 4096 + 4] == b"BTLF"
              and (b"\x00pack/" in base[n * 4096:(n + 1) * 4096]
                   or b"\x01\x04\x00\x00" in base[n * 4096:(n + 1) * 4096])]
    assert leaves
    img = str(tmp_path / "img.cart")
    for trial in range(120):
        bad = bytearray(base)
        n = rng.choice(leaves)
        page = bytearray(bad[n * 4096:(n + 1) * 4096])
        # aimed at the fields: a packed record's size, checksum and pack reference (after
        # its kind 1 / storage 4 bytes), or a pack-table entry's counts (after its key)
        aims = [i + 8 + k for i in range(len(page)) if page[i:i + 4] == b"\x01\x04\x00\x00"
                for k in range(48) if i + 8 + k < 4096]
        aims += [i + 14 + 40 + k for i in range(len(page)) if page[i:i + 6] == b"\x00pack/"
                 for k in range(24) if i + 54 + k < 4096]
        for _ in range(rng.randint(1, 4)):
            at = rng.choice(aims) if aims and trial % 3 else rng.randrange(40, 4096)
            page[at] = rng.randrange(256)
        seal_page(page)
        bad[n * 4096:(n + 1) * 4096] = page
        with open(img, "wb") as f:
            f.write(bad)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with cartridge.open(img, "r") as c:
                    for i in list(c.scan("/")):
                        try:
                            c.read(i.path)
                            c.read(i.path, offset=3, size=50)
                        except CartridgeError:
                            pass
                    c.info()
                    c.verify()
                with cartridge.open(img, "a") as c:
                    c.write_many([("/new/a", b"a" * 2000), ("/p/0004", b"b" * 1500)])
                    c.delete("/p/0005")
                    c.vacuum()
        except CartridgeError:
            pass


def _flip(path, addr: int) -> None:
    with open(path, "r+b") as f:
        f.seek(addr)
        b = f.read(1)
        f.seek(addr)
        f.write(bytes([b[0] ^ 0x5A]))


@pytest.mark.parametrize("holder", ["snapshot", "previous"])
def test_deep_verify_checks_packed_files_of_snapshots_and_the_previous_commit(tmp_path, holder):
    """A pack only a snapshot (or the previous commit, which open falls back to) still reaches:
    a flipped byte in it is a problem for deep verify(), not only for a read of the snapshot."""
    rng = random.Random(23)
    p = str(tmp_path / "a.cart")
    with cartridge.open(p, "w") as c:
        c.write_many((f"/f{i}", rng.randbytes(2000)) for i in range(10))
        old = packed_records(c)["/f3"]
        if holder == "snapshot":
            c.snapshot("s")
        c.write_many((f"/f{i}", rng.randbytes(2000)) for i in range(10))
        assert all(packs.ref(r)[0] != packs.ref(old)[0] for r in packed_records(c).values())
        assert c.verify(deep=True).ok
    page, off = packs.ref(old)
    _flip(p, page * 4096 + off + 100)
    with cartridge.open(p, "r") as c:
        if holder == "snapshot":
            with pytest.raises(CorruptionError):
                c.at("s").read("/f3")
        rep = c.verify(deep=True)
        assert not rep.ok
        assert any("/f3" in m and "packed file" in m for m in rep.problems), rep.problems
        assert c.verify(deep=False).ok          # shallow: bytes are not read


def _reseal_entry_pages(path, pages: int) -> None:
    """Set the `pages` field of the (only) pack-table entry on disk, the leaf re-sealed."""
    from cartridge._core.checksum import seal_page
    data = bytearray(open(path, "rb").read())
    done = 0
    for n in range(1, len(data) // 4096):
        page = bytearray(data[n * 4096:(n + 1) * 4096])
        if page[:4] != b"BTLF" or b"\x00pack/" not in page:
            continue
        i = page.index(b"\x00pack/")
        struct.pack_into("<I", page, i + 54, pages)
        seal_page(page)
        data[n * 4096:(n + 1) * 4096] = page
        done += 1
    assert done
    with open(path, "wb") as f:
        f.write(data)


def test_a_pack_entry_claiming_more_pages_than_its_bytes_frees_nothing(tmp_path):
    """A pack-table entry claiming 16 pages over a 1-page pack (the pages after it hold another
    file): it is refused as corruption, never trusted to free the other file's pages."""
    from cartridge.errors import CartridgeError
    rng = random.Random(29)
    big = rng.randbytes(200 * KIB)
    p = str(tmp_path / "a.cart")
    with cartridge.open(p, "w") as c:
        c.write_many([("/a", rng.randbytes(2000))])
        c.write("/big", big)
        (page, pack), = engine(c).packs.table.items()
        assert pack.pages == 1
    _reseal_entry_pages(p, 16)
    with pytest.raises(CartridgeError):
        with cartridge.open(p, "a") as c:
            c.delete("/a")
            for i in range(20):                  # would reuse /big's pages if they were freed
                c.write(f"/n{i}", rng.randbytes(50 * KIB))
    with cartridge.open(p, "r") as c:
        assert c.read("/big") == big
        with pytest.raises(CorruptionError):
            c.info()
        assert not c.verify().ok


def test_a_pack_entry_overlapping_another_is_refused(tmp_path):
    rng = random.Random(31)
    p = str(tmp_path / "a.cart")
    with cartridge.open(p, "w") as c:
        c.write_many((f"/f{i:02d}", rng.randbytes(9000)) for i in range(20))   # several packs
        table = engine(c).packs.table
        assert len(table) >= 2
        files = {f"/f{i:02d}": c.read(f"/f{i:02d}") for i in range(20)}
    pages = {pg: pk.pages for pg, pk in table.items()}
    first, second = sorted(pages)[:2]

    class Fake:
        def __init__(self, items):
            self.items = items

        def items_from(self, start, n, prefix):
            return [kv for kv in self.items if kv[0] >= start][:n]

    with cartridge.open(p, "r") as c:
        items = list(engine(c).catalog.items_from(packs.PACK_PREFIX, 256, packs.PACK_PREFIX))
        assert len(packs.read_table(Fake(items), "ok")) == len(table)
        # the second pack's entry moved one page down, onto the pack before it (packs of one
        # write_many lie back to back)
        assert first + pages[first] == second
        moved = [(packs.pack_key(second - 1) if k == packs.pack_key(second) else k, v)
                 for k, v in items]
        with pytest.raises(CorruptionError, match="overlaps"):
            packs.read_table(Fake(sorted(moved)), "hostile")
        for q, data in files.items():
            assert c.read(q) == data


def test_a_packed_file_past_the_end_of_its_pack_is_refused(tmp_path):
    """A packed record whose bytes run past its pack's pages (into the next file's pages) is
    corruption, even when its checksum matches those bytes; on a reader (one entry looked up)
    and on a writer whose pack table is loaded alike, and verify() says so."""
    from cartridge._core.checksum import xxh3_64
    from cartridge.records import Record
    rng = random.Random(37)
    p = str(tmp_path / "a.cart")
    with cartridge.open(p, "w") as c:
        c.write_many([("/a", rng.randbytes(2000))])
        c.write("/big", rng.randbytes(100 * KIB))
        (page, pack), = engine(c).packs.table.items()
        assert pack.pages == 1
    raw = open(p, "rb").read()
    addr = page * 4096 + 3000                     # 2000 bytes: 1096 in the pack, 904 past it
    body = raw[addr:addr + 2000]
    with cartridge.open(p, "a") as c:
        eng = engine(c)
        eng.put(cartridge.paths.to_key("/b"),
                Record(F.KIND_FILE, F.STORE_PACKED, 0o100644, 2000, 0, 0, xxh3_64(body),
                       F.PACK_REF.pack(page, 3000, 0)))
        c.write("/x", b"x")                        # commits it
    from spec_reader import Reader, SpecError  # the independent reader of FORMAT.md
    with pytest.raises(SpecError, match="outside its pack"):
        Reader(p).files()
    with cartridge.open(p, "r") as c:
        with pytest.raises(CorruptionError, match="/b.*past the end of its pack"):
            c.read("/b")
        assert any("/b" in m and "past the end" in m for m in c.verify().problems)
    with cartridge.open(p, "a") as c:
        c.write_many([("/c", rng.randbytes(3000))])   # the writer's table is loaded
        with pytest.raises(CorruptionError, match="past the end of its pack"):
            c.read("/b")


def test_verify_reports_overlapping_live_packed_files(tmp_path):
    """Two live records naming the same bytes of a pack (the table's counts made to agree):
    verify() reports the overlap (FORMAT §14.1: live packed ranges never overlap)."""
    rng = random.Random(41)
    with cartridge.open(tmp_path / "a.cart", "w") as c:
        # 1000 + 2000 bytes, + the 1000 counted twice: still the pack's one page
        c.write_many([("/a", rng.randbytes(1000)), ("/c", rng.randbytes(2000))])
        eng = engine(c)
        rec = packed_records(c)["/a"]
        page, _ = packs.ref(rec)
        eng.put(cartridge.paths.to_key("/b"), rec)
        eng.packs.table[page].files += 1
        eng.packs.table[page].live += rec.size
        eng.packs.dirty.add(page)
        c.write("/x", b"x")                        # commits both
        assert c.read("/b") == c.read("/a")
        rep = c.verify()
        assert not rep.ok
        assert any("overlaps" in m for m in rep.problems), rep.problems
        assert not any("pack table counts" in m for m in rep.problems), rep.problems


def test_auto_compaction_counts_pack_dead_bytes(tmp_path, monkeypatch):
    """Overwritten packed files leave dead bytes in packs still in use: the file has no free
    pages to give back, only pack dead bytes. auto_compact decides on the same reclaimable
    figure as info(), so it rewrites those packs."""
    import time

    from cartridge import archive

    rng = random.Random(16)
    files = small_batch(rng, 2000, 1000, 2000)
    p = tmp_path / "a.cart"
    with cartridge.open(p, "w") as c:
        c.write_many(files.items())
        for _ in range(2):                     # two commits: the first one's frees released
            c.write_many((k, rng.randbytes(len(v))) for k, v in list(files.items()) if int(k[-4:]) % 4)
    with cartridge.open(p, "a") as c:
        files = {k: c.read(k) for k in files}
        eng = engine(c)
        without_packs = eng.space(eng.allocator, os.path.getsize(p))["reclaimable_bytes"]
        info = c.info()
        dead0 = info["pack_dead_bytes"]
        assert dead0 > 1 << 20
        assert info["reclaimable_bytes"] == without_packs + dead0
    # a threshold the pack dead bytes alone pass
    monkeypatch.setattr(archive, "AUTO_COMPACT_INTERVAL", 0.02)
    monkeypatch.setattr(archive, "AUTO_COMPACT_BYTES", without_packs + dead0 // 2)
    monkeypatch.setattr(archive, "AUTO_COMPACT_SHARE", 0.0)
    with cartridge.open(p, "a", auto_compact=True) as c:
        deadline = time.monotonic() + 30
        while c.info()["pack_dead_bytes"] > dead0 // 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.info()["pack_dead_bytes"] <= dead0 // 2
    with cartridge.open(p, "r") as c:
        for k, data in files.items():
            assert c.read(k) == data
        assert c.verify().ok
