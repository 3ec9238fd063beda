"""Namespace lookups over an engine: what a user path names (file, directory, nothing) and the
directory rules every change checks. Shared by the handle and the feature layers.

A file record with entries below it (a key /a that is a file and a key /a/b) is damage no
writer makes. Every lookup that meets it raises CorruptionError naming both keys: the record
lookup itself (Engine.get: a file record with a key below it, a record with a file above it;
the kernels check it at a memo miss, so a memo hit costs nothing more), an implicit directory
below a file (implicit_dir), listing /a or its parent, scan() over both keys, a change at or
below /a - and verify() reports it. A path below /a that holds nothing is simply absent. The
way out: delete() or rename() of either file record (kind_to_repair) takes it away."""
from __future__ import annotations

from . import paths as P
from .errors import CorruptionError, NotFoundError, PathIsDirectoryError, PathNotDirectoryError
from .format import KIND_DIR, KIND_FILE
from .records import Record, decode


def implicit_dir(eng, key: bytes) -> bool:
    """Does some entry lie below `key` (a directory that exists only through its children)?
    One below a file is damage (CorruptionError naming both keys)."""
    nxt = eng.first_key(key + b"/")
    if nxt is None or not nxt.startswith(key + b"/"):
        return False
    end = key.rfind(b"/")
    while end > 0:          # the ancestors, nearest first: a file among them has children
        anc = key[:end]
        rec = eng.get(anc)      # raises for a file with entries below it
        if rec is not None:
            if rec.kind == KIND_FILE:
                raise P.file_has_children(anc, nxt)
            break           # a directory record: its own ancestors were checked with it
        end = key.rfind(b"/", 0, end)
    return True


def file_with_children(eng, key: bytes) -> Exception | None:
    """The damage of the file record under `key` if entries lie below it (else None)."""
    nxt = eng.first_key(key + b"/")
    if nxt is None or not nxt.startswith(key + b"/"):
        return None
    return P.file_has_children(key, nxt)



def not_a_directory(eng, key: bytes, err: Exception) -> Exception:
    """`err` for a file met where a directory was asked for, or the damage if it has children."""
    return file_with_children(eng, key) or err


def kind_of(eng, path: str) -> tuple[str, str | None, Record | None]:
    """(normalised path, kind, record) for a user path; 'name/' only names a directory."""
    p, key, trailing = P.path_key(path)
    if p == "/":
        return p, "dir", None
    rec = eng.get(key)
    if rec is not None:
        if rec.kind == KIND_DIR:
            return p, "dir", rec
        return (p, None, None) if trailing else (p, "file", rec)
    if implicit_dir(eng, key):
        return p, "dir", None
    return p, None, None


def kind(eng, path: str) -> tuple[str | None, Record | None]:
    """("file"|"dir"|None, record) for a normalised path; the root is always a dir."""
    if path == "/":
        return "dir", None
    key = P.to_key(path)
    rec = eng.get(key)
    if rec is not None:
        return ("dir" if rec.kind == KIND_DIR else "file"), rec
    if implicit_dir(eng, key):
        return "dir", None
    return None, None


def kind_to_repair(eng, path: str) -> tuple[str | None, Record | None]:
    """kind() for delete and rename of their source: a file record that is one of the keys of
    a file with entries below it (the file, or a file below it) is given as a file, so that
    deleting or moving it away repairs the catalog (the only way out of that damage); any other
    damage raises as kind() does."""
    try:
        return kind(eng, path)
    except CorruptionError as e:
        if getattr(e, "file_with_children", None) is None or path == "/":
            raise
        key = P.to_key(path)
        raw = eng.catalog.get(key)          # the record itself, not looked around
        if raw is None:
            raise
        rec = decode(raw, f"{eng.name}:{path}")
        if rec.kind != KIND_FILE:
            raise
        return "file", rec


def check_parents(eng, path: str) -> None:
    """No ancestor of `path` may be a file."""
    for anc in P.ancestors(path):
        key = P.to_key(anc)
        rec = eng.get(key)
        if rec is not None and rec.kind == KIND_FILE:
            raise not_a_directory(eng, key, PathNotDirectoryError(
                f"{anc} is a file, so {path} cannot exist"))


def file_record(eng, path: str, key: bytes | None = None) -> Record:
    """The record of the file at normalised `path` (NotFoundError, PathIsDirectoryError)."""
    rec = eng.get(P.to_key(path) if key is None else key)
    if rec is not None and rec.kind == KIND_FILE:
        return rec
    k, _ = kind(eng, path)
    if k == "dir":
        raise PathIsDirectoryError(f"{path} is a directory")
    raise NotFoundError(f"no such file: {path}")
