"""The one path normaliser: the API, the catalog check in verify, IAM, streams, the SQLite VFS
and the CLI all go through it, so one file never has two names.

Rules (docs/FORMAT.md §7, README "Paths"): absolute, '/'-separated, case-sensitive UTF-8 str. A missing
leading '/' is added, repeated '/' and '.' segments collapse; a trailing '/' on a file path is
an error. Empty names, '..', NUL and other control characters, segments over 255 UTF-8 bytes
and paths over 4096 bytes raise InvalidPathError.
"""
from __future__ import annotations

import re
from functools import lru_cache

from ._core import pathkeys as _C
from ._core.btree import file_has_children  # noqa: F401  (the damage of a file with children)
from .errors import CorruptionError, InvalidPathError
from .format import MAX_NAME_BYTES, MAX_PATH_BYTES

ROOT = "/"

# C0 controls, DEL and C1 controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# An ASCII path that is already normal: '/name' segments of 1..255 characters, none '.' or '..'.
_NORMAL_ASCII = re.compile(rf"(?:/(?!\.\.?(?:/|$))[\x20-\x2e\x30-\x7e]{{1,{MAX_NAME_BYTES}}})+")


@lru_cache(maxsize=65536)
def _normalize(path: str) -> tuple[str, bool]:
    """The reference normaliser (every rule and error): (normalised path, had a trailing '/')."""
    if len(path) <= MAX_PATH_BYTES and path.isascii() and _NORMAL_ASCII.fullmatch(path):
        return path, False
    if _CONTROL.search(path):
        raise InvalidPathError(f"path contains a control character: {path!r}")
    trailing = len(path) > 1 and path.endswith("/")
    parts = []
    for seg in path.split("/"):
        if seg == "" or seg == ".":
            continue
        if seg == "..":
            raise InvalidPathError(f"'..' segments are not allowed: {path!r}")
        try:
            n = len(seg.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidPathError(f"path is not valid UTF-8 (lone surrogate): {path!r}") from None
        if n > MAX_NAME_BYTES:
            raise InvalidPathError(f"path segment over {MAX_NAME_BYTES} bytes: {seg[:40]!r}...")
        parts.append(seg)
    result = "/" + "/".join(parts)
    if len(result.encode("utf-8")) > MAX_PATH_BYTES:
        raise InvalidPathError(f"path over {MAX_PATH_BYTES} bytes")
    return result, trailing


def _check_type(path: object) -> str:
    if isinstance(path, str):
        if not path:
            raise InvalidPathError("empty path")
        return path
    if hasattr(path, "__fspath__"):
        return _check_type(path.__fspath__())
    raise InvalidPathError(f"paths are str, not {type(path).__name__}")


def _file_errors(path: object, result: str, trailing: bool) -> None:
    """What a file path may not be: written with a trailing '/', or the root."""
    if trailing:
        raise InvalidPathError(f"a file path cannot end with '/': {path!r}")
    if result == ROOT:
        raise InvalidPathError("the root '/' is a directory, not a file")


# -- the reference API (pure Python): what the C versions below must match exactly ---------
def ref_normalize_any(path: str) -> tuple[str, bool]:
    return _normalize(_check_type(path))


def ref_normalize(path: str) -> str:
    return _normalize(_check_type(path))[0]


def ref_normalize_file(path: str) -> str:
    result, trailing = _normalize(_check_type(path))
    _file_errors(path, result, trailing)
    return result


def ref_file_key(path: str) -> tuple[str, bytes]:
    norm = ref_normalize_file(path)
    return norm, norm.encode("utf-8")


# -- the API: a C scan accepts paths that are already normal, the reference does the rest ----
_C.use_reference(_normalize, _check_type, _file_errors)

normalize_any = _C.normalize_any      # (normalised path, written with a trailing '/')
normalize = _C.normalize            # a path that may name a file or a directory ('/' allowed)
normalize_file = _C.normalize_file  # a path that must name a file: the root and 'x/' are refused
file_key = _C.file_key              # (normalised file path, catalog key), memoised
path_key = _C.path_key              # (normalised path, catalog key, written with a trailing '/')


def to_key(path: str) -> bytes:
    """Catalog key of a normalised path: its UTF-8 bytes."""
    return path.encode("utf-8")


def from_key(key: bytes) -> str:
    """Path of a catalog key; a key that is not UTF-8 means a damaged catalog."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptionError(f"catalog key is not UTF-8: {key[:60]!r}") from None


def stored_name(raw: bytes) -> str:
    """A name read from the catalog; one no path could have produced means a damaged catalog."""
    name = from_key(raw)
    if not name or name in (".", "..") or _CONTROL.search(name) or len(raw) > MAX_NAME_BYTES:
        raise CorruptionError(f"catalog holds an impossible name: {name[:60]!r}")
    return name


def stored_path(raw: bytes) -> str:
    """A whole catalog key as a path; a key that is not a normalised path means damage."""
    path = from_key(raw)
    try:
        ok = path != "/" and normalize(path) == path
    except InvalidPathError:
        ok = False
    if not ok:
        raise CorruptionError(f"catalog holds an impossible path: {path[:60]!r}")
    return path


def shown(key: bytes) -> str:
    """A catalog key for a message: undecodable bytes and control characters escaped."""
    return repr(key.decode("utf-8", "backslashreplace"))


def parent(path: str) -> str:
    """Parent directory of a normalised path ('/' for top-level entries and the root)."""
    i = path.rfind("/")
    return "/" if i <= 0 else path[:i]


def basename(path: str) -> str:
    return path[path.rfind("/") + 1:]


def ancestors(path: str) -> list[str]:
    """Every proper ancestor directory except the root, outermost first: /a/b/c -> [/a, /a/b]."""
    out = []
    i = path.find("/", 1)
    while i != -1:
        out.append(path[:i])
        i = path.find("/", i + 1)
    return out


def join(directory: str, name: str) -> str:
    return directory + name if directory == "/" else directory + "/" + name


def dir_prefix(path: str) -> str:
    """Key prefix shared by everything below a directory: '/' for the root, else path + '/'."""
    return "/" if path == "/" else path + "/"


# A SQLite database X keeps its rollback journal and WAL as members X-journal and X-wal: they
# hold the database's pages, so they follow its locks and its access rights.
SQLITE_COMPANIONS = ("-journal", "-wal")


def database_of(member: str) -> str:
    """The database a journal/WAL member belongs to (by name), or the member itself."""
    for suffix in SQLITE_COMPANIONS:
        if member.endswith(suffix) and len(member) > len(suffix) + 1:
            return member[:-len(suffix)]
    return member
