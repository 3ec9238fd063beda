"""Round trips through every public API call of cartridge.Cartridge (see the README)."""
import os
import random
import stat as statmod
import threading
import time

import pytest
from conftest import reopen

import cartridge
from cartridge import (
    AlreadyExistsError,
    CartridgeError,
    DirectoryNotEmptyError,
    InvalidPathError,
    NotFoundError,
    TransactionAbortedError,
)

KIB = 1024
MIB = 1024 * 1024
CHUNK = 64 * KIB


def csum(data) -> str:
    return cartridge.content_checksum(data)


# ----------------------------------------------------------------------------- open modes


class TestOpenModes:
    def test_x_creates(self, cart_path):
        with cartridge.open(cart_path, "x") as c:
            c.write("/a", b"1")
        with cartridge.open(cart_path, "r") as c:
            assert c.read("/a") == b"1"

    def test_x_fails_if_exists(self, cart_path):
        cartridge.open(cart_path, "x").close()
        with pytest.raises(AlreadyExistsError):
            cartridge.open(cart_path, "x")
        with pytest.raises(FileExistsError):
            cartridge.Cartridge(cart_path, "x")

    def test_x_fails_on_any_existing_file(self, cart_path):
        with open(cart_path, "wb") as f:
            f.write(b"hello")
        with pytest.raises(AlreadyExistsError):
            cartridge.open(cart_path, "x")
        with open(cart_path, "rb") as f:
            assert f.read() == b"hello"

    def test_w_truncates(self, cart_path):
        with cartridge.open(cart_path, "w") as c:
            c.write("/a", b"1")
            c.mkdir("/d")
        with cartridge.open(cart_path, "w") as c:
            assert c.listdir("/") == []
            assert not c.exists("/a")
            c.write("/b", b"2")
        with cartridge.open(cart_path, "r") as c:
            assert c.listdir("/") == ["b"]

    def test_w_creates(self, cart_path):
        with cartridge.open(cart_path, "w") as c:
            assert c.listdir("/") == []
        assert os.path.exists(cart_path)

    def test_a_creates_and_keeps(self, cart_path):
        with cartridge.open(cart_path, "a") as c:
            c.write("/a", b"1")
        with cartridge.open(cart_path, "a") as c:
            assert c.read("/a") == b"1"
            c.write("/b", b"2")
        with cartridge.open(cart_path, "r") as c:
            assert c.listdir("/") == ["a", "b"]

    def test_default_mode_is_r(self, cart_path):
        """As in zipfile, tarfile and h5py: no mode means read-only, and a mistyped name is an
        error rather than a new empty archive."""
        for make in (cartridge.open, cartridge.Cartridge):
            with pytest.raises(NotFoundError):
                make(cart_path)
            assert not os.path.exists(cart_path)
        with cartridge.open(cart_path, "x") as c:
            c.write("/a", b"1")
        for make in (cartridge.open, cartridge.Cartridge):
            with make(cart_path) as c:
                assert c.mode == "r"
                assert c.read("/a") == b"1"
                with pytest.raises(cartridge.ReadOnlyError):
                    c.write("/b", b"2")
                with pytest.raises(cartridge.ReadOnlyError):
                    c.delete("/a")
        with cartridge.open(cart_path, "r") as c:
            assert c.listdir("/") == ["a"]
        assert os.listdir(os.path.dirname(cart_path)) == ["test.cart"]

    def test_r_missing(self, cart_path):
        with pytest.raises(NotFoundError):
            cartridge.open(cart_path, "r")
        with pytest.raises(FileNotFoundError):
            cartridge.Cartridge(cart_path, "r")
        assert not os.path.exists(cart_path)

    def test_cartridge_class_equivalent(self, cart_path):
        c = cartridge.Cartridge(cart_path, "x")
        assert isinstance(c, cartridge.Cartridge)
        c.write("/a", b"1")
        c.close()
        c2 = cartridge.open(cart_path, "r")
        assert type(c2) is cartridge.Cartridge
        assert c2.read("/a") == b"1"
        c2.close()

    def test_pathlike(self, tmp_path):
        p = tmp_path / "pl.cart"
        with cartridge.open(p, "x") as c:
            c.write("/a", b"1")
        with cartridge.Cartridge(p, "r") as c:
            assert c.read("/a") == b"1"

    def test_empty_file_with_a_becomes_archive(self, cart_path):
        open(cart_path, "wb").close()
        assert os.path.getsize(cart_path) == 0
        with cartridge.open(cart_path, "a") as c:
            c.write("/a", b"hello")
            assert c.verify().ok
        with cartridge.open(cart_path, "r") as c:
            assert c.read("/a") == b"hello"

    def test_bad_mode(self, cart_path):
        for mode in ("rw", "b", "", "rb", "W"):
            with pytest.raises(ValueError):
                cartridge.open(cart_path, mode)
        assert not os.path.exists(cart_path)

    def test_no_leftover_temp_files(self, tmp_path):
        p = str(tmp_path / "z.cart")
        cartridge.open(p, "x").close()
        cartridge.open(p, "w").close()
        cartridge.open(str(tmp_path / "y.cart"), "a").close()
        assert sorted(os.listdir(tmp_path)) == ["y.cart", "z.cart"]


# ----------------------------------------------------------------------------- write / read

SIZES = [0, 1, 2, 500, 900, 959, 960, 961, 1000, 4095, 4096, 4097, CHUNK - 1, CHUNK, CHUNK + 1,
         2 * CHUNK - 1, 2 * CHUNK, 2 * CHUNK + 1, MIB, 3 * MIB + 17]


@pytest.mark.parametrize("size", SIZES)
def test_write_read_roundtrip(cart, size):
    data = random.Random(size).randbytes(size)
    cart.write("/f", data)
    assert cart.read("/f") == data
    st = cart.stat("/f")
    assert st.size == size
    assert st.checksum == csum(data)
    c2 = reopen(cart, "r")
    try:
        assert c2.read("/f") == data
        assert c2.stat("/f").checksum == csum(data)
        assert c2.verify().ok
    finally:
        c2.close()


