"""cartridge: a mutable single-file archive for files and SQLite databases.

    import cartridge
    with cartridge.open("data.cart", "a") as cart:
        cart.write("/docs/a.txt", b"hello")
        cart.read("/docs/a.txt")
"""
from . import iam
from .archive import Cartridge, FileInfo, VerifyReport, open
from .content import content_checksum
from .errors import (
    AccessDeniedError,
    AlreadyExistsError,
    CartridgeError,
    ClosedError,
    CorruptionError,
    DirectoryNotEmptyError,
    InvalidPathError,
    LockedError,
    NotACartridgeError,
    NotADatabaseError,
    NotFoundError,
    PathIsDirectoryError,
    PathNotDirectoryError,
    PolicyError,
    ReadOnlyError,
    SymlinkRefusedError,
    TransactionAbortedError,
    UnsupportedVersionError,
)
from .paths import normalize as normalize_path

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
    "DirectoryNotEmptyError",
    "FileInfo",
    "InvalidPathError",
    "LockedError",
    "NotACartridgeError",
    "NotADatabaseError",
    "NotFoundError",
    "PathIsDirectoryError",
    "PathNotDirectoryError",
    "PolicyError",
    "ReadOnlyError",
    "SymlinkRefusedError",
    "TransactionAbortedError",
    "UnsupportedVersionError",
    "VerifyReport",
    "content_checksum",
    "iam",
    "normalize_path",
    "open",
]
