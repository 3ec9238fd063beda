"""verify() as an fsck: each invariant it promises is broken on purpose and must be reported.

The damage is made either through the engine (so every checksum stays valid and only the
invariant itself is wrong) or by patching a page and re-sealing its checksum.
"""
from __future__ import annotations

import os

import pytest

import cartridge
from cartridge import _handle as H
from cartridge import format as F
from cartridge._core.checksum import seal_page, xxh3_64
from cartridge._handle import engine
from cartridge.pager import Root


def build(path, **kw) -> None:
    with cartridge.open(path, "w", **kw) as c:
        for i in range(300):
            c.write(f"/d{i % 5}/f{i:03d}", bytes([i % 251]) * (100 + i))
        c.write("/big/a", os.urandom(200_000))
        c.write("/big/b", os.urandom(150_000))


@pytest.fixture
def path(tmp_path):
    p = str(tmp_path / "v.cart")
    build(p)
    return p


def problems(path, deep=True) -> list[str]:
    with cartridge.open(path, "r") as c:
        rep = c.verify(deep=deep)
    assert rep.ok == (not rep.problems)
    return rep.problems


def test_healthy_archive_is_ok(path):
    assert problems(path) == []
    with cartridge.open(path, "r") as c:
        rep = c.verify()
        assert rep.pages_checked > 0 and rep.files_checked == 302
        system = sum(rec.size for _, rec in H.engine(c).items(b"\x00", b"\x00"))   # the audit log
        assert rep.bytes_checked == c.info()["total_bytes"] + system


def test_page_used_twice(path):
    with cartridge.open(path, "a") as c:
        eng = engine(c)
        a, b = eng.get(b"/big/a"), eng.get(b"/big/b")
        with c.transaction():
            eng.put(b"/big/a", b)          # /big/a now points at /big/b's chunks
    found = problems(path)
    assert any("used twice" in p for p in found), found
    assert any("nothing owns them" in p for p in found), found    # /big/a's old chunks leak
    assert a.payload != b.payload


def test_leaked_page(path):
    with cartridge.open(path, "a") as c:
        with c.transaction():
            c.write("/x", b"x")
            engine(c).allocator.alloc_page()   # allocated, never referenced
    found = problems(path)
    assert any("nothing owns them" in p for p in found), found


