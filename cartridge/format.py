"""On-disk constants and struct layouts behind docs/FORMAT.md, for the Python layers.

What the kernels read too (page and chunk sizes, node and cell limits, record kinds and storage
codes, the record, chunk-entry and XMAP-reference structs) is defined once, in
cartridge/_core/layout.pxd, and taken from there through the layout-only extension
`layout_info`: the struct formats below are derived from the C structs, field by field.
"""
from __future__ import annotations

import struct

from ._core import layout_info as _L

PAGE_SIZE = _L.PAGE_SIZE                   # 4096

# -- page 0: file header (written once) and two root slots (alternately rewritten) ------------
MAGIC = b"CART\x00\x01\x00\x00"
VERSION_MAJOR = 1
# 1.1 added sealed root slots (§2.3). SNAPSHOTS_MINOR: snapshots, held pages and the
# allocation-map feature flags (§12). VERSION_MINOR_AUDIT: the audit log (system entries, §13).
# VERSION_MINOR_PACKS: packs, small files sharing pages (storage PACKED, the pack table, §14).
SNAPSHOTS_MINOR = 2
VERSION_MINOR_AUDIT = 3
VERSION_MINOR_PACKS = 4
VERSION_MINOR = VERSION_MINOR_PACKS  # 1.0 to 1.3 files stay readable and writable
# magic, major, minor, page size, archive id, created ns, flags, reserved, checksum
FILE_HEADER = struct.Struct("<8sHHI16sqI12sQ")
FILE_HEADER_CSUM_SPAN = FILE_HEADER.size - 8          # checksum covers bytes [0, 56)
assert FILE_HEADER.size == 64

SLOT_OFFSETS = (1024, 2048)
SLOT_MAGIC = b"CARTROOT"
# magic, generation, page_count, catalog root/count/height, allocmap height/root/count,
# file count, dir count, total bytes, commit time ns, pending pages, reserved, checksum
ROOT_SLOT = struct.Struct("<8sQQQQIIQQQQQqQ144sQ")
ROOT_SLOT_CSUM_SPAN = ROOT_SLOT.size - 8
assert ROOT_SLOT.size == 256
# A sealed slot (one-sync commit, docs/FORMAT.md §2.3) has its own magic, so that a 1.0 reader,
# which would trust the root without checking the seal, sees an invalid slot instead. Its
# reserved bytes hold the seal: extent count, reserved, xxh3 of the extents' pages, then up to
# SEAL_MAX_EXTENTS extents, each a u64: start page in bits 0-47, page count in bits 48-63.
SLOT_MAGIC_SEALED = b"CARTSEAL"
SEAL_HEAD = struct.Struct("<IIQ")
SEAL_EXTENT = struct.Struct("<Q")
SEAL_START_BITS = 48
SEAL_MAX_EXTENTS = 16
SEAL_MAX_PAGES = 256                     # a sealed commit writes at most 1 MiB
MAX_TREE_HEIGHT = 32                     # a root (or snapshot) naming a taller tree is corrupt
assert SEAL_HEAD.size + SEAL_MAX_EXTENTS * SEAL_EXTENT.size == 144

# -- metadata pages: all share the 24-byte prefix tag, u16, u16, page_no, checksum ----------
META_PREFIX = struct.Struct("<4sHHQQ")
assert META_PREFIX.size == 24 and struct.calcsize("<4sHHQ") == _L.META_CHECKSUM_OFFSET
TAG_OVERFLOW = b"OVFL"
TAG_XMAP = b"XMAP"
TREE_CATALOG = _L.TREE_CATALOG             # 1
TREE_ALLOCMAP = _L.TREE_ALLOCMAP           # 2
KEY_INLINE = _L.KEY_INLINE                 # 512
MAX_CELL = _L.MAX_CELL                     # 1012

# Overflow page: prefix (tag, 0, length u16, page_no, checksum), 16 reserved bytes, key tail
OVERFLOW_DATA = 40
# Chunk-map page: prefix (tag, 0, count u16, page_no, checksum), next page u64, first chunk u64
XMAP_HEADER = struct.Struct("<4sHHQQQQ")
assert XMAP_HEADER.size == 40