def test_write_input_types(cart):
    data = bytes(range(256)) * 10
    cart.write("/bytes", data)
    cart.write("/bytearray", bytearray(data))
    cart.write("/memoryview", memoryview(data))
    cart.write("/mv_slice", memoryview(data)[10:20])
    import array

    arr = array.array("I", range(100))
    cart.write("/array", arr)
    for p in ("/bytes", "/bytearray", "/memoryview"):
        assert cart.read(p) == data
        assert type(cart.read(p)) is bytes
    assert cart.read("/mv_slice") == data[10:20]
    assert cart.read("/array") == arr.tobytes()


@pytest.mark.parametrize("bad", ["text", "", 1, None, 3.5, [1, 2]])
def test_write_non_bytes_type_error(cart, bad):
    with pytest.raises(TypeError):
        cart.write("/f", bad)
    assert not cart.exists("/f")


def test_write_replace(cart):
    cart.write("/f", b"a" * 200_000)
    cart.write("/f", b"b" * 10)
    assert cart.read("/f") == b"b" * 10
    cart.write("/f", b"")
    assert cart.read("/f") == b""
    cart.write("/f", b"c" * 100_000)
    assert cart.read("/f") == b"c" * 100_000
    assert cart.verify().ok


def test_write_creates_parents(cart):
    cart.write("/a/b/c/d.txt", b"x")
    assert cart.isdir("/a") and cart.isdir("/a/b") and cart.isdir("/a/b/c")
    assert cart.listdir("/a/b") == ["c"]


def test_write_under_file_fails(cart):
    cart.write("/a", b"x")
    with pytest.raises(NotADirectoryError):
        cart.write("/a/b", b"y")
    assert cart.read("/a") == b"x"


def test_write_onto_dir_fails(cart):
    cart.write("/d/f", b"x")
    cart.mkdir("/e")
    with pytest.raises(IsADirectoryError):
        cart.write("/d", b"y")
    with pytest.raises(IsADirectoryError):
        cart.write("/e", b"y")
    with pytest.raises(IsADirectoryError):
        cart.read("/d")
    assert cart.isdir("/d") and cart.isdir("/e")


def test_read_missing(cart):
    with pytest.raises(NotFoundError):
        cart.read("/nope")
    cart.write("/a/b", b"x")
    with pytest.raises(NotFoundError):
        cart.read("/a/c")


# ----------------------------------------------------------------------------- ranged read


@pytest.fixture
def big(cart):
    data = random.Random(7).randbytes(3 * CHUNK + 1234)
    cart.write("/big", data)
    return cart, data


@pytest.mark.parametrize("offset,size", [
    (0, 0), (0, 1), (0, 100), (10, 100), (4095, 2), (4096, 4096),
    (CHUNK - 1, 2), (CHUNK - 10, 20), (CHUNK, 1), (CHUNK - 1, CHUNK + 2),
    (CHUNK + 5, 2 * CHUNK), (3 * CHUNK, 1234), (3 * CHUNK + 1000, 234),
    (3 * CHUNK + 1000, 10_000), (0, 10 * CHUNK), (3 * CHUNK + 1233, 5),
    (3 * CHUNK + 1234, 5), (3 * CHUNK + 1234, 0), (10 * CHUNK, 5), (1 << 40, 5),
    (100, -1), (CHUNK + 1, -1), (0, -1),
])
def test_ranged_read(big, offset, size):
    cart, data = big
    expect = data[offset:] if size == -1 else data[offset:offset + size]
    assert cart.read("/big", offset=offset, size=size) == expect
    assert cart.read("/big", offset, size) == expect


