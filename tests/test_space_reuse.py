"""Freed space is reused when every process commits once per open (every CLI write does): the
writer at close, or the next one at open, saves the pages its commits freed as free with one
small commit, unless a reader still pins the state they belong to (issue 19, item 4)."""
from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import textwrap
import warnings

import pytest

import cartridge
from cartridge.testing.crash import CrashRecorder

MIB = 1 << 20
BIG = 4 * MIB


def one_commit(path: str, fn, **kw) -> None:
    with cartridge.open(path, "a", **kw) as c:
        fn(c)


def pending(path: str) -> int:
    with cartridge.open(path, "r") as c:
        return c.info()["pending_pages"]


@pytest.mark.parametrize("sync", ["full", "normal"])
def test_one_commit_opens_keep_the_file_bounded(tmp_path, sync):
    p = str(tmp_path / "a.cart")
    rng = random.Random(1)
    sizes = []
    for _ in range(8):
        data = rng.randbytes(BIG)
        one_commit(p, lambda c, data=data: c.write("/big", data), sync=sync)
        sizes.append(os.path.getsize(p))
    # two copies' worth once the file has doubled (a third while sync="normal" lags one open)
    copies = 3 if sync == "normal" else 2
    assert sizes[-1] <= 2 * copies * BIG + MIB, sizes
    assert sizes[-1] == sizes[copies], sizes             # no growth after the first reuse
    with cartridge.open(p, "r") as c:
        assert c.read("/big") == data
        assert c.verify().ok


def test_rm_r_then_put_reuses_the_space(tmp_path):
    p = str(tmp_path / "a.cart")
    rng = random.Random(2)
    files = {f"/d/{i}": rng.randbytes(rng.choice([3000, 70_000, 300_000])) for i in range(40)}
    files["/d/big"] = rng.randbytes(BIG)
    one_commit(p, lambda c: c.write_many(sorted(files.items())))
    size = os.path.getsize(p)
    one_commit(p, lambda c: c.delete("/d", recursive=True))
    assert pending(p) < 64                      # the deleted pages are free, not pending
    one_commit(p, lambda c: c.write_many(sorted(files.items())))
    assert os.path.getsize(p) == size
    with cartridge.open(p, "r") as c:
        assert c.read("/d/big") == files["/d/big"]
        assert c.verify().ok


def test_next_writer_settles_what_a_killed_one_left(tmp_path):
    """A writer that never closed (killed) leaves its frees pending; the next writer settles
    them at open, so its own commit can reuse them."""
    p = str(tmp_path / "a.cart")
    one_commit(p, lambda c: c.write("/big", b"1" * BIG))
    code = textwrap.dedent("""
        import os, sys, cartridge
        c = cartridge.open(sys.argv[1], "a")
        c.write("/big", b"2" * (4 << 20))
        os._exit(0)                                 # no close
    """)
    subprocess.run([sys.executable, "-c", code, p], check=True,
                   env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert pending(p) >= BIG // 4096
    size = os.path.getsize(p)
    one_commit(p, lambda c: c.write("/big", b"3" * BIG))
    assert os.path.getsize(p) == size
    with cartridge.open(p, "r") as c:
        assert c.read("/big") == b"3" * BIG and c.verify().ok


@pytest.mark.parametrize("sync", ["full", "normal"])
def test_every_cut_of_the_close_time_commit(tmp_path, sync):
    """A crash anywhere in close (the settling commit, the unsealing) leaves the state the last
    commit returned with, and an archive that verifies."""
    p = str(tmp_path / "a.cart")
    rng = random.Random(3)
    old = rng.randbytes(2 * MIB)
    one_commit(p, lambda c: (c.write("/big", old), c.write("/s", b"s")), sync=sync)
    new = rng.randbytes(2 * MIB)
    c = cartridge.open(p, "a", sync=sync)
    rec = CrashRecorder(c)
    c.write("/big", new)
    mark_big = len(rec.log)
    c.write("/s", b"s2")         # (sync="normal" saves a commit's frees one commit later)
    mark = len(rec.log)
    c.close()
    rec.detach()
    assert len(rec.log) > mark + 2               # close really committed again
    img_path = str(tmp_path / "img.cart")
    seen = set()
    models = [("killed", None), ("power", None)] + [("power", random.Random(s)) for s in range(3)]
    for model, mrng in models:
        for cut in range(mark, len(rec.log) + 1):
            img = rec.image(cut, model, mrng)
            if img in seen:
                continue
            seen.add(img)
            with open(img_path, "wb") as f:
                f.write(img)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with cartridge.open(img_path, "r") as r:
                    # sync="normal" may lose the commits since its last sync to a power cut
                    # (here: both, until close syncs), never one before it, never half of one
                    states = [(new, b"s2")]
                    if model == "power" and sync == "normal":
                        synced = rec.durable_point(cut, model)
                        if synced < mark:
                            states.append((new, b"s"))
                        if synced < mark_big:
                            states.append((old, b"s"))
                    assert (r.read("/big"), r.read("/s")) in states, (model, cut)
                    assert r.verify().ok, (model, cut)
                with cartridge.open(img_path, "a") as w:    # and a writer goes on from there
                    w.write("/t", b"t")
                    assert w.verify().ok
    with cartridge.open(p, "r") as r:
        assert r.read("/big") == new
    assert pending(p) < 64


def test_a_reader_pinning_the_old_state_keeps_its_pages(tmp_path):
    p = str(tmp_path / "a.cart")
    old = random.Random(4).randbytes(BIG)
    one_commit(p, lambda c: c.write("/big", old))
    reader = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import hashlib, sys, cartridge
            with cartridge.open(sys.argv[1], "r") as c, c.open("/big", "rb") as f:
                h = hashlib.sha256(f.read(4096))
                print("pinned", flush=True)
                sys.stdin.readline()
                h.update(f.read())
                print(h.hexdigest(), flush=True)
        """), p],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert reader.stdout.readline().strip() == "pinned"
        # replace it, then write more: the old pages must not be handed out meanwhile
        one_commit(p, lambda c: c.write("/big", b"n" * BIG))
        assert pending(p) >= BIG // 4096
        one_commit(p, lambda c: c.write("/other", b"o" * BIG))
        one_commit(p, lambda c: c.write("/third", b"t" * BIG))
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == hashlib.sha256(old).hexdigest()
        assert reader.wait(timeout=60) == 0
    finally:
        if reader.poll() is None:
            reader.kill()
        reader.wait()
    # the reader is gone: the next writer settles them, and its write reuses them
    size = os.path.getsize(p)
    one_commit(p, lambda c: c.write("/fourth", b"f" * BIG))
    assert os.path.getsize(p) == size
    assert pending(p) < 64
