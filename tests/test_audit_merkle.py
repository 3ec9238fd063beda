"""RFC 6962 Merkle tree: the Certificate Transparency test vectors (the 8-leaf tree of
transparency-dev/merkle and certificate-transparency-go), corrupted proofs, and properties
against a naive recursive reference written straight from the RFC's definitions."""
from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cartridge.audit import merkle
from cartridge.audit.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    consistency_path,
    inclusion_path,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex
LEAVES = [h(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                         "606162636465666768696a6b6c6d6e6f")]
ROOTS = [EMPTY_ROOT] + [h(x) for x in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")]
# (leaf index 0-based, size, proof)
INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (0, 1, []),
]
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
SOME = h("abacaba000000000000000000000000000000000000000000060061e00123456")


def test_roots():
    for n in range(9):
        assert tree_hash(LEAVES[:n]) == ROOTS[n]


@pytest.mark.parametrize("index,size,proof", INCLUSION)
def test_inclusion_vectors(index, size, proof):
    proof = [h(p) for p in proof]
    t = MemoryTree(merkle.hash_leaf(x) for x in LEAVES[:size])
    assert t.inclusion_proof(index) == proof
    leaf = merkle.hash_leaf(LEAVES[index])
    assert verify_inclusion(leaf, index, size, proof, ROOTS[size])
    bad = [(index + 1, size, leaf, proof, ROOTS[size]), (index ^ 2, size, leaf, proof, ROOTS[size]),
           (index, size * 2, leaf, proof, ROOTS[size]), (index, size // 2, leaf, proof, ROOTS[size]),
           (index, size, merkle.hash_leaf(b"WrongLeaf"), proof, ROOTS[size]),
           (index, size, leaf, proof, EMPTY_ROOT), (index, size, leaf, proof, SOME),
           (index, size, leaf, proof + [ROOTS[size]], ROOTS[size]),
           (index, size, leaf, [ROOTS[size]] + proof, ROOTS[size]),
           (index, size, leaf, proof + [b""], ROOTS[size])]
    if index:
        bad.append((index - 1, size, leaf, proof, ROOTS[size]))
    for i in range(len(proof)):
        p = list(proof)
        p[i] = bytes([p[i][0] ^ 8]) + p[i][1:]
        bad.append((index, size, leaf, p, ROOTS[size]))
    if proof:
        bad.append((index, size, leaf, proof[:-1], ROOTS[size]))
    if len(proof) > 1:
        bad.append((index, size, leaf, [proof[0], SOME] + proof[1:], ROOTS[size]))
    for i, s, lf, p, r in bad:
        assert not verify_inclusion(lf, i, s, p, r), (i, s)


@pytest.mark.parametrize("old,new,proof", CONSISTENCY)
def test_consistency_vectors(old, new, proof):
    proof = [h(p) for p in proof]
    t = MemoryTree(merkle.hash_leaf(x) for x in LEAVES[:new])
    assert t.consistency_proof(old) == proof
    r1, r2 = ROOTS[old], ROOTS[new]
    assert verify_consistency(old, new, r1, r2, proof)
    if not proof:
        return
    bad = [(old - 1, new, r1, r2, proof), (old + 1, new, r1, r2, proof),
           (old ^ 2, new, r1, r2, proof), (old, new * 2, r1, r2, proof),
           (old, new // 2, r1, r2, proof), (old, new, SOME, r2, proof), (old, new, r1, SOME, proof),
           (old, new, r2, r1, proof), (old, new, r1, r2, []), (old, new, r1, r2, proof + [r1]),
           (old, new, r1, r2, proof + [r2]), (old, new, r1, r2, [r1] + proof),
           (old, new, r1, r2, [r2] + proof), (old, new, r1, r2, [proof[0]] + proof),
           (old, new, r1, r2, proof[:-1])]
    for i in range(len(proof)):
        p = list(proof)
        p[i] = bytes([p[i][0] ^ 16]) + p[i][1:]
        bad.append((old, new, r1, r2, p))
    for o, n, a, b, p in bad:
        assert not verify_consistency(o, n, a, b, p), (o, n)


def test_consistency_edge_cases():
    r1, r2 = hashlib.sha256(b"1").digest(), hashlib.sha256(b"2").digest()
    assert verify_consistency(0, 0, r1, r1, [])
    assert verify_consistency(0, 1, r1, r2, [])
    assert verify_consistency(1, 1, r2, r2, [])
    assert not verify_consistency(0, 0, r1, r2, [])
    assert not verify_consistency(1, 1, r1, r2, [])
    assert not verify_consistency(1, 0, r1, r2, [])
    assert not verify_consistency(2, 1, r1, r2, [])
    assert not verify_consistency(1, 2, r1, r2, [])
    assert not verify_consistency(0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])
    assert not verify_consistency(1, 1, r1, r1, [EMPTY_ROOT])


def test_inclusion_edge_cases_and_bad_types():
    leaf = merkle.hash_leaf(b"data")
    assert verify_inclusion(leaf, 0, 1, [], leaf)
    for i, s in ((0, 0), (1, 0), (2, 1), (1, 1)):
        assert not verify_inclusion(leaf, i, s, [], leaf)
    for args in ((b"", 0, 1, [], leaf), (leaf, 0, 1, [], b""), (leaf, -1, 1, [], leaf),
                 (leaf, 0, 1, "abc", leaf), (leaf, 0, 1, None, leaf), (leaf, 0.0, 1, [], leaf),
                 ("x" * 32, 0, 1, [], leaf), (leaf, 0, 2, [b"x" * 31], leaf)):
        assert verify_inclusion(*args) is False
    assert verify_consistency(1, 2, leaf, leaf, None) is False
    with pytest.raises(ValueError):
        inclusion_path(3, 3, MemoryTree().mth)
    with pytest.raises(ValueError):
        consistency_path(4, 3, MemoryTree().mth)
    with pytest.raises(TypeError):
        inclusion_path("0", 3, MemoryTree().mth)


# -- a naive reference: the RFC's recursive definitions, word for word --------------------------
def ref_mth(d):
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1
    while k * 2 < len(d):
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m, d):
    if len(d) <= 1:
        return []
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_subproof(m, d, b):
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m <= k:
        return ref_subproof(m, d[:k], b) + [ref_mth(d[k:])]
    return ref_subproof(m - k, d[k:], False) + [ref_mth(d[:k])]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=8), min_size=1, max_size=70), st.data())
def test_against_reference(data, draw):
    n = len(data)
    t = MemoryTree(merkle.hash_leaf(x) for x in data)
    assert tree_hash(data) == ref_mth(data) == t.root()
    m = draw.draw(st.integers(0, n - 1))
    assert t.inclusion_proof(m) == ref_path(m, data)
    assert verify_inclusion(merkle.hash_leaf(data[m]), m, n, ref_path(m, data), ref_mth(data))
    old = draw.draw(st.integers(1, n))
    proof = ref_subproof(old, data, True) if old < n else []
    assert t.consistency_proof(old) == proof
    assert verify_consistency(old, n, ref_mth(data[:old]), ref_mth(data), proof)
    if old < n:
        other = data[:old - 1] + [data[old - 1] + b"!"] + data[old:]
        assert not verify_consistency(old, n, ref_mth(other[:old]), ref_mth(data), proof)
