"""Operating-system errors during a commit (disk full, EIO): before the root flip the call
rolls back and the handle stays usable; during the flip the handle refuses further use. The file
on disk stays consistent either way."""
from __future__ import annotations

import errno
import os

import pytest

import cartridge
from cartridge._handle import engine


class FailingOS:
    """`os` for cartridge.pager that raises EIO on the n-th call of one function."""

    def __init__(self, func: str, nth: int):
        self.func = func
        self.left = nth

    def __getattr__(self, name):
        real = getattr(os, name)
        if name != self.func:
            return real

        def call(*args):
            self.left -= 1
            if self.left == 0:
                raise OSError(errno.EIO, f"injected failure in {name}")
            return real(*args)
        return call


def state(path):
    with cartridge.open(path, "r") as c:
        assert c.verify().ok
        return {i.path: c.read(i.path) for i in c.scan("/")}


@pytest.mark.parametrize("func", ["pwrite", "pwritev", "fdatasync"])
def test_failure_before_the_root_flip_rolls_back(tmp_path, func):
    path = str(tmp_path / "a.cart")
    c = cartridge.open(path, "w", sync="full")
    c.write("/keep", b"k" * 10_000)
    engine(c).pager.io = FailingOS(func, 1)
    # staged pages of a commit go out coalesced (pwritev); content runs over 1 MiB are written
    # at once with pwrite: each size makes the first call of its kind a data write
    # (and with 2 MB the commit is too large to seal, so its barrier fdatasync comes first)
    size = 2_000_000 if func in ("pwrite", "fdatasync") else 100_000
    with pytest.raises(OSError, match="injected"):
        # a transaction so that content pages, nodes and the barrier all happen in commit
        with c.transaction():
            c.write("/new", os.urandom(size))
            c.delete("/keep")
    engine(c).pager.io = os
    assert c.read("/keep") == b"k" * 10_000 and not c.exists("/new")
    c.write("/after", b"a")                      # the handle goes on working
    assert c.verify().ok
    c.close()
    assert state(path) == {"/keep": b"k" * 10_000, "/after": b"a"}


@pytest.mark.parametrize("size", [1, 2_000_000])
def test_failure_during_the_root_flip_retires_the_handle(tmp_path, size):
    path = str(tmp_path / "a.cart")
    c = cartridge.open(path, "w", sync="full")
    c.write("/keep", b"k")
    # a small commit is sealed: its only fdatasync follows the root slot write; a large one
    # syncs its pages first, so there it is the second
    engine(c).pager.io = FailingOS("fdatasync", 1 if size == 1 else 2)
    with pytest.raises(OSError, match="injected"):
        c.write("/new", b"n" * size)
    engine(c).pager.io = os
    with pytest.raises(cartridge.CartridgeError, match="reopen"):
        c.read("/keep")
    with pytest.raises(cartridge.CartridgeError, match="reopen"):
        c.write("/more", b"m")
    c.close()
    # the root write itself went through, so the commit is there; either way it is whole
    assert state(path) in ({"/keep": b"k"}, {"/keep": b"k", "/new": b"n" * size})


def test_direct_write_is_not_overwritten_by_older_staged_bytes(tmp_path):
    """A page staged for a file that the same transaction then freed may be reused by a large
    write that goes to disk at once; the stale staged bytes must not land on top of it later."""
    c = cartridge.open(str(tmp_path / "a.cart"), "w", sync="off")
    pager = engine(c).pager
    pager.grow(400)
    pager.stage(250, b"stale" * 800)                # small content, not yet written
    big = os.urandom(50 * 4096)
    pager.write_at(240, big)                        # a large run over the same page, written now
    pager.flush_staged()                            # the commit's flush
    assert os.pread(engine(c).fd, len(big), 240 * 4096) == big
    c.close()


def test_close_of_a_retired_handle_with_open_streams(tmp_path):
    """A handle retired by a failed root flip closes cleanly with a read stream and a write
    stream still open (it used to raise AttributeError on the reader and keep the write lock);
    the unpublished writer leaves nothing behind."""
    path = str(tmp_path / "a.cart")
    c = cartridge.open(path, "w", sync="full")
    c.write("/keep", b"k")
    r = c.open("/keep", "rb")
    w = c.open("/w", "wb")
    w.write(b"x" * 100_000)
    engine(c).pager.io = FailingOS("fdatasync", 1)
    with pytest.raises(OSError, match="injected"):
        c.write("/new", b"n")
    engine(c).pager.io = os
    c.close()
    assert c.closed and r.closed
    with cartridge.open(path, "a") as again:        # the write lock was released
        assert not again.exists("/w") and again.read("/keep") == b"k"
        assert again.verify().ok
