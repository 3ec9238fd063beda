"""Every Python package of the source tree is installed by a non-editable `pip install .`."""
from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    if sys.version_info >= (3, 11):
        import tomllib
    else:                                 # pragma: no cover - tomllib is 3.11+
        import pytest
        pytest.skip("tomllib needs Python 3.11+")
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "cartridge").rglob("__init__.py")}
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"


def test_py_typed_is_shipped(tmp_path):
    """PEP 561: the package carries py.typed, and a build (setuptools' build_py, the step that
    fills a wheel's pure-Python part) copies it; run on a copy of the sources, so the tree stays clean."""
    import importlib.util
    import shutil
    import subprocess

    import cartridge

    assert (pathlib.Path(cartridge.__file__).parent / "py.typed").is_file()
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "cartridge", src / "cartridge",
                    ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"))
    if importlib.util.find_spec("setuptools") is None:     # pragma: no cover
        import pytest
        pytest.skip("setuptools is not installed")
    out = tmp_path / "lib"
    subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py",
                    "--build-lib", str(out)], cwd=src, check=True, capture_output=True)
    assert (out / "cartridge" / "py.typed").is_file()
