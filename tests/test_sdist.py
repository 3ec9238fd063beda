"""The sdist builds a working wheel from a clean directory (issue 17, item 6).

`python -m build --sdist` on a copy of the source tree, then `python -m build --wheel` on the
unpacked sdist alone (an isolated build: Cython runs afresh from the .pyx/.pxd sources and the
vendored header the sdist must carry), then the wheel in a fresh venv runs `cartridge demo`.
Minutes of compiling: slow tier."""
from __future__ import annotations

import email
import glob
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest
from test_packaging import check_metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP = shutil.ignore_patterns(".venv*", ".git", "build", "dist", "*.egg-info", "*.so", "*.c",
                              "__pycache__", ".tox", ".mypy_cache", ".pytest_cache",
                              ".hypothesis", "*.cart", ".data", "results")

pytestmark = pytest.mark.slow


def _run(argv, cwd, timeout=1500):
    r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{argv}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_sdist_builds_a_working_wheel(tmp_path):
    pytest.importorskip("build", reason="the build package (test extra) is not installed")
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=SKIP)
    _run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path / "sdist")], src)
    (sdist,) = glob.glob(str(tmp_path / "sdist" / "*.tar.gz"))
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        top = tar.getnames()[0].split("/")[0]
        tar.extractall(tmp_path / "clean")
    core = "cartridge/_core/"
    for kind in (".pyx", ".pxd", ".pyi"):
        want = {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, core, "*" + kind))}
        assert want and want <= names, (kind, sorted(want - names))
    assert {core + "vendor/xxhash.h", "setup.py", "pyproject.toml", "README.md",
            "cartridge/py.typed"} <= names
    assert not [n for n in names if n.endswith((".so", ".pyc"))]

    clean = tmp_path / "clean" / top               # nothing but the sdist's files
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "wheel")], clean)
    (wheel,) = glob.glob(str(tmp_path / "wheel" / "*.whl"))
    with zipfile.ZipFile(wheel) as z:
        (meta_name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        check_metadata(email.message_from_bytes(z.read(meta_name)))
        assert any(n.startswith("cartridge/_core/btree.") and n.endswith(".so") for n in z.namelist())

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    _run([str(bindir / "python"), "-m", "pip", "install", "-q", wheel], tmp_path)
    r = _run([str(bindir / "cartridge"), "demo"], tmp_path, timeout=300)   # outside the tree
    assert "verify OK" in r.stdout, r.stdout
    r = _run([str(bindir / "python"), "-c", "import cartridge, sys; print(cartridge.__file__)"],
             tmp_path)
    assert str(venv) in r.stdout                   # the installed copy, not the source tree
