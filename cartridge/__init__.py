"""cartridge: a mutable single-file archive for files and SQLite databases.

    import cartridge
    with cartridge.open("data.cart", "a") as cart:
        cart.write("/docs/a.txt", b"hello")
        cart.read("/docs/a.txt")
"""
from __future__ import annotations

import os as _os
from typing import Any

try:
    from . import _core as _kernels
    from ._core import pathkeys as _pathkeys  # noqa: F401   (the first compiled kernel imported)
except ImportError as _e:                     # the source tree, its kernels never built
    raise ImportError(
        f"cartridge's compiled kernels are missing in {_os.path.dirname(_kernels.__file__)} "
        f"({_e}): this is the source tree, not an installed cartridge. Build it in place "
        "(pip install -e .) or run Python from another directory") from _e
from . import iam
from .archive import Cartridge, FileInfo, VerifyReport, open
from .content import content_checksum
from .errors import (
    AccessDeniedError,
    AlreadyExistsError,
    CartridgeError,
    ClosedError,
    CorruptionError,
    DecryptionError,
    DirectoryNotEmptyError,
    InvalidPathError,
    LockedError,
    NotACartridgeError,
    NotADatabaseError,
    NotAnEngramError,
    NotFoundError,
    PathIsDirectoryError,
    PathNotDirectoryError,
    PolicyError,
    ReadOnlyError,
    SignatureError,
    SymlinkRefusedError,
    TransactionAbortedError,
    UnsupportedVersionError,
)
from .paths import normalize as normalize_path


def import_engram(src: str | _os.PathLike, dest_cart: Any, *, verify_key: Any = None,
                  key: Any = None, progress: Any = None) -> dict:
    """Build or fill a cartridge from an Engram (.eng) file in one transaction: see
    cartridge.engram.importer.import_engram and docs/ENGRAM.md. Needs the `engram` extra."""
    from .engram.importer import import_engram as run

    return run(src, dest_cart, verify_key=verify_key, key=key, progress=progress)


# The SQLite layer (apsw, and the "cartridge" VFS for URIs) loads on first use: cart.sqlite(),
# cart.sqlite_export(), or `import cartridge.sqlite` / cartridge.sqlite.register().

__version__ = "0.1.0"

__all__ = [
    "AccessDeniedError",
    "AlreadyExistsError",
    "Cartridge",
    "CartridgeError",
    "ClosedError",
    "CorruptionError",
    "DecryptionError",
    "DirectoryNotEmptyError",
    "FileInfo",
    "InvalidPathError",
    "LockedError",
    "NotACartridgeError",
    "NotADatabaseError",
    "NotAnEngramError",
    "NotFoundError",
    "PathIsDirectoryError",
    "PathNotDirectoryError",
    "PolicyError",
    "ReadOnlyError",
    "SignatureError",
    "SymlinkRefusedError",
    "TransactionAbortedError",
    "UnsupportedVersionError",
    "VerifyReport",
    "content_checksum",
    "iam",
    "import_engram",
    "normalize_path",
    "open",
]
