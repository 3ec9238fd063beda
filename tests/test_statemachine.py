"""A hypothesis state machine driving the whole API against a plain dict model."""
import random
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import cartridge
from cartridge import (
    AlreadyExistsError,
    CartridgeError,
    DirectoryNotEmptyError,
    InvalidPathError,
    NotFoundError,
    PathIsDirectoryError,
    PathNotDirectoryError,
    TransactionAbortedError,
)

# Small alphabet: collisions, file/dir conflicts and '.' < '/' ordering cases happen often.
SEGMENTS = ["a", "b", "a.b"]
ALL_PATHS = sorted({"/" + "/".join(x) for x in
                    [(s,) for s in SEGMENTS]
                    + [(s, t) for s in SEGMENTS for t in SEGMENTS]
                    + [(s, t, u) for s in SEGMENTS for t in SEGMENTS for u in SEGMENTS]})
paths = st.sampled_from(ALL_PATHS)
# 1000, 2048, 5 KiB, 12000 and 16384 bytes are packed when written with write_many (above the
# inline limit, at most PACK_MAX: FORMAT §14); 16385 just misses and takes its own pages
SIZES = [0, 1, 17, 1000, 2048, 5 * 1024, 12000, 16384, 16385, 70 * 1024]
datas = st.builds(lambda n, seed: random.Random(seed).randbytes(n),
                  st.sampled_from(SIZES), st.integers(0, 2**16))


snap_names = st.sampled_from(["s1", "s2", "s3"])


def ancestors(p):
    parts = p.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


def under(p, q):
    return q.startswith(p + "/")


class Model:
    """{path: bytes} plus explicit directories, with the API's rules."""

    def __init__(self, files=None, dirs=None):
        self.files = dict(files or {})
        self.dirs = set(dirs or ())

    def copy(self):
        return Model(self.files, self.dirs)

    def is_file(self, p):
        return p in self.files

    def is_dir(self, p):
        if p == "/":
            return True
        return p in self.dirs or any(under(p, q) for q in self.files) or \
            any(under(p, q) for q in self.dirs)

    def exists(self, p):
        return self.is_file(p) or self.is_dir(p)

    def children(self, d):
        pre = "/" if d == "/" else d + "/"
        out = set()
        for q in list(self.files) + list(self.dirs):
            if q.startswith(pre):
                out.add(q[len(pre):].split("/")[0])
        return sorted(out)

    def check_parents(self, p):
        for a in ancestors(p):
            if a in self.files:
                raise PathNotDirectoryError(a)

    # -- operations: mutate self or raise the error the API must raise ----------------------
    def write(self, p, data):
        if p not in self.files:
            self.check_parents(p)
            if self.is_dir(p):
                raise PathIsDirectoryError(p)
        self.files[p] = data

    def delete(self, p, recursive):
        if not self.exists(p):
            raise NotFoundError(p)
        if p in self.files:
            del self.files[p]
            return
        kids = [q for q in list(self.files) + list(self.dirs) if under(p, q)]
        if kids and not recursive:
            raise DirectoryNotEmptyError(p)
        for q in kids:
            self.files.pop(q, None)
            self.dirs.discard(q)
        self.dirs.discard(p)

    def rename(self, s, d):
        if not self.exists(s):
            raise NotFoundError(s)
        if s == d:
            return
        self.check_parents(d)
        if s in self.files:
            if self.is_dir(d):
                raise PathIsDirectoryError(d)
            self.files[d] = self.files.pop(s)
            return
        if under(s, d):
            raise InvalidPathError(d)
        if self.exists(d):
            raise AlreadyExistsError(d)
        files = {q: v for q, v in self.files.items() if under(s, q)}
        dirs = {q for q in self.dirs if under(s, q)}
        for q in files:
            del self.files[q]
        self.dirs -= dirs
        for q, v in files.items():
            self.files[d + q[len(s):]] = v
        self.dirs |= {d + q[len(s):] for q in dirs}
        if s in self.dirs:
            self.dirs.discard(s)
            self.dirs.add(d)

    def mkdir(self, p, parents, exist_ok):
        if p in self.files:
            raise AlreadyExistsError(p)
        if self.is_dir(p):
            if exist_ok:
                return
            raise AlreadyExistsError(p)
        self.check_parents(p)
        missing = [a for a in ancestors(p) if not self.exists(a)]
        if missing and not parents:
            raise NotFoundError(missing[0])
        self.dirs |= set(missing) | {p}


