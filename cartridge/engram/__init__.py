"""Engram (.eng): signed, compressed, immutable archives, byte-compatible with engram-rs 1.x
(docs/ENGRAM.md). Needs the `engram` extra (lz4, zstandard, cryptography); `import cartridge`
never loads this package.

    from cartridge import engram
    with engram.open("release.eng") as eng:
        eng.namelist(); eng.read("docs/a.txt"); eng.verify(public_keys=[pub])
"""
from __future__ import annotations

from . import crypto, manifest
from .importer import import_engram
from .layout import DEFAULT_LIMITS, EntryInfo, Limits
from .reader import EngramReader, EngramReport, open
from .writer import EngramWriter

__all__ = ["DEFAULT_LIMITS", "EngramReader", "EngramReport", "EngramWriter", "EntryInfo", "Limits",
           "crypto", "import_engram", "manifest", "open"]
