"""Durability: what survives close/reopen, garbage collection and killed processes in every sync
mode; the two root slots in page 0 (generations, fallback to the older slot when the newest is
damaged) and truncated files."""
from __future__ import annotations

import gc
import os
import struct
import subprocess
import sys
import textwrap
import warnings

import pytest

import cartridge
from cartridge import CorruptionError, NotACartridgeError

SLOT_OFFSETS = (1024, 2048)
SLOT_SIZE = 256
PAGE = 4096
SYNC_MODES = ["full", "normal", "off"]


def sample_content() -> dict[str, bytes]:
    """Files of every storage class: empty, inline, one page, a few chunks, many chunks."""
    out = {}
    for i, n in enumerate([0, 1, 100, 3000, 4097, 65536, 65537, 300_000, 2_500_000]):
        out[f"/d{i % 3}/f{i}.bin"] = bytes((i * 31 + k) % 251 for k in range(min(n, 1000))) * (
            n // 1000) + bytes(n % 1000)
    for i in range(200):
        out[f"/many/{i:04d}"] = b"x%d" % i * (i % 13)
    return out


def read_all(c) -> dict[str, bytes]:
    return {info.path: c.read(info.path) for info in c.scan("/")}


def slot_generations(path: str) -> list[int]:
    with open(path, "rb") as f:
        page0 = f.read(PAGE)
    return [struct.unpack_from("<Q", page0, o + 8)[0] for o in SLOT_OFFSETS]


def damage(path: str, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def run_child(code: str, *args) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p


# -- close / reopen ---------------------------------------------------------------------------
@pytest.mark.parametrize("sync", SYNC_MODES)
def test_reopen_after_close_keeps_everything(tmp_path, sync):
    path = str(tmp_path / "a.cart")
    want = sample_content()
    with cartridge.open(path, "x", sync=sync) as c:
        for p, data in want.items():
            c.write(p, data)
        with c.transaction():
            c.write("/txn/a", b"a" * 5000)
            c.write("/txn/b", b"b")
        c.mkdir("/empty/dir", parents=True)
        c.delete("/d0/f0.bin")
        c.rename("/d1/f1.bin", "/moved/f1.bin")
        want["/txn/a"] = b"a" * 5000
        want["/txn/b"] = b"b"
        want["/moved/f1.bin"] = want.pop("/d1/f1.bin")
        del want["/d0/f0.bin"]
        gen = c.info()["generation"]
    # close() may add one commit that saves pages freed meanwhile as free (FORMAT §8, Settling:
    # with sync="normal" the pages of every commit since the last sync wait for it)
    assert max(slot_generations(path)) in (gen, gen + 1)
    gen = max(slot_generations(path))
    for mode in ("r", "a"):
        with cartridge.open(path, mode, sync=sync) as c:
            assert read_all(c) == want
            assert c.isdir("/empty/dir")
            assert c.info()["generation"] == gen
            assert c.info()["files"] == len(want)
            rep = c.verify()
            assert rep.ok, rep.problems


@pytest.mark.parametrize("sync", SYNC_MODES)
def test_reopen_many_times_with_changes_in_between(tmp_path, sync):
    path = str(tmp_path / "a.cart")
    want: dict[str, bytes] = {}
    for round_ in range(6):
        with cartridge.open(path, "a", sync=sync) as c:
            assert read_all(c) == want
            for i in range(20):
                p = f"/r/{(round_ * 7 + i) % 30}"
                data = os.urandom((round_ * 1000 + i * 3777) % 90_000)
                c.write(p, data)
                want[p] = data
            if round_ % 2:
                victim = sorted(want)[round_]
                c.delete(victim)
                del want[victim]
    with cartridge.open(path, "r") as c:
        assert read_all(c) == want
        assert c.verify().ok


def test_garbage_collected_handle_keeps_committed_data(tmp_path):
    path = str(tmp_path / "a.cart")

    def writer():
        c = cartridge.open(path, "a", sync="off")
        c.write("/a", b"alpha")
        c.write("/big", b"B" * 200_000)
        with c.transaction():
            c.write("/t1", b"1")
            c.write("/t2", b"2")
        # no close(): the handle just goes away

    writer()
    gc.collect()
    with cartridge.open(path, "a", timeout=5) as c:   # the lock went with the handle
        assert c.read("/a") == b"alpha"
        assert c.read("/big") == b"B" * 200_000
        assert c.read("/t1") + c.read("/t2") == b"12"
        assert c.verify().ok


def test_garbage_collected_handle_in_reference_cycle(tmp_path):
    path = str(tmp_path / "a.cart")
    c = cartridge.open(path, "a")
    c.write("/a", b"alpha")
    holder = {"cart": c}
    holder["self"] = holder         # a cycle: freed only by the cycle collector
    del c, holder
    gc.collect()
    with cartridge.open(path, "a", timeout=5) as c2:
        assert c2.read("/a") == b"alpha"


# -- killed processes ---------------------------------------------------------------------------
KILLED = """
    import os, sys, cartridge
    path, sync = sys.argv[1], sys.argv[2]
    c = cartridge.open(path, "a", sync=sync)
    for i in range(50):
        c.write(f"/k/{i}", bytes([i]) * (i * 2311))
    with c.transaction():
        c.write("/txn/1", b"one")
        c.write("/txn/2", b"two" * 30000)
    c.delete("/k/3")
    c.rename("/k/4", "/k/four")
    # an open, uncommitted transaction and an unfinished stream die with the process
    t = c.transaction(); t.__enter__()
    c.write("/uncommitted", b"never")
    os._exit(0)
"""


@pytest.mark.parametrize("sync", SYNC_MODES)
def test_committed_data_survives_killed_process(tmp_path, sync):
    """os._exit without close: every commit that returned is there, nothing uncommitted is."""
    path = str(tmp_path / "a.cart")
    run_child(KILLED, path, sync)
    with cartridge.open(path, "r") as c:
        rep = c.verify()
        assert rep.ok, rep.problems
        for i in range(50):
            if i == 3:
                assert not c.exists("/k/3")
            elif i == 4:
                assert c.read("/k/four") == bytes([4]) * (4 * 2311)
            else:
                assert c.read(f"/k/{i}") == bytes([i]) * (i * 2311)
        assert c.read("/txn/1") == b"one"
        assert c.read("/txn/2") == b"two" * 30000
        assert not c.exists("/uncommitted")
    with cartridge.open(path, "a") as c:              # the lock died with the process
        c.write("/after", b"ok")
        assert c.verify().ok


def test_killed_during_create_leaves_no_file_or_valid_archive(tmp_path):
    path = str(tmp_path / "a.cart")
    run_child("""
        import os, sys, cartridge
        c = cartridge.open(sys.argv[1], "x", sync="off")
        os._exit(0)
    """, path)
    with cartridge.open(path, "r") as c:
        assert c.listdir("/") == []
        assert c.verify().ok


# -- generations and root slots -------------------------------------------------------------------
def test_generation_counts_commits(tmp_path):
    path = str(tmp_path / "a.cart")
    c = cartridge.open(path, "x")
    g0 = c.info()["generation"]
    assert g0 >= 1
    for i in range(10):
        c.write(f"/f{i}", b"x" * i * 1000)
    assert c.info()["generation"] == g0 + 10
    with c.transaction():                          # one transaction: one commit
        for i in range(5):
            c.write(f"/t{i}", b"t")
    assert c.info()["generation"] == g0 + 11
    with pytest.raises(RuntimeError):              # a rolled back transaction commits nothing
        with c.transaction():
            c.write("/never", b"n")
            raise RuntimeError("boom")
    assert c.info()["generation"] == g0 + 11
    c.commit()                                     # nothing changed: no new generation
    assert c.info()["generation"] == g0 + 11
    c.delete("/f3")
    c.close()
    gens = slot_generations(path)
    assert max(gens) == g0 + 12
    assert sorted(gens) == [g0 + 11, g0 + 12]      # the two slots alternate
    with cartridge.open(path, "r") as r:
        assert r.info()["generation"] == g0 + 12


def _two_states(path: str):
    """An archive whose newest commit (deleting /a, writing /b) follows a known state."""
    with cartridge.open(path, "x") as c:
        c.write("/a", b"A" * 100_000)
        c.write("/keep", b"keep")
        prev_gen = c.info()["generation"]
        with c.transaction():
            c.delete("/a")
            c.write("/b", b"B" * 200_000)
            c.write("/keep", b"changed")
    gens = slot_generations(path)
    assert max(gens) == prev_gen + 1
    return prev_gen, gens


def _newest_slot_offset(path: str) -> int:
    gens = slot_generations(path)
    return SLOT_OFFSETS[gens.index(max(gens))]


@pytest.mark.parametrize("how", ["zero", "flip", "garbage"])
def test_damaged_newest_slot_falls_back_to_previous_commit(tmp_path, how):
    path = str(tmp_path / "a.cart")
    prev_gen, _ = _two_states(path)
    off = _newest_slot_offset(path)
    if how == "zero":
        damage(path, off, bytes(SLOT_SIZE))
    elif how == "flip":
        with open(path, "rb") as f:
            f.seek(off + 40)
            b = f.read(1)
        damage(path, off + 40, bytes([b[0] ^ 0x10]))
    else:
        damage(path, off, os.urandom(SLOT_SIZE))
    for mode in ("r", "a"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            c = cartridge.open(path, mode)
        try:
            msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
            # a zeroed slot counts as damaged too: from generation 2 on both slots are written
            assert any("damaged" in m for m in msgs), msgs
            assert c.info()["generation"] == prev_gen
            assert c.read("/a") == b"A" * 100_000
            assert c.read("/keep") == b"keep"
            assert not c.exists("/b")
            rep = c.verify()
            # verify() reports the damaged slot itself, and nothing else
            assert rep.problems and all("root slot" in p for p in rep.problems), rep.problems
            assert any("damaged" in w for w in rep.warnings)
        finally:
            c.close()


def test_damaged_newest_slot_warns_even_when_zeroed_garbage(tmp_path):
    """Bytes that fail the checksum are reported as damaged."""
    path = str(tmp_path / "a.cart")
    prev_gen, _ = _two_states(path)
    off = _newest_slot_offset(path)
    damage(path, off + 100, b"\xff" * 8)
    with pytest.warns(RuntimeWarning, match="damaged"):
        c = cartridge.open(path, "r")
    with c:
        assert c.info()["generation"] == prev_gen


def test_zero_second_slot_of_a_new_archive_is_not_damage(tmp_path):
    """Creation writes generation 1 into one slot; the other stays zero and is not reported."""
    path = str(tmp_path / "new.cart")
    cartridge.open(path, "x").close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with cartridge.open(path, "r") as c:
            if c.info()["generation"] == 1:
                assert c.verify().ok


def test_reader_refresh_reports_a_fallback(tmp_path):
    """A reader that moves on to a newer state and meets a damaged newest slot says so too."""
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "a") as w:
        w.write("/x", b"1")
        with cartridge.open(path, "r") as r:
            assert r.read("/x") == b"1"
            w.write("/x", b"2")
            w.write("/x", b"3")
            damage(path, _newest_slot_offset(path) + 40, b"\xff\xfe")
            with pytest.warns(RuntimeWarning, match="damaged"):
                assert r.read("/x") == b"2"
            assert any("damaged" in m for m in r.verify().warnings)


def test_writer_continues_after_fallback(tmp_path):
    path = str(tmp_path / "a.cart")
    prev_gen, _ = _two_states(path)
    damage(path, _newest_slot_offset(path) + 16, b"\x00\x01\x02\x03")
    with pytest.warns(RuntimeWarning, match="damaged"):
        c = cartridge.open(path, "a")
    with c:
        for i in range(5):
            c.write(f"/new/{i}", os.urandom(50_000 + i))
        c.write("/a", b"rewritten")
        assert c.info()["generation"] == prev_gen + 6
        assert c.verify().ok
    with warnings.catch_warnings():
        warnings.simplefilter("error")             # both slots are valid again: no warning
        with cartridge.open(path, "r") as r:
            assert r.read("/a") == b"rewritten"
            assert len(r.listdir("/new")) == 5
            assert r.verify().ok


def test_damaged_older_slot_opens_newest_with_warning(tmp_path):
    path = str(tmp_path / "a.cart")
    prev_gen, gens = _two_states(path)
    older = SLOT_OFFSETS[gens.index(min(gens))]
    damage(path, older + 8, b"\x99" * 8)
    with pytest.warns(RuntimeWarning, match="damaged"):
        c = cartridge.open(path, "r")
    with c:
        assert c.info()["generation"] == prev_gen + 1
        assert c.read("/b") == b"B" * 200_000


@pytest.mark.parametrize("mode", ["r", "a"])
def test_both_slots_damaged_is_corruption(tmp_path, mode):
    path = str(tmp_path / "a.cart")
    _two_states(path)
    for off in SLOT_OFFSETS:
        damage(path, off + 24, b"\xde\xad\xbe\xef")
    with pytest.raises(CorruptionError):
        cartridge.open(path, mode)


def test_both_slots_zeroed_is_corruption(tmp_path):
    path = str(tmp_path / "a.cart")
    _two_states(path)
    for off in SLOT_OFFSETS:
        damage(path, off, bytes(SLOT_SIZE))
    with pytest.raises(CorruptionError):
        cartridge.open(path, "r")


@pytest.mark.parametrize("keep_pages", ["half", "minus_one", "one_page_and_a_bit"])
def test_truncated_file_is_corruption(tmp_path, keep_pages):
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "x") as c:
        for i in range(20):
            c.write(f"/f{i}", os.urandom(100_000))
        pages = c.info()["pages"]
    size = os.path.getsize(path)
    assert size >= pages * PAGE
    new_size = {"half": (pages // 2) * PAGE, "minus_one": (pages - 1) * PAGE,
                "one_page_and_a_bit": PAGE + 100}[keep_pages]
    os.truncate(path, new_size)
    for mode in ("r", "a"):
        with pytest.raises(CorruptionError):
            cartridge.open(path, mode)


def test_truncated_below_header_is_not_a_cartridge(tmp_path):
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "x") as c:
        c.write("/f", b"x")
    os.truncate(path, 1000)
    with pytest.raises(NotACartridgeError):
        cartridge.open(path, "r")
