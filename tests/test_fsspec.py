"""The cart:// fsspec filesystem (cartridge/fsspec.py): registration and chained URLs, every call
against the archive's own API, atomicity of rm/mv/cp and fs.transaction (crash simulator), the
read-only and read-write modes, the write lock across processes, pickling, pandas and Dask."""
from __future__ import annotations

import datetime
import io
import os
import pickle
import random
import subprocess
import sys
import textwrap
import warnings

import pytest

fsspec = pytest.importorskip("fsspec", reason="fsspec is not installed (pip install 'cartridge[fsspec]')")

import cartridge  # noqa: E402
from cartridge import (  # noqa: E402
    AlreadyExistsError,
    ClosedError,
    DirectoryNotEmptyError,
    LockedError,
    NotFoundError,
    ReadOnlyError,
)
from cartridge.fsspec import CartridgeFileSystem, close_all  # noqa: E402
from cartridge.testing.crash import CrashRecorder  # noqa: E402


@pytest.fixture
def archive(tmp_path):
    path = str(tmp_path / "data.cart")
    with cartridge.open(path, "w") as c:
        c.write("/docs/a.txt", b"hello world")
        c.write("/docs/sub/b.bin", bytes(range(256)) * 300)
        c.write("/top.csv", b"x,y\n1,2\n3,4\n")
        c.mkdir("/empty")
    return path


@pytest.fixture
def wfs(archive):
    fs = CartridgeFileSystem(fo=archive, mode="a", skip_instance_cache=True)
    yield fs
    fs.close()


@pytest.fixture
def rfs(archive):
    fs = CartridgeFileSystem(fo=archive, skip_instance_cache=True)
    yield fs
    fs.close()


