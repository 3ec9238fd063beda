"""A file-size limit (`ulimit -f`: EFBIG, "File too large") met by `put`, `get`, `cat` and
sqlite_export: the one-line error names the file that hit it (the archive, the destination, not
a temp name, or standard output), escaped; the archive keeps its last commit and no temp file
is left behind (issue 19, item 2)."""
from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

import cartridge

LIMIT = 2 << 20           # RLIMIT_FSIZE for the child
BIG = 3 << 20             # more than the limit


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def run(*argv: str, stdout=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cartridge", *argv], stdout=stdout or subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=120, preexec_fn=_limit,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})


def _one_line(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.decode()
    assert r.returncode == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    (d / "small.txt").write_bytes(b"small")
    (d / "big.bin").write_bytes(os.urandom(BIG))
    return d


@pytest.mark.timeout(180)
@pytest.mark.parametrize("what", ["file", "tree"])
def test_put_names_the_archive(tmp_path, src, what):
    arch = str(tmp_path / "a\u202e.cart")          # a name the terminal would act on
    with cartridge.open(arch, "x") as c:
        c.write("/keep", b"kept")
    before = os.path.getsize(arch)
    r = run("put", arch, str(src / "big.bin") if what == "file" else str(src))
    err = _one_line(r)
    assert err == f"cartridge: error: {tmp_path}/a\\u202e.cart: File too large\n", err
    assert os.path.getsize(arch) <= LIMIT and os.path.getsize(arch) >= before
    with cartridge.open(arch, "r") as c:
        assert c.listdir("/") == ["keep"] and c.read("/keep") == b"kept" and c.verify().ok


@pytest.mark.timeout(180)
def test_get_names_the_destination_and_leaves_no_temp(tmp_path, src):
    arch = str(tmp_path / "a.cart")
    with cartridge.open(arch, "x") as c:
        c.write("/big.bin", (src / "big.bin").read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    r = run("get", arch, "/big.bin", "--to", str(out))
    err = _one_line(r)
    assert err == f"cartridge: error: {out}/big.bin: File too large\n", err
    assert os.listdir(out) == []                    # no temp, no half-written file


@pytest.mark.timeout(180)
def test_cat_names_standard_output(tmp_path, src):
    arch = str(tmp_path / "a.cart")
    with cartridge.open(arch, "x") as c:
        c.write("/big.bin", (src / "big.bin").read_bytes())
    with open(tmp_path / "cat.out", "wb") as f:
        r = run("cat", arch, "/big.bin", stdout=f)
    assert _one_line(r) == "cartridge: error: standard output: File too large\n"


@pytest.mark.timeout(180)
def test_sqlite_export_names_the_destination(tmp_path):
    """The API: the OSError names the destination (not its temp file); nothing is left."""
    arch = str(tmp_path / "a.cart")
    with cartridge.open(arch, "x") as c:
        c.write("/blob.db", os.urandom(BIG))
    code = ("import cartridge, sys\n"
            "c = cartridge.open(sys.argv[1])\n"
            "try:\n"
            "    c.sqlite_export('/blob.db', sys.argv[2])\n"
            "except OSError as e:\n"
            "    print(e.errno, e.filename, e.strerror)\n")
    out = tmp_path / "exp"
    out.mkdir()
    r = subprocess.run([sys.executable, "-c", code, arch, str(out / "x.db")], capture_output=True,
                       text=True, timeout=120, preexec_fn=_limit,
                       env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.stdout == f"27 {out}/x.db File too large\n", (r.stdout, r.stderr)
    assert os.listdir(out) == []
