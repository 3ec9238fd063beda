"""The kernels' layout (cartridge/_core/layout.pxd, published by layout_info) against the
numbers docs/FORMAT.md gives, and cartridge.format's Python values against the kernels'."""
import struct

from cartridge import format as F
from cartridge import paths
from cartridge._core import layout_info as L

# docs/FORMAT.md: §4.1 node header, §5.1 record, §5.2 chunk-map entry, §5.1 XMAP reference
SPEC = {
    "NodeHeader": (40, [("tag", 0, 4), ("tree_id", 4, 2), ("nkeys", 6, 2), ("page_no", 8, 8),
                        ("checksum", 16, 8), ("cell_start", 24, 2), ("frag", 26, 2),
                        ("reserved", 28, 4), ("right_child", 32, 8)]),
    "RecordHeader": (40, [("kind", 0, 1), ("storage", 1, 1), ("reserved", 2, 2), ("mode", 4, 4),
                          ("size", 8, 8), ("ctime_ns", 16, 8), ("mtime_ns", 24, 8),
                          ("checksum", 32, 8)]),
    "ChunkEntry": (16, [("start", 0, 8), ("checksum", 8, 8)]),
    "XmapRef": (16, [("first_page", 0, 8), ("page_count", 8, 4), ("reserved", 12, 4)]),
}


def test_struct_sizes_and_offsets_are_the_specs():
    for name, (size, fields) in SPEC.items():
        got_size, got_fields = L.STRUCTS[name]
        assert got_size == size, name
        assert [(f, off, sz) for f, off, sz, _ in got_fields] == fields, name


def test_format_structs_are_derived_from_the_kernel_structs():
    assert F.RECORD.format == L.struct_format("RecordHeader") == "<BBHIQqqQ"
    assert F.CHUNK_ENTRY.format == L.struct_format("ChunkEntry") == "<QQ"
    assert F.XMAP_REF.format == L.struct_format("XmapRef") == "<QII"
    assert L.struct_format("NodeHeader") == "<4sHHQQHHIQ"
    assert F.RECORD.size == L.RECORD_SIZE == 40
    assert struct.calcsize(L.struct_format("NodeHeader")) == L.NODE_HEADER_SIZE == 40


def test_constants_are_the_specs_and_the_kernels():
    spec = {"PAGE_SIZE": 4096, "CHUNK_SIZE": 65536, "CHUNK_PAGES": 16, "KEY_INLINE": 512,
            "MAX_CELL": 1012, "KIND_FILE": 1, "KIND_DIR": 2, "STORE_EMPTY": 0, "STORE_INLINE": 1,
            "STORE_CHUNKS": 2, "STORE_XMAP": 3, "TREE_CATALOG": 1, "TREE_ALLOCMAP": 2,
            "ALLOC_CHUNK_BITS": 2048, "ALLOC_CHUNK_BYTES": 256}
    for name, value in spec.items():
        assert getattr(F, name) == getattr(L, name) == value, name
    assert (L.TAG_LEAF, L.TAG_INTERNAL) == (b"BTLF", b"BTIN")
    assert L.MAX_KEY == 4096 and L.META_CHECKSUM_OFFSET == 16
    assert F.XMAP_ENTRIES == 253
    assert (paths.MAX_PATH_BYTES, paths.MAX_NAME_BYTES) == (L.MAX_PATH_BYTES, L.MAX_NAME_BYTES)
    assert (L.MAX_PATH_BYTES, L.MAX_NAME_BYTES) == (4096, 255)


def test_format_imports_no_btree_kernel():
    with open(F.__file__) as f:
        text = f.read()
    assert "btree" not in text


def _layout_literals(path, source=None):
    """Spellings in `path` of layout facts format.py owns: the chunk size as a number, or the
    struct format of an on-disk structure. A cache size that happens to be 65536 (a named
    *_CACHE_* constant or an lru_cache maxsize) is not one."""
    import ast
    fmts = {s.format for s in (F.RECORD, F.CHUNK_ENTRY, F.XMAP_REF, F.FILE_HEADER, F.ROOT_SLOT,
                               F.XMAP_HEADER, F.META_PREFIX)}
    tree = ast.parse(path.read_text() if source is None else source)
    allowed = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and "CACHE" in t.id
                                             for t in n.targets):
            allowed.add(id(n.value))
        elif isinstance(n, ast.keyword) and n.arg == "maxsize":
            allowed.add(id(n.value))
    return [f"{path.name}:{n.lineno}: {n.value!r}" for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and id(n) not in allowed
            and ((type(n.value) is int and n.value == F.CHUNK_SIZE)
                 or (isinstance(n.value, str) and n.value in fmts))]


def test_layout_facts_spelled_only_in_format():
    """Issue 12 item 2 for the modules that came later (snapstore, compactor...): the chunk
    size and the on-disk struct formats come from cartridge.format, never as literals."""
    from pathlib import Path
    pkg = Path(F.__file__).parent
    bad = []
    for path in sorted(pkg.rglob("*.py")):
        # engram/layout.py is the Engram format's own layout (its frame size is its own fact)
        if path.name not in ("format.py", "layout.py") and "vendor" not in path.parts:
            bad += _layout_literals(path)
    assert not bad, bad
    probe = pkg / "compactor.py"
    assert _layout_literals(probe, "ln = min(size - i * 65536, 65536)\n")
    assert _layout_literals(probe, "import struct\nR = struct.Struct('<BBHIQqqQ')\n")
    assert not _layout_literals(probe, "FAST_CACHE_MAX = 65536\n")