def snapshot(path: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cartridge.open(path) as c:
            assert c.verify().ok
            files = {i.path: c.read(i.path) for i in c.scan("/")}
            dirs = sorted(d for d, _, _ in c.walk("/"))
    return {"files": files, "dirs": dirs}


# -- registration, URLs, instances ---------------------------------------------------------------

def test_protocol_is_registered_through_the_entry_point():
    assert fsspec.get_filesystem_class("cart") is CartridgeFileSystem


def test_filesystem_by_name_and_chained_urls(archive):
    fs = fsspec.filesystem("cart", fo=archive)
    try:
        assert fs.cat("/docs/a.txt") == b"hello world"
        assert fs.cat("docs/a.txt") == b"hello world"          # relative means from the root
        assert fs.cat("cart://docs/a.txt") == b"hello world"
        # the same arguments give the same (cached) instance
        assert fsspec.filesystem("cart", fo=archive) is fs
    finally:
        fs.close()
    assert fsspec.filesystem("cart", fo=archive) is not fs      # close() forgot it
    fsspec.filesystem("cart", fo=archive).close()
    with fsspec.open(f"cart://docs/a.txt::{archive}", "rb") as f:
        assert f.read() == b"hello world"
    with fsspec.open(f"cart://top.csv::file://{archive}", "rt") as f:
        assert f.readline() == "x,y\n"
    of = fsspec.open(f"cart://docs/a.txt::{archive}")
    assert isinstance(of.fs, CartridgeFileSystem)
    of.fs.close()


def test_chained_url_to_a_remote_archive_is_read_only(archive):
    mem = fsspec.filesystem("memory")
    with open(archive, "rb") as f:
        mem.pipe("/fs17/chain.cart", f.read())
    try:
        with fsspec.open("cart://docs/a.txt::memory://fs17/chain.cart", "rb") as f:
            assert f.read() == b"hello world"
        with pytest.raises(ReadOnlyError):
            CartridgeFileSystem(fo="/fs17/chain.cart", target_protocol="memory", mode="a",
                                skip_instance_cache=True)
        fs = CartridgeFileSystem(fo="memory://fs17/chain.cart", skip_instance_cache=True)
        with pytest.raises(ReadOnlyError):
            fs.pipe_file("/new", b"x")
        assert fs.cart.info()["remote"]["requests"] >= 1
        fs.close()
    finally:
        mem.rm("/fs17", recursive=True)


def test_bad_arguments(tmp_path, archive):
    with pytest.raises(ValueError):
        CartridgeFileSystem(fo="", skip_instance_cache=True)
    with pytest.raises(NotFoundError):
        CartridgeFileSystem(fo=str(tmp_path / "missing.cart"), skip_instance_cache=True)
    with pytest.raises(ValueError):
        CartridgeFileSystem(fo=archive, mode="q", skip_instance_cache=True)
    not_cart = tmp_path / "plain.txt"
    not_cart.write_bytes(b"just text" * 1000)
    with pytest.raises(cartridge.NotACartridgeError):
        CartridgeFileSystem(fo=str(not_cart), skip_instance_cache=True)
    fs = CartridgeFileSystem(fo=archive, skip_instance_cache=True)
    try:                          # a path that is not a str or os.PathLike: TypeError
        for call in (fs.ls, fs.info, fs.cat_file, fs.exists, fs.open, fs.created):
            with pytest.raises(TypeError, match="path must be str"):
                call(123)
        import pathlib
        assert fs.cat_file(pathlib.PurePosixPath("/docs/a.txt")) == b"hello world"
    finally:
        fs.close()


# -- queries -------------------------------------------------------------------------------------

def test_ls_info_and_queries(rfs):
    assert rfs.ls("/", detail=False) == ["/docs", "/empty", "/top.csv"]
    entries = {e["name"]: e for e in rfs.ls("/docs")}
    assert entries["/docs/a.txt"]["type"] == "file" and entries["/docs/a.txt"]["size"] == 11
    assert entries["/docs/sub"]["type"] == "directory"
    assert rfs.ls("/docs/a.txt", detail=False) == ["/docs/a.txt"]    # ls of a file: itself
    info = rfs.info("/docs/sub/b.bin")
    assert info["size"] == 256 * 300 and info["type"] == "file"
    assert info["checksum"] == cartridge.content_checksum(bytes(range(256)) * 300)
    assert rfs.info("/")["type"] == "directory"
    assert rfs.isdir("/empty") and rfs.isdir("/docs") and not rfs.isdir("/top.csv")
    assert rfs.isfile("/top.csv") and not rfs.isfile("/docs")
    assert rfs.exists("/docs/sub") and not rfs.exists("/nope")
    assert not rfs.exists("/bad/../path")           # an invalid path exists nowhere
    with pytest.raises(FileNotFoundError):
        rfs.info("/nope")
    with pytest.raises(FileNotFoundError):
        rfs.ls("/nope")
    assert sorted(rfs.find("/")) == ["/docs/a.txt", "/docs/sub/b.bin", "/top.csv"]
    assert rfs.glob("/docs/**/*.bin") == ["/docs/sub/b.bin"]
    assert rfs.du("/docs") == 11 + 256 * 300
    assert rfs.size("/top.csv") == 12


def test_created_modified_checksum_ukey(wfs):
    wfs.pipe_file("/t/one", b"same", mtime=1_700_000_000.5)
    wfs.pipe_file("/t/two", b"same")
    m = wfs.modified("/t/one")
    assert m == datetime.datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=datetime.timezone.utc)
    assert abs(wfs.created("/t/two").timestamp() - wfs.cart.stat("/t/two").ctime) < 1e-6
    # equal content, equal checksum (times differ); different content, different checksum
    assert wfs.checksum("/t/one") == wfs.checksum("/t/two")
    assert wfs.checksum("/t/one") == int(cartridge.content_checksum(b"same"), 16)
    wfs.pipe_file("/t/two", b"other")
    assert wfs.checksum("/t/one") != wfs.checksum("/t/two")
    assert wfs.ukey("/t/one") != wfs.ukey("/t/two")
    assert isinstance(wfs.checksum("/t"), int)       # a directory: fsspec's token of its info


