"""Engram cryptography over the `cryptography` package: AES-256-GCM with a caller's raw 32-byte
key (12-byte random nonce, 16-byte tag, no AAD: engram-rs has no KDF and stores no salt) and
Ed25519 keys (raw 32-byte seeds, lowercase hex on disk and in manifests)."""
from __future__ import annotations

import binascii
import os
import secrets
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import DecryptionError
from .layout import KEY_SIZE, NONCE_SIZE, TAG_SIZE

__all__ = ["InvalidSignature", "load_private_key", "load_public_key", "new_private_key"]

KEY_FILE_MAX = 64 << 10


# -- AES-256-GCM -------------------------------------------------------------------------------
def check_key(key: Any) -> bytes:
    """A 32-byte AES-256 key as bytes (TypeError / ValueError otherwise)."""
    try:
        raw = bytes(memoryview(key))
    except TypeError:
        raise TypeError(f"an encryption key must be 32 bytes, not {type(key).__name__}") from None
    if len(raw) != KEY_SIZE:
        raise ValueError(f"an encryption key must be exactly {KEY_SIZE} bytes, not {len(raw)}")
    return raw


def encrypt(key: bytes, data) -> bytes:
    """nonce || ciphertext || tag of one message."""
    nonce = secrets.token_bytes(NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, bytes(data), None)


def decrypt(key: bytes, blob, where: str) -> bytes:
    if len(blob) < NONCE_SIZE + TAG_SIZE:
        raise DecryptionError(f"{where}: encrypted payload is shorter than nonce and tag")
    blob = memoryview(blob)
    try:
        return AESGCM(key).decrypt(bytes(blob[:NONCE_SIZE]), bytes(blob[NONCE_SIZE:]), None)
    except InvalidTag:
        raise DecryptionError(f"{where}: decryption failed (wrong key, or the data was "
                              "altered)") from None


class StreamEncryptor:
    """AES-GCM of one message given in pieces: the same bytes as AESGCM.encrypt in one call
    (GCM with a 96-bit nonce and no AAD), so memory stays bounded."""

    def __init__(self, key: bytes):
        self.nonce = secrets.token_bytes(NONCE_SIZE)
        self._enc = Cipher(algorithms.AES(key), modes.GCM(self.nonce)).encryptor()

    def update(self, data) -> bytes:
        return self._enc.update(data)

    def finalize(self) -> bytes:
        """The last ciphertext bytes (none for GCM) followed by the 16-byte tag."""
        return self._enc.finalize() + self._enc.tag


class StreamDecryptor:
    """The reverse: update() gives plaintext that is NOT yet authenticated; finalize(tag)
    raises DecryptionError unless the whole message was authentic."""

    def __init__(self, key: bytes, nonce: bytes, where: str):
        self._dec = Cipher(algorithms.AES(key), modes.GCM(nonce)).decryptor()
        self._where = where

    def update(self, data) -> bytes:
        return self._dec.update(data)

    def finalize(self, tag: bytes) -> None:
        try:
            self._dec.finalize_with_tag(tag)
        except (InvalidTag, ValueError):
            raise DecryptionError(f"{self._where}: decryption failed (wrong key, or the data "
                                  "was altered)") from None


# -- Ed25519 -----------------------------------------------------------------------------------
def new_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_seed(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def public_raw(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_hex(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    return public_raw(key).hex()


def _key_bytes(source: Any, what: str) -> bytes:
    """Raw key material from bytes (raw or hex text) or a key file's path."""
    if isinstance(source, (str, os.PathLike)) and not _looks_hex(source):
        path = os.fspath(source)
        try:
            with open(path, "rb") as f:
                raw = f.read(KEY_FILE_MAX + 1)
        except OSError as e:
            raise ValueError(f"cannot read {what} file {path!r}: {e.strerror}") from None
        if len(raw) > KEY_FILE_MAX:
            raise ValueError(f"{what} file {path!r} is too large to be a key")
        return raw
    if isinstance(source, str):
        return source.encode("ascii")
    try:
        return bytes(memoryview(source))
    except TypeError:
        raise TypeError(f"{what} must be a key object, bytes, hex text or a file path, not "
                        f"{type(source).__name__}") from None


def _looks_hex(s: Any) -> bool:
    return isinstance(s, str) and len(s) == 2 * KEY_SIZE and all(c in "0123456789abcdefABCDEF"
                                                                 for c in s)


def _decode_key(raw: bytes, what: str) -> bytes | None:
    """32 raw bytes from raw bytes or hex text; None when it is neither (maybe PEM)."""
    if len(raw) == KEY_SIZE:
        return raw
    text = raw.strip()
    if len(text) == 2 * KEY_SIZE:
        try:
            return binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            raise ValueError(f"{what} is not 64 hex digits") from None
    return None


def load_private_key(source: Any) -> Ed25519PrivateKey:
    """An Ed25519 private key from a key object, its 32-byte seed (raw or hex), or a file
    holding the seed (hex, as `cartridge keygen` writes it, or raw) or a PEM PKCS#8 key."""
    if isinstance(source, Ed25519PrivateKey):
        return source
    raw = _key_bytes(source, "signing key")
    seed = _decode_key(raw, "signing key")
    if seed is not None:
        return Ed25519PrivateKey.from_private_bytes(seed)
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError):
        raise ValueError("signing key: not a 32-byte Ed25519 seed (raw or hex) nor a PEM "
                         "private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("signing key: the PEM key is not an Ed25519 key")
    return key


def load_public_key(source: Any) -> Ed25519PublicKey:
    """An Ed25519 public key from a key object, 32 raw bytes, 64 hex digits, or a file holding
    either (or a PEM public key)."""
    if isinstance(source, Ed25519PublicKey):
        return source
    if isinstance(source, Ed25519PrivateKey):
        return source.public_key()
    raw = _key_bytes(source, "public key")
    pk = _decode_key(raw, "public key")
    try:
        if pk is not None:
            return Ed25519PublicKey.from_public_bytes(pk)
        key = serialization.load_pem_public_key(raw)
    except (ValueError, TypeError):
        raise ValueError("public key: not 32 bytes of Ed25519 key (raw or hex) nor a PEM "
                         "public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("public key: the PEM key is not an Ed25519 key")
    return key
