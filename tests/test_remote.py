"""Remote, read-only archives (cartridge/source.py): cartridge.open() of a URL, an fsspec OpenFile
or an open file object, through ranged reads and a block cache sized in pages. Against fsspec's
memory filesystem and a loopback HTTP server that honours Range (cartridge.testing.rangeserver),
counting the bytes fetched; every checksum verified (damage gives CorruptionError); writers
refused; several processes reading several archives at once."""
from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import textwrap
import uuid

import pytest

fsspec = pytest.importorskip("fsspec", reason="fsspec is not installed (pip install 'cartridge[fsspec]')")

import cartridge  # noqa: E402
from cartridge import (  # noqa: E402
    CorruptionError,
    InvalidPathError,
    NotACartridgeError,
    NotFoundError,
    ReadOnlyError,
)
from cartridge._handle import engine as engine_of  # noqa: E402
from cartridge.format import PAGE_SIZE  # noqa: E402
from cartridge.testing.rangeserver import RangeServer  # noqa: E402

N_SMALL = 600
pytestmark = pytest.mark.timeout(300)     # servers and child processes are bounded too


def build(path: str, seed: int = 0) -> dict[str, bytes]:
    """An archive of a few MiB: many small files, some large ones; returns its contents."""
    rng = random.Random(seed)
    files = {f"/small/{i:04d}.txt": f"file {i} of archive {seed}\n".encode() * rng.randint(1, 40)
             for i in range(N_SMALL)}
    files.update({f"/big/{i}.bin": rng.randbytes(rng.randint(200_000, 700_000)) for i in range(6)})
    with cartridge.open(path, "w") as c:
        c.write_many(files.items())
    return files


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("remote") / "src.cart")
    files = build(path)
    with open(path, "rb") as f:
        return f.read(), files


@pytest.fixture
def memurl(image):
    """The archive in fsspec's memory filesystem, under a fresh name."""
    mem = fsspec.filesystem("memory")
    name = f"/remote-{uuid.uuid4().hex}.cart"
    mem.pipe(name, image[0])
    yield f"memory://{name}"
    mem.rm(name)


def test_reads_everything_through_memory_fs(image, memurl):
    data, files = image
    with cartridge.open(memurl) as c:
        assert c.mode == "r" and c.path == memurl
        assert sorted(c.listdir("/")) == ["big", "small"]
        for p in random.Random(1).sample(sorted(files), 50):
            assert c.read(p) == files[p]
            assert c.stat(p).checksum == cartridge.content_checksum(files[p])
        big = files["/big/3.bin"]
        with c.open("/big/3.bin", "rb") as f:          # random access through a stream
            f.seek(123_457)
            assert f.read(70_000) == big[123_457:193_457]
        assert c.read("/big/3.bin", offset=65_530, size=20) == big[65_530:65_550]
        buf = bytearray(len(big))
        assert c.readinto("/big/3.bin", buf) == len(big) and buf == big
        assert c.read_buffer("/big/3.bin") == big
        assert [i.path for i in c.scan("/big/")] == [f"/big/{i}.bin" for i in range(6)]
        report = c.verify()
        assert report.ok, report.problems
        info = c.info()
        assert info["files"] == len(files) and info["remote"]["size"] == len(data)


def test_small_read_fetches_a_few_pages_not_the_archive(image, memurl):
    data, files = image
    assert len(data) > 2_000_000
    with cartridge.open(memurl, block_pages=1) as c:
        assert c.read("/small/0345.txt") == files["/small/0345.txt"]
        st = c.info()["remote"]
    # page 0 (header and root slots), the catalog's path from root to leaf, the content page
    assert st["bytes_fetched"] <= 8 * PAGE_SIZE, st
    assert st["bytes_fetched"] % PAGE_SIZE == 0 and st["requests"] <= 8
    with cartridge.open(memurl) as c:                      # default blocks: 16 pages
        c.read("/small/0345.txt")
        before = c.info()["remote"]
        # the read's blocks, and those info() itself reads (the audit head, the frozen flag)
        assert before["bytes_fetched"] <= 7 * 16 * PAGE_SIZE < len(data) // 4, before
        c.read("/small/0345.txt")
        c.read("/small/0346.txt")                          # its neighbour: cached blocks
        after = c.info()["remote"]
        assert after["requests"] - before["requests"] <= 1, (before, after)


