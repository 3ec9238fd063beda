"""Cross-process behaviour: one writer (OFD write lock, LockedError / timeout), readers that are
never blocked and always see one committed state, reader generation pins that keep recycled
pages away from readers, and writers killed with SIGKILL.

Child processes are plain `python -c` subprocesses, so the tests do not depend on how
multiprocessing starts its workers.
"""
from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import cartridge
from cartridge import LockedError

HEADER = struct.Struct("<QQ")


# -- helpers ------------------------------------------------------------------------------------
def spawn(code: str, *args, stdin=False) -> subprocess.Popen:
    """Start `python -c code args...` with a piped stdout (text) and optionally stdin."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        stdout=subprocess.PIPE, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, bufsize=1)


def expect_line(proc: subprocess.Popen, want: str, timeout: float = 30.0) -> str:
    """Read lines from the child until one equals `want` (fails if the child dies first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read()
            raise AssertionError(f"child exited (rc={proc.wait()}) before printing {want!r}:\n{err}")
        if line.strip() == want:
            return line
    raise AssertionError(f"child did not print {want!r} within {timeout}s")


class ChildFailed(AssertionError):
    """A child process exited with an error (its stderr is in the message)."""


def finish(proc: subprocess.Popen, timeout: float = 60.0) -> str:
    """Wait for a child, assert it succeeded, return the rest of its stdout.

    Reads through proc.stdout (not communicate(), which reads the raw pipe and would lose lines
    already buffered by an earlier readline())."""
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        out = proc.stdout.read()
        err = proc.stderr.read()
        proc.wait()
    finally:
        timer.cancel()
    if proc.returncode != 0:
        raise ChildFailed(f"child failed (rc={proc.returncode}):\n{err}")
    return out


def kill(proc: subprocess.Popen) -> None:
    """Make sure a child is gone (cleanup)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    for f in (proc.stdout, proc.stderr, proc.stdin):
        if f is not None:
            f.close()


def payload(name: str, version: int, n: int) -> bytes:
    """Self-describing content: (version, length) header then bytes derived from both."""
    if n < HEADER.size:
        return HEADER.pack(version, n)[:n]
    r = random.Random(f"{name}:{version}:{n}")
    return HEADER.pack(version, n) + r.randbytes(n - HEADER.size)


# A child that holds the write lock until stdin says "close" (or forever if killed).
HOLDER = """
    import sys, cartridge
    c = cartridge.open(sys.argv[1], "a")
    c.write("/held", b"by child")
    print("ready", flush=True)
    cmd = sys.stdin.readline().strip()
    if cmd.startswith("sleep"):
        import time; time.sleep(float(cmd.split()[1]))
    if cmd != "exit-no-close":
        c.close()
        print("closed", flush=True)
    else:
        import os; os._exit(0)
"""


# -- the write lock ------------------------------------------------------------------------------
def test_second_writer_in_other_process_gets_locked_error_at_once(tmp_path):
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "a") as c:
        c.write("/x", b"1")
        probe = """
            import sys, time, cartridge
            t = time.monotonic()
            for mode in ("a", "w"):
                try:
                    cartridge.open(sys.argv[1], mode)
                except cartridge.LockedError as e:
                    assert isinstance(e, BlockingIOError)
                    print(mode, "locked", round(time.monotonic() - t, 3))
                else:
                    print(mode, "OPENED")
            r = cartridge.open(sys.argv[1], "r")      # readers are never refused
            print("reader", r.read("/x").decode())
        """
        out = finish(spawn(probe, path)).split("\n")
        assert out[0].startswith("a locked"), out
        assert out[1].startswith("w locked"), out
        assert float(out[1].split()[2]) < 2.0         # "at once": no waiting without timeout=
        assert out[2] == "reader 1"
        assert c.read("/x") == b"1"                    # the refused "w" truncated nothing


def test_writer_blocked_by_other_process_then_timeout_succeeds(tmp_path):
    path = str(tmp_path / "a.cart")
    cartridge.open(path, "x").close()
    child = spawn(HOLDER, path, stdin=True)
    try:
        expect_line(child, "ready")
        t = time.monotonic()
        with pytest.raises(LockedError):
            cartridge.open(path, "a")
        assert time.monotonic() - t < 2.0
        t = time.monotonic()
        with pytest.raises(LockedError):
            cartridge.open(path, "a", timeout=0.3)
        assert time.monotonic() - t >= 0.25              # it did wait
        child.stdin.write("sleep 0.7\n")
        child.stdin.flush()
        t = time.monotonic()
        with cartridge.open(path, "a", timeout=30) as c:  # waits until the child closes
            waited = time.monotonic() - t
            assert c.read("/held") == b"by child"
            c.write("/mine", b"parent")
        assert waited >= 0.3, waited
        expect_line(child, "closed")
        finish(child)
    finally:
        kill(child)
    with cartridge.open(path, "r") as r:
        assert r.read("/mine") == b"parent"


@pytest.mark.parametrize("how", ["sigkill", "exit-no-close"])
def test_lock_released_when_writer_process_dies(tmp_path, how):
    path = str(tmp_path / "a.cart")
    child = spawn(HOLDER, path, stdin=True)
    try:
        expect_line(child, "ready")
        with pytest.raises(LockedError):
            cartridge.open(path, "a")
        if how == "sigkill":
            child.send_signal(signal.SIGKILL)
        else:
            child.stdin.write("exit-no-close\n")
            child.stdin.flush()
        child.wait(timeout=30)
    finally:
        kill(child)
    with cartridge.open(path, "a") as c:                 # no timeout needed: lock is gone
        assert c.read("/held") == b"by child"
        assert c.verify().ok
        c.write("/after", b"ok")


# -- readers against a writer in another process ------------------------------------------------
# /counter and /copy always hold the same bytes, written in one transaction: N, repeated so that
# the size changes (inline <-> pages) from commit to commit.
PAIR_CODE = """
import cartridge

def content(n):
    return (b"%d;" % n) * (1 + (n % 7) * 3000)

def parse(data):
    n = int(data[:data.index(b";")])
    assert data == content(n), "torn or wrong content"
    return n

def check_pair(r, last):
    # One scan() call sees one committed state: both files must be identical in it. Then two
    # reads (possibly of two states): each self-consistent, /copy never older than /counter,
    # and neither older than what was seen before. Returns the new lower bound.
    infos = {i.path: i for i in r.scan("/")}
    a_, b_ = infos["/counter"], infos["/copy"]
    assert (a_.size, a_.checksum) == (b_.size, b_.checksum), (a_, b_)
    a = parse(r.read("/counter"))
    b = parse(r.read("/copy"))
    assert last <= a <= b, (last, a, b)
    return a
"""

PAIR_WRITER = PAIR_CODE + """
import sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
c = cartridge.open(path, "a", sync="off")
print("ready", flush=True)
n = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    n += 1
    with c.transaction():
        c.write("/counter", content(n))
        c.write("/copy", content(n))
print("last", n, flush=True)
c.close()
"""

PAIR_READER = PAIR_CODE + """
import sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
r = cartridge.open(path, "r")
print("ready", flush=True)
end = time.monotonic() + seconds
last, loops, seen, slowest = 0, 0, set(), 0.0
while time.monotonic() < end:
    t = time.monotonic()
    last = check_pair(r, last)
    slowest = max(slowest, time.monotonic() - t)
    seen.add(last)
    loops += 1
print("done", loops, len(seen), round(slowest, 3), flush=True)
"""


def _pair_ns() -> dict:
    ns: dict = {}
    exec(PAIR_CODE, ns)
    return ns


def test_reader_sees_consistent_monotonic_state_while_other_process_commits(tmp_path):
    """Writer in a child process, reader here, opened while the child holds the write lock."""
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "x") as c:
        c.write("/counter", b"0;")
        c.write("/copy", b"0;")
    check_pair = _pair_ns()["check_pair"]
    child = spawn(PAIR_WRITER, path, 3.0)
    try:
        expect_line(child, "ready")
        with pytest.raises(LockedError):
            cartridge.open(path, "a")
        r = cartridge.open(path, "r")
        last, loops, seen, slowest = 0, 0, set(), 0.0
        try:
            while True:
                done = child.poll() is not None
                t = time.monotonic()
                last = check_pair(r, last)
                slowest = max(slowest, time.monotonic() - t)
                seen.add(last)
                loops += 1
                if done:
                    break
        finally:
            r.close()
        out = finish(child)
    finally:
        kill(child)
    n = int(out.split()[-1])
    print(f"\nreader: {loops} checks, {len(seen)} distinct commits seen of {n}, "
          f"slowest check {slowest * 1000:.1f} ms")
    assert last == n                         # the final state, after the writer closed
    assert len(seen) >= 3, "the reader never saw the writer's commits"
    assert slowest < 10.0, "a reader was blocked by the writer"


def _writer_here_readers_there(path: str, n_readers: int, seconds: float) -> None:
    """Writer in this process committing /counter + /copy pairs, `n_readers` reader processes
    checking them (PAIR_READER) for `seconds`."""
    content = _pair_ns()["content"]
    with cartridge.open(path, "w", sync="off") as w:
        w.write("/counter", b"0;")
        w.write("/copy", b"0;")
        kids = [spawn(PAIR_READER, path, seconds) for _ in range(n_readers)]
        try:
            for k in kids:
                expect_line(k, "ready")
            n = 0
            while any(k.poll() is None for k in kids):
                n += 1
                with w.transaction():
                    w.write("/counter", content(n))
                    w.write("/copy", content(n))
            outs = [finish(k) for k in kids]
        finally:
            for k in kids:
                kill(k)
    for out in outs:
        _, loops, distinct, slowest = out.split()
        print(f"\nchild reader: {loops} checks, {distinct} distinct commits, slowest {slowest}s "
              f"(writer made {n} commits)")
        assert int(distinct) >= 3
        assert float(slowest) < 10.0


def test_reader_in_other_process_runs_while_writer_holds_lock(tmp_path):
    """Writer here, a reader in a child process: it reads throughout the commits."""
    _writer_here_readers_there(str(tmp_path / "a.cart"), 1, 2.5)


@pytest.mark.slow
def test_several_reader_processes_while_writer_commits(tmp_path):
    """Rounds of three reader processes against a fast writer. Regression: readers used to get
    CorruptionError in about every other round when oldest_pin_below() trusted F_OFD_GETLK to
    report the lowest pin (it reports the first in the kernel's list)."""
    for i in range(5):
        _writer_here_readers_there(str(tmp_path / f"a{i}.cart"), 3, 2.0)


def test_reader_opened_before_commit_sees_it_on_next_call(tmp_path):
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "a") as w:
        w.write("/v", b"v0")
    writer = """
        import sys, cartridge
        with cartridge.open(sys.argv[1], "a") as c:
            c.write("/v", sys.argv[2].encode())
            c.write("/new/" + sys.argv[2], b"x" * 200_000)
            if c.exists("/gone"):
                c.delete("/gone")
            else:
                c.write("/gone", b"soon")
    """
    r = cartridge.open(path, "r")
    try:
        assert r.read("/v") == b"v0"
        gen0 = r.info()["generation"]
        for i in range(1, 4):
            finish(spawn(writer, path, f"v{i}"))
            assert r.read("/v") == f"v{i}".encode()          # the very next call
            assert r.read(f"/new/v{i}") == b"x" * 200_000
            assert r.exists("/gone") == (i % 2 == 1)
            assert r.listdir("/new") == [f"v{j}" for j in range(1, i + 1)]
        assert r.info()["generation"] > gen0
        assert r.verify().ok
    finally:
        r.close()


# -- page recycling under readers (reader generation pins) ---------------------------------------
CHURN_WRITER = """
    import os, sys, time, random, struct, cartridge
    path, seconds, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    H = struct.Struct("<QQ")
    def payload(name, version, n):
        if n < H.size:
            return H.pack(version, n)[:n]
        r = random.Random(f"{name}:{version}:{n}")
        return H.pack(version, n) + r.randbytes(n - H.size)
    rnd = random.Random(seed)
    SIZES = [0, 10, 100, 3000, 5000, 70_000, 140_000, 300_000, 1_100_000]
    c = cartridge.open(path, "a", sync="off")
    print("ready", flush=True)
    end = time.monotonic() + seconds
    v = 0
    while time.monotonic() < end:
        v += 1
        name = f"/f{rnd.randrange(8)}"
        op = rnd.random()
        if op < 0.15 and c.exists(name):
            c.delete(name)
        elif op < 0.25:
            with c.transaction():
                for k in range(rnd.randrange(1, 4)):
                    nm = f"/f{rnd.randrange(8)}"
                    c.write(nm, payload(nm, v, rnd.choice(SIZES)))
        else:
            c.write(name, payload(name, v, rnd.choice(SIZES)))
    print("commits", v, flush=True)
    c.close()
"""

CHURN_READER = """
    import sys, time, random, struct, cartridge
    path, seconds = sys.argv[1], float(sys.argv[2])
    H = struct.Struct("<QQ")
    def payload(name, version, n):
        if n < H.size:
            return H.pack(version, n)[:n]
        r = random.Random(f"{name}:{version}:{n}")
        return H.pack(version, n) + r.randbytes(n - H.size)
    r = cartridge.open(path, "r")
    print("ready", flush=True)
    end = time.monotonic() + seconds
    reads = checked = 0
    rnd = random.Random()
    while time.monotonic() < end:
        name = f"/f{rnd.randrange(8)}"
        try:
            data = r.read(name)
        except cartridge.NotFoundError:
            continue
        reads += 1
        if len(data) >= H.size:
            v, n = H.unpack_from(data)
            assert n == len(data), (name, n, len(data))
            assert data == payload(name, v, n), f"wrong bytes in {name} version {v}"
            checked += 1
        if reads % 5 == 0:
            # a read stream keeps the version it opened while the writer moves on
            try:
                f = r.open(name, "rb")
            except cartridge.NotFoundError:
                continue
            with f:
                head = f.read(H.size)
                if len(head) == H.size:
                    v, n = H.unpack(head)
                    offs = rnd.randrange(n)
                    f.seek(offs)
                    part = f.read(70_000)
                    assert part == payload(name, v, n)[offs:offs + 70_000], (name, v, offs)
                    checked += 1
            infos = list(r.scan("/"))
            assert all(i.path.startswith("/f") for i in infos)
    print("reads", reads, checked, flush=True)
"""


def _churn(path: str, seconds: float, n_readers: int, seed: int = 1) -> None:
    cartridge.open(path, "x").close()
    writer = spawn(CHURN_WRITER, path, seconds, seed)
    readers = []
    try:
        expect_line(writer, "ready")
        readers = [spawn(CHURN_READER, path, seconds) for _ in range(n_readers)]
        for k in readers:
            expect_line(k, "ready")
        outs = [finish(k, timeout=seconds + 120) for k in readers]
        wout = finish(writer, timeout=seconds + 120)
    finally:
        for k in readers + [writer]:
            kill(k)
    print(f"\nwriter: {wout.strip()}; readers: {[o.strip() for o in outs]}")
    for o in outs:
        assert int(o.split()[2]) > 0, "a reader checked nothing"
    with cartridge.open(path, "r") as r:
        rep = r.verify()
        assert rep.ok, rep.problems


def test_readers_survive_writer_rewriting_and_deleting_same_files(tmp_path):
    """Pages freed by the writer are recycled only when no reader's pinned state reaches them:
    readers must never see CorruptionError or wrong bytes."""
    _churn(str(tmp_path / "a.cart"), 3.0, 1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
def test_readers_survive_churn_long(tmp_path, seed):
    _churn(str(tmp_path / "a.cart"), 20.0, 2, seed)


# -- reader pins and read streams (deterministic, in one process: OFD locks belong to the open
#    file, so handles in one process coordinate exactly like processes) -------------------------
def test_read_stream_keeps_its_version_after_handle_refreshes(tmp_path):
    """Regression (fixed in e84f60f): refresh() moved the handle's OFD pin past the generation an
    open read stream of the same handle still read, and the writer recycled its pages."""
    path = str(tmp_path / "a.cart")
    w = cartridge.open(path, "a", sync="off")
    old = b"\x07" * 100_000
    w.write("/f", old)
    r = cartridge.open(path, "r")
    try:
        s = r.open("/f", "rb")
        w.write("/f", b"z" * 100_000)       # frees the old version's pages (pending)
        assert r.read("/f") == b"z" * 100_000   # the handle itself moves to the new state
        for i in range(6):                   # the writer recycles whatever it may
            w.write(f"/g{i}", os.urandom(100_000))
        assert s.read() == old
        s.close()
    finally:
        r.close()
        w.close()


def test_oldest_reader_pin_is_honoured_whatever_the_lock_order(tmp_path):
    """Regression (fixed in e84f60f): F_OFD_GETLK reports the first conflicting lock in the
    kernel's list, not the lowest generation; an older pin behind a newer one was ignored."""
    path = str(tmp_path / "a.cart")
    w = cartridge.open(path, "a", sync="off")
    old = b"\x07" * 100_000
    w.write("/f", old)
    a = cartridge.open(path, "r")            # a's pin lock is first in the kernel's list
    b = cartridge.open(path, "r")            # b pins the same (old) generation
    try:
        s = b.open("/f", "rb")               # b keeps reading the old version via a stream
        w.write("/f", b"z" * 100_000)        # frees the old version's pages
        assert a.read("/f") == b"z" * 100_000   # a re-pins a newer generation; b does not move
        for i in range(6):
            w.write(f"/g{i}", os.urandom(100_000))
        assert s.read() == old
        s.close()
    finally:
        a.close()
        b.close()
        w.close()


def test_read_stream_in_other_process_keeps_its_version(tmp_path):
    """The supported case: a reader process with an open stream and no other call meanwhile."""
    path = str(tmp_path / "a.cart")
    old = payload("/f", 1, 150_000)
    with cartridge.open(path, "a", sync="off") as w:
        w.write("/f", old)
        child = spawn("""
            import sys, cartridge
            r = cartridge.open(sys.argv[1], "r")
            s = r.open("/f", "rb")
            head = s.read(1000)
            print("ready", flush=True)
            sys.stdin.readline()
            rest = s.read()
            sys.stdout.buffer.write(b"len %d\\n" % len(head + rest))
            import hashlib
            print(hashlib.sha256(head + rest).hexdigest(), flush=True)
        """, path, stdin=True)
        try:
            expect_line(child, "ready")
            for i in range(2, 10):
                w.write("/f", payload("/f", i, 150_000))
                w.write(f"/g{i}", payload("/g", i, 150_000))
                w.delete(f"/g{i}")
            child.stdin.write("go\n")
            child.stdin.flush()
            out = finish(child).split("\n")
        finally:
            kill(child)
    import hashlib
    assert out[0] == f"len {len(old)}"
    assert out[1] == hashlib.sha256(old).hexdigest()


# -- killed writers ---------------------------------------------------------------------------------
# The killed writer churns: new files, overwrites, appends through "ab", deletes, file and
# directory renames, so freed pages are recycled while it is killed. Every operation is a pure
# function of its index and the current state, run in the child and replayed in the parent.
# A state maps path -> pieces ((index, size), ...): the content is the pieces' bytes joined.
KILL_OPS = r"""
import random

DIRS = ["/d0", "/d1", "/d2", "/d3", "/d4", "/d5"]


def churn_bytes(pieces):
    return b"".join(((b"%d:" % i) * (n // 2 + 1))[:n] for i, n in pieces)


def churn_op(i, state):
    r = random.Random(i * 7919 + 1)
    names = sorted(state)
    x = r.random()
    size = r.choice([0, 100, 3000, 9000, 70_000, 300_000])
    if not names or x < (0.15 if len(names) > 40 else 0.5):      # the state stays small
        return ("write", f"{r.choice(DIRS[:4])}/f{i}", size)
    victim = r.choice(names)
    if x < 0.55:
        return ("write", victim, size)                      # overwrite
    if x < 0.65:
        return ("append", victim, r.choice([10, 5000, 80_000]))
    if x < 0.85:
        return ("delete", victim)
    if x < 0.95:
        return ("rename", victim, f"{r.choice(DIRS)}/r{i}")
    src = victim.rsplit("/", 1)[0]                          # the victim's directory
    free = [d for d in DIRS if not any(n.startswith(d + "/") for n in names)]
    return ("rename", src, r.choice(free)) if free else ("delete", victim)


def churn_apply(state, op, i):
    kind, p = op[0], op[1]
    if kind == "write":
        state[p] = ((i, op[2]),)
    elif kind == "append":
        state[p] = state[p] + ((i, op[2]),)
    elif kind == "delete":
        del state[p]
    elif p in state:
        state[op[2]] = state.pop(p)
    else:
        for n in [n for n in state if n.startswith(p + "/")]:
            state[op[2] + n[len(p):]] = state.pop(n)


def churn_do(c, op, i):
    kind, p = op[0], op[1]
    if kind == "write":
        c.write(p, churn_bytes(((i, op[2]),)))
    elif kind == "append":
        with c.open(p, "ab") as f:
            f.write(churn_bytes(((i, op[2]),)))
    elif kind == "delete":
        c.delete(p)
    else:
        c.rename(p, op[2])
"""
_ops: dict = {}
exec(KILL_OPS, _ops)

# The child prints each index after its commit returned: the parent then knows the last
# commit that must be there, and that at most the next one (in flight) may be there too.
KILLED_WRITER = KILL_OPS + """
import json, sys, cartridge
path, sync, start, state_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
state = {p: tuple(map(tuple, v)) for p, v in json.load(open(state_file)).items()}
c = cartridge.open(path, "a", sync=sync)
i = start
while True:
    op = churn_op(i, state)
    churn_do(c, op, i)
    churn_apply(state, op, i)
    print(i, flush=True)
    i += 1
"""


def _archive_state(c) -> dict:
    return {i.path: c.read(i.path) for i in c.scan("/")}


def _kill_writer_and_check(tmp_path, path: str, sync: str, start: int, state: dict,
                           min_commits: int, delay: float = 0.0) -> int:
    """Run KILLED_WRITER from operation `start` on `state`, SIGKILL it after it printed
    `min_commits` indices (plus a random `delay`), then check the archive: it opens for
    writing, verify() passes, and it holds exactly the state after the last printed operation
    or after the one in flight. Updates `state`; returns the next operation index."""
    import json

    state_file = str(tmp_path / "state.json")
    with open(state_file, "w") as f:
        json.dump(state, f)
    child = spawn(KILLED_WRITER, path, sync, start, state_file)
    printed = []
    try:
        while len(printed) < min_commits:
            line = child.stdout.readline()
            if not line:
                raise AssertionError(f"writer died: {child.stderr.read()}")
            printed.append(int(line))
        if delay:
            time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        printed += [int(x) for x in child.stdout.read().split()]
    finally:
        kill(child)
    assert printed == list(range(start, start + len(printed)))
    for i in printed:                                # the state the last printed commit made
        _ops["churn_apply"](state, _ops["churn_op"](i, state), i)
    nxt = start + len(printed)
    with cartridge.open(path, "a") as c:             # the dead writer's lock is gone
        rep = c.verify()
        assert rep.ok, rep.problems
        got = _archive_state(c)
    want = {p: _ops["churn_bytes"](v) for p, v in state.items()}
    if got != want:                                  # then the commit in flight, whole
        _ops["churn_apply"](state, _ops["churn_op"](nxt, state), nxt)
        want = {p: _ops["churn_bytes"](v) for p, v in state.items()}
        assert got == want, f"not the state after operation {nxt - 1} or {nxt}"
        nxt += 1
    return nxt


def test_churn_operations_cover_every_kind():
    state: dict = {}
    kinds = set()
    for i in range(400):
        op = _ops["churn_op"](i, state)
        kinds.add(op[0] if op[0] != "rename" or op[1] in state else "rename-dir")
        _ops["churn_apply"](state, op, i)
    assert kinds == {"write", "append", "delete", "rename", "rename-dir"}
    assert 10 < len(state) < 80


@pytest.mark.parametrize("sync", ["off", "full"])
def test_killed_writer_leaves_a_committed_state(tmp_path, sync):
    path = str(tmp_path / "a.cart")
    cartridge.open(path, "x").close()
    _kill_writer_and_check(tmp_path, path, sync, 0, {}, 40 if sync == "full" else 150)


@pytest.mark.slow
@pytest.mark.parametrize("sync", ["off", "normal", "full"])
def test_killed_writer_repeatedly(tmp_path, sync):
    """Kill the churning writer at random moments, many times over, continuing the same
    archive from whatever state each kill left."""
    path = str(tmp_path / "a.cart")
    cartridge.open(path, "x").close()
    rnd = random.Random(sync)
    nxt, state = 0, {}
    rounds = 70          # x 3 sync modes: over 200 SIGKILLs in the slow tier
    for _ in range(rounds):
        nxt = _kill_writer_and_check(tmp_path, path, sync, nxt, state, rnd.randrange(1, 30),
                                     rnd.random() * 0.3)
    with cartridge.open(path, "r") as c:
        assert c.verify(deep=True).ok
        assert len(list(c.scan("/"))) == len(state)
    print(f"\n{sync}: {nxt} operations, {len(state)} files after {rounds} kills")