# -- catalog records ----------------------------------------------------------------------
# kind, storage, reserved, mode, size, ctime ns, mtime ns, checksum: "<BBHIQqqQ", 40 bytes
RECORD = struct.Struct(_L.struct_format("RecordHeader"))
KIND_FILE = _L.KIND_FILE
KIND_DIR = _L.KIND_DIR
STORE_EMPTY = _L.STORE_EMPTY      # 0: no content (empty file or directory)
STORE_INLINE = _L.STORE_INLINE    # 1: content bytes follow the record inside the catalog cell
STORE_CHUNKS = _L.STORE_CHUNKS    # 2: chunk map (CHUNK_ENTRY per chunk) follows the record
STORE_XMAP = _L.STORE_XMAP        # 3: XMAP_REF (first chunk-map page, page count, 0) follows
XMAP_REF = struct.Struct(_L.struct_format("XmapRef"))          # "<QII"
STORE_PACKED = _L.STORE_PACKED    # 4: PACK_REF (pack page, byte offset, 0) follows (§14, 1.4)
PACK_REF = struct.Struct(_L.struct_format("PackRef"))          # "<QII"
PACK_MAX_PAGES = _L.PACK_MAX_PAGES          # 16: a pack is a run of 1..16 pages
# pack-table entry content (§14.2): pages, live files, live bytes, dead bytes
PACK_ENTRY = struct.Struct("<IIQQ")
CHUNK_SIZE = _L.CHUNK_SIZE                  # 65536: content is checksummed per 64 KiB chunk
CHUNK_PAGES = _L.CHUNK_PAGES                # 16
CHUNK_ENTRY = struct.Struct(_L.struct_format("ChunkEntry"))    # "<QQ": start page, checksum
XMAP_ENTRIES = (PAGE_SIZE - XMAP_HEADER.size) // CHUNK_ENTRY.size   # 253

# -- paths -------------------------------------------------------------------------------
MAX_NAME_BYTES = _L.MAX_NAME_BYTES          # 255: one path segment, UTF-8
MAX_PATH_BYTES = _L.MAX_PATH_BYTES          # 4096: a whole normalized path, UTF-8

# -- allocation map ------------------------------------------------------------------------
ALLOC_CHUNK_BITS = _L.ALLOC_CHUNK_BITS      # 2048 pages per allocation-map entry
ALLOC_CHUNK_BYTES = _L.ALLOC_CHUNK_BYTES    # 256 bytes of "used" bits, then 256 of "pending"
ALLOC_KEY = struct.Struct(">Q")             # big-endian so byte order equals numeric order
# Entry 0 may carry 8 more bytes: u64 feature flags a writer must understand (FORMAT §12.4).
# A 1.1 writer takes the longer entry for damage and refuses to open the archive for writing.
ALLOC_FEATURES = struct.Struct("<Q")
FEATURE_SNAPSHOTS = 1                       # held pages (used 0, pending 1) and snapshots exist
FEATURE_PACKS = 2                           # packed records and a pack table exist (§14)
KNOWN_FEATURES = FEATURE_SNAPSHOTS | FEATURE_PACKS

# -- locks (OFD byte-range locks far beyond any real file offset) ---------------------------
WRITER_LOCK_OFFSET = 1 << 62
READER_PIN_BASE = (1 << 62) + 4096         # a reader pinning generation g locks byte BASE + g

# catalog keys of internal state (FORMAT §5.5): 0x00 sorts before '/', so no path can reach them
SYSTEM_PREFIX = b"\x00"
POLICY_PREFIX = b"\x00policy/"
SNAPSHOT_PREFIX = b"\x00snapshot/"          # FORMAT §12: one record per snapshot
FROZEN_KEY = b"\x00frozen"                  # FORMAT §12.6: the archive is permanently read-only
AUDIT_PREFIX = b"\x00audit/"           # the audit log (FORMAT §13); not policy state
PACK_PREFIX = b"\x00pack/"                 # FORMAT §14: the pack table; not policy state

DEFAULT_MODE_FILE = 0o100644
DEFAULT_MODE_DIR = 0o040755
