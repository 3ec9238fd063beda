"""fs.mv on the cart:// filesystem, in place of an abstract suite fsspec does not have.

fsspec's abstract suites (fsspec.tests.abstract) have copy, get, put, open and pipe classes to
subclass (tests/test_fsspec_abstract.py runs them); its `mv` module (fsspec 2026.9) holds only
two tests of the local filesystem (a missing destination directory, a read-only one), no class
another filesystem can run. These are the equivalent cases for cart://: a file, a directory
(with and without recursive), a whole tree, across directories, onto an existing file and into
an existing directory, lists and globs, inside fs.transaction (commit and rollback), a missing
source and a filesystem that may not write (nothing changes). If a later fsspec adds an
abstract mv class, tests/test_fsspec_abstract.py runs it too.
"""
from __future__ import annotations

import pytest

fsspec = pytest.importorskip("fsspec", reason="fsspec is not installed (pip install 'cartridge[fsspec]')")

import cartridge  # noqa: E402
from cartridge import DirectoryNotEmptyError, ReadOnlyError  # noqa: E402
from cartridge.fsspec import READ_ONLY_HINT, CartridgeFileSystem  # noqa: E402


@pytest.fixture
def path(tmp_path) -> str:
    p = str(tmp_path / "mv.cart")
    with cartridge.open(p, "x") as c:
        c.write("/a/x.txt", b"x", mode=0o640, mtime=1_600_000_000)
        c.write("/a/sub/y.txt", b"y" * 3000)
        c.write("/a/sub/deep/z.bin", bytes(range(256)))
        c.write("/b/old.txt", b"old")
        c.mkdir("/empty")
    return p


@pytest.fixture
def fs(path):
    f = CartridgeFileSystem(fo=path, mode="a", skip_instance_cache=True)
    yield f
    f.close()


def state(path: str) -> dict:
    with cartridge.open(path) as c:
        assert c.verify().ok
        return {"files": {i.path: c.read(i.path) for i in c.scan("/")},
                "dirs": sorted(d for d, _, _ in c.walk("/"))}


def test_mv_a_file_keeps_its_content_and_metadata(fs):
    st = fs.cart.stat("/a/x.txt")
    fs.mv("/a/x.txt", "/a/renamed.txt")
    assert not fs.exists("/a/x.txt") and fs.cat("/a/renamed.txt") == b"x"
    moved = fs.cart.stat("/a/renamed.txt")
    assert (moved.mode, moved.mtime, moved.checksum) == (st.mode, st.mtime, st.checksum)


def test_mv_across_directories_creates_the_parents(fs):
    fs.mv("/a/sub/y.txt", "/new/deeper/y.txt")
    assert fs.cat("/new/deeper/y.txt") == b"y" * 3000 and not fs.exists("/a/sub/y.txt")
    assert fs.isdir("/new/deeper")


def test_mv_onto_an_existing_file_replaces_it(fs):
    fs.mv("/a/x.txt", "/b/old.txt")
    assert fs.cat("/b/old.txt") == b"x" and not fs.exists("/a/x.txt")
    assert fs.ls("/b", detail=False) == ["/b/old.txt"]


def test_mv_into_an_existing_directory(fs):
    fs.mv("/a/x.txt", "/b")                       # an existing directory: into it
    assert fs.cat("/b/x.txt") == b"x"
    fs.mv("/b/x.txt", "/empty/")                  # a trailing slash: into it
    assert fs.cat("/empty/x.txt") == b"x"


def test_mv_a_directory(fs, path):
    fs.mv("/a", "/moved", recursive=True)         # a whole tree, by one rename
    assert sorted(fs.find("/moved")) == ["/moved/sub/deep/z.bin", "/moved/sub/y.txt",
                                         "/moved/x.txt"]
    assert not fs.exists("/a")
    fs.mv("/moved", "/b", recursive=True)         # onto an existing directory: into it
    assert fs.cat("/b/moved/sub/deep/z.bin") == bytes(range(256))
    assert fs.cat("/b/old.txt") == b"old"
    fs.mv("/empty", "/empty2")                    # an empty directory needs no recursive
    assert fs.isdir("/empty2") and not fs.exists("/empty")


