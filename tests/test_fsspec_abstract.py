"""fsspec's own abstract test suites (copy, get, put, open, pipe) run on the cart:// filesystem
over a local archive opened read-write.

There is no abstract suite for mv to run: fsspec.tests.abstract.mv (fsspec 2026.9, the version
installed here) holds only two module-level tests of the local filesystem, no class another
filesystem can subclass. tests/test_fsspec_mv.py has the equivalent cases for cart:// (a file,
a directory, recursive, across directories, onto an existing path, inside fs.transaction, a
missing source, a read-only filesystem); if a later fsspec adds an abstract mv class
(AbstractMoveTests / AbstractMvTests), TestCartMove below runs it as well."""
from __future__ import annotations

import pytest

fsspec = pytest.importorskip("fsspec", reason="fsspec is not installed (pip install 'cartridge[fsspec]')")
abstract = pytest.importorskip("fsspec.tests.abstract",
                               reason="this fsspec has no abstract test suites")

from cartridge.fsspec import CartridgeFileSystem  # noqa: E402


@pytest.fixture(scope="class")
def cart_fs(tmp_path_factory):
    """One read-write filesystem per test class. A module-level fixture: a class-scoped fixture
    defined as an instance method is deprecated (an error from pytest 10), and a classmethod
    one cannot be collected on Python 3.9 (its classmethod has no __name__)."""
    path = tmp_path_factory.mktemp("cartfs") / "abstract.cart"
    fs = CartridgeFileSystem(fo=str(path), mode="a", skip_instance_cache=True)
    try:
        yield fs
    finally:
        fs.close()


class CartFixtures(abstract.AbstractFixtures):
    @pytest.fixture
    def fs(self, cart_fs):
        return cart_fs

    @pytest.fixture
    def fs_join(self):
        return lambda *args: "/".join(args)

    @pytest.fixture
    def fs_path(self):
        return ""


class TestCartCopy(abstract.AbstractCopyTests, CartFixtures):
    pass


class TestCartGet(abstract.AbstractGetTests, CartFixtures):
    pass


class TestCartPut(abstract.AbstractPutTests, CartFixtures):
    pass


class TestCartOpen(abstract.AbstractOpenTests, CartFixtures):
    pass


class TestCartPipe(abstract.AbstractPipeTests, CartFixtures):
    pass


_MOVE = next((getattr(abstract, n) for n in ("AbstractMoveTests", "AbstractMvTests")
              if hasattr(abstract, n)), None)
if _MOVE is not None:       # a later fsspec: its mv suite runs too
    class TestCartMove(_MOVE, CartFixtures):  # type: ignore[valid-type,misc]
        pass


def test_which_abstract_suites_exist():
    """The suites this module runs are the ones this fsspec has; without an abstract mv class
    the mv module has no class at all (test_fsspec_mv.py stands in for it)."""
    import importlib
    import inspect

    for name in ("AbstractCopyTests", "AbstractGetTests", "AbstractPutTests",
                 "AbstractOpenTests", "AbstractPipeTests"):
        assert hasattr(abstract, name), name
    if _MOVE is None:
        try:
            mv = importlib.import_module("fsspec.tests.abstract.mv")
        except ImportError:         # an older fsspec: no mv module at all
            return
        assert not [n for n, v in vars(mv).items() if inspect.isclass(v) and "Abstract" in n]
