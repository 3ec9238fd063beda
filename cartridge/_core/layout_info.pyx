# cython: language_level=3
"""The kernels' layout (layout.pxd) published to Python: the constants as ints and bytes, and
each packed struct's size and fields (name, offset, size, struct code), measured by the C
compiler, so that cartridge.format derives its struct.Struct formats from what the C code
reads (as scikit-learn's tree derives NODE_DTYPE from its C struct)."""
cimport cartridge._core.layout as L

PAGE_SIZE = L.PAGE_SIZE
CHUNK_SIZE = L.CHUNK_SIZE
CHUNK_PAGES = L.CHUNK_PAGES
META_CHECKSUM_OFFSET = L.META_CHECKSUM_OFFSET
TAG_LEAF = <bytes>L.TAG_LEAF[:L.TAG_SIZE]
TAG_INTERNAL = <bytes>L.TAG_INTERNAL[:L.TAG_SIZE]
TREE_CATALOG = L.TREE_CATALOG
TREE_ALLOCMAP = L.TREE_ALLOCMAP
KEY_INLINE = L.KEY_INLINE
MAX_KEY = L.MAX_KEY
MAX_CELL = L.MAX_CELL
KIND_FILE = L.KIND_FILE
KIND_DIR = L.KIND_DIR
STORE_EMPTY = L.STORE_EMPTY
STORE_INLINE = L.STORE_INLINE
STORE_CHUNKS = L.STORE_CHUNKS
STORE_XMAP = L.STORE_XMAP
STORE_PACKED = L.STORE_PACKED
PACK_MAX_PAGES = L.PACK_MAX_PAGES
ALLOC_CHUNK_BITS = L.ALLOC_CHUNK_BITS
ALLOC_CHUNK_BYTES = L.ALLOC_CHUNK_BYTES
MAX_PATH_BYTES = L.MAX_PATH_BYTES
MAX_NAME_BYTES = L.MAX_NAME_BYTES


cdef tuple _field(str name, const void* at, const void* base, size_t size, str code):
    return (name, <const char*>at - <const char*>base, size, code)


cdef L.NodeHeader _n
cdef L.RecordHeader _r
cdef L.ChunkEntry _c
cdef L.XmapRef _x
cdef L.PackRef _pk

# struct name -> (sizeof, fields in order); codes are the struct-module letters of each field
STRUCTS = {
    "NodeHeader": (sizeof(L.NodeHeader), (
        _field("tag", &_n.tag, &_n, sizeof(_n.tag), "4s"),
        _field("tree_id", &_n.tree_id, &_n, sizeof(_n.tree_id), "H"),
        _field("nkeys", &_n.nkeys, &_n, sizeof(_n.nkeys), "H"),
        _field("page_no", &_n.page_no, &_n, sizeof(_n.page_no), "Q"),
        _field("checksum", &_n.checksum, &_n, sizeof(_n.checksum), "Q"),
        _field("cell_start", &_n.cell_start, &_n, sizeof(_n.cell_start), "H"),
        _field("frag", &_n.frag, &_n, sizeof(_n.frag), "H"),
        _field("reserved", &_n.reserved, &_n, sizeof(_n.reserved), "I"),
        _field("right_child", &_n.right_child, &_n, sizeof(_n.right_child), "Q"),
    )),
    "RecordHeader": (sizeof(L.RecordHeader), (
        _field("kind", &_r.kind, &_r, sizeof(_r.kind), "B"),
        _field("storage", &_r.storage, &_r, sizeof(_r.storage), "B"),
        _field("reserved", &_r.reserved, &_r, sizeof(_r.reserved), "H"),
        _field("mode", &_r.mode, &_r, sizeof(_r.mode), "I"),
        _field("size", &_r.size, &_r, sizeof(_r.size), "Q"),
        _field("ctime_ns", &_r.ctime_ns, &_r, sizeof(_r.ctime_ns), "q"),
        _field("mtime_ns", &_r.mtime_ns, &_r, sizeof(_r.mtime_ns), "q"),
        _field("checksum", &_r.checksum, &_r, sizeof(_r.checksum), "Q"),
    )),
    "ChunkEntry": (sizeof(L.ChunkEntry), (
        _field("start", &_c.start, &_c, sizeof(_c.start), "Q"),
        _field("checksum", &_c.checksum, &_c, sizeof(_c.checksum), "Q"),
    )),
    "XmapRef": (sizeof(L.XmapRef), (
        _field("first_page", &_x.first_page, &_x, sizeof(_x.first_page), "Q"),
        _field("page_count", &_x.page_count, &_x, sizeof(_x.page_count), "I"),
        _field("reserved", &_x.reserved, &_x, sizeof(_x.reserved), "I"),
    )),
    "PackRef": (sizeof(L.PackRef), (
        _field("pack_page", &_pk.pack_page, &_pk, sizeof(_pk.pack_page), "Q"),
        _field("offset", &_pk.offset, &_pk, sizeof(_pk.offset), "I"),
        _field("reserved", &_pk.reserved, &_pk, sizeof(_pk.reserved), "I"),
    )),
}

SIZES = {"NodeHeader": L.NODE_HEADER_SIZE, "RecordHeader": L.RECORD_SIZE,
         "ChunkEntry": L.CHUNK_ENTRY_SIZE, "XmapRef": L.XMAP_REF_SIZE,
         "PackRef": L.PACK_REF_SIZE}
for _name, _size in SIZES.items():
    if STRUCTS[_name][0] != _size:      # the kernels use the enum sizes and the structs alike
        raise ImportError(f"layout: sizeof({_name}) is {STRUCTS[_name][0]}, not {_size}")
NODE_HEADER_SIZE = L.NODE_HEADER_SIZE
RECORD_SIZE = L.RECORD_SIZE


def struct_format(str name) -> str:
    """The little-endian struct-module format of packed struct `name`, its fields checked to
    be contiguous and of the size their code says (so the format reads what the C code does)."""
    import struct
    size, fields = STRUCTS[name]
    end = 0
    for fname, off, fsize, code in fields:
        if off != end or struct.calcsize("<" + code) != fsize:
            raise ImportError(f"layout: {name}.{fname} at {off} ({fsize} bytes) does not match {code!r}")
        end = off + fsize
    if end != size:
        raise ImportError(f"layout: {name} is {size} bytes, its fields {end}")
    return "<" + "".join(code for _, _, _, code in fields)
