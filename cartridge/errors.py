"""The exception hierarchy: every error cartridge raises derives from CartridgeError."""


class CartridgeError(Exception):
    """Base class of every error raised by cartridge."""


class NotACartridgeError(CartridgeError):
    """The file is not a cartridge archive, or was cut short before its header."""


class UnsupportedVersionError(CartridgeError):
    """The archive uses a format version this build cannot read."""


class CorruptionError(CartridgeError):
    """A checksum or structural check failed; the message says where."""


class InvalidPathError(CartridgeError, ValueError):
    """A path breaks the path rules (empty name, '..', control characters, too long)."""


class NotFoundError(CartridgeError, FileNotFoundError):
    """No file or directory at that path."""


class AlreadyExistsError(CartridgeError, FileExistsError):
    """Something already exists at that path."""


class PathIsDirectoryError(CartridgeError, IsADirectoryError):
    """A file operation was given a directory."""


class PathNotDirectoryError(CartridgeError, NotADirectoryError):
    """A directory operation (or a path component) names a file."""


class DirectoryNotEmptyError(CartridgeError, OSError):
    """A non-recursive delete of a directory that still has children."""


class ReadOnlyError(CartridgeError, PermissionError):
    """A write through a read-only handle."""


class AccessDeniedError(CartridgeError, PermissionError):
    """Refused by an IAM policy."""


class LockedError(CartridgeError, BlockingIOError):
    """Another handle or process holds the archive's write lock."""


class ClosedError(CartridgeError, ValueError):
    """The archive or stream was used after close()."""


class PolicyError(CartridgeError, ValueError):
    """A malformed IAM policy document or policy name; says which statement and field."""


class SymlinkRefusedError(CartridgeError, OSError):
    """A local output path (sqlite_export's or get's destination) is a symbolic link: cartridge
    never writes through one."""


class NotADatabaseError(CartridgeError):
    """An archive member opened as an SQLite database is not one (no SQLite header)."""


class TransactionAbortedError(CartridgeError):
    """A nested transaction failed, so the enclosing transaction was rolled back."""


class NotAnEngramError(CartridgeError):
    """The file is not an Engram (.eng) archive: no Engram magic, or shorter than one."""


class SignatureError(AccessDeniedError):
    """An Engram's signatures do not verify, or none of them is by a trusted key (an import or
    a verification that required a signature is refused)."""


class DecryptionError(CartridgeError):
    """An encrypted Engram (or entry) cannot be decrypted: no key given, a wrong key, or the
    ciphertext was altered (AES-GCM authentication failed)."""


__all__ = [
    "AccessDeniedError",
    "AlreadyExistsError",
    "CartridgeError",
    "ClosedError",
    "CorruptionError",
    "DecryptionError",
    "DirectoryNotEmptyError",
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
]
