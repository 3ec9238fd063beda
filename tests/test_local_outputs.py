"""Local outputs (issue 19 item 5): every file cartridge writes outside an archive goes through
cartridge.localfile — a random, exclusively created temp file that follows no link, fsynced and
renamed over the destination; a directory, symlink, device, FIFO or socket destination is
refused before anything."""
import os
import sqlite3
import stat
import subprocess
import sys

import pytest

import cartridge
from cartridge import localfile as LF
from cartridge.errors import CartridgeError, PathIsDirectoryError, SymlinkRefusedError


def _db_archive(tmp_path, wal: bool) -> str:
    """An archive holding /d.db (rows 0..99); with wal, the rows are in /d.db-wal only."""
    src = tmp_path / "src.db"
    s = sqlite3.connect(src)
    if wal:
        s.execute("PRAGMA journal_mode=WAL")
        s.execute("PRAGMA wal_autocheckpoint=0")
    s.execute("CREATE TABLE t(a)")
    s.executemany("INSERT INTO t VALUES(?)", [(i,) for i in range(100)])
    s.commit()
    db = src.read_bytes()
    w = (tmp_path / "src.db-wal").read_bytes() if wal else b""
    s.close()
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "a") as cart:
        cart.write("/d.db", db)
        if wal:
            cart.write("/d.db-wal", w)
    return path


def _rows(path) -> int:
    s = sqlite3.connect(path)
    try:
        return s.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        s.close()


CASES = [("a", False), ("a", True), ("r", False), ("r", True)]   # r + WAL: the apsw backup


@pytest.mark.parametrize("mode,wal", CASES)
def test_export_never_follows_a_planted_symlink(tmp_path, mode, wal):
    path = _db_archive(tmp_path, wal)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    dest = out / "e.db"
    os.symlink(victim, str(dest) + ".cartridge-export")        # the old predictable name
    with cartridge.open(path, mode) as cart:
        cart.sqlite_export("/d.db", dest)
    assert victim.read_bytes() == b"precious"
    assert _rows(dest) == 100
    assert sorted(p.name for p in out.iterdir()) == ["e.db", "e.db.cartridge-export"]
    assert stat.S_IMODE(dest.stat().st_mode) == LF.default_mode()


@pytest.mark.parametrize("mode,wal", CASES)
def test_export_refuses_a_symlink_or_directory_destination(tmp_path, mode, wal):
    path = _db_archive(tmp_path, wal)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    link = tmp_path / "link.db"
    os.symlink(victim, link)
    d = tmp_path / "adir"
    d.mkdir()
    before = sorted(os.listdir(tmp_path))
    with cartridge.open(path, mode) as cart:
        with pytest.raises(SymlinkRefusedError, match="symbolic link"):
            cart.sqlite_export("/d.db", link)
        with pytest.raises(PathIsDirectoryError, match="adir is a directory"):
            cart.sqlite_export("/d.db", d)
    assert victim.read_bytes() == b"precious" and os.path.islink(link)
    assert sorted(os.listdir(tmp_path)) == before and os.listdir(d) == []


def test_export_to_tmp_is_a_cartridge_error(tmp_path):
    path = _db_archive(tmp_path, False)
    with cartridge.open(path, "r") as cart:
        with pytest.raises(PathIsDirectoryError) as e:
            cart.sqlite_export("/d.db", "/tmp")
    assert "cartridge-export" not in str(e.value) and ".part" not in str(e.value)


def test_export_to_a_path_ending_in_slash_is_a_directory_error(tmp_path):
    path = _db_archive(tmp_path, False)
    with cartridge.open(path, "r") as cart:
        with pytest.raises(PathIsDirectoryError):
            cart.sqlite_export("/d.db", str(tmp_path / "nothere") + "/")
    assert not (tmp_path / "nothere").exists()


def test_every_temp_name_taken_is_a_cartridge_error(tmp_path, monkeypatch):
    monkeypatch.setattr(LF.secrets, "token_hex", lambda n: "cccc")
    (tmp_path / ".out.cccc.part").write_bytes(b"")
    with pytest.raises(cartridge.AlreadyExistsError):
        with LF.atomic_writer(tmp_path / "out") as f:
            f.write(b"x")
    assert not (tmp_path / "out").exists()


def test_default_mode_reads_the_umask_without_changing_it(monkeypatch):
    old = os.umask(0o027)
    try:
        changed = []
        real = os.umask
        monkeypatch.setattr(LF.os, "umask", lambda m: changed.append(m) or real(m))
        assert LF.default_mode() == 0o640
        if os.path.exists("/proc/self/status"):
            assert changed == []          # read from /proc: no window with another umask
    finally:
        os.umask(old)


def test_mode_and_mtime_are_set_through_the_descriptor(tmp_path, monkeypatch):
    """Set on the open temp file, never by name (a name could be swapped for a link)."""
    monkeypatch.setattr(LF.os, "chmod", lambda *a, **k: pytest.fail("chmod by name"))
    with LF.atomic_writer(tmp_path / "out", mode=0o700, mtime=1_000_000_000) as f:
        f.write(b"x")
    st = os.stat(tmp_path / "out")
    assert stat.S_IMODE(st.st_mode) == 0o700 and int(st.st_mtime) == 1_000_000_000