def test_reachable_page_marked_free(path):
    with cartridge.open(path, "r") as c:
        eng = engine(c)
        start = int(eng.content.chunk_map(eng.get(b"/big/b"), "/big/b")[0, 0])
        chunk = start // F.ALLOC_CHUNK_BITS
        leaf = value = None
        for pno, node in eng.allocmap.pages():
            if node.is_leaf:
                for i in range(node.nkeys):
                    if node.key(i) == F.ALLOC_KEY.pack(chunk):
                        leaf, value = pno, node.value(i)
    bit = start % F.ALLOC_CHUNK_BITS
    assert value[bit // 8] >> (bit % 8) & 1

    def clear_bit(page):
        at = bytes(page).find(value)
        assert at > 0
        page[at + bit // 8] &= ~(1 << (bit % 8)) & 0xFF
    _patch_page(path, leaf, clear_bit)
    found = problems(path)
    assert any(f"page {start} " in p and "marked free" in p for p in found), found


def test_previous_commit_pages_marked_free(path):
    """Releasing freed pages one commit too early breaks the fallback to the other slot."""
    with cartridge.open(path, "a") as c:
        eng = engine(c)
        rec = eng.get(b"/big/a")
        runs = [(int(s), 16) for s in eng.content.chunk_map(rec, "/big/a")[:, 0]]
        with c.transaction():
            c.delete("/big/a")
            eng.allocator.release(runs)     # as if no root could reach them any more
    found = problems(path)
    assert any("previous commit" in p and "marked free" in p for p in found), found


def _leaf_with_keys(path) -> int:
    with cartridge.open(path, "r") as c:
        for pno, node in engine(c).catalog.pages():
            if node.is_leaf and node.nkeys >= 3:
                return pno
    raise AssertionError("no leaf")


def _patch_page(path, pno, fn) -> None:
    with open(path, "r+b") as f:
        f.seek(pno * F.PAGE_SIZE)
        page = bytearray(f.read(F.PAGE_SIZE))
        fn(page)
        seal_page(page)
        f.seek(pno * F.PAGE_SIZE)
        f.write(page)


def test_keys_out_of_order(path):
    pno = _leaf_with_keys(path)

    def swap(page):
        page[40:42], page[42:44] = page[42:44], page[40:42]
    _patch_page(path, pno, swap)
    found = problems(path)
    assert any(f"{pno}" in p for p in found), found


def test_node_checksum(path):
    pno = _leaf_with_keys(path)
    with open(path, "r+b") as f:
        f.seek(pno * F.PAGE_SIZE + 3000)
        b = f.read(1)
        f.seek(pno * F.PAGE_SIZE + 3000)
        f.write(bytes([b[0] ^ 1]))
    found = problems(path, deep=False)
    assert any(f"page {pno}" in p and "checksum" in p for p in found), found


def _rewrite_newest_slot(path, fn) -> None:
    with open(path, "r+b") as f:
        page0 = f.read(F.PAGE_SIZE)
    roots = [Root.unpack(page0[o:o + F.ROOT_SLOT.size]) for o in F.SLOT_OFFSETS]
    i = max(range(2), key=lambda j: roots[j].generation if roots[j] else -1)
    root = roots[i]
    fn(root)
    raw = root.pack()
    with open(path, "r+b") as f:
        f.seek(F.SLOT_OFFSETS[i])
        f.write(raw)
    assert Root.unpack(raw) is not None and xxh3_64(raw[:-8]) == int.from_bytes(raw[-8:], "little")


def test_leaf_depth_against_height(path):
    def taller(root):
        root.catalog_height += 1
    _rewrite_newest_slot(path, taller)
    found = problems(path, deep=False)
    assert any("depths" in p or "height" in p for p in found), found


def test_root_counts(path):
    def more_files(root):
        root.file_count += 1
    _rewrite_newest_slot(path, more_files)
    found = problems(path, deep=False)
    assert any("root counts" in p for p in found), found


def test_content_checksum_only_when_deep(path):
    with cartridge.open(path, "r") as c:
        eng = engine(c)
        start = int(eng.content.chunk_map(eng.get(b"/big/b"), "/big/b")[1, 0])
    with open(path, "r+b") as f:
        f.seek(start * F.PAGE_SIZE + 10)
        b = f.read(1)
        f.seek(start * F.PAGE_SIZE + 10)
        f.write(bytes([b[0] ^ 0xFF]))
    deep = problems(path, deep=True)
    assert any("/big/b" in p and "chunk 1" in p for p in deep), deep
    with cartridge.open(path, "r") as c:
        quick = c.verify(deep=False)
    assert quick.ok and quick.bytes_checked == 0


def test_file_size_against_extents(path):
    with cartridge.open(path, "a") as c:
        eng = engine(c)
        rec = eng.get(b"/big/b")
        rec.size += 70_000                  # one more chunk than the map holds
        with c.transaction():
            eng.put(b"/big/b", rec)
    found = problems(path, deep=False)
    assert any("/big/b" in p for p in found), found


def test_problem_names_the_path(path):
    with cartridge.open(path, "r") as c:
        eng = engine(c)
        start = int(eng.content.chunk_map(eng.get(b"/big/a"), "/big/a")[0, 0])
    with open(path, "r+b") as f:
        f.seek(start * F.PAGE_SIZE)
        f.write(b"\0" * 64)
    found = problems(path)
    assert any(p.startswith("/big/a") or "/big/a" in p for p in found), found
    assert any(f"page {start}" in p for p in found), found


def test_cli_exit_codes(path, capsys):
    from cartridge.cli import main

    assert main(["verify", path]) == 0
    assert main(["verify", "--quick", path]) == 0
    test_content_checksum_only_when_deep(path)
    capsys.readouterr()
    assert main(["verify", "--quick", path]) == 0
    assert main(["verify", path]) == 1
    assert "chunk 1" in capsys.readouterr().out
