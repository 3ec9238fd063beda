"""Every error of the hierarchy (cartridge/errors.py) is raised where it should be, and is both a
CartridgeError and the builtin it mirrors; damaged files never yield wrong bytes or foreign errors."""
import os
import random
import struct
import threading
import time

import pytest
import xxhash
from conftest import file_bytes, patch_file

import cartridge
import cartridge.errors as E
from cartridge import (
    AlreadyExistsError,
    CartridgeError,
    ClosedError,
    CorruptionError,
    InvalidPathError,
    LockedError,
    NotACartridgeError,
    NotFoundError,
    ReadOnlyError,
    UnsupportedVersionError,
)
from cartridge import format as F
from cartridge._handle import engine

PAGE = 4096

# ----------------------------------------------------------------------------- hierarchy

HIERARCHY = [
    ("NotACartridgeError", ()),
    ("UnsupportedVersionError", ()),
    ("CorruptionError", ()),
    ("InvalidPathError", (ValueError,)),
    ("NotFoundError", (FileNotFoundError, OSError)),
    ("AlreadyExistsError", (FileExistsError, OSError)),
    ("PathIsDirectoryError", (IsADirectoryError,)),
    ("PathNotDirectoryError", (NotADirectoryError,)),
    ("DirectoryNotEmptyError", (OSError,)),
    ("ReadOnlyError", (PermissionError,)),
    ("AccessDeniedError", (PermissionError,)),
    ("LockedError", (BlockingIOError,)),
    ("ClosedError", (ValueError,)),
    ("SymlinkRefusedError", (OSError,)),
    ("NotADatabaseError", ()),
    ("TransactionAbortedError", ()),
]


@pytest.mark.parametrize("name,bases", HIERARCHY)
def test_hierarchy(name, bases):
    cls = getattr(E, name)
    assert getattr(cartridge, name) is cls
    assert issubclass(cls, CartridgeError)
    assert issubclass(cls, Exception)
    for b in bases:
        assert issubclass(cls, b)
    err = cls("message")
    assert "message" in str(err)


def test_base_is_exception():
    assert issubclass(CartridgeError, Exception)
    assert not issubclass(CartridgeError, (KeyError, struct.error))


def both(exc, cls, builtin):
    """Assert an exception instance is the cartridge class and the builtin it mirrors."""
    assert isinstance(exc, cls), type(exc)
    assert isinstance(exc, CartridgeError)
    assert isinstance(exc, builtin)


# ----------------------------------------------------------------------------- bad paths

BAD_PATHS = [
    "..", "/..", "/a/..", "/a/../b", "../a", "a/b/../../c",
    "/a\x00b", "\x00", "/a\nb", "/a\rb", "/a\tb", "/\x1b[31m", "/a\x7fb", "/a\x85b", "/\x9f",
    "",
    "/" + "x" * 256, "/a/" + "y" * 300 + "/b", "/" + "é" * 128,
    "/" + "/".join(["z" * 200] * 21),     # 4221 bytes
    "/a\udc80b",                          # lone surrogate: not encodable as UTF-8
]
NON_STR = [b"/a", bytearray(b"/a"), 1, None, 3.0, ["/a"], object()]


def _calls(c, p):
    """Every API call that takes a path, applied to `p`."""
    return {
        "write": lambda: c.write(p, b"x"),
        "read": lambda: c.read(p),
        "readinto": lambda: c.readinto(p, bytearray(4)),
        "exists": lambda: c.exists(p),
        "isdir": lambda: c.isdir(p),
        "isfile": lambda: c.isfile(p),
        "stat": lambda: c.stat(p),
        "listdir": lambda: c.listdir(p),
        "walk": lambda: list(c.walk(p)),
        "mkdir": lambda: c.mkdir(p, parents=True),
        "delete": lambda: c.delete(p),
        "rename_src": lambda: c.rename(p, "/ok"),
        "rename_dst": lambda: c.rename("/src", p),
        "open_rb": lambda: c.open(p, "rb"),
        "open_wb": lambda: c.open(p, "wb"),
    }