@pytest.mark.parametrize("n", [0, 1, 500, 4096])
def test_ranged_read_small_files(cart, n):
    data = random.Random(n).randbytes(n)
    cart.write("/s", data)
    for off in (0, 1, n // 2, n - 1, n, n + 1, n + 1000):
        if off < 0:
            continue
        for size in (0, 1, 3, 100, -1):
            exp = data[off:] if size == -1 else data[off:off + size]
            assert cart.read("/s", offset=off, size=size) == exp


def test_ranged_read_negative_offset(big):
    cart, _ = big
    with pytest.raises(ValueError):
        cart.read("/big", offset=-1, size=5)


def test_readinto(big):
    cart, data = big
    buf = bytearray(1000)
    assert cart.readinto("/big", buf) == 1000
    assert buf == data[:1000]
    buf = bytearray(CHUNK + 100)
    n = cart.readinto("/big", buf, offset=CHUNK - 50)
    assert n == CHUNK + 100
    assert bytes(buf) == data[CHUNK - 50:2 * CHUNK + 50]
    # past the end: short
    buf = bytearray(5000)
    n = cart.readinto("/big", buf, offset=len(data) - 100)
    assert n == 100
    assert bytes(buf[:100]) == data[-100:]
    assert cart.readinto("/big", bytearray(10), offset=len(data) + 10) == 0
    # memoryview target
    arr = bytearray(300)
    mv = memoryview(arr)[100:200]
    assert cart.readinto("/big", mv, offset=5) == 100
    assert bytes(arr[100:200]) == data[5:105]
    assert arr[:100] == bytes(100)


def test_readinto_small_and_empty(cart):
    cart.write("/e", b"")
    cart.write("/s", b"hello")
    assert cart.readinto("/e", bytearray(10)) == 0
    buf = bytearray(10)
    assert cart.readinto("/s", buf) == 5
    assert buf[:5] == b"hello"
    buf = bytearray(3)
    assert cart.readinto("/s", buf, offset=1) == 3
    assert buf == b"ell"
    with pytest.raises(NotFoundError):
        cart.readinto("/missing", bytearray(3))


# ----------------------------------------------------------------------------- exists / isdir


def test_exists_isdir_isfile(cart):
    cart.write("/a/b/file.txt", b"x")
    cart.mkdir("/explicit")
    cart.mkdir("/a/sub")
    table = {
        "/": (True, True, False),
        "/a": (True, True, False),
        "/a/b": (True, True, False),
        "/a/b/file.txt": (True, False, True),
        "/explicit": (True, True, False),
        "/a/sub": (True, True, False),
        "/missing": (False, False, False),
        "/a/b/file.txt/x": (False, False, False),
        "/a/b/file": (False, False, False),
        "/a/bb": (False, False, False),
        "/explicit/x": (False, False, False),
    }
    for p, (e, d, f) in table.items():
        assert cart.exists(p) is e, p
        assert cart.isdir(p) is d, p
        assert cart.isfile(p) is f, p


def test_exists_dir_with_trailing_slash(cart):
    cart.write("/a/b", b"x")
    assert cart.isdir("/a/")
    assert cart.exists("a/")


# ----------------------------------------------------------------------------- stat


def test_stat_file(cart):
    data = b"hello world"
    t0 = time.time()
    cart.write("/f.txt", data)
    t1 = time.time()
    st = cart.stat("/f.txt")
    assert isinstance(st, cartridge.FileInfo)
    assert st.path == "/f.txt"
    assert st.size == len(data)
    assert statmod.S_ISREG(st.mode) and not statmod.S_ISDIR(st.mode)
    assert st.is_file and not st.is_dir
    assert isinstance(st.ctime, float) and isinstance(st.mtime, float)
    assert st.ctime <= st.mtime
    assert t0 - 1 <= st.ctime <= t1 + 1
    assert st.checksum == csum(data)
    assert len(st.checksum) == 16


def test_stat_dirs(cart):
    cart.write("/imp/f", b"x")
    cart.mkdir("/exp")
    for p in ("/", "/imp", "/exp"):
        st = cart.stat(p)
        assert statmod.S_ISDIR(st.mode), p
        assert st.is_dir and not st.is_file
        assert st.path == p
    with pytest.raises(NotFoundError):
        cart.stat("/nope")


def test_stat_normalised_path(cart):
    cart.write("a//b/./c", b"x")
    assert cart.stat("/a/b/c").path == "/a/b/c"
    assert cart.stat("a/b//c").path == "/a/b/c"


def test_stat_replace_keeps_ctime_bumps_mtime(cart):
    cart.write("/f", b"one")
    st1 = cart.stat("/f")
    time.sleep(0.02)
    cart.write("/f", b"two-two")
    st2 = cart.stat("/f")
    assert st2.ctime == st1.ctime
    assert st2.mtime > st1.mtime
    assert st2.size == 7
    assert st2.checksum == csum(b"two-two") != st1.checksum


@pytest.mark.parametrize("size", [0, 1, 1000, CHUNK, CHUNK + 1, 5 * CHUNK + 3])
def test_stat_checksum(cart, size):
    data = random.Random(size + 1).randbytes(size)
    cart.write("/f", data)
    assert cart.stat("/f").checksum == csum(data)
    assert [i.checksum for i in cart.scan("/")] == [csum(data)]


@pytest.mark.parametrize("size", [0, 100, CHUNK, CHUNK + 1, MIB + 5])   # empty, inline, 1 chunk, many
def test_stat_checksum_is_content_checksum(cart, size):
    """FileInfo.checksum and cartridge.content_checksum() give the same value of the same type:
    16 hex digits, like hashlib's hexdigest (for one chunk, xxh3-64's own hexdigest)."""
    import xxhash

    data = random.Random(size + 2).randbytes(size)
    cart.write("/f", data)
    want = cartridge.content_checksum(data)
    assert isinstance(want, str) and len(want) == 16 and int(want, 16) >= 0
    assert cart.stat("/f").checksum == want
    assert cartridge.content_checksum(memoryview(data)) == want
    if size <= CHUNK:
        assert want == xxhash.xxh3_64_hexdigest(data)


def test_stat_survives_rename(cart):
    cart.write("/f", b"abc")
    st = cart.stat("/f")
    cart.rename("/f", "/g")
    st2 = cart.stat("/g")
    assert (st2.size, st2.checksum, st2.ctime) == (st.size, st.checksum, st.ctime)


# ----------------------------------------------------------------------------- listdir


def test_listdir_basic(cart):
    cart.write("/docs/b.txt", b"")
    cart.write("/docs/a.txt", b"")
    cart.write("/docs/sub/x", b"")
    cart.mkdir("/docs/empty")
    cart.write("/top", b"")
    assert cart.listdir("/") == ["docs", "top"]
    assert cart.listdir() == ["docs", "top"]
    assert cart.listdir("/docs") == ["a.txt", "b.txt", "empty", "sub"]
    assert cart.listdir("/docs/") == ["a.txt", "b.txt", "empty", "sub"]
    assert cart.listdir("docs") == ["a.txt", "b.txt", "empty", "sub"]
    assert cart.listdir("/docs/sub") == ["x"]
    assert cart.listdir("/docs/empty") == []


def test_listdir_empty_archive(cart):
    assert cart.listdir("/") == []


def test_listdir_byte_order_edge_cases(cart):
    # '-' (0x2d) < '.' (0x2e) < '/' (0x2f) < '0' (0x30): subtree keys of "a" interleave
    for p in ["/a/b", "/a/c/d", "/a.txt", "/a-b", "/a0", "/a!", "/b", "/a/b.c", "/a.d/e", "/ab"]:
        cart.write(p, b"x")
    assert cart.listdir("/") == sorted(["a", "a.txt", "a-b", "a0", "a!", "b", "a.d", "ab"])
    assert cart.listdir("/a") == ["b", "b.c", "c"]
    assert cart.isdir("/a") and cart.isfile("/a.txt") and cart.isdir("/a.d")


def test_listdir_explicit_dir_and_children(cart):
    cart.mkdir("/a")
    cart.write("/a/x", b"")
    cart.mkdir("/a/y")
    cart.write("/a.z", b"")
    assert cart.listdir("/") == ["a", "a.z"]
    assert cart.listdir("/a") == ["x", "y"]


def test_listdir_many_children(cart):
    names = [f"f{i:04d}" for i in range(600)]
    with cart.transaction():
        for n in names:
            cart.write("/many/" + n, b"")
        for i in range(30):
            for j in range(20):
                cart.write(f"/many/d{i:02d}/g{j}", b"")
    assert cart.listdir("/many") == sorted(names + [f"d{i:02d}" for i in range(30)])
    assert cart.listdir("/many/d05") == sorted(f"g{j}" for j in range(20))


def test_listdir_unicode_sorted(cart):
    names = ["z", "é", "a", "日本", "Z", "ß", "😀"]
    for n in names:
        cart.write("/u/" + n, b"")
    assert cart.listdir("/u") == sorted(names)


def test_listdir_file_and_missing(cart):
    cart.write("/f", b"")
    with pytest.raises(NotADirectoryError):
        cart.listdir("/f")
    with pytest.raises(NotFoundError):
        cart.listdir("/missing")
    with pytest.raises(FileNotFoundError):
        cart.listdir("/f2/x")


# ----------------------------------------------------------------------------- walk


def _model_walk(files, dirs, top="/"):
    """os.walk-like expectation from a set of file paths and explicit directories."""
    alld = {"/"} | set(dirs)
    for f in files:
        parts = f.strip("/").split("/")
        for i in range(1, len(parts)):
            alld.add("/" + "/".join(parts[:i]))
    out = []

    def kids(d):
        pre = "/" if d == "/" else d + "/"
        ds = sorted({x[len(pre):] for x in alld if x.startswith(pre) and x != d and
                     "/" not in x[len(pre):]})
        fs = sorted({x[len(pre):] for x in files if x.startswith(pre) and "/" not in x[len(pre):]})
        return ds, fs

    def rec(d):
        ds, fs = kids(d)
        out.append((d, ds, fs))
        for n in ds:
            rec(d + n if d == "/" else d + "/" + n)

    rec(top)
    return out


def test_walk(cart):
    files = ["/a/b/c.txt", "/a/b/d.txt", "/a/e", "/a.txt", "/x/y/z/w", "/top", "/a/b-c/q"]
    dirs = ["/empty", "/a/emptysub", "/x/y/z/deep"]
    for f in files:
        cart.write(f, b"1")
    for d in dirs:
        cart.mkdir(d)
    got = list(cart.walk("/"))
    assert got == _model_walk(files, dirs)
    assert list(cart.walk()) == got
    assert list(cart.walk("/a")) == _model_walk(files, dirs, "/a")
    with pytest.raises(NotFoundError):
        list(cart.walk("/nope"))
    with pytest.raises(NotADirectoryError):
        list(cart.walk("/top"))


def test_walk_empty(cart):
    assert list(cart.walk("/")) == [("/", [], [])]


# ----------------------------------------------------------------------------- scan


@pytest.fixture
def tree(cart):
    paths = ["/docs/a", "/docs/a.txt", "/docs/a/x", "/docs/ab", "/docs/b/c", "/docs2/z",
             "/docsx", "/doc", "/e/f"]
    # "/docs/a" can't be both file and dir; drop the file
    paths.remove("/docs/a")
    for p in paths:
        cart.write(p, p.encode())
    cart.mkdir("/docs/emptydir")
    return cart, sorted(paths, key=lambda s: s.encode())


def test_scan_all(tree):
    cart, paths = tree
    infos = list(cart.scan("/"))
    assert [i.path for i in infos] == paths
    assert all(i.is_file for i in infos)
    for i in infos:
        assert i.size == len(i.path.encode())
        assert i.checksum == csum(i.path.encode())
    assert [i.path for i in cart.scan()] == paths


@pytest.mark.parametrize("prefix", ["/docs/", "/docs/a", "/docs", "docs/", "/d", "/docs/a/",
                                    "/nothing", "/docs/b/c", "/e/f/"])
def test_scan_prefix(tree, prefix):
    cart, paths = tree
    norm = "/" + prefix.lstrip("/")
    expect = [p for p in paths if p.startswith(norm)]
    assert [i.path for i in cart.scan(prefix)] == expect


def test_scan_many_and_order(cart):
    rnd = random.Random(3)
    paths = {f"/s/{rnd.choice('ab-./')}{i}".replace("//", "/x") for i in range(700)}
    paths = {p for p in paths if not p.endswith("/") and "/./" not in p and not p.endswith("/.")}
    paths = {p for p in paths if not any(q.startswith(p + "/") for q in paths)}
    with cart.transaction():
        for p in paths:
            cart.write(p, b"")
    got = [i.path for i in cart.scan("/s/")]
    assert got == sorted((cartridge.normalize_path(p) for p in paths), key=lambda s: s.encode())


def test_scan_is_lazy_iterator(cart):
    for i in range(10):
        cart.write(f"/f{i}", b"")
    it = cart.scan("/")
    assert iter(it) is it
    assert next(it).path == "/f0"


# ----------------------------------------------------------------------------- mkdir


def test_mkdir_basic(cart):
    cart.mkdir("/d")
    assert cart.isdir("/d")
    assert cart.listdir("/") == ["d"]
    assert cart.listdir("/d") == []
    c2 = reopen(cart, "r")
    try:
        assert c2.isdir("/d")
    finally:
        c2.close()


def test_mkdir_parents(cart):
    with pytest.raises(FileNotFoundError):
        cart.mkdir("/a/b/c")
    assert not cart.exists("/a")
    cart.mkdir("/a/b/c", parents=True)
    assert cart.isdir("/a") and cart.isdir("/a/b") and cart.isdir("/a/b/c")
    # parents are explicit: deleting c keeps a/b
    cart.delete("/a/b/c")
    assert cart.isdir("/a/b")


def test_mkdir_in_implicit_parent(cart):
    cart.write("/imp/f", b"")
    cart.mkdir("/imp/sub")
    assert cart.listdir("/imp") == ["f", "sub"]


def test_mkdir_exist_ok(cart):
    cart.mkdir("/d")
    with pytest.raises(AlreadyExistsError):
        cart.mkdir("/d")
    with pytest.raises(FileExistsError):
        cart.mkdir("/d/")
    cart.mkdir("/d", exist_ok=True)
    cart.write("/imp/x", b"")
    with pytest.raises(FileExistsError):
        cart.mkdir("/imp")
    cart.mkdir("/imp", exist_ok=True)
    cart.mkdir("/", exist_ok=True)
    with pytest.raises(FileExistsError):
        cart.mkdir("/")


def test_mkdir_on_file(cart):
    cart.write("/f", b"x")
    with pytest.raises(FileExistsError):
        cart.mkdir("/f")
    with pytest.raises(FileExistsError):
        cart.mkdir("/f", exist_ok=True)
    with pytest.raises(NotADirectoryError):
        cart.mkdir("/f/sub")
    with pytest.raises(NotADirectoryError):
        cart.mkdir("/f/sub/deeper", parents=True)
    assert cart.read("/f") == b"x"


def test_explicit_dir_survives_emptying(cart):
    cart.mkdir("/d")
    cart.write("/d/f", b"x")
    cart.delete("/d/f")
    assert cart.isdir("/d")
    cart.write("/i/f", b"x")
    cart.delete("/i/f")
    assert not cart.exists("/i")


# ----------------------------------------------------------------------------- delete


def test_delete_file(cart):
    cart.write("/a/f", b"x" * 100_000)
    cart.write("/a/g", b"y")
    cart.delete("/a/f")
    assert not cart.exists("/a/f")
    assert cart.listdir("/a") == ["g"]
    cart.delete("a/g")
    assert not cart.exists("/a")
    assert cart.verify().ok


def test_delete_empty_explicit_dir(cart):
    cart.mkdir("/d")
    cart.delete("/d")
    assert not cart.exists("/d")
    cart.mkdir("/e")
    cart.delete("/e/")
    assert not cart.exists("/e")


def test_delete_non_empty_dir(cart):
    cart.write("/d/f", b"x")
    cart.mkdir("/e")
    cart.mkdir("/e/sub")
    for p in ("/d", "/e"):
        with pytest.raises(DirectoryNotEmptyError) as ei:
            cart.delete(p)
        assert isinstance(ei.value, OSError)
        assert isinstance(ei.value, CartridgeError)
    assert cart.read("/d/f") == b"x"
    assert cart.isdir("/e/sub")


def test_delete_recursive(cart):
    for i in range(50):
        cart.write(f"/d/sub{i % 5}/f{i}", bytes([i]) * (i * 3000))
    cart.mkdir("/d/emptydir")
    cart.write("/d.txt", b"keep")
    cart.write("/dx/f", b"keep")
    cart.delete("/d", recursive=True)
    assert not cart.exists("/d")
    assert cart.listdir("/") == ["d.txt", "dx"]
    assert cart.read("/d.txt") == b"keep"
    assert cart.verify().ok
    assert cart.info()["files"] == 2


def test_delete_recursive_explicit(cart):
    cart.mkdir("/d/e", parents=True)
    cart.delete("/d", recursive=True)
    assert cart.listdir("/") == []


def test_delete_recursive_file(cart):
    cart.write("/f", b"x")
    cart.delete("/f", recursive=True)
    assert not cart.exists("/f")


def test_delete_missing(cart):
    with pytest.raises(NotFoundError):
        cart.delete("/nope")
    with pytest.raises(NotFoundError):
        cart.delete("/nope", recursive=True)


def test_delete_root_recursive_empties(cart):
    cart.write("/a/b", b"x")
    cart.write("/c", b"y")
    with pytest.raises(DirectoryNotEmptyError):
        cart.delete("/")
    cart.delete("/", recursive=True)
    assert cart.listdir("/") == []
    assert cart.isdir("/")
    assert cart.verify().ok


# ----------------------------------------------------------------------------- rename


def test_rename_file(cart):
    cart.write("/a", b"A" * 70_000)
    cart.rename("/a", "/b")
    assert not cart.exists("/a")
    assert cart.read("/b") == b"A" * 70_000


def test_rename_replaces_file(cart):
    cart.write("/a", b"new")
    cart.write("/b", b"old" * 50_000)
    cart.rename("/a", "/b")
    assert cart.read("/b") == b"new"
    assert not cart.exists("/a")
    assert cart.verify().ok


def test_rename_into_new_implicit_dir(cart):
    cart.write("/a", b"x")
    cart.rename("/a", "/new/deep/a2")
    assert cart.read("/new/deep/a2") == b"x"
    assert cart.isdir("/new/deep")
    assert cart.listdir("/") == ["new"]


def test_rename_file_onto_dir(cart):
    cart.write("/a", b"x")
    cart.write("/d/f", b"y")
    cart.mkdir("/e")
    with pytest.raises(IsADirectoryError):
        cart.rename("/a", "/d")
    with pytest.raises(IsADirectoryError):
        cart.rename("/a", "/e")
    assert cart.read("/a") == b"x"
    assert cart.read("/d/f") == b"y"


def test_rename_under_a_file(cart):
    cart.write("/a", b"x")
    cart.write("/f", b"y")
    with pytest.raises(NotADirectoryError):
        cart.rename("/a", "/f/a")
    assert cart.read("/a") == b"x"


def test_rename_missing(cart):
    with pytest.raises(NotFoundError):
        cart.rename("/nope", "/x")


def test_rename_same(cart):
    cart.write("/a", b"x")
    cart.rename("/a", "a")
    assert cart.read("/a") == b"x"


def test_rename_dir_tree(cart):
    contents = {}
    for i in range(40):
        p = f"/src/d{i % 4}/f{i}"
        contents[p] = random.Random(i).randbytes(i * 2500)
        cart.write(p, contents[p])
    cart.mkdir("/src/empty")
    cart.write("/src.txt", b"sibling")
    cart.write("/src0/x", b"sibling2")
    cart.rename("/src", "/dst/inner")
    assert not cart.exists("/src")
    assert cart.read("/src.txt") == b"sibling"
    assert cart.read("/src0/x") == b"sibling2"
    for p, data in contents.items():
        assert cart.read(p.replace("/src/", "/dst/inner/")) == data
    assert cart.isdir("/dst/inner/empty")
    assert cart.listdir("/dst/inner") == ["d0", "d1", "d2", "d3", "empty"]
    assert cart.verify().ok
    c2 = reopen(cart, "r")
    try:
        assert len(list(c2.scan("/dst/inner/"))) == 40
    finally:
        c2.close()


def test_rename_explicit_empty_dir(cart):
    cart.mkdir("/e")
    cart.rename("/e", "/f")
    assert cart.isdir("/f") and not cart.exists("/e")


def test_rename_dir_dst_exists(cart):
    cart.write("/a/x", b"1")
    cart.write("/b/y", b"2")
    cart.write("/c", b"3")
    cart.mkdir("/e")
    for dst in ("/b", "/c", "/e"):
        with pytest.raises(FileExistsError):
            cart.rename("/a", dst)
    assert cart.read("/a/x") == b"1"


def test_rename_dir_into_itself(cart):
    cart.write("/a/x", b"1")
    with pytest.raises(InvalidPathError):
        cart.rename("/a", "/a/b")
    with pytest.raises(InvalidPathError):
        cart.rename("/a", "/a/b/c")
    assert cart.read("/a/x") == b"1"
    # a sibling sharing the prefix is fine
    cart.rename("/a", "/ab")
    assert cart.read("/ab/x") == b"1"


def test_rename_root(cart):
    cart.write("/a/x", b"1")
    with pytest.raises(InvalidPathError, match="root"):
        cart.rename("/", "/z")
    with pytest.raises(InvalidPathError, match="root"):
        cart.rename("/a", "/")
    assert cart.read("/a/x") == b"1" and cart.listdir("/") == ["a"]


# ----------------------------------------------------------------------------- transactions


def test_transaction_commits(cart):
    with cart.transaction() as t:
        assert t is cart
        cart.write("/a", b"1")
        cart.write("/b", b"2" * 100_000)
        cart.mkdir("/d")
    c2 = reopen(cart, "r")
    try:
        assert c2.read("/a") == b"1"
        assert c2.read("/b") == b"2" * 100_000
        assert c2.isdir("/d")
    finally:
        c2.close()


def test_transaction_state_visible_inside(cart):
    cart.write("/old", b"o")
    with cart.transaction():
        cart.write("/a", b"1")
        assert cart.read("/a") == b"1"
        assert cart.exists("/a")
        cart.delete("/old")
        assert not cart.exists("/old")
        cart.rename("/a", "/b")
        assert cart.listdir("/") == ["b"]


def test_transaction_rollback(cart):
    big = random.Random(1).randbytes(2 * MIB)
    cart.write("/keep", b"k")
    cart.write("/del", b"d" * 100_000)
    cart.write("/ren/a", b"r")
    cart.write("/over", b"o")
    cart.mkdir("/dd")
    before = cart.info()
    with pytest.raises(RuntimeError), cart.transaction():
        cart.write("/new", b"n")
        cart.write("/large", big)
        cart.write("/over", b"changed")
        cart.delete("/del")
        cart.rename("/ren", "/ren2")
        cart.delete("/dd")
        cart.mkdir("/ee")
        raise RuntimeError("boom")
    assert cart.read("/keep") == b"k"
    assert cart.read("/del") == b"d" * 100_000
    assert cart.read("/ren/a") == b"r"
    assert cart.read("/over") == b"o"
    assert cart.isdir("/dd")
    for p in ("/new", "/large", "/ren2", "/ee"):
        assert not cart.exists(p)
    assert cart.verify().ok
    after = cart.info()
    assert after["files"] == before["files"]
    # the handle is still usable after a rollback
    cart.write("/after", b"a")
    c2 = reopen(cart, "r")
    try:
        assert sorted(c2.listdir("/")) == ["after", "dd", "del", "keep", "over", "ren"]
        assert c2.verify().ok
    finally:
        c2.close()


def test_transaction_rollback_then_reopen(cart):
    cart.write("/a", b"1")
    with pytest.raises(KeyError), cart.transaction():
        cart.write("/a", b"2")
        raise KeyError("x")
    c2 = reopen(cart)
    try:
        assert c2.read("/a") == b"1"
    finally:
        c2.close()


def test_transaction_nested_join(cart):
    with cart.transaction():
        cart.write("/a", b"1")
        with cart.transaction():
            cart.write("/b", b"2")
        assert cart.read("/b") == b"2"
    assert cart.read("/a") == b"1" and cart.read("/b") == b"2"


def test_transaction_nested_inner_failure(cart):
    cart.write("/pre", b"p")
    with pytest.raises(TransactionAbortedError), cart.transaction():
        cart.write("/a", b"1")
        try:
            with cart.transaction():
                cart.write("/b", b"2")
                raise ValueError("inner")
        except ValueError:
            pass
    assert not cart.exists("/a")
    assert not cart.exists("/b")
    assert cart.read("/pre") == b"p"
    cart.write("/post", b"q")   # usable afterwards
    c2 = reopen(cart, "r")
    try:
        assert c2.listdir("/") == ["post", "pre"]
    finally:
        c2.close()


def test_transaction_nested_inner_failure_calls_raise(cart):
    with pytest.raises(TransactionAbortedError), cart.transaction():
        try:
            with cart.transaction():
                raise ValueError("inner")
        except ValueError:
            pass
        with pytest.raises(TransactionAbortedError):
            cart.write("/x", b"1")
    assert not cart.exists("/x")


def test_transaction_nested_inner_propagates(cart):
    with pytest.raises(ValueError), cart.transaction():
        cart.write("/a", b"1")
        with cart.transaction():
            raise ValueError("inner")
    assert not cart.exists("/a")


def test_transaction_clean_error_inside_keeps_txn(cart):
    with cart.transaction():
        cart.write("/a", b"1")
        with pytest.raises(NotFoundError):
            cart.read("/missing")
        with pytest.raises(NotFoundError):
            cart.delete("/missing")
        cart.write("/b", b"2")
    assert cart.read("/a") == b"1" and cart.read("/b") == b"2"


def test_transaction_not_visible_to_reader(cart, cart_path):
    cart.write("/a", b"1")
    reader = cartridge.open(cart_path, "r")
    try:
        with cart.transaction():
            cart.write("/a", b"2")
            cart.write("/b", b"3")
            assert reader.read("/a") == b"1"
            assert not reader.exists("/b")
        assert reader.read("/a") == b"2"
        assert reader.read("/b") == b"3"
    finally:
        reader.close()


def test_close_inside_transaction_is_not_half_committed(cart_path):
    c = cartridge.open(cart_path, "w")
    c.write("/a", b"1")
    with pytest.raises(cartridge.ClosedError), c.transaction():
        c.write("/b", b"2")
        c.close()
        c.write("/c", b"3")
    with cartridge.open(cart_path, "r") as r:
        assert r.listdir("/") == ["a"]


def test_commit_inside_transaction(cart):
    with pytest.raises(RuntimeError), cart.transaction():
        cart.write("/a", b"1")
        cart.commit()
        cart.write("/b", b"2")
        raise RuntimeError
    assert cart.read("/a") == b"1"
    assert not cart.exists("/b")


def test_commit(cart, cart_path):
    cart.write("/a", b"1")
    cart.commit()
    with cartridge.open(cart_path, "r") as r:
        assert r.read("/a") == b"1"
    cart.commit()   # nothing pending: harmless


def test_commit_read_only_handle(cart, cart_path):
    cart.write("/a", b"1")
    with cartridge.open(cart_path, "r") as r:
        r.commit()
        assert r.read("/a") == b"1"


def test_sync_modes(tmp_path):
    for sync in ("full", "normal", "off"):
        p = str(tmp_path / f"{sync}.cart")
        with cartridge.open(p, "x", sync=sync) as c:
            c.write("/a", b"x" * 10_000)
            assert c.info()["sync"] == sync
        with cartridge.open(p, "r") as c:
            assert c.read("/a") == b"x" * 10_000
    with pytest.raises(ValueError):
        cartridge.open(str(tmp_path / "bad.cart"), "x", sync="sometimes")


# ----------------------------------------------------------------------------- info / verify


def test_info_keys(cart):
    cart.write("/a/b", b"x" * 1000)
    cart.write("/c", b"y" * 100_000)
    cart.mkdir("/d")
    info = cart.info()
    for key in ("files", "directories", "total_bytes", "free_pages", "fragmentation"):
        assert key in info, key
    assert info["files"] == 2
    assert info["directories"] == 1
    assert info["total_bytes"] == 101_000
    assert isinstance(info["free_pages"], int) and info["free_pages"] >= 0
    assert 0.0 <= info["fragmentation"] <= 1.0
    cart.delete("/c")
    assert cart.info()["total_bytes"] == 1000
    assert cart.info()["files"] == 1


def test_info_read_only(cart, cart_path):
    cart.write("/a", b"xyz")
    with cartridge.open(cart_path, "r") as r:
        info = r.info()
        assert info["files"] == 1 and info["total_bytes"] == 3


def test_verify_after_heavy_churn(cart):
    rnd = random.Random(99)
    model = {}
    sizes = [0, 1, 100, 3000, 5000, CHUNK, CHUNK + 7, 200_000]
    for step in range(400):
        op = rnd.random()
        p = f"/d{rnd.randrange(4)}/f{rnd.randrange(25)}"
        if op < 0.6:
            data = rnd.randbytes(rnd.choice(sizes))
            cart.write(p, data)
            model[p] = data
        elif op < 0.8 and model:
            q = rnd.choice(sorted(model))
            cart.delete(q)
            del model[q]
        elif model:
            q = rnd.choice(sorted(model))
            if q != p:
                cart.rename(q, p)
                model[p] = model.pop(q)
        if step % 100 == 99:
            rep = cart.verify()
            assert rep.ok, rep.problems
    rep = cart.verify()
    assert isinstance(rep, cartridge.VerifyReport)
    assert rep.ok and rep.problems == [] and bool(rep)
    for p, data in model.items():
        assert cart.read(p) == data
    c2 = reopen(cart, "r")
    try:
        assert c2.verify().ok
        assert {i.path for i in c2.scan("/")} == set(model)
    finally:
        c2.close()


def test_verify_shallow(cart):
    cart.write("/a", b"x" * 100_000)
    assert cart.verify(deep=False).ok


# ----------------------------------------------------------------------------- close / reopen


def test_close_idempotent(cart_path):
    c = cartridge.open(cart_path, "w")
    c.write("/a", b"1")
    assert not c.closed
    c.close()
    assert c.closed
    c.close()
    c.close()
    assert c.closed


def test_context_manager(cart_path):
    with cartridge.open(cart_path, "w") as c:
        assert isinstance(c, cartridge.Cartridge)
        c.write("/a", b"1")
    assert c.closed
    with cartridge.open(cart_path, "r") as c:
        assert c.read("/a") == b"1"


def test_context_manager_exception_still_closes(cart_path):
    with pytest.raises(RuntimeError), cartridge.open(cart_path, "w") as c:
        c.write("/a", b"1")
        raise RuntimeError
    assert c.closed
    with cartridge.open(cart_path, "r") as c:
        assert c.read("/a") == b"1"


def test_reopen_keeps_everything(cart_path):
    data = {f"/d{i % 3}/f{i}": random.Random(i).randbytes(i * 777) for i in range(60)}
    with cartridge.open(cart_path, "w") as c:
        for p, d in data.items():
            c.write(p, d)
        c.mkdir("/explicit/deep", parents=True)
        st = {p: c.stat(p) for p in data}
    for mode in ("r", "a"):
        with cartridge.open(cart_path, mode) as c:
            for p, d in data.items():
                assert c.read(p) == d
                assert c.stat(p) == st[p]
            assert c.isdir("/explicit/deep")
            assert c.listdir("/") == ["d0", "d1", "d2", "explicit"]
            assert c.verify().ok


def test_multiple_read_handles(cart, cart_path):
    cart.write("/a", b"1")
    r1 = cartridge.open(cart_path, "r")
    r2 = cartridge.open(cart_path, "r")
    try:
        assert r1.read("/a") == r2.read("/a") == b"1"
        cart.write("/a", b"2")
        assert r1.read("/a") == b"2"
    finally:
        r1.close()
        r2.close()


def test_repr(cart):
    assert "cartridge" in repr(cart).lower()


# ----------------------------------------------------------------------------- threads


def test_threads_on_one_handle(cart):
    errors = []

    def worker(t):
        try:
            rnd = random.Random(t)
            mine = {}
            for i in range(60):
                p = f"/t{t}/f{i % 15}"
                data = rnd.randbytes(rnd.choice([0, 10, 3000, 70_000]))
                cart.write(p, data)
                mine[p] = data
                q = rnd.choice(sorted(mine))
                assert cart.read(q) == mine[q]
                assert cart.stat(q).size == len(mine[q])
                cart.listdir(f"/t{t}")
                if i % 10 == 9:
                    with cart.transaction():
                        cart.write(p + ".txn", b"t")
            for p, d in mine.items():
                assert cart.read(p) == d
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert cart.listdir("/") == ["t0", "t1", "t2", "t3"]
    rep = cart.verify()
    assert rep.ok, rep.problems


# ----------------------------------------------------------------------------- paths


def test_path_normalisation_reaches_same_file(cart):
    cart.write("a/b", b"1")
    for p in ("/a/b", "a/b", "/a//b", "//a/b", "/a/./b", "./a/b", "/./a/./b", "a///b"):
        assert cart.read(p) == b"1", p
        assert cart.isfile(p)
        assert cart.stat(p).path == "/a/b"
    cart.write("/a//b", b"2")
    assert cart.read("/a/b") == b"2"
    assert [i.path for i in cart.scan("/")] == ["/a/b"]
    assert cartridge.normalize_path("a//./b") == "/a/b"


def test_trailing_slash_on_file_path(cart):
    with pytest.raises(InvalidPathError):
        cart.write("/a/", b"1")
    cart.write("/a", b"1")
    with pytest.raises(InvalidPathError):
        cart.read("/a/")


def test_trailing_slash_on_file_path_mutations(cart):
    cart.write("/f", b"x")
    with pytest.raises(InvalidPathError):
        cart.rename("/f", "/g/")
    assert cart.isfile("/f") and not cart.exists("/g")
    with pytest.raises(InvalidPathError):
        cart.delete("/f/")
    assert cart.isfile("/f")


def test_root_is_not_a_file(cart):
    with pytest.raises((InvalidPathError, IsADirectoryError)):
        cart.write("/", b"1")
    with pytest.raises((InvalidPathError, IsADirectoryError)):
        cart.read("/")


def _long_path(total: int, seg: int = 255) -> str:
    """A path of exactly `total` UTF-8 bytes made of segments of at most `seg` bytes."""
    parts = []
    used = 0
    i = 0
    while used < total:
        remaining = total - used - 1      # room after this segment's '/'
        n = min(seg, remaining)
        if remaining - n == 1:           # avoid leaving room for just a '/' with no name
            n -= 1
        parts.append(chr(ord("a") + i % 26) * n)
        used += n + 1
        i += 1
    p = "/" + "/".join(parts)
    assert len(p.encode()) == total
    return p


def test_path_limit_4096(cart):
    p = _long_path(4096)
    cart.write(p, b"limit")
    assert cart.read(p) == b"limit"
    assert [i.path for i in cart.scan("/")] == [p]
    with pytest.raises(InvalidPathError):
        cart.write(_long_path(4097), b"x")
    with pytest.raises(InvalidPathError):
        cart.mkdir(_long_path(4097), parents=True)
    c2 = reopen(cart, "r")
    try:
        assert c2.read(p) == b"limit"
        assert c2.verify().ok
    finally:
        c2.close()


def test_segment_limit_255(cart):
    ok = "/" + "n" * 255
    cart.write(ok, b"1")
    assert cart.listdir("/") == ["n" * 255]
    with pytest.raises(InvalidPathError):
        cart.write("/" + "n" * 256, b"1")
    # UTF-8 bytes, not characters
    ok_u = "/" + "é" * 127 + "a"
    cart.write(ok_u, b"2")
    assert cart.read(ok_u) == b"2"
    with pytest.raises(InvalidPathError):
        cart.write("/" + "é" * 128, b"1")
    with pytest.raises(InvalidPathError):
        cart.write("/d/" + "😀" * 64 + "/f", b"1")     # 256 bytes


def test_unicode_names(cart):
    names = ["/日本語/ファイル.txt", "/émoji/😀.bin", "/Ελληνικά", "/mixed/ß/İ", "/space in name",
             "/tab-free\u200b", "/rtl/\u05d0\u05d1"]
    for i, p in enumerate(names):
        cart.write(p, str(i).encode())
    c2 = reopen(cart, "r")
    try:
        for i, p in enumerate(names):
            assert c2.read(p) == str(i).encode()
        assert [x.path for x in c2.scan("/")] == sorted(names, key=lambda s: s.encode())
    finally:
        c2.close()


def test_case_sensitive(cart):
    cart.write("/A", b"upper")
    cart.write("/a", b"lower")
    assert cart.read("/A") == b"upper" and cart.read("/a") == b"lower"
    assert cart.listdir("/") == ["A", "a"]


def test_many_very_long_paths(cart):
    base = _long_path(3000)
    paths = [f"{base}/{i:05d}-" + "q" * (i % 200) for i in range(300)]
    with cart.transaction():
        for i, p in enumerate(paths):
            cart.write(p, i.to_bytes(4, "little") * (i % 50))
    for i, p in enumerate(paths):
        assert cart.read(p) == i.to_bytes(4, "little") * (i % 50)
    assert cart.listdir(base) == sorted(p.rsplit("/", 1)[1] for p in paths)
    assert [x.path for x in cart.scan(base + "/")] == sorted(paths)
    for p in paths[::2]:
        cart.delete(p)
    top = "/" + base.split("/")[1]
    cart.rename(top, "/renamed")
    rep = cart.verify()
    assert rep.ok, rep.problems
    c2 = reopen(cart, "r")
    try:
        moved = ["/renamed" + p[len(top):] for p in paths[1::2]]
        for p in moved:
            assert c2.isfile(p)
        assert len(list(c2.scan("/"))) == 150
        assert c2.verify().ok
    finally:
        c2.close()


def test_every_user_path_legal(cart):
    # names that look like internal state are ordinary user paths
    for p in ("/.cartridge", "/.policies/x", "/__audit__", "/.manifest", "/-", "/ ", "/~", "/..."):
        cart.write(p, p.encode())
    for p in ("/.cartridge", "/.policies/x", "/__audit__", "/.manifest", "/-", "/ ", "/~", "/..."):
        assert cart.read(p) == p.encode()
