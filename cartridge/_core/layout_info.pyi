"""Types of layout_info.pyx: the C layout's constants and packed struct descriptions."""
PAGE_SIZE: int
CHUNK_SIZE: int
CHUNK_PAGES: int
META_CHECKSUM_OFFSET: int
TAG_LEAF: bytes
TAG_INTERNAL: bytes
TREE_CATALOG: int
TREE_ALLOCMAP: int
KEY_INLINE: int
MAX_KEY: int
MAX_CELL: int
KIND_FILE: int
KIND_DIR: int
STORE_EMPTY: int
STORE_INLINE: int
STORE_CHUNKS: int
STORE_XMAP: int
STORE_PACKED: int
PACK_MAX_PAGES: int
ALLOC_CHUNK_BITS: int
ALLOC_CHUNK_BYTES: int
MAX_PATH_BYTES: int
MAX_NAME_BYTES: int
NODE_HEADER_SIZE: int
RECORD_SIZE: int
# name -> (size, ((field name, offset, size, struct code), ...))
STRUCTS: dict[str, tuple[int, tuple[tuple[str, int, int, str], ...]]]
SIZES: dict[str, int]

def struct_format(name: str) -> str: ...