@pytest.mark.parametrize("bad", BAD_PATHS, ids=lambda s: repr(s)[:30])
def test_bad_paths_invalid(cart, bad):
    cart.write("/src", b"s")
    for call in _calls(cart, bad).values():
        with pytest.raises(InvalidPathError) as ei:
            call()
        both(ei.value, InvalidPathError, ValueError)
    assert cart.listdir("/") == ["src"]
    assert cart.read("/src") == b"s"
    assert cart.verify().ok


@pytest.mark.parametrize("bad", NON_STR, ids=lambda s: type(s).__name__)
def test_non_str_paths_invalid(cart, bad):
    cart.write("/src", b"s")
    for call in _calls(cart, bad).values():
        with pytest.raises(InvalidPathError) as ei:
            call()
        both(ei.value, InvalidPathError, ValueError)
    with pytest.raises(InvalidPathError):
        list(cart.scan(bad))


def test_normalize_path_function():
    for bad in BAD_PATHS:
        with pytest.raises(InvalidPathError):
            cartridge.normalize_path(bad)
    assert cartridge.normalize_path("a/./b//c/") == "/a/b/c"


def test_scan_bad_prefix(cart):
    with pytest.raises(InvalidPathError):
        list(cart.scan("/a/../b"))
    with pytest.raises(InvalidPathError):
        list(cart.scan("/a\x00"))


# ----------------------------------------------------------------------------- not found


