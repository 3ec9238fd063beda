"""Opening and atomically creating archive files (a killed creator leaves no file or a valid,
empty archive)."""
from __future__ import annotations

import errno
import os
import secrets

from . import locking
from .engine import Engine
from .errors import (
    AlreadyExistsError,
    LockedError,
    NotACartridgeError,
    NotFoundError,
    PathIsDirectoryError,
)
from .format import MAGIC, PAGE_SIZE


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_engine(fd: int, path: str, sync: str, cache_size: int) -> Engine:
    try:
        eng = Engine(fd, path, writable=True, sync=sync, cache_size=cache_size, fresh=True)
    except BaseException:
        os.close(fd)
        raise
    if sync != "off":
        os.fsync(fd)
    return eng


def _create_exclusive(path: str, sync: str, cache_size: int) -> Engine:
    """Build the empty archive invisibly, then link it into place (fails if path exists)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd = None
    if hasattr(os, "O_TMPFILE"):
        try:
            fd = os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o644)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                raise
            if e.errno == errno.ENOENT:
                raise NotFoundError(f"{path}: directory {directory} does not exist") from None
            fd = None
    if fd is not None:
        eng = _new_engine(fd, path, sync, cache_size)
        try:
            os.link(f"/proc/self/fd/{fd}", path, follow_symlinks=True)
        except FileExistsError:
            eng.close()
            raise AlreadyExistsError(f"{path} already exists") from None
        except OSError:
            eng.close()
            fd = None      # /proc unavailable: fall back to a named temporary file
        else:
            _fsync_dir(path)
            return eng
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        eng = _new_engine(fd, path, sync, cache_size)
        try:
            os.link(tmp, path)
        except FileExistsError:
            eng.close()
            raise AlreadyExistsError(f"{path} already exists") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    _fsync_dir(path)
    return eng


def _create_replacing(path: str, sync: str, cache_size: int) -> Engine:
    """Build the empty archive under a temporary name, then rename it over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        eng = _new_engine(fd, path, sync, cache_size)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path)
    return eng


def _open_existing(path: str, writable: bool, sync: str, cache_size: int, timeout) -> Engine:
    fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size < PAGE_SIZE:
            head = os.pread(fd, len(MAGIC), 0)
            cut = head and MAGIC.startswith(head)     # our magic, then the file ends
            raise NotACartridgeError(f"{path}: not a cartridge archive"
                                     + (" (cut short before its header)" if cut else ""))
        return Engine(fd, path, writable=writable, sync=sync, cache_size=cache_size,
                      lock_timeout=timeout)
    except BaseException:
        os.close(fd)
        raise


def open_engine(path: str, mode: str, *, sync: str, cache_size: int, timeout) -> Engine:
    """The Engine for `path` opened in `mode` ("r", "a", "w" or "x")."""
    try:
        if mode == "r":
            return _open_existing(path, False, sync, cache_size, timeout)
        if mode == "x":
            return _create_exclusive(path, sync, cache_size)
        if mode == "w":
            return _replace_locked(path, sync, cache_size, timeout)
        # "a": open, or create when missing (or when the file is empty, e.g. a fresh temp file)
        try:
            if os.path.getsize(path) == 0:
                return _replace_locked(path, sync, cache_size, timeout)
            return _open_existing(path, True, sync, cache_size, timeout)
        except FileNotFoundError:
            try:
                return _create_exclusive(path, sync, cache_size)
            except AlreadyExistsError:   # another process created it first
                return _open_existing(path, True, sync, cache_size, timeout)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFoundError(f"{path}: no such file or directory") from None
    except IsADirectoryError:
        raise PathIsDirectoryError(f"{path} is a directory, not an archive file") from None


def _replace_locked(path: str, sync: str, cache_size: int, timeout) -> Engine:
    """Mode "w": a fresh archive replaces `path`. An existing archive's write lock is held
    until the new file is in place, so no writer can slip into the file being replaced."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return _create_replacing(path, sync, cache_size)
    try:
        if not locking.writer_lock(fd, timeout):
            raise LockedError(f"{path}: another handle holds the write lock")
        return _create_replacing(path, sync, cache_size)
    finally:
        os.close(fd)