# -- reading -------------------------------------------------------------------------------------

def test_open_random_access_and_seek(rfs):
    data = bytes(range(256)) * 300
    with rfs.open("/docs/sub/b.bin", "rb") as f:
        assert f.size == len(data) and f.seekable()
        f.seek(1000)
        assert f.read(10) == data[1000:1010]
        f.seek(-5, io.SEEK_END)
        assert f.read() == data[-5:]
        f.seek(70_000)
        assert f.tell() == 70_000
        assert f.read(100) == data[70_000:70_100]
        f.seek(0)
        assert f.read() == data
    with rfs.open("/top.csv", "r") as f:           # text mode through fsspec
        assert f.read().splitlines() == ["x,y", "1,2", "3,4"]
    with pytest.raises(FileNotFoundError):
        rfs.open("/nope", "rb")
    with pytest.raises(IsADirectoryError):
        rfs.open("/docs", "rb")
    with pytest.raises(ValueError):
        rfs.open("/top.csv", "r+b")


def test_cat_file_ranges(rfs):
    data = bytes(range(256)) * 300
    p = "/docs/sub/b.bin"
    assert rfs.cat_file(p) == data
    assert rfs.cat_file(p, 10, 20) == data[10:20]
    assert rfs.cat_file(p, -10) == data[-10:]
    assert rfs.cat_file(p, 5, -5) == data[5:-5]
    assert rfs.cat_file(p, None, 7) == data[:7]
    assert rfs.cat_file(p, 100, 50) == b""
    assert rfs.cat_file(p, len(data) + 10) == b""
    out = rfs.cat_ranges([p, "/docs/a.txt", "/nope", p], [0, 6, 0, -3], [4, None, 1, None])
    assert out[:2] == [data[:4], b"world"] and out[3] == data[-3:]
    assert isinstance(out[2], FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        rfs.cat_ranges(["/nope"], 0, 1, on_error="raise")
    with pytest.raises(ValueError):
        rfs.cat_ranges([p, p], [0], [1, 2])
    assert rfs.cat(["/docs/a.txt", "/top.csv"]) == {"/docs/a.txt": b"hello world",
                                                    "/top.csv": b"x,y\n1,2\n3,4\n"}


# -- writing -------------------------------------------------------------------------------------

def test_pipe_open_write_streams(wfs):
    wfs.pipe_file("/new/deep/file.txt", b"abc")
    assert wfs.cat("/new/deep/file.txt") == b"abc"
    with pytest.raises(FileExistsError):
        wfs.pipe_file("/new/deep/file.txt", b"zzz", mode="create")
    assert wfs.cat("/new/deep/file.txt") == b"abc"
    with pytest.raises(ValueError):
        wfs.pipe_file("/x", b"", mode="append")
    with wfs.open("/w.bin", "wb") as f:
        f.write(b"part1-")
        assert not wfs.exists("/w.bin")          # a write stream publishes at close
        f.write(b"part2")
    assert wfs.cat("/w.bin") == b"part1-part2"
    with wfs.open("/w.bin", "ab") as f:
        f.write(b"-more")
    assert wfs.cat("/w.bin") == b"part1-part2-more"
    with pytest.raises(FileExistsError):
        wfs.open("/w.bin", "xb")
    with wfs.open("/x.bin", "xb") as f:
        f.write(b"x")
    assert wfs.cat("/x.bin") == b"x"
    with pytest.raises(RuntimeError), wfs.open("/boom.bin", "wb") as f:
        f.write(b"never")
        raise RuntimeError("inside the block")
    assert not wfs.exists("/boom.bin")           # discarded, as cartridge streams are
    with wfs.open("/t.txt", "w") as f:
        f.write("text ✓\n")
    assert wfs.cat("/t.txt") == "text ✓\n".encode()
    with pytest.raises(IsADirectoryError):
        wfs.pipe_file("/docs", b"x")


def test_mkdir_makedirs_rmdir(wfs):
    wfs.mkdir("/m/n/o")
    assert wfs.isdir("/m/n/o")
    with pytest.raises(FileExistsError):
        wfs.mkdir("/m/n/o")
    with pytest.raises(FileNotFoundError):
        wfs.mkdir("/p/q", create_parents=False)
    wfs.makedirs("/m/n/o", exist_ok=True)
    with pytest.raises(AlreadyExistsError):
        wfs.makedirs("/m/n/o")
    with pytest.raises(DirectoryNotEmptyError):
        wfs.rmdir("/m/n")
    with pytest.raises(NotADirectoryError):
        wfs.rmdir("/top.csv")
    assert wfs.exists("/top.csv")
    wfs.rmdir("/m/n/o")
    assert not wfs.exists("/m/n/o") and wfs.isdir("/m/n")
    with pytest.raises(FileNotFoundError):
        wfs.rmdir("/m/zzz")


def test_rm(wfs):
    with pytest.raises(DirectoryNotEmptyError):
        wfs.rm("/docs")
    assert wfs.exists("/docs/a.txt")
    wfs.rm("/empty")                              # an empty directory goes without recursive
    assert not wfs.exists("/empty")
    wfs.rm("/docs", recursive=True)
    assert not wfs.exists("/docs") and wfs.exists("/top.csv")
    with pytest.raises(FileNotFoundError):
        wfs.rm("/docs")
    for i in range(5):
        wfs.pipe_file(f"/g/f{i}.log", b"l")
        wfs.pipe_file(f"/g/f{i}.txt", b"t")
    wfs.rm("/g/*.log")                            # globs
    assert sorted(wfs.ls("/g", detail=False)) == [f"/g/f{i}.txt" for i in range(5)]
    wfs.rm(["/g/f0.txt", "/g/f1.txt"])            # lists
    assert len(wfs.ls("/g")) == 3
    wfs.pipe_file("/d1/x", b"1")
    wfs.pipe_file("/d1/d2/y", b"2")
    wfs.rm("/d1", recursive=True, maxdepth=1)     # /d1/d2/y lies deeper: it and /d1/d2 stay
    assert wfs.find("/d1") == ["/d1/d2/y"]


def test_cp_file_and_copy(wfs):
    big = random.Random(3).randbytes(3 * (1 << 20) + 123)     # streamed in pieces
    wfs.pipe_file("/big.bin", big)
    wfs.cart.write("/exec.sh", b"#!/bin/sh\n", mode=0o755)
    wfs.cp_file("/big.bin", "/copies/big.bin")
    wfs.cp_file("/exec.sh", "/copies/exec.sh")
    assert wfs.cat("/copies/big.bin") == big
    assert wfs.cart.stat("/copies/exec.sh").mode & 0o7777 == 0o755
    wfs.copy("/docs", "/docs2", recursive=True)
    assert sorted(wfs.find("/docs2")) == ["/docs2/a.txt", "/docs2/sub/b.bin"]
    with pytest.raises(FileNotFoundError):
        wfs.cp_file("/nope", "/x")


def test_mv(wfs):
    wfs.mv("/top.csv", "/moved.csv")
    assert wfs.cat("/moved.csv") == b"x,y\n1,2\n3,4\n" and not wfs.exists("/top.csv")
    wfs.mv("/moved.csv", "/docs/")                     # into an existing directory
    assert wfs.exists("/docs/moved.csv")
    wfs.mv("/docs/moved.csv", "/empty")                # into an existing directory
    assert wfs.exists("/empty/moved.csv")
    wfs.mv("/docs", "/renamed", recursive=True)        # a tree, by one rename
    assert sorted(wfs.find("/renamed")) == ["/renamed/a.txt", "/renamed/sub/b.bin"]
    assert not wfs.exists("/docs")
    wfs.pipe_file("/over", b"old")
    wfs.pipe_file("/src", b"new")
    wfs.mv("/src", "/over")                            # a file replaces a file
    assert wfs.cat("/over") == b"new" and not wfs.exists("/src")
    wfs.pipe_file("/g/a.log", b"a")
    wfs.pipe_file("/g/b.log", b"b")
    wfs.mv("/g/*.log", "/logs/", recursive=True)       # globs: copy then delete
    assert sorted(wfs.find("/logs")) == ["/logs/a.log", "/logs/b.log"]
    assert not wfs.exists("/g")
    with pytest.raises(FileNotFoundError):
        wfs.mv("/nope", "/x")


# -- modes, locks, lifetime ----------------------------------------------------------------------

def test_read_only_filesystem_refuses_every_change(rfs, archive):
    before = snapshot(archive)
    for call in (lambda: rfs.pipe_file("/n", b"x"), lambda: rfs.rm("/top.csv"),
                 lambda: rfs.mkdir("/n"), lambda: rfs.mv("/top.csv", "/n"),
                 lambda: rfs.cp_file("/top.csv", "/n"), lambda: rfs.open("/n", "wb"),
                 lambda: rfs.rmdir("/empty"), lambda: rfs.touch("/n")):
        with pytest.raises(ReadOnlyError):
            call()
    assert snapshot(archive) == before


def test_read_only_filesystem_sees_new_commits(rfs, archive):
    assert not rfs.exists("/later")
    with cartridge.open(archive, "a") as c:        # a writer alongside: readers never block
        c.write("/later", b"new")
    assert rfs.cat("/later") == b"new"


def _child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)