def test_not_found(cart):
    cart.write("/d/f", b"x")
    calls = {
        "read": lambda p: cart.read(p),
        "readinto": lambda p: cart.readinto(p, bytearray(2)),
        "stat": lambda p: cart.stat(p),
        "listdir": lambda p: cart.listdir(p),
        "walk": lambda p: list(cart.walk(p)),
        "delete": lambda p: cart.delete(p),
        "rename": lambda p: cart.rename(p, "/elsewhere"),
        "open_rb": lambda p: cart.open(p, "rb"),
        "open_r+b": lambda p: cart.open(p, "r+b"),
    }
    for p in ("/missing", "/d/missing", "/d/f/x", "/e/f"):
        for name, call in calls.items():
            if p == "/d/f/x" and name in ("listdir", "walk", "open_rb", "open_r+b"):
                continue
            with pytest.raises(NotFoundError) as ei:
                call(p)
            both(ei.value, NotFoundError, FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        cart.mkdir("/x/y")


def test_missing_archive(tmp_path):
    with pytest.raises(NotFoundError) as ei:
        cartridge.open(str(tmp_path / "nope.cart"), "r")
    both(ei.value, NotFoundError, FileNotFoundError)
    for mode in ("a", "w", "x"):
        with pytest.raises(NotFoundError):
            cartridge.open(str(tmp_path / "no" / "dir" / "x.cart"), mode)


def test_archive_path_is_directory(tmp_path):
    # every mode, "x" too: a directory is refused as what it is before anything is written
    for mode in ("r", "a", "w", "x"):
        with pytest.raises(cartridge.PathIsDirectoryError) as ei:
            cartridge.open(str(tmp_path), mode)
        both(ei.value, cartridge.PathIsDirectoryError, IsADirectoryError)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- exists / dirs


def test_already_exists_and_dir_errors(cart):
    cart.write("/f", b"x")
    cart.mkdir("/d")
    with pytest.raises(AlreadyExistsError) as ei:
        cart.mkdir("/d")
    both(ei.value, AlreadyExistsError, FileExistsError)
    with pytest.raises(IsADirectoryError) as ei:
        cart.read("/d")
    both(ei.value, cartridge.PathIsDirectoryError, IsADirectoryError)
    with pytest.raises(NotADirectoryError) as ei:
        cart.listdir("/f")
    both(ei.value, cartridge.PathNotDirectoryError, NotADirectoryError)
    cart.write("/d/x", b"")
    with pytest.raises(OSError) as ei:
        cart.delete("/d")
    both(ei.value, cartridge.DirectoryNotEmptyError, OSError)


# ----------------------------------------------------------------------------- read-only


@pytest.fixture
def ro(cart_path):
    with cartridge.open(cart_path, "w") as c:
        c.write("/f", b"data")
        c.write("/d/g", b"g")
    c = cartridge.open(cart_path, "r")
    yield c
    c.close()


def test_read_only_refuses_writes(ro, cart_path):
    before = file_bytes(cart_path)
    calls = {
        "write": lambda: ro.write("/new", b"x"),
        "write_existing": lambda: ro.write("/f", b"x"),
        "mkdir": lambda: ro.mkdir("/m"),
        "delete": lambda: ro.delete("/f"),
        "delete_rec": lambda: ro.delete("/d", recursive=True),
        "rename": lambda: ro.rename("/f", "/f2"),
        "open_wb": lambda: ro.open("/f", "wb"),
        "open_ab": lambda: ro.open("/f", "ab"),
        "open_r+b": lambda: ro.open("/f", "r+b"),
        "open_wb_new": lambda: ro.open("/new", "wb"),
    }
    for call in calls.values():
        with pytest.raises(ReadOnlyError) as ei:
            call()
        both(ei.value, ReadOnlyError, PermissionError)
    with pytest.raises(ReadOnlyError), ro.transaction():
        pass
    assert ro.read("/f") == b"data"
    assert ro.listdir("/") == ["d", "f"]
    assert file_bytes(cart_path) == before


def test_read_only_allows_reads(ro):
    assert ro.read("/f") == b"data"
    assert ro.stat("/f").size == 4
    assert ro.verify().ok
    assert ro.info()["files"] == 2
    with ro.open("/f", "rb") as s:
        assert s.read() == b"data"


# ----------------------------------------------------------------------------- closed


def test_use_after_close_every_method(cart_path):
    c = cartridge.open(cart_path, "w")
    c.write("/f", b"x")
    c.mkdir("/d")
    c.close()
    calls = {
        "write": lambda: c.write("/g", b"x"),
        "read": lambda: c.read("/f"),
        "read_range": lambda: c.read("/f", offset=0, size=1),
        "readinto": lambda: c.readinto("/f", bytearray(1)),
        "open_rb": lambda: c.open("/f", "rb"),
        "open_wb": lambda: c.open("/g", "wb"),
        "exists": lambda: c.exists("/f"),
        "isdir": lambda: c.isdir("/d"),
        "isfile": lambda: c.isfile("/f"),
        "stat": lambda: c.stat("/f"),
        "listdir": lambda: c.listdir("/"),
        "walk": lambda: list(c.walk("/")),
        "scan": lambda: list(c.scan("/")),
        "mkdir": lambda: c.mkdir("/e"),
        "delete": lambda: c.delete("/f"),
        "rename": lambda: c.rename("/f", "/h"),
        "transaction": lambda: c.transaction().__enter__(),
        "commit": lambda: c.commit(),
        "verify": lambda: c.verify(),
        "info": lambda: c.info(),
    }
    for call in calls.values():
        with pytest.raises(ClosedError) as ei:
            call()
        both(ei.value, ClosedError, ValueError)
    c.close()   # still fine
    assert c.closed


def test_use_after_close_read_only(ro):
    ro.close()
    for call in (lambda: ro.read("/f"), lambda: ro.listdir("/"), lambda: ro.commit(),
                 lambda: ro.write("/x", b"")):
        with pytest.raises(ClosedError):
            call()


def test_iterators_after_close(cart):
    with cart.transaction():
        for i in range(600):
            cart.write(f"/d{i % 2}/f{i:04d}", b"")
    it = cart.scan("/")
    next(it)
    w = cart.walk("/")
    next(w)
    cart.close()
    with pytest.raises(ClosedError):
        list(w)
    with pytest.raises(ClosedError):
        list(it)


# ----------------------------------------------------------------------------- not a cartridge


def _valid_archive(path):
    with cartridge.open(path, "w") as c:
        c.write("/a", b"x" * 100_000)
        c.write("/b", b"small")
    return file_bytes(path)


@pytest.mark.parametrize("content", [
    b"",
    b"hello world\n" * 1000,
    b"just a short text file\n",
    random.Random(1).randbytes(PAGE * 3),
    random.Random(2).randbytes(100),
    b"\x00" * PAGE * 2,
    b"CART",
    b"CART\x00\x01\x00\x00",
    b"CART\x00\x01\x00\x00" + b"\x00" * 100,
    b"SQLite format 3\x00" + bytes(PAGE * 2),
    b"PK\x03\x04" + bytes(PAGE),
], ids=["empty", "text", "short-text", "random-3p", "random-100", "zeros", "magic4", "magic8",
        "magic+100", "sqlite", "zip"])
def test_not_a_cartridge(cart_path, content):
    with open(cart_path, "wb") as f:
        f.write(content)
    with pytest.raises(NotACartridgeError) as ei:
        cartridge.open(cart_path, "r")
    assert isinstance(ei.value, CartridgeError)
    if content:
        # "a" must refuse too, and must not touch the file
        with pytest.raises(NotACartridgeError):
            cartridge.open(cart_path, "a")
    assert file_bytes(cart_path) == content


@pytest.mark.parametrize("cut", [1, 8, 63, 64, 100, 1024, 1100, 2048, 2100, PAGE - 1])
def test_truncated_header(cart_path, cut):
    data = _valid_archive(cart_path)
    with open(cart_path, "wb") as f:
        f.write(data[:cut])
    for mode in ("r", "a"):
        with pytest.raises(NotACartridgeError):
            cartridge.open(cart_path, mode)
    assert file_bytes(cart_path) == data[:cut]


@pytest.mark.parametrize("keep_pages", [1, 2, 5])
def test_truncated_body(cart_path, keep_pages):
    data = _valid_archive(cart_path)
    assert len(data) > keep_pages * PAGE
    with open(cart_path, "wb") as f:
        f.write(data[:keep_pages * PAGE])
    with pytest.raises((CorruptionError, NotACartridgeError)), cartridge.open(cart_path, "r") as c:
        c.read("/a")
        c.read("/b")
        rep = c.verify()
        if not rep.ok:
            raise CorruptionError("verify: " + "; ".join(rep.problems))


# ----------------------------------------------------------------------------- versions


def _set_version(path, major, minor, fix_checksum=True):
    with open(path, "r+b") as f:
        head = bytearray(f.read(64))
        struct.pack_into("<HH", head, 8, major, minor)
        if fix_checksum:
            struct.pack_into("<Q", head, 56, xxhash.xxh3_64_intdigest(bytes(head[:56])))
        f.seek(0)
        f.write(head)


def test_header_layout_matches_design(cart_path):
    data = _valid_archive(cart_path)
    assert data[:8] == b"CART\x00\x01\x00\x00"
    from cartridge import format as F

    assert struct.unpack_from("<HH", data, 8) == (1, F.VERSION_MINOR)   # minor: FORMAT.md §2.1
    assert struct.unpack_from("<Q", data, 56)[0] == xxhash.xxh3_64_intdigest(data[:56])


@pytest.mark.parametrize("major", [2, 3, 255, 65535])
def test_newer_major_refused(cart_path, major):
    _valid_archive(cart_path)
    _set_version(cart_path, major, 0)
    for mode in ("r", "a"):
        with pytest.raises(UnsupportedVersionError) as ei:
            cartridge.open(cart_path, mode)
        assert isinstance(ei.value, CartridgeError)


def test_major_zero_refused(cart_path):
    _valid_archive(cart_path)
    _set_version(cart_path, 0, 9)
    with pytest.raises((UnsupportedVersionError, NotACartridgeError, CorruptionError)):
        cartridge.open(cart_path, "r")


@pytest.mark.parametrize("minor", [1, 7, 65535])
def test_newer_minor_opens(cart_path, minor):
    _valid_archive(cart_path)
    _set_version(cart_path, 1, minor)
    with cartridge.open(cart_path, "r") as c:
        assert c.read("/b") == b"small"
        assert c.read("/a") == b"x" * 100_000
        assert c.verify().ok
    with cartridge.open(cart_path, "a") as c:
        c.write("/c", b"new")
    with cartridge.open(cart_path, "r") as c:
        assert c.read("/c") == b"new"


def test_version_patch_without_checksum_is_corruption(cart_path):
    _valid_archive(cart_path)
    _set_version(cart_path, 1, F.VERSION_MINOR + 1, fix_checksum=False)   # a change of any byte
    with pytest.raises((CorruptionError, NotACartridgeError)):
        cartridge.open(cart_path, "r")


# ----------------------------------------------------------------------------- locking


def test_second_writer_locked(cart, cart_path):
    cart.write("/a", b"1")
    t0 = time.monotonic()
    with pytest.raises(LockedError) as ei:
        cartridge.open(cart_path, "a")
    assert time.monotonic() - t0 < 0.15
    both(ei.value, LockedError, BlockingIOError)
    for mode in ("a", "w"):
        with pytest.raises(LockedError):
            cartridge.open(cart_path, mode)
    # nothing was destroyed by the refused "w"
    assert cart.read("/a") == b"1"
    with cartridge.open(cart_path, "r") as r:
        assert r.read("/a") == b"1"


def test_second_writer_timeout(cart, cart_path):
    t0 = time.monotonic()
    with pytest.raises(LockedError):
        cartridge.open(cart_path, "a", timeout=0.2)
    elapsed = time.monotonic() - t0
    assert 0.15 <= elapsed < 2.0


def _write_from_another_process(path: str) -> str:
    """Open `path` for writing in a child process: 'ok' or the name of the error it got."""
    import subprocess
    import sys

    code = ("import sys, cartridge\n"
            "try:\n"
            "    with cartridge.open(sys.argv[1], 'a') as c: c.write('/child', b'1')\n"
            "except cartridge.CartridgeError as e: print(type(e).__name__)\n"
            "else: print('ok')\n")
    return subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def test_lock_released_on_close(cart_path):
    c = cartridge.open(cart_path, "w")
    with pytest.raises(LockedError):          # held while the writer is open...
        cartridge.open(cart_path, "a")
    assert _write_from_another_process(cart_path) == "LockedError"
    c.close()
    with cartridge.open(cart_path, "a") as c2:   # ...and free once it is closed
        c2.write("/a", b"1")
    assert _write_from_another_process(cart_path) == "ok"
    with cartridge.open(cart_path, "r") as c3:
        assert c3.listdir("/") == ["a", "child"]


def test_lock_acquired_within_timeout(cart_path):
    c = cartridge.open(cart_path, "w")
    threading.Timer(0.1, c.close).start()
    t0 = time.monotonic()
    with cartridge.open(cart_path, "a", timeout=5) as c2:
        assert time.monotonic() - t0 >= 0.05
        c2.write("/a", b"1")


def test_readers_not_blocked_by_writer(cart, cart_path):
    cart.write("/a", b"1")
    with cartridge.open(cart_path, "r") as r1, cartridge.open(cart_path, "r") as r2:
        assert r1.read("/a") == r2.read("/a") == b"1"


# ----------------------------------------------------------------------------- corruption


def _find(data: bytes, needle: bytes) -> int:
    i = data.find(needle)
    assert i >= 0, "pattern not found in archive file"
    return i


@pytest.mark.parametrize("chunk", [0, 1, 2])
def test_corrupt_content_page(cart_path, chunk):
    rnd = random.Random(5)
    content = rnd.randbytes(3 * 65536 + 500)
    with cartridge.open(cart_path, "w") as c:
        c.write("/big", content)
        c.write("/other", b"o" * 70_000)
    raw = file_bytes(cart_path)
    pos = _find(raw, content[chunk * 65536 + 1000: chunk * 65536 + 1064]) + 10
    patch_file(cart_path, pos, bytes([raw[pos] ^ 0xFF]))
    with cartridge.open(cart_path, "r") as c:
        with pytest.raises(CorruptionError):
            c.read("/big")
        with pytest.raises(CorruptionError):
            c.read("/big", offset=chunk * 65536 + 1000, size=100)
        with pytest.raises(CorruptionError):
            c.readinto("/big", bytearray(len(content)))
        with pytest.raises(CorruptionError), c.open("/big", "rb") as s:
            s.read()
        # other chunks and other files still read correctly (or fail loudly, never wrongly)
        other = (chunk + 1) % 3
        try:
            got = c.read("/big", offset=other * 65536, size=65536)
        except CorruptionError:
            pass
        else:
            assert got == content[other * 65536:(other + 1) * 65536]
        assert c.read("/other") == b"o" * 70_000
        rep = c.verify()
        assert not rep.ok
        assert rep.problems


def test_corrupt_small_file(cart_path):
    with cartridge.open(cart_path, "w") as c:
        c.write("/s", b"SMALLFILE-CONTENT-" * 20)
    raw = file_bytes(cart_path)
    pos = _find(raw, b"SMALLFILE-CONTENT-") + 3
    patch_file(cart_path, pos, b"X")
    with pytest.raises(CorruptionError), cartridge.open(cart_path, "r") as c:
        c.read("/s")


def test_corrupt_header_checksum(cart_path):
    _valid_archive(cart_path)
    patch_file(cart_path, 40, b"\xff\xff")    # inside the checksummed header span
    with pytest.raises((CorruptionError, NotACartridgeError)):
        cartridge.open(cart_path, "r")


def test_corrupt_both_root_slots(cart_path):
    _valid_archive(cart_path)
    patch_file(cart_path, 1024 + 20, b"\xaa" * 8)
    patch_file(cart_path, 2048 + 20, b"\xaa" * 8)
    with pytest.raises((CorruptionError, NotACartridgeError)):
        cartridge.open(cart_path, "r")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_corrupt_one_root_slot_falls_back_or_fails_loudly(cart_path):
    with cartridge.open(cart_path, "w") as c:
        c.write("/a", b"1")
        c.write("/a", b"2")
    raw = file_bytes(cart_path)
    slots = [struct.unpack_from("<Q", raw, off + 8)[0] for off in (1024, 2048)]
    newest = (1024, 2048)[slots.index(max(slots))]
    patch_file(cart_path, newest + 20, b"\x55" * 4)
    try:
        c = cartridge.open(cart_path, "r")
    except (CorruptionError, NotACartridgeError):
        return
    with c:
        assert c.read("/a") in (b"1", b"2")
        rep = c.verify()
        # the damaged slot is worth reporting, but nothing else may be wrong
        assert all("slot" in p for p in rep.problems), rep.problems


def _flip_fuzz(path: str, original: dict, seed: int, n_flips: int = 1):
    raw = bytearray(file_bytes(path))
    rnd = random.Random(seed)
    for _ in range(n_flips):
        pos = rnd.randrange(len(raw))
        raw[pos] ^= 1 << rnd.randrange(8)
    with open(path, "wb") as f:
        f.write(raw)
    allowed = (CorruptionError, NotACartridgeError, UnsupportedVersionError)
    try:
        c = cartridge.open(path, "r")
    except allowed:
        return
    with c:
        for p, data in original.items():
            try:
                got = c.read(p)
            except allowed:
                continue
            except NotFoundError:
                # A flip can only hide a file if it defeats a checksum: that is a bug.
                raise AssertionError(f"seed {seed}: {p} vanished without CorruptionError") from None
            assert got == data, f"seed {seed}: wrong bytes for {p}"
        try:
            c.verify()
        except allowed:
            pass


def test_random_bit_flips_never_wrong_bytes(tmp_path):
    src = str(tmp_path / "src.cart")
    rnd = random.Random(0)
    original = {f"/d{i % 3}/f{i}": rnd.randbytes(rnd.choice([0, 5, 700, 5000, 70_000]))
                for i in range(30)}
    with cartridge.open(src, "w") as c:
        for p, d in original.items():
            c.write(p, d)
    base = file_bytes(src)
    target = str(tmp_path / "fuzz.cart")
    for seed in range(150):
        with open(target, "wb") as f:
            f.write(base)
        _flip_fuzz(target, original, seed, n_flips=1 + seed % 3)


def test_zeroed_pages_never_wrong_bytes(tmp_path):
    path = str(tmp_path / "z.cart")
    rnd = random.Random(1)
    original = {f"/f{i}": rnd.randbytes(rnd.choice([10, 3000, 70_000])) for i in range(15)}
    with cartridge.open(path, "w") as c:
        for p, d in original.items():
            c.write(p, d)
    base = file_bytes(path)
    n_pages = len(base) // PAGE
    allowed = (CorruptionError, NotACartridgeError, UnsupportedVersionError)
    for pg in range(n_pages):
        raw = bytearray(base)
        raw[pg * PAGE:(pg + 1) * PAGE] = bytes(PAGE)
        with open(path, "wb") as f:
            f.write(raw)
        try:
            c = cartridge.open(path, "r")
        except allowed:
            continue
        with c:
            for p, d in original.items():
                try:
                    assert c.read(p) == d, f"page {pg}: wrong bytes for {p}"
                except allowed:
                    pass
            try:
                c.verify()
            except allowed:
                pass


def test_truncations_never_wrong_bytes(tmp_path):
    path = str(tmp_path / "t.cart")
    original = {f"/f{i}": bytes([i]) * (i * 9000) for i in range(12)}
    with cartridge.open(path, "w") as c:
        for p, d in original.items():
            c.write(p, d)
    base = file_bytes(path)
    allowed = (CorruptionError, NotACartridgeError)
    for cut in sorted({0, 1, 100, PAGE - 1, PAGE, PAGE + 1} | set(range(0, len(base), 3 * PAGE))):
        with open(path, "wb") as f:
            f.write(base[:cut])
        try:
            c = cartridge.open(path, "r")
        except allowed:
            continue
        with c:
            for p, d in original.items():
                try:
                    assert c.read(p) == d
                except allowed:
                    pass


def test_write_handle_detects_corruption_on_read(cart_path):
    """A read through the writer handle after on-disk damage: never wrong bytes."""
    content = random.Random(9).randbytes(300_000)
    c = cartridge.open(cart_path, "w", cache_size=0)
    try:
        c.write("/big", content)
        raw = file_bytes(cart_path)
        pos = _find(raw, content[200_000:200_064])
        patch_file(cart_path, pos, bytes([raw[pos] ^ 1]))
        try:
            got = c.read("/big")
        except CorruptionError:
            pass
        else:
            assert got == content
    finally:
        c.close()


def test_errors_are_not_bare(cart):
    """Spot-check that misuse yields typed errors, never KeyError/struct.error/bare Exception."""
    cart.write("/f", b"x")
    misuse = [
        lambda: cart.read("/f", offset=-1),
        lambda: cart.readinto("/f", b"immutable"),
        lambda: cart.open("/f", "rt"),
        lambda: cart.open("/f", "w"),
        lambda: cart.write("/f", "str"),
        lambda: cart.mkdir("/f"),
        lambda: cart.rename("/f", "/f/g"),
        lambda: cart.delete("/nope"),
        lambda: cartridge.open(cart.path, "q"),
    ]
    for call in misuse:
        with pytest.raises(Exception) as ei:
            call()
        assert type(ei.value) is not Exception
        assert not isinstance(ei.value, (KeyError, struct.error))
        assert isinstance(ei.value, (CartridgeError, ValueError, TypeError)), ei.value


def test_failed_open_leaves_no_file_handle_leak(cart_path):
    with open(cart_path, "wb") as f:
        f.write(b"garbage" * 1000)
    fds_before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    for _ in range(20):
        with pytest.raises(NotACartridgeError):
            cartridge.open(cart_path, "r")
    if fds_before is not None:
        assert len(os.listdir("/proc/self/fd")) <= fds_before + 1


@pytest.mark.parametrize("where", [0, 37, 99, 199])
def test_large_readinto_detects_a_bad_chunk(tmp_path, where):
    """Reads of 8 MiB and more check chunks on a second thread: a bad chunk still raises."""
    import numpy as np

    from cartridge.content import PARALLEL_VERIFY_MIN

    path = str(tmp_path / "big.cart")
    data = np.random.default_rng(where).bytes(200 * 65536)
    assert len(data) >= PARALLEL_VERIFY_MIN
    with cartridge.open(path, "w") as c:
        c.write("/big", data)
        rec = engine(c).get(b"/big")
        start = int(engine(c).content.chunk_map(rec, "")[where, 0])
    with open(path, "r+b") as f:
        f.seek(start * 4096 + 100)
        b = f.read(1)
        f.seek(start * 4096 + 100)
        f.write(bytes([b[0] ^ 0xFF]))
    with cartridge.open(path, "r") as c:
        buf = bytearray(len(data))
        with pytest.raises(cartridge.CorruptionError, match=f"chunk {where}"):
            c.readinto("/big", buf)
        if where:      # the chunks before the bad one are fine
            assert c.read("/big", 0, where * 65536) == data[:where * 65536]
