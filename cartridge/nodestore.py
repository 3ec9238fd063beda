"""The store the B+tree kernel runs on: node loading through the page cache, copy-on-write of
committed nodes onto fresh pages, and overflow pages for long keys."""
from __future__ import annotations

import os
from typing import Protocol

from ._core.btree import Node, NodeFormatError
from ._core.checksum import page_ok
from .errors import CorruptionError
from .format import META_PREFIX, OVERFLOW_DATA, PAGE_SIZE, TAG_OVERFLOW
from .pager import seal_meta


class NodeCache(Protocol):
    def get(self, pno: int) -> Node | None: ...


class NodeStore(Protocol):
    """What the B+tree kernel (cartridge._core.btree.BTree) needs of its store; every member is
    required. BTree binds `dirty`, `cache.get` and `load_missing` once, at construction, and
    looks a node up in that order; Node.decode and Node.read use only `read_overflow`."""

    dirty: dict[int, Node]          # this transaction's dirty nodes, by page
    cache: NodeCache                # committed nodes, by page

    def load_missing(self, pno: int) -> Node:
        """A committed node neither dirty nor cached: read, checked and cached."""

    def writable(self, node: Node) -> Node:
        """`node` if dirty in this transaction, else a dirty copy on a fresh page."""

    def new_node(self, leaf: bool, tree_id: int) -> Node:
        """An empty dirty node on a fresh page."""

    def free_node(self, node: Node) -> None:
        """`node` left the tree."""

    def write_overflow(self, rest: bytes) -> int:
        """The page now holding the tail of a long key."""

    def free_overflow(self, pno: int) -> None:
        """An overflow page no cell needs any more."""

    def read_overflow(self, pno: int, length: int) -> bytes:
        """The `length`-byte key tail on overflow page `pno`."""


class TreeStore:
    """The NodeStore of one tree (`tree_id`) of an archive handle; `dirty` is shared by all
    trees of a handle."""

    def __init__(self, pager, allocator, dirty: dict, tree_id: int):
        self.pager = pager
        self.allocator = allocator
        self.dirty = dirty
        self.tree_id = tree_id
        self.cache = pager.cache

    def load(self, pno: int) -> Node:
        node = self.dirty.get(pno)
        if node is not None:
            return node
        node = self.cache.get(pno)
        if node is not None:
            return node
        return self.load_missing(pno)

    def load_missing(self, pno: int) -> Node:
        """A committed node that is neither dirty nor cached (BTree has looked): read, checked
        and cached. Read straight into the node when the pager uses the real file layer."""
        pager = self.pager
        if pager.io is os and 0 < pno < pager.file_pages:
            pager.unstage_overlap(pno, 1)   # staged bytes of this page go to the file first
            try:
                node = Node.read(pager.fd, pno, self.tree_id, self)
            except NodeFormatError as e:        # cut short, checksum or structure
                raise CorruptionError(f"{pager.name}: {e}") from None
        else:
            page = pager.read_page(pno)
            if not page_ok(page):
                raise CorruptionError(f"{pager.name}: checksum mismatch in B-tree page {pno}")
            try:
                node = Node.decode(page, pno, self.tree_id, self)
            except NodeFormatError as e:
                raise CorruptionError(f"{pager.name}: {e}") from None
        self.cache.put(pno, node, PAGE_SIZE)
        return node

    def writable(self, node: Node) -> Node:
        pno = node.page_no
        dirty = self.dirty
        if pno in dirty:
            return node
        new = self.allocator.move_page(pno)
        self.cache.pop(new)
        copy = node.copy_to(new)
        dirty[new] = copy
        return copy

    def new_node(self, leaf: bool, tree_id: int) -> Node:
        pno = self.allocator.alloc_page()
        self.cache.pop(pno)
        node = Node.empty(pno, leaf, tree_id)
        self.dirty[pno] = node
        return node

    def free_node(self, node: Node) -> None:
        pno = node.page_no
        self.dirty.pop(pno, None)
        self.cache.pop(pno)
        self.allocator.free(pno, 1)

    def write_overflow(self, rest: bytes) -> int:
        """A page holding the tail of a long key; written at once (it never changes)."""
        pno = self.allocator.alloc_page()
        self.cache.pop(pno)
        page = bytearray(PAGE_SIZE)
        META_PREFIX.pack_into(page, 0, TAG_OVERFLOW, 0, len(rest), pno, 0)
        page[OVERFLOW_DATA:OVERFLOW_DATA + len(rest)] = rest
        self.pager.stage(pno, seal_meta(page))
        return pno

    def free_overflow(self, pno: int) -> None:
        self.allocator.free(pno, 1)

    def read_overflow(self, pno: int, length: int) -> bytes:
        data = self.pager.read_meta(pno, TAG_OVERFLOW)
        stored = META_PREFIX.unpack_from(data)[2]
        if stored != length or length > PAGE_SIZE - OVERFLOW_DATA:
            raise CorruptionError(f"{self.pager.name}: overflow page {pno} holds {stored} bytes, "
                                  f"the key needs {length}")
        return data[OVERFLOW_DATA:OVERFLOW_DATA + length]