def test_large_reads_fetch_exactly_what_is_asked(image, memurl):
    _data, files = image
    big = files["/big/1.bin"]
    with cartridge.open(memurl) as c:
        c.stat("/big/1.bin")
        before = c.info()["remote"]["bytes_fetched"]
        assert c.read("/big/1.bin") == big
        fetched = c.info()["remote"]["bytes_fetched"] - before
    # the content, rounded up to pages, plus its chunk map: no whole blocks around it
    assert len(big) <= fetched <= len(big) + 20 * PAGE_SIZE


def test_block_cache_bounds_and_arguments(image, memurl, tmp_path):
    _data, files = image
    with cartridge.open(memurl, block_pages=4, cache_pages=8) as c:     # two blocks at most
        for p in sorted(files)[:200]:
            assert c.read(p) == files[p]
        st = c.info()["remote"]
        assert st["cached_blocks"] <= 2 and st["block_pages"] == 4 and st["cache_pages"] == 8
    with cartridge.open(memurl, cache_pages=0) as c:                   # no block cache at all
        assert c.read("/small/0001.txt") == files["/small/0001.txt"]
        assert c.info()["remote"]["cached_blocks"] == 0
    for bad in (0, -1, 5000):
        with pytest.raises(ValueError):
            cartridge.open(memurl, block_pages=bad)
    with pytest.raises(ValueError):
        cartridge.open(memurl, cache_pages=-1)
    for bad in ("4", 4.0, True):
        with pytest.raises(TypeError):
            cartridge.open(memurl, block_pages=bad)
    local = str(tmp_path / "local.cart")
    cartridge.open(local, "w").close()
    with pytest.raises(ValueError):
        cartridge.open(local, block_pages=4)             # remote archives only


def test_open_file_objects_and_openfile(image, memurl):
    _data, files = image
    with fsspec.open(memurl, "rb") as f:                 # an open fsspec file: seek + read
        with cartridge.open(f) as c:
            assert c.read("/small/0002.txt") == files["/small/0002.txt"]
        assert not f.closed                                # stays the caller's to close
    with cartridge.open(fsspec.open(memurl)) as c:       # an OpenFile: ranged cat_file
        assert c.read("/big/0.bin") == files["/big/0.bin"]
    with fsspec.open(memurl, "r") as f, pytest.raises(ValueError):
        cartridge.open(f)                                  # text mode cannot hold an archive


def test_local_urls_open_locally_with_every_mode(tmp_path):
    path = str(tmp_path / "loc.cart")
    with cartridge.open("file://" + path, "w") as c:     # file:// is a local path: writable
        c.write("/a", b"1")
        assert "remote" not in c.info()
    with cartridge.open(fsspec.open("file://" + path), "a") as c:
        c.write("/b", b"2")
    with cartridge.open(path) as c:
        assert c.read("/a") + c.read("/b") == b"12"


def test_writers_never_work_remotely(memurl):
    for mode in ("a", "w", "x"):
        with pytest.raises(ReadOnlyError) as e:
            cartridge.open(memurl, mode)
        assert "read-only" in str(e.value) and isinstance(e.value, PermissionError)
    with pytest.raises(ValueError):
        cartridge.open(memurl, "rw")                       # a bad mode is still a ValueError
    with cartridge.open(memurl) as c:
        for call in (lambda: c.write("/x", b"1"), lambda: c.delete("/small/0001.txt"),
                     lambda: c.mkdir("/d"), lambda: c.open("/x", "wb"),
                     lambda: c.rename("/small", "/s2")):
            with pytest.raises(ReadOnlyError):
                call()
        with pytest.raises(ReadOnlyError), c.transaction():
            pass


def test_missing_hostile_and_bad_targets(tmp_path):
    mem = fsspec.filesystem("memory")
    with pytest.raises(NotFoundError):
        cartridge.open("memory://nothing-here.cart")
    mem.pipe("/fs17-junk.bin", b"not an archive at all" * 1000)
    mem.pipe("/fs17-short.bin", b"CART\x00")
    try:
        with pytest.raises(NotACartridgeError):
            cartridge.open("memory://fs17-junk.bin")
        with pytest.raises(NotACartridgeError):
            cartridge.open("memory://fs17-short.bin")
    finally:
        mem.rm(["/fs17-junk.bin", "/fs17-short.bin"])
    with pytest.raises(InvalidPathError):
        cartridge.open(12345)
    with pytest.raises(InvalidPathError):
        cartridge.open("nosuchprotocol-xyz://a/b.cart")