ops = st.one_of(
    st.tuples(st.just("write"), paths, datas),
    st.tuples(st.just("delete"), paths, st.booleans()),
    st.tuples(st.just("rename"), paths, paths),
    st.tuples(st.just("mkdir"), paths, st.booleans(), st.booleans()),
    st.tuples(st.just("write_many"), st.lists(st.tuples(paths, datas), max_size=5)),
)


def apply_real(cart, op):
    name, *args = op
    if name == "write":
        cart.write(*args)
    elif name == "delete":
        cart.delete(args[0], recursive=args[1])
    elif name == "rename":
        cart.rename(*args)
    elif name == "mkdir":
        cart.mkdir(args[0], parents=args[1], exist_ok=args[2])
    elif name == "write_many":
        cart.write_many(args[0])
    elif name == "append":
        with cart.open(args[0], "ab") as f:
            f.write(args[1])
    elif name == "stream":
        with cart.open(args[0], "wb") as f:
            data = args[1]
            for i in range(0, len(data), 3000):
                f.write(data[i:i + 3000])
    else:  # pragma: no cover
        raise AssertionError(name)


def apply_model(model, op):
    name, *args = op
    if name in ("write", "stream"):
        model.write(*args)
    elif name == "append":
        if args[0] in model.files:
            model.files[args[0]] = model.files[args[0]] + args[1]
        else:
            model.write(*args)
    elif name == "delete":
        model.delete(*args)
    elif name == "rename":
        model.rename(*args)
    elif name == "mkdir":
        model.mkdir(*args)
    elif name == "write_many":
        # all or nothing; a path given twice keeps its last data; the batch goes in key order
        # (so a file and a path below it fail on the path below, as the archive reports it)
        trial = model.copy()
        for p, data in sorted(dict(args[0]).items()):
            trial.write(p, data)
        model.files, model.dirs = trial.files, trial.dirs


def run_both(cart, model, op):
    """Apply `op` to a copy of the model and to the archive; both must agree. Returns the new
    model (unchanged on an expected error)."""
    new = model.copy()
    expected = None
    try:
        apply_model(new, op)
    except CartridgeError as e:
        expected = type(e)
    try:
        apply_real(cart, op)
    except CartridgeError as e:
        assert expected is not None, f"{op[:3]!r}: unexpected {type(e).__name__}: {e}"
        assert type(e) is expected, f"{op[:3]!r}: expected {expected.__name__}, got {e!r}"
        return model
    assert expected is None, f"{op[:3]!r}: expected {expected.__name__}, nothing raised"
    return new


class ArchiveMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="cart-sm-")
        self.path = self.dir + "/sm.cart"
        self.cart = cartridge.open(self.path, "x", sync="off")
        self.model = Model()
        self.steps = 0
        self.readers = []      # (open "rb" stream, the bytes it must keep reading)
        self.snaps = {}        # snapshot name -> the model it pinned

    def teardown(self):
        try:
            self.check_readers()
            if not self.cart.closed:
                rep = self.cart.verify()
                assert rep.ok, rep.problems
                # every snapshot still reads as it was taken; deleting them all (in a random
                # order) leaves no page held and verify() clean
                names = sorted(self.snaps)
                random.Random(self.steps).shuffle(names)
                for name in names:
                    with self.cart.at(name) as v:
                        self.check_all(v, self.snaps[name])
                    self.cart.delete_snapshot(name)
                    rep = self.cart.verify()
                    assert rep.ok, rep.problems
                assert self.cart.info()["held_pages"] == 0
                assert rep.snapshot_pages == 0
                self.cart.close()
            with cartridge.open(self.path, "r") as c:
                self.check_all(c)
                rep = c.verify()
                assert rep.ok, rep.problems
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- rules ------------------------------------------------------------------------------
    @rule(p=paths, data=datas)
    def write(self, p, data):
        self.model = run_both(self.cart, self.model, ("write", p, data))

    @rule(batch=st.lists(st.tuples(paths, datas), max_size=8))
    def write_many(self, batch):
        self.model = run_both(self.cart, self.model, ("write_many", batch))

    @rule(p=paths, data=datas)
    def stream_write(self, p, data):
        self.model = run_both(self.cart, self.model, ("stream", p, data))

    @rule(p=paths, data=datas)
    def append(self, p, data):
        """An "ab" stream: on a packed file it starts from the pack's bytes (FORMAT §14)."""
        self.model = run_both(self.cart, self.model, ("append", p, data))

    @rule(p=paths, recursive=st.booleans())
    def delete(self, p, recursive):
        self.model = run_both(self.cart, self.model, ("delete", p, recursive))

    @rule(src=paths, dst=paths)
    def rename(self, src, dst):
        self.model = run_both(self.cart, self.model, ("rename", src, dst))

    @rule(p=paths, parents=st.booleans(), exist_ok=st.booleans())
    def mkdir(self, p, parents, exist_ok):
        self.model = run_both(self.cart, self.model, ("mkdir", p, parents, exist_ok))

    @rule(batch=st.lists(ops, min_size=1, max_size=6),
          outcome=st.sampled_from(["commit", "rollback", "inner_fail", "inner_ok"]))
    def transaction(self, batch, outcome):
        start = self.model
        model = start
        half = len(batch) // 2

        class Boom(Exception):
            pass

        try:
            with self.cart.transaction():
                for op in batch[:half]:
                    model = run_both(self.cart, model, op)
                if outcome in ("inner_fail", "inner_ok"):
                    try:
                        with self.cart.transaction():
                            for op in batch[half:]:
                                model = run_both(self.cart, model, op)
                            if outcome == "inner_fail":
                                raise Boom
                    except Boom:
                        pass
                else:
                    for op in batch[half:]:
                        model = run_both(self.cart, model, op)
                if outcome != "inner_fail":
                    self.check_all(self.cart, model)     # the state is visible inside
                if outcome == "rollback":
                    raise Boom
        except Boom:
            assert outcome == "rollback"
            self.model = start
        except TransactionAbortedError:
            assert outcome == "inner_fail"
            self.model = start
        else:
            assert outcome in ("commit", "inner_ok")
            self.model = model

    @precondition(lambda self: self.model.files and len(self.readers) < 3)
    @rule(data=st.data())
    def open_reader(self, data):
        p = data.draw(st.sampled_from(sorted(self.model.files)))
        self.readers.append((self.cart.open(p, "rb"), self.model.files[p]))

    @precondition(lambda self: self.readers)
    @rule(close=st.booleans())
    def check_readers(self, close=False):
        for f, expect in self.readers:
            f.seek(0)
            assert f.read() == expect, f.name
        if close:
            for f, _ in self.readers:
                f.close()
            self.readers = []

    @rule()
    def commit(self):
        self.cart.commit()

    @rule(read_only_check=st.booleans())
    def reopen(self, read_only_check):
        self.check_readers(close=True)
        self.cart.close()
        if read_only_check:
            with cartridge.open(self.path, "r") as r:
                self.check_all(r)
        self.cart = cartridge.open(self.path, "a", sync="off")

    @precondition(lambda self: self.model.files)
    @rule(data=st.data())
    def ranged_read(self, data):
        p = data.draw(st.sampled_from(sorted(self.model.files)))
        content = self.model.files[p]
        off = data.draw(st.integers(0, len(content) + 10))
        size = data.draw(st.integers(-1, 70_000))
        exp = content[off:] if size == -1 else content[off:off + size]
        assert self.cart.read(p, offset=off, size=size) == exp

    # -- snapshots --------------------------------------------------------------------------
    @rule(name=snap_names)
    def snapshot(self, name):
        if name in self.snaps:
            with pytest.raises(AlreadyExistsError):
                self.cart.snapshot(name)
            return
        info = self.cart.snapshot(name)
        assert info.name == name
        assert info.size == sum(len(v) for v in self.model.files.values())
        self.snaps[name] = self.model.copy()
        assert sorted(i.name for i in self.cart.snapshots()) == sorted(self.snaps)

    @rule(name=snap_names)
    def delete_snapshot(self, name):
        if name not in self.snaps:
            with pytest.raises(NotFoundError):
                self.cart.delete_snapshot(name)
            return
        self.cart.delete_snapshot(name)
        del self.snaps[name]

    @rule(name=snap_names)
    def restore(self, name):
        if name not in self.snaps:
            with pytest.raises(NotFoundError):
                self.cart.restore(name)
            return
        self.cart.restore(name)
        self.model = self.snaps[name].copy()

    @rule(max_pages=st.sampled_from([1, 7, 100, None]))
    def compact(self, max_pages):
        st_ = self.cart.compact(max_pages)
        assert st_.file_bytes > 0 and st_.pages_moved >= 0
        if max_pages is None:
            assert st_.done or self.readers      # open read streams may hold pages back

    @precondition(lambda self: self.snaps)
    @rule(data=st.data())
    def read_snapshot(self, data):
        name = data.draw(st.sampled_from(sorted(self.snaps)))
        with self.cart.at(name) as v:
            self.check_all(v, self.snaps[name])

    # -- invariants -------------------------------------------------------------------------
    def check_all(self, cart, model=None):
        model = model or self.model
        for p, data in model.files.items():
            assert cart.read(p) == data, p
        for p in ALL_PATHS:
            assert cart.isfile(p) == model.is_file(p), p
            assert cart.isdir(p) == model.is_dir(p), p
            assert cart.exists(p) == model.exists(p), p
            if model.is_dir(p):
                assert cart.listdir(p) == model.children(p), p
        assert cart.listdir("/") == model.children("/")
        assert [i.path for i in cart.scan("/")] == sorted(model.files, key=lambda s: s.encode())

    @invariant()
    def agrees_with_model(self):
        self.steps += 1
        model = self.model
        for p, data in model.files.items():
            assert self.cart.read(p) == data, p
        assert self.cart.listdir("/") == model.children("/")
        for p in ALL_PATHS:
            assert self.cart.exists(p) == model.exists(p), p
        if self.steps % 8 == 0:
            self.check_all(self.cart)
            rep = self.cart.verify()
            assert rep.ok, rep.problems
            info = self.cart.info()
            assert info["files"] == len(model.files)
            assert 0 <= info["packed_files"] <= len(model.files)
            assert info["pack_pages"] <= 16 * info["packs"]


ArchiveMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TestArchive = ArchiveMachine.TestCase


class SlowArchiveMachine(ArchiveMachine):
    pass


SlowArchiveMachine.TestCase.settings = settings(
    max_examples=1000, stateful_step_count=100, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TestArchiveSlow = pytest.mark.slow(SlowArchiveMachine.TestCase)


def test_model_sanity():
    m = Model()
    m.write("/a/b", b"1")
    assert m.is_dir("/a") and m.children("/") == ["a"]
    with pytest.raises(PathNotDirectoryError):
        m.write("/a/b/c", b"")
    with pytest.raises(PathIsDirectoryError):
        m.write("/a", b"")
    m.mkdir("/x/y", True, False)
    assert m.dirs == {"/x", "/x/y"}
    m.rename("/x", "/a/x")
    assert m.dirs == {"/a/x", "/a/x/y"}
    with pytest.raises(DirectoryNotEmptyError):
        m.delete("/a", False)
    m.delete("/a", True)
    assert not m.files and not m.dirs
