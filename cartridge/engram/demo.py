"""The Engram step of the guided tour (`python -m cartridge demo`): export the demo archive
into a signed Engram, verify it with the public key of a keypair made for the occasion, and
say what happened in one line. cartridge/demo.py wires it in as one of its steps; it lives
here so the tour never imports the `engram` extra unless it runs this step.
"""
from __future__ import annotations

import os

from ..errors import CorruptionError, SignatureError
from . import crypto
from .reader import EngramReader

DEMO_NAME = "demo.eng"


def engram_demo_step(cart, workdir: str | os.PathLike, name: str = DEMO_NAME) -> str:
    """Export `cart` (an open handle on the demo archive) to WORKDIR/NAME (demo.eng), signed with a
    fresh Ed25519 key, re-open the file, verify every entry, the manifest and the signature
    against that key's public half (and that another fresh key is not trusted), check the
    Engram holds every file of the archive, and return a one-line summary. Raises
    (CorruptionError, SignatureError) if anything does not match; the caller decides whether
    the tour stops."""
    dest = os.path.join(os.fspath(workdir), name)
    key = crypto.new_private_key()
    public = crypto.public_raw(key)
    cart.export_engram(dest, signing_key=key, signer="cartridge demo", compression="auto")
    with EngramReader(dest) as r:
        report = r.verify(public_keys=[public])
        stranger = r.verify(public_keys=[crypto.public_raw(crypto.new_private_key())])
        names = set(r.namelist())
    if stranger.trusted is not False:
        raise SignatureError(f"{dest}: a key that never signed it was trusted")
    if not report.trusted:
        raise SignatureError(f"{dest}: not signed by the demo key: {report.problems[:3]}")
    if not report.ok:
        raise CorruptionError(f"{dest}: verification failed: {report.problems[:3]}")
    files = {info.path[1:] for info in cart.scan("/")}
    if not files <= names:
        missing = sorted(files - names)[:3]
        raise CorruptionError(f"{dest}: the Engram lacks {missing}")
    ratio = os.path.getsize(dest) / max(report.size, 1)
    return (f"engram: {len(files)} files exported to {name} "
            f"({report.size:,} bytes -> {os.path.getsize(dest):,}, {ratio:.0%}), "
            f"signed and verified with key {crypto.public_hex(key)[:16]}...")