def test_one_writer_across_processes(archive):
    fs = CartridgeFileSystem(fo=archive, mode="a", skip_instance_cache=True)
    code = f"""
        import cartridge, fsspec
        try:
            fsspec.filesystem("cart", fo={archive!r}, mode="a")
        except cartridge.LockedError:
            print("locked")
        fs = fsspec.filesystem("cart", fo={archive!r})        # readers are never blocked
        print(fs.cat("/docs/a.txt").decode())
        """
    out = _child(code)
    assert out.stdout.split() == ["locked", "hello", "world"], out.stderr
    fs.pipe_file("/from-parent", b"1")
    fs.close()
    out = _child(f"""
        import fsspec
        fs = fsspec.filesystem("cart", fo={archive!r}, mode="a", timeout=5)
        fs.pipe_file("/from-child", fs.cat("/from-parent") + b"2")
        fs.close()
        """)
    assert out.returncode == 0, out.stderr
    assert snapshot(archive)["files"]["/from-child"] == b"12"


def test_second_writer_in_process_shares_the_cached_instance(archive):
    a = fsspec.filesystem("cart", fo=archive, mode="a")
    try:
        assert fsspec.filesystem("cart", fo=archive, mode="a") is a
        with pytest.raises(LockedError):           # a separate handle is a second writer
            CartridgeFileSystem(fo=archive, mode="a", skip_instance_cache=True)
    finally:
        a.close()
    with pytest.raises(ClosedError):
        a.cat("/top.csv")


