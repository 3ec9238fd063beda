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
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 64:     # pragma: no cover
        import pytest  # (a venv's bundled setuptools on 3.9 is 58: no [tool.setuptools])
        pytest.skip(f"setuptools {setuptools.__version__} predates the build's setuptools>=64")
    out = tmp_path / "lib"
    subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py",
                    "--build-lib", str(out)], cwd=src, check=True, capture_output=True)
    assert (out / "cartridge" / "py.typed").is_file()


# -- issue 17, item 6: extras, sdist -> wheel -> fresh venv ----------------------------------------
CORE = {"numpy", "xxhash", "apsw"}
EXTRAS = {"fsspec": {"fsspec"}, "engram": {"lz4", "zstandard", "cryptography"},
          "cli": {"rich", "argcomplete"}}


def _requirements(meta) -> tuple[set[str], dict[str, set[str]]]:
    """(core requirement names, extra -> names) from a METADATA message."""
    import re

    core: set[str] = set()
    extras: dict[str, set[str]] = {}
    for req in meta.get_all("Requires-Dist") or []:
        name = re.match(r"[A-Za-z0-9_.-]+", req).group().lower()
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
        if extra:
            extras.setdefault(extra.group(1), set()).add(name)
        else:
            core.add(name)
    return core, extras


def check_metadata(meta) -> None:
    core, extras = _requirements(meta)
    assert core == CORE, core                     # the core install stays small
    assert set(EXTRAS) <= set(meta.get_all("Provides-Extra") or []), meta.get_all("Provides-Extra")
    for extra, names in EXTRAS.items():
        assert names <= extras.get(extra, set()), (extra, extras.get(extra))
    assert "build" in extras["test"]


def test_installed_metadata_lists_the_extras():
    """The metadata of the installed distribution (what pip built from pyproject.toml)."""
    from importlib import metadata

    check_metadata(metadata.metadata("cartridge"))


def test_importing_the_unbuilt_source_tree_says_how_to_build(tmp_path):
    """`python` started inside a source checkout that was installed with `pip install .` (not
    built in place) imports the source package, whose kernels are not compiled: the error says
    so and what to do, instead of a bare 'cannot import name pathkeys'."""
    import os
    import shutil
    import subprocess
    import sys

    import cartridge

    src = os.path.dirname(cartridge.__file__)
    shutil.copytree(src, tmp_path / "cartridge",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "*.c"))
    proc = subprocess.run([sys.executable, "-c", "import cartridge"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "compiled kernels are missing" in proc.stderr and "pip install -e ." in proc.stderr, \
        proc.stderr
