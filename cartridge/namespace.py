"""Namespace lookups over an engine: what a user path names (file, directory, nothing) and the
directory rules every change checks. Shared by the handle and the feature layers."""
from __future__ import annotations

from . import paths as P
from .errors import NotFoundError, PathIsDirectoryError, PathNotDirectoryError
from .format import KIND_DIR, KIND_FILE
from .records import Record


def implicit_dir(eng, key: bytes) -> bool:
    """Does some entry lie below `key` (a directory that exists only through its children)?"""
    nxt = eng.first_key(key + b"/")
    return nxt is not None and nxt.startswith(key + b"/")


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


def check_parents(eng, path: str) -> None:
    """No ancestor of `path` may be a file."""
    for anc in P.ancestors(path):
        rec = eng.get(P.to_key(anc))
        if rec is not None and rec.kind == KIND_FILE:
            raise PathNotDirectoryError(f"{anc} is a file, so {path} cannot exist")


def file_record(eng, path: str, key: bytes | None = None) -> Record:
    """The record of the file at normalised `path` (NotFoundError, PathIsDirectoryError)."""
    rec = eng.get(P.to_key(path) if key is None else key)
    if rec is not None and rec.kind == KIND_FILE:
        return rec
    k, _ = kind(eng, path)
    if k == "dir":
        raise PathIsDirectoryError(f"{path} is a directory")
    raise NotFoundError(f"no such file: {path}")
