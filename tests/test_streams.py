"""Streaming file objects: cart.open(path, "rb" | "wb" | "ab" | "r+b")."""
import hashlib
import io
import random

import pytest
from conftest import reopen

import cartridge
from cartridge import ClosedError, NotFoundError, ReadOnlyError

KIB = 1024
CHUNK = 64 * KIB


def csum(data) -> str:
    return cartridge.content_checksum(data)


def rbytes(n, seed=0):
    return random.Random(seed).randbytes(n)


# ----------------------------------------------------------------------------- rb


@pytest.mark.parametrize("size", [0, 1, 500, 4096, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_rb_read_all(cart, size):
    data = rbytes(size, size)
    cart.write("/f", data)
    with cart.open("/f", "rb") as f:
        assert f.readable() and f.seekable() and not f.writable()
        assert f.read() == data
        assert f.read() == b""
        assert f.tell() == size
    with cart.open("/f") as f:      # "rb" is the default
        assert f.read(-1) == data
        assert f.readall() == b""


def test_rb_read_pieces(cart):
    data = rbytes(5 * CHUNK + 123, 1)
    cart.write("/f", data)
    for piece in (1, 7, 4096, CHUNK - 1, CHUNK, CHUNK + 1, 100_000):
        if piece < 100:
            data_ = data[:3 * KIB]
        else:
            data_ = data
        out = bytearray()
        with cart.open("/f", "rb") as f:
            while len(out) < len(data_):
                b = f.read(piece)
                if not b:
                    break
                assert len(b) <= piece
                out += b
        assert out[:len(data_)] == data_, piece


def test_rb_readinto(cart):
    data = rbytes(3 * CHUNK + 5, 2)
    cart.write("/f", data)
    with cart.open("/f", "rb") as f:
        buf = bytearray(1000)
        assert f.readinto(buf) == 1000
        assert buf == data[:1000]
        assert f.tell() == 1000
        big = bytearray(CHUNK * 2)
        n = f.readinto(big)
        assert n > 0
        assert big[:n] == data[1000:1000 + n]
        rest = bytearray(10 * CHUNK)
        got = bytearray(big[:n])
        while True:
            m = f.readinto(rest)
            if not m:
                break
            got += rest[:m]
        assert bytes(buf) + bytes(got) == data
        mv = memoryview(bytearray(10))
        assert f.readinto(mv) == 0


def test_rb_seek_tell(cart):
    data = rbytes(3 * CHUNK, 3)
    cart.write("/f", data)
    with cart.open("/f", "rb") as f:
        assert f.tell() == 0
        assert f.seek(CHUNK - 2) == CHUNK - 2
        assert f.read(4) == data[CHUNK - 2:CHUNK + 2]
        assert f.tell() == CHUNK + 2
        assert f.seek(-10, io.SEEK_CUR) == CHUNK - 8
        assert f.read(3) == data[CHUNK - 8:CHUNK - 5]
        assert f.seek(-5, io.SEEK_END) == len(data) - 5
        assert f.read() == data[-5:]
        assert f.seek(0, io.SEEK_END) == len(data)
        assert f.read(10) == b""
        assert f.seek(len(data) + 1000) == len(data) + 1000
        assert f.read(10) == b""
        assert f.seek(0) == 0
        assert f.read(2) == data[:2]
        with pytest.raises((ValueError, OSError)):
            f.seek(-1)
        with pytest.raises((ValueError, OSError)):
            f.seek(0, 7)


def test_rb_readline_and_iteration(cart):
    lines = [b"first line\n", b"\n", b"x" * (CHUNK + 5) + b"\n", b"last without newline"]
    data = b"".join(lines)
    cart.write("/t", data)
    with cart.open("/t", "rb") as f:
        assert f.readline() == lines[0]
        assert f.readline() == lines[1]
        assert f.readline() == lines[2]
        assert f.readline() == lines[3]
        assert f.readline() == b""
    with cart.open("/t", "rb") as f:
        assert list(f) == lines
    with cart.open("/t", "rb") as f:
        assert f.readlines() == lines
    with cart.open("/t", "rb") as f:
        assert f.readline(5) == b"first"


def test_rb_buffered_wrapper(cart):
    data = b"".join(b"line %d\n" % i for i in range(5000))
    cart.write("/t", data)
    with io.BufferedReader(cart.open("/t", "rb"), buffer_size=8192) as f:
        assert f.readline() == b"line 0\n"
        assert f.read() == data[len(b"line 0\n"):]
    with io.TextIOWrapper(io.BufferedReader(cart.open("/t", "rb")), encoding="ascii") as t:
        assert t.readline() == "line 0\n"


def test_rb_errors(cart):
    cart.write("/d/f", b"x")
    with pytest.raises(NotFoundError):
        cart.open("/missing", "rb")
    with pytest.raises(IsADirectoryError):
        cart.open("/d", "rb")
    for bad in ("r", "w", "rt", "wt", "a", "x", "xb", "rb+x", "br"):
        with pytest.raises(ValueError):
            cart.open("/d/f", bad)


def test_rb_name_and_close(cart):
    cart.write("/a/b", b"x")
    f = cart.open("a//b", "rb")
    assert f.name == "/a/b"
    assert not f.closed
    f.close()
    assert f.closed
    f.close()


# ----------------------------------------------------------------------------- wb


def test_wb_visible_only_at_close_new_file(cart, cart_path):
    f = cart.open("/new", "wb")
    assert f.writable()
    assert f.write(b"hello ") == 6
    f.write(bytearray(b"world"))
    f.write(memoryview(b"!" * 100_000))
    assert not cart.exists("/new")
    assert cart.listdir("/") == []
    with cartridge.open(cart_path, "r") as r:
        assert not r.exists("/new")
    f.close()
    assert cart.read("/new") == b"hello world" + b"!" * 100_000
    assert cart.stat("/new").checksum == csum(b"hello world" + b"!" * 100_000)
    with cartridge.open(cart_path, "r") as r:
        assert r.read("/new") == b"hello world" + b"!" * 100_000


def test_wb_replacing_old_readable_until_close(cart):
    old = rbytes(200_000, 5)
    cart.write("/f", old)
    st_old = cart.stat("/f")
    with cart.open("/f", "wb") as f:
        f.write(b"new content")
        assert cart.read("/f") == old
        assert cart.stat("/f").size == len(old)
        f.write(b"x" * 300_000)
        assert cart.read("/f") == old
    assert cart.read("/f") == b"new content" + b"x" * 300_000
    st = cart.stat("/f")
    assert st.ctime == st_old.ctime
    assert st.mtime >= st_old.mtime
    assert cart.verify().ok


def test_wb_exception_discards(cart):
    cart.write("/f", b"old")
    with pytest.raises(RuntimeError), cart.open("/f", "wb") as f:
        f.write(b"new" * 100_000)
        raise RuntimeError
    assert cart.read("/f") == b"old"
    with pytest.raises(RuntimeError), cart.open("/g", "wb") as f:
        f.write(b"abc")
        raise RuntimeError
    assert not cart.exists("/g")
    rep = cart.verify()
    assert rep.ok, rep.problems
    c2 = reopen(cart)
    try:
        assert c2.read("/f") == b"old"
        assert not c2.exists("/g")
        assert c2.verify().ok
    finally:
        c2.close()


def test_wb_empty(cart):
    cart.write("/f", b"something")
    with cart.open("/f", "wb"):
        pass
    assert cart.read("/f") == b""
    with cart.open("/e", "wb"):
        pass
    assert cart.isfile("/e") and cart.stat("/e").size == 0


@pytest.mark.parametrize("size", [1, 959, 961, 4096, CHUNK - 1, CHUNK, CHUNK + 1, 17 * CHUNK + 5])
def test_wb_sizes(cart, size):
    data = rbytes(size, size)
    with cart.open("/f", "wb") as f:
        for i in range(0, size, 30_000):
            f.write(data[i:i + 30_000])
    assert cart.read("/f") == data
    assert cart.stat("/f").checksum == csum(data)
    assert cart.verify().ok


def test_wb_seek_and_sparse(cart):
    with cart.open("/f", "wb") as f:
        f.write(b"abc")
        f.seek(CHUNK + 10)
        f.write(b"Z")
        assert f.tell() == CHUNK + 11
        f.seek(1)
        f.write(b"B")
    data = cart.read("/f")
    assert len(data) == CHUNK + 11
    assert data[:3] == b"aBc"
    assert data[3:CHUNK + 10] == bytes(CHUNK + 7)
    assert data[-1:] == b"Z"
    assert cart.stat("/f").checksum == csum(data)


def test_rplus_write_then_gap_past_chunk(cart):
    cart.write("/g", b"0123456789")
    with cart.open("/g", "r+b") as f:
        f.write(b"AB")
        f.seek(2 * CHUNK)
        f.write(b"Z")
    assert cart.read("/g") == b"AB23456789" + bytes(2 * CHUNK - 10) + b"Z"


def test_wb_truncate_extends_past_chunk(cart):
    with cart.open("/k", "wb") as f:
        f.write(b"abc")
        f.truncate(2 * CHUNK)
    assert cart.read("/k") == b"abc" + bytes(2 * CHUNK - 3)


def test_rplus_gap_past_chunk_untouched_base(cart):
    cart.write("/g", b"0123456789")
    with cart.open("/g", "r+b") as f:
        f.seek(2 * CHUNK)
        f.write(b"Z")
    assert cart.read("/g") == b"0123456789" + bytes(2 * CHUNK - 10) + b"Z"
    with cart.open("/g", "r+b") as f:
        f.truncate(3 * CHUNK)
    assert cart.read("/g") == b"0123456789" + bytes(2 * CHUNK - 10) + b"Z" + bytes(CHUNK - 1)
    assert cart.verify().ok


def test_wb_creates_parents_and_dir_conflicts(cart):
    with cart.open("/a/b/c", "wb") as f:
        f.write(b"x")
    assert cart.isdir("/a/b")
    with pytest.raises(IsADirectoryError):
        cart.open("/a/b", "wb")
    cart.mkdir("/e")
    with pytest.raises(IsADirectoryError):
        cart.open("/e", "wb")
    with pytest.raises(NotADirectoryError):
        cart.open("/a/b/c/d", "wb")


def test_wb_not_readable(cart):
    with cart.open("/f", "wb") as f:
        assert not f.readable()
        with pytest.raises((io.UnsupportedOperation, OSError, ValueError)):
            f.read()


def test_wb_last_close_wins(cart):
    a = cart.open("/f", "wb")
    b = cart.open("/f", "wb")
    a.write(b"A" * 100_000)
    b.write(b"B" * 70_000)
    b.close()
    assert cart.read("/f") == b"B" * 70_000
    a.close()
    assert cart.read("/f") == b"A" * 100_000
    assert cart.verify().ok


def test_wb_in_transaction_rolled_back(cart):
    cart.write("/f", b"old")
    with pytest.raises(RuntimeError), cart.transaction():
        with cart.open("/f", "wb") as f:
            f.write(b"n" * 200_000)
        assert cart.read("/f") == b"n" * 200_000
        raise RuntimeError
    assert cart.read("/f") == b"old"
    assert cart.verify().ok


def test_wb_in_transaction_committed(cart):
    with cart.transaction():
        with cart.open("/f", "wb") as f:
            f.write(b"n" * 200_000)
        cart.write("/g", b"g")
    c2 = reopen(cart, "r")
    try:
        assert c2.read("/f") == b"n" * 200_000 and c2.read("/g") == b"g"
    finally:
        c2.close()


def test_large_streamed_write(cart):
    """20 MiB in 100 KB pieces; content generated on the fly and compared by hash."""
    piece = 100_000
    total = 20 * 1024 * 1024
    h_in = hashlib.sha256()
    rnd = random.Random(42)
    written = 0
    with cart.open("/big.bin", "wb") as f:
        while written < total:
            n = min(piece, total - written)
            block = rnd.randbytes(n)
            h_in.update(block)
            assert f.write(block) == n
            written += n
    assert cart.stat("/big.bin").size == total
    h_out = hashlib.sha256()
    with cart.open("/big.bin", "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h_out.update(b)
    assert h_out.digest() == h_in.digest()
    # ranged read across a chunk boundary deep inside
    rnd = random.Random(42)
    first = b"".join(rnd.randbytes(piece) for _ in range(3))
    assert cart.read("/big.bin", offset=CHUNK - 3, size=CHUNK) == first[CHUNK - 3:2 * CHUNK - 3]
    rep = cart.verify()
    assert rep.ok, rep.problems


# ----------------------------------------------------------------------------- ab


def test_ab_appends(cart):
    cart.write("/f", b"start")
    with cart.open("/f", "ab") as f:
        assert f.tell() == 5
        f.write(b"-more")
        f.seek(0)
        f.write(b"-end")       # append mode ignores the position
    assert cart.read("/f") == b"start-more-end"


def test_ab_creates(cart):
    with cart.open("/new", "ab") as f:
        f.write(b"abc")
    assert cart.read("/new") == b"abc"


@pytest.mark.parametrize("base", [0, 10, 959, 1000, CHUNK - 3, CHUNK, CHUNK + 7, 3 * CHUNK])
def test_ab_across_boundaries(cart, base):
    old = rbytes(base, base)
    add = rbytes(CHUNK + 100, base + 1)
    cart.write("/f", old)
    with cart.open("/f", "ab") as f:
        f.write(add[:50])
        f.write(add[50:])
    assert cart.read("/f") == old + add
    assert cart.stat("/f").checksum == csum(old + add)
    assert cart.verify().ok


def test_ab_visible_at_close(cart):
    cart.write("/f", b"base")
    with cart.open("/f", "ab") as f:
        f.write(b"tail")
        assert cart.read("/f") == b"base"
    assert cart.read("/f") == b"basetail"


# ----------------------------------------------------------------------------- r+b


def test_rplus_read_overwrite_extend(cart):
    data = rbytes(3 * CHUNK + 100, 8)
    cart.write("/f", data)
    model = bytearray(data)
    with cart.open("/f", "r+b") as f:
        assert f.readable() and f.writable()
        assert f.read(10) == data[:10]
        f.seek(CHUNK - 5)
        f.write(b"M" * 10)
        model[CHUNK - 5:CHUNK + 5] = b"M" * 10
        f.seek(CHUNK - 7)
        assert f.read(14) == bytes(model[CHUNK - 7:CHUNK + 7])
        f.seek(0, io.SEEK_END)
        f.write(b"E" * 70_000)
        model += b"E" * 70_000
        f.seek(len(model) + 10)
        f.write(b"Z")
        model += bytes(10) + b"Z"
        f.seek(0)
        assert f.read() == bytes(model)
        assert cart.read("/f") == data
    assert cart.read("/f") == bytes(model)
    assert cart.stat("/f").checksum == csum(bytes(model))
    assert cart.verify().ok


def test_rplus_readinto(cart):
    cart.write("/f", b"0123456789")
    with cart.open("/f", "r+b") as f:
        buf = bytearray(4)
        assert f.readinto(buf) == 4 and buf == b"0123"
        f.write(b"ab")
        assert f.readinto(buf) == 4 and buf == b"6789"
        assert f.readinto(buf) == 0
    assert cart.read("/f") == b"0123ab6789"


def test_rplus_small_inline(cart):
    cart.write("/f", b"hello")
    with cart.open("/f", "r+b") as f:
        f.seek(1)
        f.write(b"E")
    assert cart.read("/f") == b"hEllo"


def test_rplus_truncate(cart):
    data = rbytes(3 * CHUNK, 9)
    cart.write("/f", data)
    with cart.open("/f", "r+b") as f:
        assert f.truncate(CHUNK + 10) == CHUNK + 10
        f.seek(0, io.SEEK_END)
        assert f.tell() == CHUNK + 10
    assert cart.read("/f") == data[:CHUNK + 10]
    with cart.open("/f", "r+b") as f:
        f.truncate(CHUNK + 20)
    assert cart.read("/f") == data[:CHUNK + 10] + bytes(10)
    with cart.open("/f", "r+b") as f:
        f.truncate(0)
    assert cart.read("/f") == b""
    assert cart.verify().ok


def test_rplus_missing(cart):
    with pytest.raises(NotFoundError):
        cart.open("/missing", "r+b")
    assert not cart.exists("/missing")


def test_rplus_many_random_ops(cart):
    rnd = random.Random(11)
    model = bytearray(rnd.randbytes(2 * CHUNK + 3))
    cart.write("/f", bytes(model))
    for round_ in range(5):
        with cart.open("/f", "r+b") as f:
            for _ in range(25):
                pos = rnd.randrange(len(model) + 1000)
                n = rnd.choice([1, 100, 5000, CHUNK, CHUNK + 1])
                chunk = rnd.randbytes(n)
                f.seek(pos)
                f.write(chunk)
                if pos > len(model):
                    model += bytes(pos - len(model))
                model[pos:pos + n] = chunk
                if rnd.random() < 0.3:
                    p = rnd.randrange(len(model))
                    f.seek(p)
                    assert f.read(500) == bytes(model[p:p + 500])
        assert cart.read("/f") == bytes(model), round_
    assert cart.verify().ok


# ----------------------------------------------------------------------------- read-only, closed


def test_stream_on_read_only_handle(cart_path):
    with cartridge.open(cart_path, "w") as c:
        c.write("/f", b"x")
    with cartridge.open(cart_path, "r") as r:
        for mode in ("wb", "ab", "r+b"):
            with pytest.raises(ReadOnlyError):
                r.open("/f", mode)
            with pytest.raises(PermissionError):
                r.open("/new", mode)
        with r.open("/f", "rb") as f:
            assert f.read() == b"x"


def test_stream_use_after_stream_close(cart):
    cart.write("/f", b"data")
    f = cart.open("/f", "rb")
    f.close()
    for call in (f.read, lambda: f.read(1), lambda: f.readinto(bytearray(1)), f.tell,
                 lambda: f.seek(0), f.readline):
        with pytest.raises(ValueError):
            call()
    w = cart.open("/g", "wb")
    w.close()
    with pytest.raises(ValueError):
        w.write(b"x")


def test_stream_use_after_archive_close(cart_path):
    c = cartridge.open(cart_path, "w")
    c.write("/f", b"data" * 50_000)
    r = c.open("/f", "rb")
    assert r.read(4) == b"data"
    c.close()
    for call in (r.read, lambda: r.readinto(bytearray(4)), r.tell, lambda: r.seek(0)):
        with pytest.raises(ClosedError) as ei:
            call()
        assert isinstance(ei.value, ValueError)
    r.close()


def test_write_stream_after_archive_close(cart_path):
    c = cartridge.open(cart_path, "w")
    w = c.open("/g", "wb")
    w.write(b"abc")
    c.close()
    with pytest.raises(ValueError):
        w.write(b"x")
    w.close()


def test_archive_close_with_open_write_stream(cart_path):
    """Closing the archive with a write stream open leaves it consistent: old or new, whole."""
    c = cartridge.open(cart_path, "w")
    c.write("/f", b"old")
    w = c.open("/f", "wb")
    w.write(b"n" * 200_000)
    c.close()
    with cartridge.open(cart_path, "r") as r:
        assert r.read("/f") in (b"old", b"n" * 200_000)
        assert r.verify().ok


# ----------------------------------------------------------------------------- snapshots


def test_reader_keeps_old_version(cart):
    v1 = rbytes(5 * CHUNK + 11, 21)
    cart.write("/f", v1)
    r = cart.open("/f", "rb")
    assert r.read(100) == v1[:100]
    cart.write("/f", rbytes(6 * CHUNK, 22))          # replaced
    cart.commit()
    assert r.read(CHUNK) == v1[100:100 + CHUNK]
    cart.delete("/f")                                # deleted
    cart.commit()
    # churn to tempt page reuse, over several commits
    for i in range(30):
        cart.write(f"/churn{i}", rbytes(CHUNK * 2, 100 + i))
        if i % 3 == 0:
            cart.delete(f"/churn{i}")
        cart.commit()
    with cart.open("/f2", "wb") as w:
        w.write(rbytes(8 * CHUNK, 99))
    assert r.read() == v1[100 + CHUNK:]
    r.seek(0)
    assert r.read() == v1
    r.close()
    assert not cart.exists("/f")
    rep = cart.verify()
    assert rep.ok, rep.problems


def test_reader_keeps_old_version_small_file(cart):
    cart.write("/s", b"version one")
    with cart.open("/s", "rb") as r:
        cart.write("/s", b"version two, longer")
        cart.delete("/s")
        assert r.read() == b"version one"


def test_delete_while_reader_open_minimal(cart):
    cart.write("/s", b"one")
    r = cart.open("/s", "rb")
    cart.write("/s", b"two")
    cart.delete("/s")
    assert r.read() == b"one"
    r.close()


def test_reader_keeps_old_version_replaced_only(cart):
    """Same as test_reader_keeps_old_version, without deletes."""
    v1 = rbytes(5 * CHUNK + 11, 21)
    cart.write("/f", v1)
    r = cart.open("/f", "rb")
    assert r.read(100) == v1[:100]
    for i in range(5):
        cart.write("/f", rbytes(6 * CHUNK, 22 + i))
        cart.commit()
    for i in range(30):
        cart.write(f"/churn{i}", rbytes(CHUNK * 2, 100 + i))
        cart.commit()
    with cart.open("/f2", "wb") as w:
        w.write(rbytes(8 * CHUNK, 99))
    assert r.read() == v1[100:]
    r.close()
    rep = cart.verify()
    assert rep.ok, rep.problems


def test_several_readers_different_versions(cart):
    versions = [rbytes(2 * CHUNK + i, i) for i in range(4)]
    readers = []
    for v in versions:
        cart.write("/f", v)
        readers.append(cart.open("/f", "rb"))
    for i in range(10):
        cart.write(f"/x{i}", rbytes(3 * CHUNK, 50 + i))
    for r, v in zip(readers, versions):
        assert r.read() == v
        r.close()
    assert cart.verify().ok


def test_pages_reused_after_reader_closes(cart):
    """Once the reader is gone, space from the old version can come back (the file stops
    growing under repeated replace)."""
    data = rbytes(10 * CHUNK, 1)
    cart.write("/f", data)
    with cart.open("/f", "rb") as r:
        cart.write("/f", data)
        r.read()
    for _ in range(10):
        cart.write("/f", data)
    size1 = cart.info()["file_size"]
    for _ in range(20):
        cart.write("/f", data)
    size2 = cart.info()["file_size"]
    assert size2 <= size1 * 1.5
    assert cart.verify().ok


def test_reader_handle_stream_keeps_old_version_across_handles(cart, cart_path):
    """A stream on a separate read-only handle pins its version against the writer's reuse."""
    v1 = rbytes(5 * CHUNK, 31)
    cart.write("/f", v1)
    with cartridge.open(cart_path, "r") as r:
        s = r.open("/f", "rb")
        assert s.read(10) == v1[:10]
        cart.write("/f", rbytes(5 * CHUNK, 32))
        for i in range(40):
            cart.write(f"/c{i}", rbytes(3 * CHUNK, 40 + i))
            if i % 2:
                cart.write(f"/c{i}", b"")
        assert s.read() == v1[10:]
        s.close()
        assert r.read("/f") == rbytes(5 * CHUNK, 32)
        assert r.verify().ok
    assert cart.verify().ok


def test_streams_from_threads(cart):
    import threading

    errors = []

    def worker(t):
        try:
            rnd = random.Random(t)
            for i in range(8):
                data = rnd.randbytes(rnd.choice([10, 5000, CHUNK + 3, 3 * CHUNK]))
                with cart.open(f"/t{t}/f{i}", "wb") as f:
                    for j in range(0, len(data), 7000):
                        f.write(data[j:j + 7000])
                with cart.open(f"/t{t}/f{i}", "rb") as f:
                    assert f.read() == data
                cart.write(f"/t{t}/g{i}", data[:100])
                if i % 3 == 0:
                    cart.delete(f"/t{t}/g{i}")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    rep = cart.verify()
    assert rep.ok, rep.problems


@pytest.mark.parametrize("mode", ["r+b", "ab"])
@pytest.mark.parametrize("action", ["replace", "rename", "delete"])
def test_writer_publishes_safely_after_the_file_changed_meanwhile(tmp_path, mode, action):
    """An "r+b"/"ab" stream shares pages with the version it opened; if that version is
    replaced, renamed or deleted before close(), the stream must copy instead of sharing."""
    c = cartridge.open(str(tmp_path / "a.cart"), "w", sync="off")
    base = rbytes(200_000, 3)
    c.write("/f", base)
    s = c.open("/f", mode)
    s.write(b"XYZ")
    if action == "replace":
        c.write("/f", b"other" * 30_000)
    elif action == "rename":
        c.rename("/f", "/g")
    else:
        c.delete("/f")
    s.close()
    for i in range(60):                       # recycle whatever was freed
        c.write(f"/x{i % 7}", rbytes(70_000, i))
    report = c.verify()
    assert report.ok, report.problems
    assert c.read("/f") == (b"XYZ" + base[3:] if mode == "r+b" else base + b"XYZ")
    if action == "rename":
        assert c.read("/g") == base
    c.close()
