"""`cartridge put` never reads the archive into itself and never reads a source past the size it
had when opened (issue 19, item 1: `put A A` used to stream A into itself until the disk was
full). The CLI runs in a subprocess with a file-size limit, so a regression fails instead of
filling the disk."""
from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

import cartridge
from cartridge import cli

LIMIT = 64 << 20          # RLIMIT_FSIZE for the child: a runaway put fails long before the disk
BIG = 3 << 20             # over cli.SMALL_FILE: the streamed path


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cartridge", *argv], capture_output=True,
                          text=True, timeout=120, preexec_fn=_limit,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})


@pytest.fixture
def archive(tmp_path):
    """An archive over 1 MiB inside tmp_path/dir, next to one other file."""
    d = tmp_path / "dir"
    d.mkdir()
    (d / "other.txt").write_bytes(b"other")
    a = str(d / "a.cart")
    with cartridge.open(a, "x") as c:
        c.write("/big", os.urandom(BIG))
    return a


@pytest.mark.timeout(180)
def test_put_archive_into_itself_is_refused(archive):
    size = os.path.getsize(archive)
    r = run("put", archive, archive)
    assert r.returncode == 1, r
    assert "archive itself" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert os.path.getsize(archive) == size
    with cartridge.open(archive, "r") as c:
        assert c.listdir("/") == ["big"]


@pytest.mark.timeout(180)
def test_put_archive_through_links_is_refused(tmp_path, archive):
    size = os.path.getsize(archive)
    sym = str(tmp_path / "sym.cart")
    os.symlink(archive, sym)
    hard = str(tmp_path / "hard.cart")
    os.link(archive, hard)
    url = "file://" + archive          # a file:// URL names the same local archive
    for target, source in ((archive, sym), (archive, hard), (sym, archive), (hard, sym),
                           (url, archive)):
        r = run("put", target, source)
        assert r.returncode == 1 and "archive itself" in r.stderr, (target, source, r)
    assert os.path.getsize(archive) == size


@pytest.mark.timeout(180)
def test_put_directory_holding_the_archive_skips_it(tmp_path, archive):
    d = os.path.dirname(archive)
    os.symlink(archive, os.path.join(d, "link.cart"))      # the archive once more, via a link
    size = os.path.getsize(archive)
    r = run("put", archive, d, "--to", "/in/")
    assert r.returncode == 0, r
    assert r.stderr.count("archive itself") == 2
    assert "put 1 file" in r.stdout and "skipped 2 files (the archive itself)" in r.stdout
    assert os.path.getsize(archive) < size + (1 << 20)
    with cartridge.open(archive, "r") as c:
        assert c.listdir("/in/dir") == ["other.txt"]
        assert c.read("/in/dir/other.txt") == b"other"


@pytest.mark.parametrize("size", [1000, BIG])
def test_source_read_only_up_to_its_size_at_open(tmp_path, monkeypatch, capsys, size):
    """A source that grows once opened is stored as it was (both the small and the streamed
    path)."""
    src = tmp_path / "grow.bin"
    data = os.urandom(size)
    src.write_bytes(data)
    real_open = open

    class Growing:
        """The source file; 2 MiB more are appended to it on disk before the first read."""

        def __init__(self, f):
            self._f, self._grown = f, False

        def read(self, n=-1):
            if not self._grown:
                self._grown = True
                with real_open(src, "ab") as g:
                    g.write(b"x" * (2 << 20))
            return self._f.read(n)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    def growing_open(path, *a, **kw):
        f = real_open(path, *a, **kw)
        return Growing(f) if os.fspath(path) == str(src) else f

    monkeypatch.setattr(cli, "open", growing_open, raising=False)
    a = str(tmp_path / "a.cart")
    assert cli.main(["put", a, str(src), "--to", "/g"]) == 0
    with cartridge.open(a, "r") as c:
        assert c.read("/g") == data
    assert f"{size} bytes" in capsys.readouterr().out


@pytest.mark.timeout(180)
def test_skipped_self_link_name_is_escaped(tmp_path, archive):
    """The warning names the local link escaped: a hostile name cannot drive the terminal."""
    d = os.path.dirname(archive)
    os.link(archive, os.path.join(d, "h\x1b[31mx"))
    r = run("put", archive, d, "--to", "/in/")
    assert r.returncode == 0, r
    assert "\x1b" not in r.stderr and "\\x1b[31mx" in r.stderr
