"""Cross-process coordination with open-file-description (OFD) byte-range locks.

One writer: an exclusive lock on byte WRITER_LOCK_OFFSET. Readers pin the generation they read
with a shared lock on byte READER_PIN_BASE + generation; the writer reuses pages freed by commit f
only when no pin below f exists. The locked bytes lie far beyond the end of any file, and OFD
locks belong to one open file, so handles in the same process coordinate exactly like processes.
Where OFD locks are missing (not Linux), flock() guards the writer and pins are in-process only.
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct
import sys
import time

from .format import READER_PIN_BASE, WRITER_LOCK_OFFSET

_HAVE_OFD = hasattr(fcntl, "F_OFD_SETLK") and sys.platform.startswith("linux")
# struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid
_FLOCK = struct.Struct("@hhqqi4x")


def _ofd(fd: int, cmd: int, ltype: int, start: int, length: int) -> tuple[int, int, int]:
    raw = fcntl.fcntl(fd, cmd, _FLOCK.pack(ltype, os.SEEK_SET, start, length, 0))
    t, _w, s, n, _pid = _FLOCK.unpack(raw)
    return t, s, n


def try_writer_lock(fd: int) -> bool:
    """Take the writer lock without waiting; False when another handle holds it."""
    try:
        if _HAVE_OFD:
            _ofd(fd, fcntl.F_OFD_SETLK, fcntl.F_WRLCK, WRITER_LOCK_OFFSET, 1)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise


def writer_present(fd: int) -> bool:
    """Does some handle (another process) hold the archive's writer lock? Asked, never taken;
    True when it cannot be asked (no OFD locks, an error)."""
    if not _HAVE_OFD:
        return True
    try:
        t, _s, _n = _ofd(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, WRITER_LOCK_OFFSET, 1)
    except OSError:
        return True
    return t != fcntl.F_UNLCK


def writer_lock(fd: int, timeout: float | None) -> bool:
    """Take the writer lock, polling up to `timeout` seconds (None or 0: do not wait)."""
    if try_writer_lock(fd):
        return True
    if not timeout:
        return False
    deadline = time.monotonic() + timeout
    delay = 0.001
    while time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
        if try_writer_lock(fd):
            return True
    return False


def pin(fd: int, generation: int) -> None:
    """Shared lock announcing that this handle reads `generation`."""
    if _HAVE_OFD:
        _ofd(fd, fcntl.F_OFD_SETLK, fcntl.F_RDLCK, READER_PIN_BASE + generation, 1)


def unpin(fd: int, generation: int) -> None:
    if _HAVE_OFD:
        _ofd(fd, fcntl.F_OFD_SETLK, fcntl.F_UNLCK, READER_PIN_BASE + generation, 1)


def oldest_pin_below(fd: int, generation: int) -> int | None:
    """The lowest generation < `generation` that some other handle pins, or None.

    F_OFD_GETLK reports *a* conflicting lock, not the lowest, so keep asking below the one found.
    """
    if not _HAVE_OFD or generation <= 0:
        return None
    found = None
    limit = generation
    while limit > 0:
        t, start, _n = _ofd(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, READER_PIN_BASE, limit)
        if t == fcntl.F_UNLCK:
            break
        found = max(start - READER_PIN_BASE, 0)
        limit = found
    return found
