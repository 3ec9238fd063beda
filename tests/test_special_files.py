"""Archive paths that are not regular files (issue 19, items 2 and 3): devices, FIFOs, sockets
and directories are refused at once in every mode, before anything is written (a FIFO never
hangs the open); symlinks are followed, never replaced; an empty file in mode "a" becomes an
archive in place (inode, hard links and mode kept)."""
from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys

import pytest

import cartridge
from cartridge import CartridgeError, NotACartridgeError, PathIsDirectoryError

MODES = ("r", "a", "w", "x")


def snapshot(path: str):
    st = os.lstat(path)
    return (st.st_ino, st.st_mode, st.st_nlink, st.st_size)


@pytest.fixture
def fifo(tmp_path):
    p = str(tmp_path / "fifo")
    os.mkfifo(p)
    return p


@pytest.fixture
def sock(tmp_path):
    p = str(tmp_path / "sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(p)
    yield p
    s.close()


@pytest.mark.timeout(10)
@pytest.mark.parametrize("mode", MODES)
def test_fifo_refused_at_once(fifo, mode):
    before = snapshot(fifo)
    with pytest.raises(NotACartridgeError, match="FIFO"):
        cartridge.open(fifo, mode)
    assert snapshot(fifo) == before and stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("mode", MODES)
def test_symlink_to_fifo_refused(tmp_path, fifo, mode):
    link = str(tmp_path / "link")
    os.symlink(fifo, link)
    with pytest.raises(NotACartridgeError):
        cartridge.open(link, mode)
    assert os.path.islink(link) and stat.S_ISFIFO(os.stat(link).st_mode)


@pytest.mark.parametrize("mode", MODES)
def test_socket_refused(sock, mode):
    before = snapshot(sock)
    with pytest.raises(NotACartridgeError, match="socket"):
        cartridge.open(sock, mode)
    assert snapshot(sock) == before


@pytest.fixture
def chardev(tmp_path):
    """A character device to open: a private copy of the null device (a regression must never
    get to replace the system's /dev/null), else /dev/null itself for read-only checks."""
    p = str(tmp_path / "null")
    try:
        os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError):
        return None
    return p


@pytest.mark.parametrize("mode", MODES)
def test_char_device_refused(chardev, mode):
    if chardev is None:
        if mode != "r":
            pytest.skip("cannot create a device node here")
        chardev = os.devnull
    before = snapshot(chardev)
    with pytest.raises(NotACartridgeError, match="character device"):
        cartridge.open(chardev, mode)
    assert snapshot(chardev) == before and stat.S_ISCHR(os.lstat(chardev).st_mode)


def test_dev_null_refused_read_only():
    with pytest.raises(NotACartridgeError, match="character device"):
        cartridge.open(os.devnull, "r")
    assert stat.S_ISCHR(os.lstat(os.devnull).st_mode)


@pytest.mark.parametrize("mode", MODES)
def test_directory_refused(tmp_path, mode):
    d = tmp_path / "d"
    d.mkdir()
    with pytest.raises(PathIsDirectoryError):
        cartridge.open(str(d), mode)
    assert d.is_dir() and list(d.iterdir()) == []


def test_errors_are_cartridge_errors(fifo):
    with pytest.raises(CartridgeError):
        cartridge.open(fifo, "r")
    with pytest.raises(IsADirectoryError):
        cartridge.open(os.path.dirname(fifo), "a")


def test_append_on_symlink_to_empty_file(tmp_path):
    target = tmp_path / "t.cart"
    target.touch()
    os.chmod(target, 0o640)
    ino = os.stat(target).st_ino
    link = str(tmp_path / "link.cart")
    os.symlink(str(target), link)
    with cartridge.open(link, "a") as c:
        c.write("/a", b"hello")
    assert os.path.islink(link) and os.readlink(link) == str(target)
    st = os.stat(target)
    assert st.st_ino == ino and stat.S_IMODE(st.st_mode) == 0o640
    with cartridge.open(str(target), "r") as c:
        assert c.read("/a") == b"hello"


def test_append_on_hard_linked_empty_file(tmp_path):
    a = tmp_path / "a.cart"
    a.touch()
    os.chmod(a, 0o600)
    b = tmp_path / "b.cart"
    os.link(a, b)
    with cartridge.open(str(a), "a") as c:
        c.write("/x", b"1")
    assert os.stat(a).st_nlink == 2 and os.stat(a).st_ino == os.stat(b).st_ino
    assert stat.S_IMODE(os.stat(a).st_mode) == 0o600
    with cartridge.open(str(b), "r") as c:
        assert c.read("/x") == b"1"
    assert sorted(os.listdir(tmp_path)) == ["a.cart", "b.cart"]     # no temporary left


def test_append_initialises_empty_file_of_other_owner_mode(tmp_path):
    p = tmp_path / "e.cart"
    p.touch()
    os.chmod(p, 0o755)
    cartridge.open(str(p), "a").close()
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o755
    with cartridge.open(str(p), "r") as c:
        assert c.verify().ok


def test_write_mode_follows_symlink_and_keeps_mode(tmp_path):
    target = tmp_path / "t.cart"
    with cartridge.open(str(target), "x") as c:
        c.write("/old", b"o")
    os.chmod(target, 0o600)
    link = str(tmp_path / "link.cart")
    os.symlink(str(target), link)
    with cartridge.open(link, "w") as c:
        c.write("/new", b"n")
    assert os.path.islink(link)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    with cartridge.open(str(target), "r") as c:
        assert c.exists("/new") and not c.exists("/old")


def test_write_mode_through_dangling_symlink_creates_target(tmp_path):
    target = tmp_path / "t.cart"
    link = str(tmp_path / "link.cart")
    os.symlink(str(target), link)
    cartridge.open(link, "w").close()
    assert os.path.islink(link) and target.is_file()


def test_append_through_dangling_symlink_creates_target(tmp_path):
    target = tmp_path / "t.cart"
    link = str(tmp_path / "link.cart")
    os.symlink(str(target), link)
    with cartridge.open(link, "a") as c:
        c.write("/a", b"1")
    assert os.path.islink(link) and target.is_file()


def test_interrupted_in_place_init_is_not_an_archive(tmp_path):
    """A crash between the two writes of an in-place initialisation leaves a file whose first
    page is zero: reported as not an archive (and a still-empty file is initialised again)."""
    p = tmp_path / "e.cart"
    p.touch()
    cartridge.open(str(p), "a").close()
    data = bytearray(p.read_bytes())
    data[:4096] = bytes(4096)
    p.write_bytes(bytes(data))
    for mode in ("r", "a"):
        with pytest.raises(NotACartridgeError):
            cartridge.open(str(p), mode)
    p.write_bytes(b"CART")
    with pytest.raises(NotACartridgeError, match="cut short"):
        cartridge.open(str(p), "a")


@pytest.mark.timeout(20)
@pytest.mark.parametrize("cmd", [["ls"], ["put", "SRC"], ["verify"], ["info"]])
def test_cli_on_fifo(tmp_path, fifo, cmd):
    src = tmp_path / "src.txt"
    src.write_text("x")
    argv = [a if a != "SRC" else str(src) for a in cmd]
    r = subprocess.run([sys.executable, "-m", "cartridge", argv[0], fifo, *argv[1:]],
                       capture_output=True, text=True, timeout=15,
                       env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.returncode == 1, r
    assert "FIFO" in r.stderr and "Traceback" not in r.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