def test_pickle_round_trip_reopens(archive):
    fs = fsspec.filesystem("cart", fo=archive)
    try:
        again = pickle.loads(pickle.dumps(fs))
        assert again.cat("/docs/a.txt") == b"hello world"
    finally:
        fs.close()


# -- transactions and atomicity ------------------------------------------------------------------

def test_transaction_commits_together(wfs, archive):
    with wfs.transaction:
        wfs.pipe_file("/t/1", b"one")
        with wfs.open("/t/2", "wb") as f:
            f.write(b"two")
        f3 = wfs.open("/t/3", "wb")          # still open at the end: published, then committed
        f3.write(b"three")
        wfs.rm("/top.csv")
        # another handle sees nothing of it yet
        assert not snapshot(archive)["files"].get("/t/1")
    files = snapshot(archive)["files"]
    assert (files["/t/1"], files["/t/2"], files["/t/3"]) == (b"one", b"two", b"three")
    assert "/top.csv" not in files


def test_transaction_rolls_back_on_error(wfs, archive):
    before = snapshot(archive)
    with pytest.raises(KeyError), wfs.transaction:
        wfs.pipe_file("/t/1", b"one")
        wfs.rm("/docs", recursive=True)
        f = wfs.open("/t/open", "wb")
        f.write(b"unpublished")
        raise KeyError("stop")
    assert snapshot(archive) == before
    assert not wfs._intrans
    wfs.pipe_file("/after", b"ok")                  # the filesystem goes on normally
    assert wfs.cat("/after") == b"ok"