def test_mv_a_directory_with_contents_needs_recursive(fs, path):
    before = state(path)
    with pytest.raises(DirectoryNotEmptyError, match="pass recursive=True"):
        fs.mv("/a", "/c")
    assert state(path) == before


def test_mv_lists_and_globs(fs):
    fs.mv(["/a/x.txt", "/b/old.txt"], "/lst/", recursive=True)
    assert sorted(fs.find("/lst")) == ["/lst/old.txt", "/lst/x.txt"]
    assert not fs.exists("/a/x.txt") and not fs.exists("/b/old.txt")
    fs.mv("/a/sub/*.txt", "/txt/", recursive=True)
    assert fs.find("/txt") == ["/txt/y.txt"] and fs.exists("/a/sub/deep/z.bin")


def test_mv_missing_source(fs, path):
    before = state(path)
    with pytest.raises(FileNotFoundError):
        fs.mv("/nope", "/x")
    with pytest.raises(FileNotFoundError):
        fs.mv("/nope/*.txt", "/x/", recursive=True)
    assert state(path) == before


def test_mv_inside_a_transaction(fs, path):
    before = state(path)
    with pytest.raises(RuntimeError):
        with fs.transaction:
            fs.mv("/a", "/t", recursive=True)
            fs.mv("/b/old.txt", "/t/old.txt")
            assert fs.exists("/t/old.txt")          # seen inside the transaction
            raise RuntimeError("abort")
    assert state(path) == before                    # rolled back: nothing moved
    with fs.transaction:
        fs.mv("/a", "/t", recursive=True)
        fs.mv("/b/old.txt", "/t/old.txt")
    after = state(path)
    assert sorted(after["files"]) == ["/t/old.txt", "/t/sub/deep/z.bin", "/t/sub/y.txt",
                                      "/t/x.txt"]


def test_mv_on_a_read_only_filesystem_changes_nothing_and_says_how(path):
    before = state(path)
    ro = CartridgeFileSystem(fo=path, skip_instance_cache=True)
    try:
        for call in (lambda: ro.mv("/a/x.txt", "/y"), lambda: ro.mv("/a", "/c", recursive=True),
                     lambda: ro.pipe_file("/n", b"n"), lambda: ro.open("/n", "wb"),
                     lambda: ro.rm("/b/old.txt")):
            with pytest.raises(ReadOnlyError) as e:
                call()
            assert READ_ONLY_HINT in str(e.value) and "mode='a'" in str(e.value)
    finally:
        ro.close()
    assert state(path) == before
    with cartridge.open(path, "a") as c:            # a frozen archive: no hint, mode 'a' cannot help
        c.freeze()
    ro = CartridgeFileSystem(fo=path, skip_instance_cache=True)
    try:
        with pytest.raises(ReadOnlyError) as e:
            ro.mv("/a/x.txt", "/y")
        assert READ_ONLY_HINT not in str(e.value)
    finally:
        ro.close()


def test_to_csv_through_a_url_says_how_to_write(path):
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    from cartridge.fsspec import close_all

    df = pd.DataFrame({"a": [1, 2]})
    url = f"cart://t.csv::{path}"
    with pytest.raises(ReadOnlyError) as e:
        df.to_csv(url, index=False)
    assert "storage_options={'cart': {'mode': 'a'}}" in str(e.value)
    opts = {"cart": {"mode": "a"}}                   # what the message says: it works
    try:
        df.to_csv(url, index=False, storage_options=opts)
        df.to_csv(url, index=False, header=False, mode="a", storage_options=opts)   # append
    finally:
        close_all(path)
    assert pd.read_csv(url)["a"].tolist() == [1, 2, 1, 2]
