"""The C kernels of the per-statement VFS calls (cartridge/_core/vfslock.pyx, Overlay.vfs_size)
against the Python methods they stand for: the same random operation streams (several
connections on one database, autocommit and explicit transactions, busy locks, archive writes,
archive transactions rolled back, an injected I/O error, a closed archive, a read-only handle)
run once with the kernels and once with FAST_CALLS off, and every step's outcome and the lock
table must agree."""
from __future__ import annotations

import errno
import os
import random

import apsw
import pytest

import cartridge
from cartridge._core.vfslock import AccessKernel, Const, FileKernel, LockState
from cartridge._handle import engine
from cartridge.sqlite import connection as C
from cartridge.sqlite import vfs as V


class FailingOS:
    """`os` for the pager raising EIO on the n-th pwrite/pwritev (then working again)."""

    def __init__(self, nth: int):
        self.left = nth

    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in ("pwrite", "pwritev"):
            return real

        def call(*args):
            self.left -= 1
            if self.left == 0:
                raise OSError(errno.EIO, f"injected failure in {name}")
            return real(*args)
        return call


def _outcome(fn):
    try:
        got = fn()
        return ("ok", None if isinstance(got, apsw.Cursor) else got)
    except Exception as e:
        return ("err", type(e).__name__)


def _locks_state(conns, ident):
    """The lock table (this archive's entries) and each main file's state, files named by
    connection index."""
    files = [C._guards[c].f if c is not None and c in C._guards else None for c in conns]

    def who(x):
        return None if x is None else next((i for i, f in enumerate(files) if f is x), "?")

    table = sorted((str(k[-1]), st.shared, who(st.reserved), who(st.pending), who(st.exclusive))
                   for k, st in V._locks.items() if k[:-1] == ident)
    per = [None if f is None else (f.level, f.committed, f.seen) for f in files]
    return table, per


def _stream(tmp, seed: int, fast: bool) -> list:
    V.FAST_CALLS = fast
    try:
        return _run(tmp, seed)
    finally:
        V.FAST_CALLS = True


def _run(tmp, seed: int) -> list:
    rng = random.Random(seed)
    path = str(tmp / f"s{seed}-{'x' if V.FAST_CALLS else 'r'}.cart")
    cart = cartridge.open(path, "w", sync="off")
    conns = []
    for _ in range(3):
        c = cart.sqlite("/db.sqlite")
        c.setbusytimeout(0)
        conns.append(c)
    conns[0].execute("CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)")
    ident = V.registry(cart).ident
    trace = []
    n = 0
    ro = None
    for step in range(160):
        op = rng.randrange(14)
        i = rng.randrange(3)
        c = conns[i]
        if op <= 3:
            out = _outcome(lambda c=c: c.execute("SELECT count(*), sum(k) FROM t").fetchall())
        elif op <= 5:
            n += 1
            out = _outcome(lambda c=c, n=n: c.execute(
                "INSERT OR REPLACE INTO t VALUES(?, ?)", (n % 40, f"v{n}" * rng.randrange(1, 50))))
        elif op == 6:
            out = _outcome(lambda c=c: c.execute(rng.choice(
                ["BEGIN", "BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"])))
        elif op == 7:
            out = _outcome(lambda c=c: c.execute(rng.choice(["COMMIT", "ROLLBACK"])))
        elif op == 8:
            out = _outcome(lambda: cart.write(f"/f{rng.randrange(5)}", os.urandom(100)))
        elif op == 9:           # an archive transaction holding SQLite commits, rolled back
            def rolled(c=c):
                try:
                    with cart.transaction():
                        c.execute("INSERT OR REPLACE INTO t VALUES(99, 'x')")
                        raise KeyError("roll back")
                except KeyError:
                    return "rolled back"
            out = _outcome(rolled)
        elif op == 10 and step > 20 and rng.random() < 0.3:     # EIO at the next write
            engine(cart).pager.io = FailingOS(1)
            out = ("inject", None)
        elif op == 11:
            engine(cart).pager.io = os
            out = _outcome(lambda: cart.exists("/db.sqlite"))
        elif op == 12:          # a read-only handle's connection (the Python path: pins)
            def ro_read():
                nonlocal ro
                if ro is None:
                    ro = cartridge.open(path, "r")
                r = ro.sqlite("/db.sqlite")
                try:
                    return r.execute("SELECT count(*) FROM t").fetchall()
                finally:
                    r.close()
            out = _outcome(ro_read)
        else:                   # a connection closes and a new one takes its place
            def reopen(i=i):
                conns[i].close()
                conns[i] = cart.sqlite("/db.sqlite")
                conns[i].setbusytimeout(0)
                return True
            out = _outcome(reopen)
        trace.append((step, op, i, out, _locks_state(conns, ident)))
    engine(cart).pager.io = os
    trace.append(("final", _outcome(lambda: conns[1].execute("SELECT * FROM t").fetchall())))
    cart.close()                # the archive closes under open connections
    trace.append(("closed", [_outcome(lambda c=c: c.execute("SELECT 1 FROM t").fetchall())
                             for c in conns]))
    for c in conns:
        c.close()
    if ro is not None:
        ro.close()
    # what is left in the lock table (an empty entry after a failed SHARED lock is the Python
    # methods' behaviour too): compared, then dropped
    ours = [k for k in V._locks if k[:-1] == ident]
    trace.append(("left", sorted((k[-1], V._locks[k].shared, V._locks[k].reserved is None,
                                  V._locks[k].pending is None) for k in ours)))
    for k in ours:
        del V._locks[k]
    return trace