def test_transaction_without_a_with_block(wfs, archive):
    wfs.start_transaction()
    wfs.pipe_file("/nc/1", b"one")
    wfs.pipe_file("/nc/2", b"two")
    assert "/nc/1" not in snapshot(archive)["files"]       # not committed yet
    wfs.end_transaction()
    assert snapshot(archive)["files"]["/nc/2"] == b"two"
    before = snapshot(archive)
    tx = wfs.start_transaction()
    wfs.rm("/nc", recursive=True)
    tx.complete(commit=False)
    assert snapshot(archive) == before and not wfs._intrans


def test_failed_step_rolls_back_the_whole_rm(wfs, archive, monkeypatch):
    """rm of a list is one commit: a failure on the third path leaves the first two."""
    before = snapshot(archive)
    real = wfs.cart.delete
    calls = []

    def failing(path, recursive=False):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(5, "injected I/O error")
        return real(path, recursive=recursive)

    monkeypatch.setattr(wfs.cart, "delete", failing)
    with pytest.raises(OSError):
        wfs.rm(["/top.csv", "/docs/a.txt", "/docs/sub/b.bin"])
    monkeypatch.undo()
    assert len(calls) == 3
    assert snapshot(archive) == before


def _txn_workload(fs):
    with fs.transaction:
        fs.mv("/src", "/dst", recursive=True)
        fs.rm("/keep")
        fs.pipe_file("/new", b"n" * 5000)


def _glob_mv(fs):
    fs.mv("/src/f1*", "/moved/", recursive=True)     # copy then delete: one commit of its own


def _rm_list(fs):
    fs.rm(["/keep", "/src"], recursive=True)


@pytest.mark.parametrize("model", ["killed", "power"])
@pytest.mark.parametrize("workload", [_txn_workload, _glob_mv, _rm_list])
def test_crash_during_fs_changes_is_all_or_nothing(tmp_path, model, workload):
    path = str(tmp_path / "crash.cart")
    with cartridge.open(path, "w") as c:
        for i in range(40):
            c.write(f"/src/f{i}", bytes([i]) * (100 + 900 * i))
        c.write("/keep", b"k")
    before = snapshot(path)
    fs = CartridgeFileSystem(fo=path, mode="a", skip_instance_cache=True)
    rec = CrashRecorder(fs.cart)
    workload(fs)
    rec.detach()
    after = snapshot(path)
    fs.close()
    assert after != before
    rng = random.Random(17)
    seen = set()
    for cut in rec.cuts():
        img = rec.image(cut, model, rng)
        p = str(tmp_path / f"img{cut}.cart")
        with open(p, "wb") as f:
            f.write(img)
        state = snapshot(p)
        assert state in (before, after), f"cut {cut}: a mixed state"
        seen.add(state == after)
        os.unlink(p)
    assert seen == {False, True}


# -- pandas and Dask -----------------------------------------------------------------------------