def test_random_temp_names_that_are_taken_are_skipped(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    names = iter(["aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(LF.secrets, "token_hex", lambda n: next(names))
    os.symlink(victim, tmp_path / ".out.aaaa.part")
    with LF.atomic_writer(tmp_path / "out") as f:
        f.write(b"new")
    assert victim.read_bytes() == b"precious"
    assert (tmp_path / "out").read_bytes() == b"new"
    assert os.path.islink(tmp_path / ".out.aaaa.part")
    assert not (tmp_path / ".out.bbbb.part").exists()


@pytest.mark.parametrize("mode,wal", CASES)
def test_an_error_mid_write_leaves_no_temp_and_the_old_destination(tmp_path, monkeypatch,
                                                                   mode, wal):
    path = _db_archive(tmp_path, wal)
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "e.db"
    dest.write_bytes(b"old")

    def boom(fd):
        raise OSError(5, "simulated I/O error")
    monkeypatch.setattr(LF.os, "fsync", boom)
    with cartridge.open(path, mode) as cart:
        with pytest.raises(OSError, match="simulated"):
            cart.sqlite_export("/d.db", dest)
    assert os.listdir(out) == ["e.db"] and dest.read_bytes() == b"old"


def test_atomic_writer_error_in_the_block(tmp_path):
    dest = tmp_path / "f"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with LF.atomic_writer(dest) as f:
            f.write(b"half")
            raise RuntimeError("stop")
    assert os.listdir(tmp_path) == ["f"] and dest.read_bytes() == b"old"


def test_atomic_writer_mode_and_mtime(tmp_path):
    with LF.atomic_writer(tmp_path / "x", mode=0o640, mtime=1_000_000) as f:
        f.write(b"1")
    st = os.stat(tmp_path / "x")
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_mtime == 1_000_000
    with LF.atomic_writer(tmp_path / "y") as f:
        f.write(b"1")
    assert stat.S_IMODE(os.stat(tmp_path / "y").st_mode) == LF.default_mode()


def test_errors_are_cartridge_errors():
    assert issubclass(SymlinkRefusedError, CartridgeError)
    assert issubclass(SymlinkRefusedError, OSError)


def _cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cartridge.__file__)))
    return subprocess.run([sys.executable, "-m", "cartridge", *args], capture_output=True,
                          text=True, env=env, cwd=cwd)


def test_cli_get_never_follows_a_planted_part_symlink(tmp_path):
    arc = str(tmp_path / "a.cart")
    with cartridge.open(arc, "a") as cart:
        cart.write("/x", b"from the archive")
        cart.write("/big", os.urandom(3 << 20))
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("x.part", ".x.part", "big.part", ".big.part"):
        os.symlink(victim, out / name)
    r = _cli("get", arc, "/", "--to", str(out))
    assert r.returncode == 0, r.stderr
    assert victim.read_bytes() == b"precious"
    assert (out / "x").read_bytes() == b"from the archive"
    assert sorted(os.listdir(out)) == sorted(["x", "big", "x.part", ".x.part", "big.part",
                                              ".big.part"])
    assert all(os.path.islink(out / n) for n in ("x.part", ".x.part", "big.part", ".big.part"))


def _special_destinations(tmp_path) -> dict[str, str]:
    """Existing destinations that are neither regular files, directories nor links: a FIFO and
    a Unix socket (a device node cannot be made without privileges; /dev/null is checked
    without writing: check_destination alone)."""
    import socket
    fifo = str(tmp_path / "fifo.out")
    os.mkfifo(fifo)
    sock_path = str(tmp_path / "sock.out")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(sock_path)
    sock.close()
    return {"a FIFO": fifo, "a socket": sock_path}


@pytest.mark.parametrize("writer", ["atomic_writer", "atomic_path", "sqlite_export",
                                    "export_engram", "cli_get"])
def test_a_special_file_destination_is_refused_not_replaced(tmp_path, writer):
    """A destination that exists as a FIFO or socket (as a device: /dev/null run as root) is
    refused with a CartridgeError before anything is written; it stays what it was (it used to
    be replaced by a regular file through os.replace, as mode "a" once replaced /dev/zero)."""
    if writer == "export_engram":
        pytest.importorskip("zstandard", reason="the engram extra is not installed")
    arc = _db_archive(tmp_path, False)
    for kind, dest in _special_destinations(tmp_path).items():
        before = os.lstat(dest)
        if writer == "cli_get":
            with cartridge.open(arc, "a") as cart:
                cart.write("/" + os.path.basename(dest), b"x")
            r = _cli("get", arc, "/" + os.path.basename(dest), "--to", str(tmp_path))
            assert r.returncode == 1 and kind in r.stderr and "Traceback" not in r.stderr, r.stderr
        else:
            with pytest.raises(CartridgeError, match=f"is {kind}, not a regular file"):
                if writer == "atomic_writer":
                    with LF.atomic_writer(dest) as f:
                        f.write(b"x")
                elif writer == "atomic_path":
                    with LF.atomic_path(dest):
                        pass
                else:
                    with cartridge.open(arc, "r") as cart:
                        if writer == "sqlite_export":
                            cart.sqlite_export("/d.db", dest)
                        else:
                            cart.export_engram(dest)
        after = os.lstat(dest)
        assert stat.S_IFMT(after.st_mode) == stat.S_IFMT(before.st_mode), (writer, kind)
        assert after.st_ino == before.st_ino
    leftovers = [n for n in os.listdir(tmp_path) if n.endswith(".part")]
    assert not leftovers, leftovers


def test_a_device_destination_is_refused():
    with pytest.raises(CartridgeError, match="is a character device, not a regular file"):
        LF.check_destination(os.devnull)
