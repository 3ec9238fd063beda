"""Signed tree heads ("checkpoints"): an Ed25519 signature over the log's size and Merkle root
(docs/FORMAT.md §13.8, docs/AUDIT.md).

Signing and checking need the `cryptography` package, imported only here and only when a
checkpoint is made or checked (`pip install cartridge[checkpoints]`): recording, proofs and
verify() need nothing beyond hashlib.
"""
from __future__ import annotations

import struct
from typing import Any, NamedTuple

from ..errors import CorruptionError

CHECKPOINT = struct.Struct("<B16sQ32sq32s64s")    # version, archive id, size, root, time, key, sig
CHECKPOINT_VERSION = 1
HEADER_LINE = b"cartridge audit checkpoint v1\n"


class Checkpoint(NamedTuple):
    """A signed tree head: `size` records with Merkle head `root`, signed at `time` (Unix
    seconds) by the Ed25519 key `public_key` (32 raw bytes) for the archive `archive_id`."""
    size: int
    root: bytes
    time_us: int
    archive_id: bytes
    public_key: bytes
    signature: bytes

    @property
    def time(self) -> float:
        return self.time_us / 1e6

    @property
    def message(self) -> bytes:
        return signed_message(self.archive_id, self.size, self.root, self.time_us)

    def encode(self) -> bytes:
        return CHECKPOINT.pack(CHECKPOINT_VERSION, self.archive_id, self.size, self.root,
                               self.time_us, self.public_key, self.signature)

    def to_json(self) -> dict:
        return {"size": self.size, "root": self.root.hex(), "time": self.time,
                "time_us": self.time_us, "archive_id": self.archive_id.hex(),
                "public_key": self.public_key.hex(), "signature": self.signature.hex()}

    @classmethod
    def from_json(cls, d: dict) -> Checkpoint:
        try:
            cp = cls(int(d["size"]), bytes.fromhex(d["root"]), int(d["time_us"]),
                     bytes.fromhex(d["archive_id"]), bytes.fromhex(d["public_key"]),
                     bytes.fromhex(d["signature"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a checkpoint: {e}") from None
        if (len(cp.root), len(cp.archive_id), len(cp.public_key), len(cp.signature)) != (32, 16, 32, 64):
            raise ValueError("not a checkpoint: a field has the wrong length")
        return cp


def signed_message(archive_id: bytes, size: int, root: bytes, time_us: int) -> bytes:
    """The exact bytes an Ed25519 checkpoint signature covers (FORMAT §13.8)."""
    return (HEADER_LINE + b"archive " + archive_id.hex().encode() + b"\nsize " + str(size).encode()
            + b"\nroot " + root.hex().encode() + b"\ntime " + str(time_us).encode() + b"\n")


def decode(data: bytes) -> Checkpoint:
    if len(data) != CHECKPOINT.size:
        raise CorruptionError(f"audit checkpoint of {len(data)} bytes (expected {CHECKPOINT.size})")
    version, aid, size, root, t, key, sig = CHECKPOINT.unpack(data)
    if version != CHECKPOINT_VERSION or size >= 1 << 63:
        raise CorruptionError("audit checkpoint has an unknown version or impossible size")
    return Checkpoint(size, root, t, aid, key, sig)


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:  # pragma: no cover - depends on the install
        raise ImportError("audit checkpoints need the 'cryptography' package: "
                          "pip install 'cartridge[checkpoints]'") from None
    return ed25519


def private_key(key: object) -> Any:
    """An Ed25519PrivateKey from one, or from its raw 32-byte seed."""
    ed = _crypto()
    if isinstance(key, ed.Ed25519PrivateKey):
        return key
    if isinstance(key, (bytes, bytearray, memoryview)):
        if len(key) != 32:
            raise ValueError(f"an Ed25519 seed is 32 bytes, not {len(key)}")
        return ed.Ed25519PrivateKey.from_private_bytes(bytes(key))
    raise TypeError(f"key must be an Ed25519PrivateKey or a 32-byte seed, not {type(key).__name__}")


def public_bytes(key: object) -> bytes:
    """32 raw bytes of an Ed25519 public key given as a key object or raw bytes."""
    ed = _crypto()
    from cryptography.hazmat.primitives import serialization
    if isinstance(key, ed.Ed25519PrivateKey):
        key = key.public_key()
    if isinstance(key, ed.Ed25519PublicKey):
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if isinstance(key, (bytes, bytearray, memoryview)) and len(key) == 32:
        return bytes(key)
    raise TypeError("public key must be an Ed25519PublicKey or 32 raw bytes")


def sign(key: object, archive_id: bytes, size: int, root: bytes, time_us: int) -> Checkpoint:
    k = private_key(key)
    sig = k.sign(signed_message(archive_id, size, root, time_us))
    return Checkpoint(size, root, time_us, archive_id, public_bytes(k), sig)


def verify_checkpoint(checkpoint: Checkpoint, public_key: object) -> bool:
    """Whether `checkpoint` carries a valid Ed25519 signature by `public_key` (an
    Ed25519PublicKey or its 32 raw bytes) over its own size, root, time and archive id."""
    if not isinstance(checkpoint, Checkpoint):
        return False
    try:
        pub = public_bytes(public_key)
    except TypeError:
        return False
    if pub != checkpoint.public_key or len(checkpoint.signature) != 64 or len(checkpoint.root) != 32:
        return False
    ed = _crypto()
    from cryptography.exceptions import InvalidSignature
    try:
        ed.Ed25519PublicKey.from_public_bytes(pub).verify(checkpoint.signature, checkpoint.message)
    except (InvalidSignature, ValueError):
        return False
    return True


def load_key_file(path: str) -> Any:
    """A private key from a file: PEM (PKCS#8), 32 raw bytes, or 64 hex digits."""
    with open(path, "rb") as f:
        data = f.read(1 << 16)
    return _key_from_bytes(data, private=True)


def load_public_key_file(path: str) -> bytes:
    """A public key from a file: PEM (SubjectPublicKeyInfo), 32 raw bytes or 64 hex digits."""
    with open(path, "rb") as f:
        data = f.read(1 << 16)
    return public_bytes(_key_from_bytes(data, private=False))


def _key_from_bytes(data: bytes, private: bool) -> Any:
    ed = _crypto()
    from cryptography.hazmat.primitives import serialization
    s = data.strip()
    if s.startswith(b"-----BEGIN"):
        try:
            k = (serialization.load_pem_private_key(s, None) if private
                 else serialization.load_pem_public_key(s))
        except (ValueError, TypeError) as e:
            raise ValueError(f"not an Ed25519 key: {e}") from None
        if not isinstance(k, ed.Ed25519PrivateKey if private else ed.Ed25519PublicKey):
            raise ValueError("the key is not an Ed25519 key")
        return k
    if len(s) == 64:
        try:
            raw = bytes.fromhex(s.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raw = b""
        if len(raw) == 32:
            return private_key(raw) if private else raw
    if len(data) == 32:
        return private_key(data) if private else data
    raise ValueError("not an Ed25519 key: expected PEM, 32 raw bytes or 64 hex digits")
