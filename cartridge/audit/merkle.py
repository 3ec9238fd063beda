"""RFC 6962 Merkle tree hashes and proofs (SHA-256; leaves hashed with a 0x00 prefix, interior
nodes with 0x01), per RFC 6962 §2.1 / RFC 9162 §2.1.

The proof builders take a hash oracle `mth(lo, hi)` giving MTH of leaves [lo, hi): the in-memory
one here (`MemoryTree`) hashes leaves, the archive's log (cartridge.audit.store) answers from
stored interior hashes, so both build their proofs with the same code. The verifiers need no
archive at all.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Oracle = Callable[[int, int], bytes]


def hash_leaf(raw: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + bytes(raw)).digest()


def hash_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (already 0x00-hashed), bottom-up in O(n) hashes."""
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    level = list(hashes)
    while len(level) > 1:
        nxt = [hash_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])      # an odd node is carried up unchanged (RFC 6962 split)
        level = nxt
    return level[0]


def tree_hash(raw_records: Iterable[bytes]) -> bytes:
    """The Merkle tree head (MTH) of the records' canonical bytes, in order."""
    return root_of_hashes([hash_leaf(r) for r in raw_records])


# -- proof generation over an oracle -----------------------------------------------------------
def _check_sizes(index: int, size: int) -> None:
    for v, what in ((index, "index"), (size, "size")):
        if type(v) is not int:
            raise TypeError(f"{what} must be an int, not {type(v).__name__}")


def inclusion_path(index: int, size: int, mth: Oracle) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 6962 §2.1.1 (0 <= index < size)."""
    _check_sizes(index, size)
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    out: list[bytes] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = split(hi - lo)
        if m < k:
            out.append(mth(lo + k, hi))
            hi = lo + k
        else:
            out.append(mth(lo, lo + k))
            lo += k
            m -= k
    out.reverse()
    return out


def consistency_path(old: int, new: int, mth: Oracle) -> list[bytes]:
    """PROOF(old, D[0:new]) of RFC 6962 §2.1.2 (empty when old is 0 or equals new)."""
    _check_sizes(old, new)
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from size {old} to {new}")
    if old == 0 or old == new:
        return []
    out: list[bytes] = []
    lo, hi, m, whole = 0, new, old, True
    while m != hi - lo:
        k = split(hi - lo)
        if m <= k:
            out.append(mth(lo + k, hi))
            hi = lo + k
        else:
            out.append(mth(lo, lo + k))
            lo += k
            m -= k
            whole = False
    if not whole:
        out.append(mth(lo, hi))
    out.reverse()
    return out


class MemoryTree:
    """A Merkle tree over leaf hashes held in memory (tests, small logs, the reference)."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self.leaves: list[bytes] = list(leaf_hashes)

    def mth(self, lo: int, hi: int) -> bytes:
        return root_of_hashes(self.leaves[lo:hi])

    def root(self, size: int | None = None) -> bytes:
        return self.mth(0, len(self.leaves) if size is None else size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_path(index, len(self.leaves) if size is None else size, self.mth)

    def consistency_proof(self, old: int, new: int | None = None) -> list[bytes]:
        return consistency_path(old, len(self.leaves) if new is None else new, self.mth)


# -- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) --------------------------------------------
def _hashes(proof: object) -> list[bytes] | None:
    if isinstance(proof, (str, bytes, bytearray)):
        return None
    try:
        items = list(proof)          # type: ignore[call-overload]
    except TypeError:
        return None
    out = []
    for h in items:
        if not isinstance(h, (bytes, bytearray, memoryview)) or len(h) != HASH_SIZE:
            return None
        out.append(bytes(h))
    return out


def _is_hash(h: object) -> bool:
    return isinstance(h, (bytes, bytearray, memoryview)) and len(h) == HASH_SIZE


def _int(v: object) -> bool:
    return type(v) is int and v >= 0


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes],
                     root: bytes) -> bool:
    """Whether `proof` shows the leaf with hash `leaf_hash` at `index` in the tree of `size`
    leaves whose head is `root`. Any malformed argument is simply False."""
    path = _hashes(proof)
    if path is None or not (_is_hash(leaf_hash) and _is_hash(root) and _int(index) and _int(size)):
        return False
    if index >= size:
        return False
    fn, sn, r = index, size - 1, bytes(leaf_hash)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = hash_node(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == bytes(root)


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """Whether `proof` shows the tree of `old_size` leaves with head `old_root` to be a prefix
    of the tree of `new_size` leaves with head `new_root`."""
    path = _hashes(proof)
    if path is None or not (_is_hash(old_root) and _is_hash(new_root) and _int(old_size)
                            and _int(new_size)):
        return False
    if old_size > new_size:
        return False
    if old_size == new_size:
        return not path and bytes(old_root) == bytes(new_root)
    if old_size == 0:
        return not path
    if not path:
        return False
    if old_size & (old_size - 1) == 0:         # a power of two: the old root is a proof node
        path = [bytes(old_root)] + path
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = hash_node(c, fr)
            sr = hash_node(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = hash_node(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == bytes(old_root) and sr == bytes(new_root)
