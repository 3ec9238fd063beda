"""Catalog scale: a million entries (slow) and 20,000 (default tier): build in a few big
transactions, random lookups, listdir of a 1,000-child directory, prefix scans, verify, reopen,
delete half, verify again. Wall times are printed (run with -s to see them); nothing asserts on
time."""
from __future__ import annotations

import random
import time

import pytest

import cartridge

PER_DIR = 1000


def name(i: int) -> str:
    return f"/d{i // PER_DIR:04d}/f{i % PER_DIR:04d}"


def content(i: int) -> bytes:
    """A third of the files hold a few bytes (inline), the rest are empty."""
    return b"%d" % i if i % 3 == 0 else b""


class Clock:
    def __init__(self, label: str):
        self.label = label
        self.rows: list[tuple[str, float]] = []
        self.t0 = time.perf_counter()
        self.t = self.t0

    def lap(self, what: str) -> None:
        now = time.perf_counter()
        self.rows.append((what, now - self.t))
        self.t = now

    def report(self) -> None:
        print(f"\n{self.label}: wall times")
        for what, dt in self.rows:
            print(f"  {what:<40} {dt:8.2f} s")
        print(f"  {'total':<40} {time.perf_counter() - self.t0:8.2f} s")


def run_scale(path: str, n: int, txn_size: int, n_lookups: int) -> None:
    clock = Clock(f"{n:,} entries")
    rnd = random.Random(n)
    n_dirs = -(-n // PER_DIR)
    # audit="off": the catalog counts below are the files' (the log adds an index entry per path)
    with cartridge.open(path, "x", sync="off", audit="off") as c:
        for lo in range(0, n, txn_size):
            with c.transaction():
                for i in range(lo, min(n, lo + txn_size)):
                    c.write(name(i), content(i))
        clock.lap(f"build ({-(-n // txn_size)} transactions)")
        info = c.info()
        assert info["files"] == n
        assert info["catalog_entries"] == n
        print(f"\ncatalog height {info['catalog_height']}, file {info['file_size']:,} B "
              f"({info['file_size'] / n:.0f} B/entry)")

        picks = [rnd.randrange(n) for _ in range(n_lookups)]
        for i in picks:
            assert c.read(name(i)) == content(i)
        clock.lap(f"{n_lookups:,} random reads")
        for i in picks:
            assert c.exists(name(i))
            assert not c.exists(name(i) + "x")
        clock.lap(f"{2 * n_lookups:,} exists (hit + miss)")
        for i in picks:
            st = c.stat(name(i))
            assert st.size == len(content(i)) and st.is_file
        clock.lap(f"{n_lookups:,} stat")

        d = rnd.randrange(n_dirs - 1) if n_dirs > 1 else 0
        kids = c.listdir(f"/d{d:04d}")
        assert kids == [f"f{k:04d}" for k in range(PER_DIR)]
        top = c.listdir("/")
        assert top == [f"d{k:04d}" for k in range(n_dirs)]
        clock.lap(f"listdir 1,000 children + root ({n_dirs} dirs)")

        infos = list(c.scan(f"/d{d:04d}/"))
        assert [fi.path for fi in infos] == [name(d * PER_DIR + k) for k in range(PER_DIR)]
        assert [fi.size for fi in infos] == [len(content(d * PER_DIR + k)) for k in range(PER_DIR)]
        sub = list(c.scan(f"/d{d:04d}/f05"))
        assert len(sub) == 100
        clock.lap("scan of a 1,000-entry prefix")

        rep = c.verify(deep=False)
        assert rep.ok, rep.problems[:10]
        clock.lap("verify(deep=False)")

    with cartridge.open(path, "a", sync="off") as c:
        clock.lap("reopen")
        assert c.info()["files"] == n
        for i in picks[:1000]:
            assert c.read(name(i)) == content(i)
        clock.lap("1,000 reads after reopen (cold)")
        for lo in range(0, n, txn_size):
            with c.transaction():
                for i in range(lo + 1, min(n, lo + txn_size), 2):
                    c.delete(name(i))
        clock.lap("delete every other entry")
        assert c.info()["files"] == n - n // 2
        for i in picks[:2000]:
            assert c.exists(name(i)) == (i % 2 == 0)
            if i % 2 == 0:
                assert c.read(name(i)) == content(i)
        assert len(c.listdir(f"/d{d:04d}")) == PER_DIR // 2
        clock.lap("2,000 lookups after delete")
        rep = c.verify(deep=False)
        assert rep.ok, rep.problems[:10]
        clock.lap("verify(deep=False) after delete")
        info = c.info()
        print(f"after delete: catalog height {info['catalog_height']}, "
              f"file {info['file_size']:,} B, free pages {info['free_pages']:,}")
    with cartridge.open(path, "r") as c:
        assert c.info()["files"] == n - n // 2
        assert c.read(name(0)) == content(0)
    clock.report()


def test_scale_20k(tmp_path):
    run_scale(str(tmp_path / "a.cart"), 20_000, 10_000, 5_000)


@pytest.mark.slow
def test_scale_1m(tmp_path):
    run_scale(str(tmp_path / "a.cart"), 1_000_000, 100_000, 20_000)