@pytest.mark.parametrize("seed", range(4))
def test_kernels_match_the_python_methods(tmp_path, seed):
    fast = _stream(tmp_path, seed, True)
    ref = _stream(tmp_path, seed, False)
    assert len(fast) == len(ref)
    for a, b in zip(fast, ref):
        assert a == b
    kinds = {x[3][0] for x in fast if len(x) == 5}
    assert "ok" in kinds            # the stream did something


def test_kernels_are_installed_and_switch_off(tmp_path):
    with cartridge.open(str(tmp_path / "a.cart"), "w") as cart:
        conn = cart.sqlite("/d.db")
        conn.execute("CREATE TABLE t(x)")
        f = C._guards[conn].f
        assert type(f.__dict__["xLock"].__self__) is FileKernel
        assert type(f.__dict__["xDeviceCharacteristics"]) is Const
        vfs = V.handle_vfs(V.registry(cart))
        assert type(vfs.__dict__["xAccess"]) is AccessKernel
        conn.close()
        V.FAST_CALLS = False
        try:
            conn = cart.sqlite("/d.db")
            f = C._guards[conn].f
            assert "xLock" not in f.__dict__ and "xFileSize" not in f.__dict__
            conn.execute("SELECT * FROM t").fetchall()
            conn.close()
        finally:
            V.FAST_CALLS = True


def test_lock_state_and_const():
    st = LockState()
    assert (st.shared, st.reserved, st.pending, st.exclusive) == (0, None, None, None)
    st.shared += 2
    assert st.shared == 2
    assert Const(7)() == 7


def test_busy_through_the_kernel(tmp_path):
    """A reader's SHARED lock against a writer holding EXCLUSIVE: BusyError, lock table intact."""
    with cartridge.open(str(tmp_path / "a.cart"), "w") as cart:
        a = cart.sqlite("/d.db")
        b = cart.sqlite("/d.db")
        b.setbusytimeout(0)
        a.execute("CREATE TABLE t(x)")
        assert b.execute("SELECT * FROM t").fetchall() == []     # b has read the schema
        a.execute("BEGIN EXCLUSIVE")
        a.execute("INSERT INTO t VALUES(1)")
        with pytest.raises(apsw.BusyError):
            b.execute("SELECT * FROM t").fetchall()
        fb = C._guards[b].f
        assert fb.level == 0
        a.execute("COMMIT")
        assert b.execute("SELECT * FROM t").fetchall() == [(1,)]
        assert fb.level == 0
        a.close()
        ident = V.registry(cart).ident
        b.close()
    assert not [k for k in V._locks if k[:-1] == ident]