def memurl_of(data: bytes) -> str:
    name = f"/fs17-{uuid.uuid4().hex}.cart"
    fsspec.filesystem("memory").pipe(name, data)
    return f"memory://{name}"


def _damaged(image: bytes, files: dict, target: str) -> tuple[bytes, str]:
    """A copy with one byte flipped inside the content of file `target`."""
    path = "/tmp-damage.cart"
    mem = fsspec.filesystem("memory")
    mem.pipe(path, image)
    with cartridge.open(f"memory://{path}", block_pages=1) as c:
        c.stat(target)
        before = c.info()["remote"]["bytes_fetched"]
    mem.rm(path)
    # find where the content lives: the page whose bytes hold it
    needle = files[target][:64]
    at = image.find(needle)
    assert at > 0 and before
    bad = bytearray(image)
    bad[at + 10] ^= 0xFF
    return bytes(bad), target


def test_remote_damage_gives_corruption_error(image):
    data, files = image
    mem = fsspec.filesystem("memory")
    bad, target = _damaged(data, files, "/big/2.bin")
    mem.pipe("/fs17-bad.cart", bad)
    try:
        with cartridge.open("memory://fs17-bad.cart") as c:
            assert c.read("/small/0001.txt") == files["/small/0001.txt"]   # elsewhere: fine
            with pytest.raises(CorruptionError):
                c.read(target)
            with pytest.raises(CorruptionError), c.open(target, "rb") as f:
                f.read()
            assert not c.verify().ok
        # damage in metadata: one byte of the catalog's root node
        with cartridge.open(memurl_of(data)) as c:
            root = engine_of(c).root.catalog_root
        meta = bytearray(data)
        meta[root * PAGE_SIZE + 200] ^= 0x55
        mem.pipe("/fs17-bad.cart", bytes(meta))
        with cartridge.open("memory://fs17-bad.cart") as c, pytest.raises(CorruptionError):
            c.read("/small/0001.txt")
        # cut in half
        mem.pipe("/fs17-bad.cart", data[:len(data) // 2])
        with pytest.raises(CorruptionError):
            with cartridge.open("memory://fs17-bad.cart") as c:
                for p in sorted(files):
                    c.read(p)
    finally:
        mem.rm("/fs17-bad.cart")


def test_state_at_open_is_kept(tmp_path):
    """A remote handle reads the commit it found at open and never polls for a newer one (a
    local read-only handle moves at its next call); opening again sees the new commit. Here the
    'remote' is an open file object over a local file that a local writer changes."""
    path = str(tmp_path / "moving.cart")
    with cartridge.open(path, "w") as c:
        c.write("/a", b"first")
    with open(path, "rb") as f, cartridge.open(f) as remote, cartridge.open(path) as local:
        assert "remote" in remote.info()
        assert remote.read("/a") == local.read("/a") == b"first"
        gen = remote.info()["generation"]
        with cartridge.open(path, "a") as w:
            w.write("/b", b"second")
        assert local.exists("/b")                    # the local reader moved on
        assert not remote.exists("/b")               # the remote one did not
        assert remote.info()["generation"] == gen and remote.read("/a") == b"first"
        with cartridge.open(f) as again:             # reopening sees the new commit
            assert again.read("/b") == b"second"


# -- HTTP ----------------------------------------------------------------------------------------

@pytest.fixture
def http():
    pytest.importorskip("aiohttp", reason="fsspec's HTTP filesystem needs aiohttp")
    return fsspec


def test_http_ranged_reads_fetch_a_few_pages(image, http):
    data, files = image
    with RangeServer({"/x.cart": data}) as srv:
        with cartridge.open(srv.url("/x.cart"), block_pages=1) as c:
            assert c.read("/small/0123.txt") == files["/small/0123.txt"]
            st = c.info()["remote"]
        # what the server sent is what the source counted: a few pages of a multi-MiB file
        assert srv.bytes_sent == st["bytes_fetched"] <= 8 * PAGE_SIZE
        assert all(last - first + 1 <= PAGE_SIZE for _p, first, last in srv.ranges)
        srv.reset()
        with cartridge.open(srv.url("/x.cart")) as c:
            for p in ("/small/0000.txt", "/small/0599.txt", "/big/5.bin"):
                assert c.read(p) == files[p]
        assert len(files["/big/5.bin"]) < srv.bytes_sent < len(files["/big/5.bin"]) + 400_000
        assert srv.bytes_sent < len(data) // 2


def test_http_server_ignoring_ranges_is_a_clear_error(image, http):
    data, _files = image
    with RangeServer({"/x.cart": data}, honour_range=False) as srv:
        with pytest.raises(OSError) as e:
            with cartridge.open(srv.url("/x.cart")) as c:
                c.read("/small/0001.txt")
        assert "range" in str(e.value).lower()
        assert not isinstance(e.value, CorruptionError)
    with RangeServer({}) as srv, pytest.raises(NotFoundError):
        cartridge.open(srv.url("/missing.cart"))


def test_http_damage_gives_corruption_error(image, http):
    data, files = image
    bad, target = _damaged(data, files, "/big/4.bin")
    with RangeServer({"/bad.cart": bad}) as srv, cartridge.open(srv.url("/bad.cart")) as c:
        with pytest.raises(CorruptionError):
            c.read(target)
        assert c.read("/big/3.bin") == files["/big/3.bin"]


def test_processes_read_archives_in_parallel_over_http(tmp_path, http):
    """Three processes (like Dask workers) each read four archives served over HTTP at once;
    every file's digest matches."""
    served = {}
    expect = {}
    for k in range(4):
        path = str(tmp_path / f"a{k}.cart")
        files = build(path, seed=100 + k)
        with open(path, "rb") as f:
            served[f"/a{k}.cart"] = f.read()
        expect[k] = {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}
    code = textwrap.dedent("""
        import hashlib, json, sys, cartridge
        out = {}
        for url in sys.argv[1:]:
            with cartridge.open(url) as c:
                out[url] = {i.path: hashlib.sha256(c.read(i.path)).hexdigest()
                            for i in c.scan("/")}
        print(json.dumps(out))
        """)
    with RangeServer(served) as srv:
        urls = [srv.url(f"/a{k}.cart") for k in range(4)]
        procs = [subprocess.Popen([sys.executable, "-c", code, *(urls[w:] + urls[:w])],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for w in range(3)]
        results = []
        try:
            for p in procs:
                out, err = p.communicate(timeout=240)
                assert p.returncode == 0, err
                results.append(json.loads(out))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    for res in results:
        assert len(res) == 4
        for k in range(4):
            assert res[urls[k]] == expect[k]


def test_dask_processes_read_several_remote_archives(tmp_path, http):
    """Dask's process scheduler reads CSV members of three archives served over HTTP: each
    worker process unpickles the cart:// filesystem and opens the remote archive itself, with
    ranged reads (the server sends far less than the archives, which each hold a 1 MiB blob
    beside the tables); the sums are right."""
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    dd = pytest.importorskip("dask.dataframe", reason="dask[dataframe] is not installed")
    import os

    import dask

    served, expected = {}, 0
    for k in range(3):
        path = str(tmp_path / f"t{k}.cart")
        with cartridge.open(path, "w") as c:
            c.write("/blob.bin", random.Random(k).randbytes(1 << 20))
            for j in range(3):
                rows = [(k, j, k * 1000 + j * 10 + r) for r in range(10)]
                expected += sum(v for _k, _j, v in rows)
                c.write(f"/csv/{j}.csv", ("k,j,v\n" + "".join(f"{a},{b},{v}\n"
                                                                for a, b, v in rows)).encode())
        with open(path, "rb") as f:
            served[f"/t{k}.cart"] = f.read()
    with RangeServer(served) as srv:
        frames = [dd.read_csv(f"cart://csv/*.csv::{srv.url(f'/t{k}.cart')}") for k in range(3)]
        df = dd.concat(frames)
        assert df.npartitions == 9
        pids = df.map_partitions(lambda part: pd.Series([os.getpid()] * len(part)),
                                 meta=("pid", "i8"))
        total, worker_pids = dask.compute(
            df["v"].sum(), pids, scheduler="processes", num_workers=2)
        sent = srv.bytes_sent
    assert total == expected
    assert set(worker_pids) and os.getpid() not in set(worker_pids)     # other processes read
    assert sent < sum(len(d) for d in served.values()) // 2, sent
    from cartridge.fsspec import close_all
    close_all()


def test_env_has_no_server_left(http):
    """RangeServer stops its thread: nothing listens after the block."""
    import socket
    with RangeServer({"/a": b"x"}) as srv:
        port = srv.port
    s = socket.socket()
    s.settimeout(2)
    try:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    finally:
        s.close()


def test_sqlite_and_policies_work_remotely(tmp_path):
    """A remote handle is a read-only handle like any other: SQLite members read through the
    VFS and principal handles are checked against the stored policies."""
    apsw = pytest.importorskip("apsw")
    path = str(tmp_path / "s.cart")
    with cartridge.open(path, "w") as c:
        conn = c.sqlite("/app.db")
        conn.execute("CREATE TABLE t(x)")
        with conn:
            conn.executemany("INSERT INTO t VALUES(?)", [(i,) for i in range(1000)])
        conn.close()
        c.write("/shared/a", b"A")
        c.write("/private/b", b"B")
        c.set_policy("p", {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "cart:*", "Resource": "/shared/*"}]})
    with open(path, "rb") as f:
        url = memurl_of(f.read())
    with cartridge.open(url) as r:
        conn = r.sqlite("/app.db")
        assert conn.execute("SELECT count(*), sum(x) FROM t").fetchall() == [(1000, 499500)]
        with pytest.raises(apsw.ReadOnlyError):    # read-only: SQLite refuses the write
            conn.execute("INSERT INTO t VALUES(1)")
        conn.close()
    with cartridge.open(url, principal="ann") as ann:
        assert ann.read("/shared/a") == b"A"
        with pytest.raises(cartridge.AccessDeniedError):
            ann.read("/private/b")


def test_short_or_failing_remote_answers(image):
    """A remote that answers a range with fewer bytes (a lying size, a cut connection) gives
    CorruptionError, and the short block is not cached; a transport error is an OSError naming
    the range; a file object that is closed or in text mode is refused."""
    from cartridge.source import RemoteSource

    data, files = image
    state = {"short": True, "fail": False}

    def fetch(start, end):
        if state["fail"]:
            raise RuntimeError("connection reset")
        if state["short"] and start > 0:
            return data[start:end - 100]
        return data[start:end]

    src = RemoteSource(fetch, len(data), "lying://x", block_pages=1, cache_pages=64)
    from cartridge.engine import Engine

    eng = Engine(-1, "lying://x", writable=False, sync="full", cache_size=1 << 20, source=src)
    with pytest.raises(CorruptionError):
        eng.get(b"/small/0001.txt")
    assert src.stats()["cached_blocks"] == 1               # page 0 only: no short block kept
    state["short"] = False
    assert eng.get(b"/small/0001.txt") is not None         # a good answer later is used
    state["fail"] = True
    eng.pager.cache.clear()
    src._blocks.clear()
    with pytest.raises(OSError) as e:
        eng.get(b"/small/0002.txt")
    assert "bytes" in str(e.value) and "connection reset" in str(e.value)
    eng.close()
    with pytest.raises(ValueError):
        Engine(-1, "x", writable=True, sync="full", cache_size=0, source=src)


def test_local_names_that_look_a_little_like_urls(tmp_path, monkeypatch):
    """Only "scheme://..." and chained URLs go through fsspec: a local name holding "::" or ":"
    is a local archive (writable), and a pathlib.Path is always local."""
    monkeypatch.chdir(tmp_path)
    for name in ("a::b.cart", "c:d.cart", "2024-01-01T10:00.cart"):
        with cartridge.open(name, "w") as c:
            c.write("/x", b"1")
            assert "remote" not in c.info()
    (tmp_path / "http:").mkdir()
    from pathlib import Path
    with cartridge.open(Path("http://x.cart"), "w") as c:   # the directory "http:", then x.cart
        c.write("/y", b"2")
    assert (tmp_path / "http:" / "x.cart").is_file()
    with pytest.raises(NotFoundError):                       # a chained URL is remote
        cartridge.open("simplecache::memory://fs17-none.cart")


def test_snapshots_of_a_remote_archive(tmp_path):
    """cartridge.open(url).at(name): the snapshot view reads the same remote file through the
    same way in (a URL, an fsspec OpenFile, a file object - not by reopening the handle's name),
    with the whole read API (SQLite included), and keeps reading after the handle closes."""
    import io
    import threading

    apsw = pytest.importorskip("apsw")
    path = str(tmp_path / "s.cart")
    rng = random.Random(11)
    old = {f"/d/{i}": rng.randbytes(rng.randint(0, 90_000)) for i in range(30)}
    with cartridge.open(path, "w") as c:
        c.write_many(old.items())
        conn = c.sqlite("/app.db")
        conn.execute("CREATE TABLE t(x)")
        with conn:
            conn.executemany("INSERT INTO t VALUES(?)", [(i,) for i in range(500)])
        conn.close()
        c.snapshot("before")
        for i in range(0, 30, 3):
            c.write(f"/d/{i}", b"new")
        c.delete("/d/1")
        conn = c.sqlite("/app.db")
        with conn:
            conn.execute("DELETE FROM t")
        conn.close()
    with open(path, "rb") as f:
        data = f.read()
    url = memurl_of(data)
    targets = [url, fsspec.open(url, "rb"), io.BytesIO(data)]
    for target in targets:
        with cartridge.open(target, block_pages=2) as r:
            assert [s.name for s in r.snapshots()] == ["before"]
            assert r.read("/d/0") == b"new" and not r.exists("/d/1")
            v = r.at("before")
            with pytest.raises(NotFoundError):
                r.at("no such")
            # the handle and the view read at once from two threads (a file object's seek and
            # read stay under one lock): never a wrong byte
            errors: list = []

            def live_reads(r=r, errors=errors):
                try:
                    for _ in range(5):
                        assert r.read("/d/0") == b"new"
                        assert r.read("/d/2") == old["/d/2"]
                except BaseException as e:       # reported below
                    errors.append(e)
            t = threading.Thread(target=live_reads)
            t.start()
            for _ in range(5):
                assert v.read("/d/0") == old["/d/0"]
            t.join()
            assert not errors, errors
        # the handle is closed: the view still reads
        assert v.info()["remote"]["block_pages"] == 2
        for p, want in old.items():
            assert v.read(p) == want
        assert v.read("/d/5", offset=10, size=100) == old["/d/5"][10:110]
        with v.open("/d/7", "rb") as f:
            assert f.read() == old["/d/7"]
        assert v.stat("/d/1").size == len(old["/d/1"])
        assert sorted(v.listdir("/d")) == sorted(p[3:] for p in old)
        assert [i.path for i in v.scan("/d/")] == sorted(old, key=lambda s: s.encode())
        conn = v.sqlite("/app.db", readonly=True)
        assert conn.execute("SELECT count(*) FROM t").fetchall() == [(500,)]
        with pytest.raises(apsw.ReadOnlyError):
            conn.execute("INSERT INTO t VALUES(1)")
        conn.close()
        rep = v.verify()
        assert rep.ok, rep.problems
        with pytest.raises(ReadOnlyError):
            v.write("/x", b"x")
        v.close()


def test_cli_reads_a_remote_archive_and_refuses_writes(image, memurl, tmp_path, capsys,
                                                       monkeypatch):
    """The command line takes a URL wherever it reads an archive; a command that writes says the
    remote archive opens read-only (not "no such archive", which it used to say for rm, mv,
    mkdir...); a file:// URL is the local archive; a URL whose fsspec package is missing is a
    one-line error naming the package, not an internal error."""
    from cartridge.cli import main

    _data, files = image
    assert main(["cat", memurl, "/small/0007.txt"]) == 0
    assert capsys.readouterr().out.encode() == files["/small/0007.txt"]
    assert main(["ls", memurl, "/big", "--json"]) == 0
    assert [e["name"] for e in json.loads(capsys.readouterr().out)] == [
        f"{i}.bin" for i in range(6)]
    for argv in (["rm", memurl, "/small/0001.txt"], ["mkdir", memurl, "/d"],
                 ["mv", memurl, "/small", "/s2"], ["put", memurl, __file__],
                 ["snapshot", "create", memurl, "v1"], ["compact", memurl]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "read-only" in err and "no such" not in err, (argv, err)
    local = tmp_path / "loc.cart"
    with cartridge.open(str(local), "x") as c:
        c.write("/a", b"1")
    assert main(["rm", "file://" + str(local), "/a"]) == 0        # file://: the local archive
    assert main(["mkdir", "file://" + str(tmp_path / "missing.cart"), "/d"]) == 1
    assert "no such archive" in capsys.readouterr().err
    assert not (tmp_path / "missing.cart").exists()
    with cartridge.open(str(local)) as c:
        assert not c.exists("/a")
    monkeypatch.setitem(sys.modules, "fsspec", None)              # fsspec not installed
    for argv in (["ls", "http://127.0.0.1:9/x.cart"], ["rm", "http://127.0.0.1:9/x.cart", "/a"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("cartridge: error: ") and "internal" not in err, err
        assert "cartridge[fsspec]" in err and err.count("\n") == 1, err
