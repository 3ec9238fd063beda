"""Ed25519 checkpoints: sign, verify, and refuse a tampered one or the wrong key."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("cryptography", reason="checkpoints need the optional 'cryptography' package")
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cartridge.audit import checkpoint as C
from cartridge.errors import CorruptionError

AID = bytes(range(16))
ROOT = bytes(range(32))


def test_sign_verify_round_trip():
    k = Ed25519PrivateKey.generate()
    cp = C.sign(k, AID, 10, ROOT, 123)
    assert C.verify_checkpoint(cp, k.public_key())
    assert C.verify_checkpoint(cp, C.public_bytes(k))
    assert C.decode(cp.encode()) == cp
    assert C.Checkpoint.from_json(cp.to_json()) == cp
    other = Ed25519PrivateKey.generate()
    assert not C.verify_checkpoint(cp, other.public_key())
    for bad in (cp._replace(size=11), cp._replace(root=bytes(32)), cp._replace(time_us=124),
                cp._replace(archive_id=bytes(16)),
                cp._replace(signature=bytes([cp.signature[0] ^ 1]) + cp.signature[1:])):
        assert not C.verify_checkpoint(bad, k.public_key())
    assert not C.verify_checkpoint("nope", k.public_key())      # type: ignore[arg-type]
    assert not C.verify_checkpoint(cp, "nope")


def test_seed_accepted_and_bad_keys():
    seed = os.urandom(32)
    cp = C.sign(seed, AID, 1, ROOT, 0)
    assert C.verify_checkpoint(cp, Ed25519PrivateKey.from_private_bytes(seed).public_key())
    with pytest.raises(ValueError):
        C.sign(b"short", AID, 1, ROOT, 0)
    with pytest.raises(TypeError):
        C.sign(42, AID, 1, ROOT, 0)
    with pytest.raises(CorruptionError):
        C.decode(b"\x01" * 10)
    with pytest.raises(CorruptionError):
        C.decode(b"\x02" + cp.encode()[1:])


def test_key_files(tmp_path):
    k = Ed25519PrivateKey.generate()
    pem = tmp_path / "k.pem"
    pem.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    pub = tmp_path / "k.pub"
    pub.write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo))
    hexf = tmp_path / "k.hex"
    hexf.write_text(k.private_bytes_raw().hex() + "\n")
    assert C.public_bytes(C.load_key_file(str(pem))) == C.public_bytes(k)
    assert C.public_bytes(C.load_key_file(str(hexf))) == C.public_bytes(k)
    assert C.load_public_key_file(str(pub)) == C.public_bytes(k)
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello")
    with pytest.raises(ValueError):
        C.load_key_file(str(junk))
