"""CLI put/get keep what tar keeps (issue 19 item 10): mode bits and mtimes both ways, what
happens to each symbolic link, names an archive cannot hold, --strict, --exclude."""
from __future__ import annotations

import os
import stat

import pytest

import cartridge
from cartridge.cli import main

BIG = (1 << 20) + 7          # the streaming path of put and get


def _put(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["--sync", "off", "put", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def _names(path) -> list[str]:
    with cartridge.open(path) as c:
        return sorted(info.path for info in c.scan("/"))


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_put_get_keeps_exec_bit_and_mtime(tmp_path, capsys, umask022):
    src = tmp_path / "src"
    src.mkdir()
    (src / "run.sh").write_bytes(b"#!/bin/sh\n")
    (src / "big.bin").write_bytes(b"b" * BIG)
    (src / "secret").write_bytes(b"s")
    os.chmod(src / "run.sh", 0o755)
    os.chmod(src / "big.bin", 0o750)
    os.chmod(src / "secret", 0o600)
    os.utime(src / "run.sh", (1_500_000_000.5, 1_500_000_000.5))
    os.utime(src / "big.bin", (1_400_000_000, 1_400_000_000))
    os.utime(src / "secret", (1_300_000_000.25, 1_300_000_000.25))
    cart = tmp_path / "a.cart"
    assert _put(capsys, cart, src)[0] == 0
    with cartridge.open(cart) as c:
        assert c.stat("/src/run.sh").mode == 0o100755
        assert c.stat("/src/run.sh").mtime == pytest.approx(1_500_000_000.5, abs=1e-3)
        assert c.stat("/src/big.bin").mode == 0o100750
    out = tmp_path / "out"
    assert main(["get", str(cart), "/src", "--to", str(out)]) == 0
    for name, mode, mtime in [("run.sh", 0o755, 1_500_000_000.5), ("big.bin", 0o750, 1.4e9),
                              ("secret", 0o600, 1_300_000_000.25)]:
        st = os.stat(out / "src" / name)
        assert stat.S_IMODE(st.st_mode) == mode, name
        assert abs(st.st_mtime - mtime) < 1e-3, name
    # --no-preserve on get: the umask's default and the time of extraction
    out2 = tmp_path / "out2"
    assert main(["get", str(cart), "/src/run.sh", "--to", str(out2), "--no-preserve"]) == 0
    st = os.stat(out2 / "run.sh")
    assert stat.S_IMODE(st.st_mode) == 0o644 and st.st_mtime > 1.6e9


def test_get_never_restores_setuid_and_applies_umask(tmp_path, capsys):
    cart = tmp_path / "a.cart"
    with cartridge.open(cart, "a") as c:
        c.write("/suid", b"x", mode=0o4777, mtime=10)
    old = os.umask(0o027)
    try:
        assert main(["get", str(cart), "/suid", "--to", str(tmp_path / "o")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "o" / "suid").st_mode) == 0o750


def test_put_no_preserve_stores_defaults(tmp_path, capsys):
    f = tmp_path / "x.sh"
    f.write_bytes(b"x")
    os.chmod(f, 0o755)
    os.utime(f, (1e9, 1e9))
    cart = tmp_path / "a.cart"
    assert _put(capsys, cart, f, "--no-preserve")[0] == 0
    with cartridge.open(cart) as c:
        assert c.stat("/x.sh").mode == 0o100644 and c.stat("/x.sh").mtime > 1.6e9


@pytest.fixture
def linked(tmp_path):
    """src/ with a file, a link to a file, a link to a directory outside, a broken link."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_bytes(b"f")
    other = tmp_path / "other"
    other.mkdir()
    (other / "o.txt").write_bytes(b"o")
    os.symlink(src / "f.txt", src / "lf")
    os.symlink(other, src / "ld")
    os.symlink(tmp_path / "nowhere", src / "broken")
    return src


def test_symlinks_default(tmp_path, capsys, linked):
    rc, out, err = _put(capsys, tmp_path / "a.cart", linked)
    assert rc == 0
    assert _names(tmp_path / "a.cart") == ["/src/f.txt", "/src/lf"]
    assert "ld" in err and "symbolic link to a directory" in err
    assert "broken" in err and "broken symbolic link" in err
    assert len(err.strip().splitlines()) == 2
    assert "2 skipped" in out


def test_symlinks_follow(tmp_path, capsys, linked):
    rc, out, err = _put(capsys, tmp_path / "a.cart", linked, "--follow-symlinks")
    assert rc == 0
    assert _names(tmp_path / "a.cart") == ["/src/f.txt", "/src/ld/o.txt", "/src/lf"]
    assert "broken symbolic link" in err and "1 skipped" in out


def test_symlinks_no_follow(tmp_path, capsys, linked):
    rc, out, err = _put(capsys, tmp_path / "a.cart", linked, "--no-follow")
    assert rc == 0
    assert _names(tmp_path / "a.cart") == ["/src/f.txt"]
    assert len(err.strip().splitlines()) == 3 and "3 skipped" in out
    assert err.count("--no-follow") == 3


def test_follow_symlinks_loop_terminates(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "x").write_bytes(b"x")
    os.symlink(src, src / "a" / "up")          # back to the top
    os.symlink("..", src / "a" / "parent")
    rc, out, err = _put(capsys, tmp_path / "a.cart", src, "--follow-symlinks")
    assert rc == 0
    assert _names(tmp_path / "a.cart") == ["/src/a/x"]
    assert err.count("symbolic link loop") == 2 and "2 skipped" in out


def test_unstorable_names_skipped_with_warning(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok").write_bytes(b"ok")
    root = os.fsencode(src)
    with open(root + b"/bad\xff.txt", "wb") as f:          # not UTF-8
        f.write(b"x")
    os.mkdir(root + b"/dir\xfe")
    with open(root + b"/dir\xfe/inside", "wb") as f:
        f.write(b"x")
    (src / "ctl\x1b[31m").write_bytes(b"x")                 # a control character
    rc, out, err = _put(capsys, tmp_path / "a.cart", src)
    assert rc == 0
    assert _names(tmp_path / "a.cart") == ["/src/ok"]
    lines = err.strip().splitlines()
    assert len(lines) == 3 and all("name cannot be stored" in ln for ln in lines)
    assert "\x1b" not in err and "3 skipped" in out


def test_strict_aborts_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    with open(os.fsencode(src) + b"/z\xff", "wb") as f:
        f.write(b"x")
    cart = tmp_path / "a.cart"
    rc, out, err = _put(capsys, cart, src, "--strict")
    assert rc == 1 and "--strict" in err and not cart.exists()
    assert main(["create", str(cart)]) == 0
    rc, out, err = _put(capsys, cart, src, "--strict")
    assert rc == 1 and _names(cart) == []


def test_exclude(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "build" / "deep").mkdir(parents=True)
    (src / "keep").mkdir()
    (src / "build" / "deep" / "x.o").write_bytes(b"x")
    (src / "keep" / "a.o").write_bytes(b"a")
    (src / "keep" / "a.c").write_bytes(b"a")
    (src / "keep" / "b.tmp").write_bytes(b"b")
    (src / "top.c").write_bytes(b"t")
    rc, out, err = _put(capsys, tmp_path / "a.cart", src, "--exclude", "build",
                        "--exclude", "*.tmp", "--exclude", "keep/*.o")
    assert rc == 0 and err == ""
    assert _names(tmp_path / "a.cart") == ["/src/keep/a.c", "/src/top.c"]
    assert "3 excluded" in out
    with cartridge.open(tmp_path / "a.cart") as c:
        assert not c.exists("/src/build")


def test_help_documents_the_options(capsys):
    for cmd, opts in [("put", ["--follow-symlinks", "--no-follow", "--exclude", "--strict",
                               "--no-preserve"]), ("get", ["--no-preserve"])]:
        assert main([cmd, "--help"]) == 0
        text = capsys.readouterr().out
        for o in opts:
            assert o in text, (cmd, o)
