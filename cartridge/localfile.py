"""Write a local file atomically and safely: every file cartridge writes outside an archive
(sqlite_export, the CLI's get, exports to come) goes through here.

The bytes go to a temp file with a random name in the destination's directory, created with
O_CREAT|O_EXCL|O_NOFOLLOW (so a planted file or symlink of that name is never followed nor
clobbered), then fsync, os.replace over the destination, fsync of the directory. On any error
the temp file is removed and the destination is untouched. A destination that is a directory,
a symlink, or anything else that is not a regular file (a device, FIFO or socket: replacing
/dev/null with a regular file would damage the system) is refused before anything is written.
"""
from __future__ import annotations

import contextlib
import io
import os
import secrets
import stat
from collections.abc import Iterator
from typing import BinaryIO

from .errors import (
    AlreadyExistsError,
    InvalidPathError,
    NotFoundError,
    PathIsDirectoryError,
    SymlinkRefusedError,
)

_FLAGS = (os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0)
          | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
_ATTEMPTS = 100


def umask() -> int:
    """The process umask, read without changing it where the system allows (Linux: /proc), so
    another thread creating a file meanwhile never sees a different one."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode() -> int:
    """The mode open() would give a new file: 0o666 & ~umask."""
    return 0o666 & ~umask()


SPECIAL_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                 (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def special_kind(mode: int) -> str:
    """What a file that is neither regular nor a directory nor a link is, for messages."""
    return next((k for test, k in SPECIAL_KINDS if test(mode)), "not a regular file")


def check_destination(dest: str | os.PathLike) -> str:
    """`dest` as a str path, refused if it exists as anything but a regular file (a directory,
    a symlink, a device, FIFO or socket)."""
    dest = os.fspath(dest)
    if isinstance(dest, bytes):
        dest = os.fsdecode(dest)
    if not os.path.basename(dest):
        raise PathIsDirectoryError(f"the destination must name a file, not a directory: {dest!r}")
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        return dest
    if stat.S_ISLNK(st.st_mode):
        raise SymlinkRefusedError(f"refusing to write through a symbolic link: {dest}")
    if stat.S_ISDIR(st.st_mode):
        raise PathIsDirectoryError(f"{dest} is a directory: give the path of the file to write")
    if not stat.S_ISREG(st.st_mode):
        raise InvalidPathError(f"{dest} is {special_kind(st.st_mode)}, not a regular file: "
                               "refusing to replace it; give the path of a file to write")
    return dest


class _Output(io.FileIO):
    """The temp file's raw file: an error writing it names the destination (the temp name
    means nothing to the user): "out.bin: File too large"."""

    def __init__(self, fd: int, dest: str):
        super().__init__(fd, "wb", closefd=True)
        self._dest = dest

    def write(self, b) -> int | None:  # type: ignore[override]
        try:
            return super().write(b)
        except OSError as e:
            raise _named(e, self._dest) from None


def _named(e: OSError, dest: str) -> OSError:
    if e.filename is None:
        e.filename = dest
    return e


def _create_temp(dest: str) -> tuple[int, str]:
    directory, name = os.path.split(dest)
    for _ in range(_ATTEMPTS):
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.part")
        try:
            return os.open(tmp, _FLAGS, 0o600), tmp
        except FileExistsError:
            continue            # taken (maybe a planted link): another random name
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"no such local directory: {directory or '.'}") from None
    raise AlreadyExistsError(f"could not create a temp file beside {dest} "
                             f"({_ATTEMPTS} random names were all taken)")


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _sync_dir(directory: str) -> None:
    try:
        fd = os.open(directory or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return                  # e.g. a platform that cannot open directories
    try:
        os.fsync(fd)
    except OSError:
        pass                    # some file systems refuse fsync on a directory
    finally:
        os.close(fd)


def _set_meta(fd: int, mode: int | None, mtime: float | None) -> None:
    """Mode and mtime of the temp file, set through its descriptor (never through a name that
    could have been swapped for a link meanwhile)."""
    os.fchmod(fd, default_mode() if mode is None else mode)
    if mtime is not None:
        os.utime(fd, (mtime, mtime))


def _finish(tmp: str, dest: str) -> None:
    check_destination(dest)     # not swapped for a directory or link meanwhile
    os.replace(tmp, dest)
    _sync_dir(os.path.dirname(dest))


@contextlib.contextmanager
def atomic_writer(dest: str | os.PathLike, *, mode: int | None = None,
                  mtime: float | None = None) -> Iterator[BinaryIO]:
    """A binary file object whose bytes replace `dest` when the block ends without error.
    `mode` defaults to 0o666 & ~umask, as open() gives; `mtime` (seconds) is set if given."""
    dest = check_destination(dest)
    fd, tmp = _create_temp(dest)
    try:
        with io.BufferedWriter(_Output(fd, dest)) as out:
            yield out
            try:
                out.flush()
                _set_meta(out.fileno(), mode, mtime)
                os.fsync(out.fileno())
            except OSError as e:
                raise _named(e, dest) from None
        _finish(tmp, dest)
    except BaseException:
        _remove_quietly(tmp)
        raise


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, *, mode: int | None = None,
                sidecars: tuple[str, ...] = ()) -> Iterator[str]:
    """For a writer that opens files by name (SQLite): the name of an empty temp file, created
    exclusively, that replaces `dest` when the block ends without error. Files named by the
    temp name plus each suffix in `sidecars` (e.g. "-journal") are removed at the end."""
    dest = check_destination(dest)
    fd, tmp = _create_temp(dest)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            _set_meta(fd, mode, None)
            os.fsync(fd)
        finally:
            os.close(fd)
        _finish(tmp, dest)
    except BaseException:
        _remove_quietly(tmp)
        raise
    finally:
        for suffix in sidecars:
            _remove_quietly(tmp + suffix)