def test_pandas_read_csv_through_a_chained_url(tmp_path):
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    path = str(tmp_path / "tables.cart")
    with cartridge.open(path, "w") as c:
        c.write("/t/a.csv", b"name,value\nx,1\ny,2\n")
    df = pd.read_csv(f"cart://t/a.csv::{path}")
    assert list(df["name"]) == ["x", "y"] and df["value"].sum() == 3
    df2 = pd.read_csv("cart://t/a.csv", storage_options={"fo": path})
    assert df2.equals(df)
    out = pd.DataFrame({"a": [1, 2, 3]})
    # options of one link of a chained URL go under its protocol's name
    out.to_csv(f"cart://t/out.csv::{path}", index=False, storage_options={"cart": {"mode": "a"}})
    with pytest.raises(LockedError):              # pandas' cached filesystem holds the lock
        cartridge.open(path, "a")
    assert close_all(path) == 3                   # the writer and read_csv's two readers
    assert close_all(path) == 0
    with cartridge.open(path, "a") as c:
        assert c.read("/t/out.csv") == b"a\n1\n2\n3\n"
    close_all()


def test_dask_read_csv_over_several_archives(tmp_path):
    pytest.importorskip("pandas", reason="pandas is not installed")
    dd = pytest.importorskip("dask.dataframe", reason="dask[dataframe] is not installed")
    paths = []
    expected = 0
    for k in range(3):
        path = str(tmp_path / f"part{k}.cart")
        with cartridge.open(path, "w") as c:
            for j in range(4):
                rows = "".join(f"{k},{j},{k * 100 + j * 10 + r}\n" for r in range(10))
                c.write(f"/csv/{j}.csv", ("k,j,v\n" + rows).encode())
                expected += sum(k * 100 + j * 10 + r for r in range(10))
        paths.append(path)
    frames = [dd.read_csv("cart://csv/*.csv", storage_options={"fo": p}, blocksize=64)
              for p in paths]
    df = dd.concat(frames)
    assert df.npartitions >= 12
    total = df["v"].sum().compute(scheduler="threads")
    assert total == expected
    assert len(df.compute(scheduler="sync")) == 3 * 4 * 10
    one = dd.read_csv(f"cart://csv/*.csv::{paths[1]}")          # a glob in a chained URL
    assert sorted(one["v"].compute(scheduler="sync")) == sorted(
        100 + j * 10 + r for j in range(4) for r in range(10))
    close_all()


def test_remote_cached_filesystem_reopens_after_close_all(tmp_path):
    """A cart:// filesystem over a remote archive is cached by fsspec with its handle;
    close_all() makes the next URL open the newer version of the object."""
    mem = fsspec.filesystem("memory")
    url = "cart://v.txt::memory://fs17-versions/x.cart"
    try:
        for version in (b"one", b"two"):
            local = str(tmp_path / f"{version.decode()}.cart")
            with cartridge.open(local, "w") as c:
                c.write("/v.txt", version)
            with open(local, "rb") as f:
                mem.pipe("/fs17-versions/x.cart", f.read())
            assert close_all("memory://fs17-versions/x.cart") == (version == b"two")
            with fsspec.open(url, "rb") as f:
                assert f.read() == version
    finally:
        close_all()
        mem.rm("/fs17-versions", recursive=True)


def test_calls_are_reported_to_the_operation_hook(wfs):
    """The filesystem works through the handle's public calls, so every change and read is
    reported like any other call (principal None: the owner)."""
    from cartridge import _handle as H

    seen = []
    unsubscribe = H.subscribe(seen.append)
    try:
        wfs.pipe_file("/hooked", b"12345")
        assert wfs.cat_file("/hooked") == b"12345"
        wfs.rm("/hooked")
    finally:
        unsubscribe()
    got = {(e.principal, e.method, e.action, e.path, e.result, e.size) for e in seen}
    assert (None, "write", "cart:PutObject", "/hooked", "ok", 5) in got
    assert (None, "read", "cart:GetObject", "/hooked", "ok", 5) in got
    assert any(e.method == "delete" and e.action == "cart:DeleteObject" and e.path == "/hooked"
               and e.result == "ok" for e in seen)
