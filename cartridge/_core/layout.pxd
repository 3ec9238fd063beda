# cython: language_level=3
"""The on-disk layout of docs/FORMAT.md as C declarations, defined once: every kernel cimports
its structs, sizes, codes and limits from here, and cartridge.format publishes them to Python
through cartridge._core.layout_info. All integers are little-endian (the kernels refuse a
big-endian host)."""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from *:
    """
    #define CART_TAG_LEAF "BTLF"
    #define CART_TAG_INTERNAL "BTIN"
    """
    const char* TAG_LEAF "CART_TAG_LEAF"            # node tags (FORMAT §4.1), 4 bytes each
    const char* TAG_INTERNAL "CART_TAG_INTERNAL"

cdef enum:
    # pages and content chunks (FORMAT §1, §5.2)
    PAGE_SIZE = 4096
    CHUNK_SHIFT = 16
    CHUNK_SIZE = 1 << CHUNK_SHIFT          # content is checksummed per 64 KiB chunk
    CHUNK_MASK = CHUNK_SIZE - 1
    CHUNK_PAGES = CHUNK_SIZE // PAGE_SIZE  # 16
    META_CHECKSUM_OFFSET = 16              # metadata pages: u64 checksum at bytes 16..23 (§1)
    TAG_SIZE = 4

    # B+tree nodes and cells (FORMAT §4)
    TREE_CATALOG = 1
    TREE_ALLOCMAP = 2
    KEY_INLINE = 512                       # key bytes kept in the cell; the rest on an overflow page
    MAX_KEY = 4096
    MAX_CELL = 1012                        # (4096 - 40) / 4 - 2: at least four cells fit in any node
    UNDERFLOW = 1014                       # a non-root node with fewer cell bytes tries to merge

    # catalog records (FORMAT §5.1)
    KIND_FILE = 1
    KIND_DIR = 2
    STORE_EMPTY = 0                        # no content (empty file or directory)
    STORE_INLINE = 1                       # content bytes follow the record
    STORE_CHUNKS = 2                       # chunk map entries follow the record
    STORE_XMAP = 3                         # an XmapRef follows the record
    STORE_PACKED = 4                       # a PackRef follows the record (FORMAT §14, 1.4)
    PACK_MAX_PAGES = 16                    # a pack is a run of 1..16 pages (64 KiB)

    # allocation map (FORMAT §6)
    ALLOC_CHUNK_BITS = 2048                # pages per allocation-map entry
    ALLOC_CHUNK_WORDS = ALLOC_CHUNK_BITS // 64
    ALLOC_CHUNK_BYTES = ALLOC_CHUNK_BITS // 8

    # paths (FORMAT §Paths)
    MAX_PATH_BYTES = 4096
    MAX_NAME_BYTES = 255


ctypedef packed struct NodeHeader:         # FORMAT §4.1: 40 bytes, then u16 slots[nkeys]
    char tag[4]                            # TAG_LEAF or TAG_INTERNAL
    uint16_t tree_id                       # TREE_CATALOG or TREE_ALLOCMAP
    uint16_t nkeys
    uint64_t page_no                       # the page's own number: catches misdirected writes
    uint64_t checksum                      # xxh3-64 of the page with this field zeroed
    uint16_t cell_start                    # lowest byte used by cells; cells fill [cell_start, 4096)
    uint16_t frag                          # dead bytes inside the cell area
    uint32_t reserved
    uint64_t right_child                   # internal nodes: child for keys >= the last separator

ctypedef packed struct RecordHeader:       # FORMAT §5.1: 40 bytes, then the payload
    uint8_t kind                           # KIND_*
    uint8_t storage                        # STORE_*
    uint16_t reserved
    uint32_t mode
    uint64_t size
    int64_t ctime_ns
    int64_t mtime_ns
    uint64_t checksum

ctypedef packed struct ChunkEntry:         # FORMAT §5.2: one chunk of content
    uint64_t start                         # first page
    uint64_t checksum                      # xxh3-64 of the chunk's bytes

ctypedef packed struct XmapRef:            # FORMAT §5.1, storage XMAP: where the chunk map lives
    uint64_t first_page
    uint32_t page_count
    uint32_t reserved

ctypedef packed struct PackRef:            # FORMAT §14, storage PACKED: where a packed file lives
    uint64_t pack_page                     # first page of the pack
    uint32_t offset                        # byte offset of the file inside the pack
    uint32_t reserved

cdef enum:                                 # the sizes FORMAT.md gives (layout_info checks sizeof)
    NODE_HEADER_SIZE = 40
    NODE_USABLE = PAGE_SIZE - NODE_HEADER_SIZE   # 4056 bytes for slots and cells
    RECORD_SIZE = 40
    CHUNK_ENTRY_SIZE = 16
    XMAP_REF_SIZE = 16
    PACK_REF_SIZE = 16
