"""fsspec's own abstract test suites (copy, get, put, open, pipe) run on the cart:// filesystem
over a local archive opened read-write."""
from __future__ import annotations

import pytest

fsspec = pytest.importorskip("fsspec", reason="fsspec is not installed (pip install 'cartridge[fsspec]')")
abstract = pytest.importorskip("fsspec.tests.abstract",
                               reason="this fsspec has no abstract test suites")

from cartridge.fsspec import CartridgeFileSystem  # noqa: E402


class CartFixtures(abstract.AbstractFixtures):
    @pytest.fixture(scope="class")
    def fs(self, tmp_path_factory):     # (not a classmethod: Python 3.9's has no __name__)
        path = tmp_path_factory.mktemp("cartfs") / "abstract.cart"
        fs = CartridgeFileSystem(fo=str(path), mode="a", skip_instance_cache=True)
        try:
            yield fs
        finally:
            fs.close()

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
