"""Opening and atomically creating archive files (a killed creator leaves no file or a valid,
empty archive). Only regular files are opened, without blocking (a FIFO must not hang us), and
nothing is ever replaced but a regular file in mode "w": a symlink is followed, an empty file
in mode "a" is initialised in place (its inode, links and mode kept)."""
from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat as _stat
import tempfile
from typing import Any

from . import locking, source
from .engine import Engine
from .errors import (
    AlreadyExistsError,
    CartridgeError,
    LockedError,
    NotACartridgeError,
    NotFoundError,
    PathIsDirectoryError,
)
from .format import MAGIC, PAGE_SIZE

_SPECIAL = ((_stat.S_ISFIFO, "a FIFO"), (_stat.S_ISSOCK, "a socket"),
            (_stat.S_ISCHR, "a character device"), (_stat.S_ISBLK, "a block device"))


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


def _create_replacing(path: str, sync: str, cache_size: int, mode: int | None = None) -> Engine:
    """Build the empty archive under a temporary name, then rename it over `path` (a regular
    file or nothing: the caller resolved symlinks); `mode`: the permission bits to keep."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
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


def _refuse_special(path: str, st: os.stat_result) -> None:
    """Anything but a regular file is refused before a byte is read or written."""
    if _stat.S_ISREG(st.st_mode):
        return
    if _stat.S_ISDIR(st.st_mode):
        raise PathIsDirectoryError(f"{path} is a directory, not an archive file")
    kind = next((k for test, k in _SPECIAL if test(st.st_mode)), "not a regular file")
    raise NotACartridgeError(f"{path}: not a cartridge archive ({kind}, not a regular file)")


def _stat_target(path: str) -> os.stat_result | None:
    """What `path` names, through symlinks (None: nothing, or a dangling symlink); refuses
    anything that is not a regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    _refuse_special(path, st)
    return st


def _resolved(path: str) -> str:
    """The file a symlink at `path` leads to (created or replaced instead of the link)."""
    return os.path.realpath(path) if os.path.islink(path) else path


def _open_regular(path: str, writable: bool) -> tuple[int, os.stat_result]:
    """Open an existing regular file; checked before (nothing else is opened: opening a device
    may act on it) and after, on the descriptor, without blocking (a FIFO swapped in between
    must not hang the open)."""
    if _stat_target(path) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno in (errno.ENXIO, errno.EISDIR, errno.EOPNOTSUPP):   # swapped for a socket...
            _stat_target(path)
        raise
    try:
        st = os.fstat(fd)
        _refuse_special(path, st)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _engine_over(fd: int, path: str, writable: bool, sync: str, cache_size: int,
                 timeout) -> Engine:
    """The Engine of an opened regular file that should hold an archive (closes fd on error)."""
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


def _open_existing(path: str, writable: bool, sync: str, cache_size: int, timeout) -> Engine:
    fd, _st = _open_regular(path, writable)
    return _engine_over(fd, path, writable, sync, cache_size, timeout)


def _fresh_image(sync: str, cache_size: int) -> bytes:
    """The bytes of a new, empty archive (built in an unnamed temporary file)."""
    with tempfile.TemporaryFile() as tmp:
        eng = Engine(os.dup(tmp.fileno()), "<new archive>", writable=True, sync="off",
                     cache_size=cache_size, fresh=True)
        try:
            return os.pread(eng.fd, os.fstat(eng.fd).st_size, 0)
        finally:
            eng.close()


def _init_in_place(fd: int, path: str, sync: str, cache_size: int, timeout) -> Engine:
    """Mode "a" on an empty regular file: write a new archive into it, keeping its inode (hard
    links, a symlink to it) and mode. Everything but page 0 goes first and is synced, then
    page 0 (one page): a crash leaves the file empty, a file whose first page is zero (not an
    archive: NotACartridgeError, as for any partial file) or a valid empty archive."""
    try:
        if not locking.writer_lock(fd, timeout):
            raise LockedError(f"{path}: another handle holds the write lock")
        if os.fstat(fd).st_size == 0:                # still empty now that we hold the lock
            img = _fresh_image(sync, cache_size)
            os.pwrite(fd, img[PAGE_SIZE:], PAGE_SIZE)
            if sync != "off":
                os.fdatasync(fd)
            os.pwrite(fd, img[:PAGE_SIZE], 0)
            if sync != "off":
                os.fdatasync(fd)
    except BaseException:
        os.close(fd)
        raise
    return _engine_over(fd, path, True, sync, cache_size, timeout)


def open_engine(path: str, mode: str, *, sync: str, cache_size: int, timeout) -> Engine:
    """The Engine for `path` opened in `mode` ("r", "a", "w" or "x").

    Only regular files are opened: a directory is PathIsDirectoryError, a device, FIFO or
    socket NotACartridgeError, in every mode and before anything is written. A symlink is
    followed: "w" replaces (and "a" or "w" create) the file it leads to, never the link; "w"
    replaces by rename, so other hard links of the old file keep it; "a" initialises an empty
    file in place."""
    try:
        if mode == "r":
            return _open_existing(path, False, sync, cache_size, timeout)
        if mode == "x":
            _stat_target(path)
            return _create_exclusive(path, sync, cache_size)
        if mode == "w":
            return _replace_locked(path, sync, cache_size, timeout)
        # "a": open, or create when missing (or initialise an empty file, e.g. a fresh temp file)
        try:
            fd, st = _open_regular(path, True)
        except FileNotFoundError:
            try:
                return _create_exclusive(_resolved(path), sync, cache_size)
            except AlreadyExistsError:   # another process created it first
                return _open_existing(path, True, sync, cache_size, timeout)
        if st.st_size == 0:
            return _init_in_place(fd, path, sync, cache_size, timeout)
        return _engine_over(fd, path, True, sync, cache_size, timeout)
    except CartridgeError:
        raise
    except (FileNotFoundError, NotADirectoryError):
        raise NotFoundError(f"{path}: no such file or directory") from None
    except IsADirectoryError:
        raise PathIsDirectoryError(f"{path} is a directory, not an archive file") from None


def open_remote_engine(target: Any, *, cache_size: int, block_pages: int,
                       cache_pages: int) -> Engine:
    """A read-only Engine over a remote page source (cartridge/source.py): a URL fsspec reaches,
    an fsspec OpenFile or an open binary file object."""
    src = source.open_remote(target, block_pages=block_pages, cache_pages=cache_pages)
    try:
        if src.size < PAGE_SIZE:
            head = src.pread(-1, len(MAGIC), 0)
            cut = head and MAGIC.startswith(head)
            raise NotACartridgeError(f"{src.name}: not a cartridge archive"
                                     + (" (cut short before its header)" if cut else ""))
        return Engine(-1, src.name, writable=False, sync="full", cache_size=cache_size,
                      source=src)
    except BaseException:
        src.close()
        raise


def _replace_locked(path: str, sync: str, cache_size: int, timeout) -> Engine:
    """Mode "w": a fresh archive replaces the regular file `path` leads to (keeping its mode
    bits). An existing archive's write lock is held until the new file is in place, so no
    writer can slip into the file being replaced."""
    target = _resolved(path)
    try:
        fd, st = _open_regular(target, True)
    except FileNotFoundError:
        return _create_replacing(target, sync, cache_size)
    try:
        if not locking.writer_lock(fd, timeout):
            raise LockedError(f"{path}: another handle holds the write lock")
        return _create_replacing(target, sync, cache_size, _stat.S_IMODE(st.st_mode))
    finally:
        os.close(fd)
