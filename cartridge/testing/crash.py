"""Crash simulation for tests: record every write, truncate and sync an open archive makes, then
rebuild the file as it would be after a crash at any point.

    rec = CrashRecorder(cart)          # from here on the handle's I/O is recorded
    ... run a workload, remembering len(rec.log) after each commit returns ...
    rec.detach()
    img = rec.image(cut, "power", random.Random(1))

Models:
- "killed": the process dies after operation `cut`; every write it made survives (the OS has it).
- "power":  power is lost after operation `cut`; everything before the last sync survives; each
  write after it is independently lost, kept, or torn (some of its 512-byte sectors kept), and the
  survivors land in any order. Without an rng, every unsynced write is lost.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .. import Cartridge

from .. import _handle as H

SECTOR = 512


@dataclass(frozen=True)
class Op:
    kind: str            # "w" write, "t" truncate (set size), "s" sync
    offset: int = 0      # write offset, or the new size for "t"
    data: bytes = b""


class _RecordingFile:
    """Stands in for the `os` module as a pager's file layer; forwards and logs."""

    def __init__(self, real, fd: int, log: list[Op]):
        self._real = real
        self._fd = fd
        self._log = log

    def __getattr__(self, name):
        return getattr(self._real, name)

    def pwrite(self, fd, data, offset):
        n = self._real.pwrite(fd, data, offset)
        if fd == self._fd:
            self._log.append(Op("w", offset, bytes(memoryview(data)[:n])))
        return n

    def pwritev(self, fd, bufs, offset):
        n = self._real.pwritev(fd, bufs, offset)
        if fd == self._fd:
            self._log.append(Op("w", offset, b"".join(bytes(b) for b in bufs)[:n]))
        return n

    def ftruncate(self, fd, length):
        self._real.ftruncate(fd, length)
        if fd == self._fd:
            self._log.append(Op("t", length))

    def fdatasync(self, fd):
        self._real.fdatasync(fd)
        if fd == self._fd:
            self._log.append(Op("s"))

    fsync = fdatasync


class CrashRecorder:
    """Records the I/O of one open writable Cartridge and builds crash images from it."""

    def __init__(self, cart: Cartridge) -> None:
        self.pager = H.engine(cart).pager
        fd = self.pager.fd
        self.pager.flush_staged()
        if self.pager.sync_mode != "off":
            # the images start from the file as it is now, taken as durable: make it so (and
            # let the writer know, so that what it treats as durable is what the images keep;
            # sync="normal" may have unsynced commits)
            self.pager.sync_now()
        size = os.fstat(fd).st_size
        self.base = os.pread(fd, size, 0)
        self.log: list[Op] = []
        self._saved_io = self.pager.io
        self.pager.io = _RecordingFile(self._saved_io, fd, self.log)
        self._prefix_len = 0                      # image() cache: base + log[:_prefix_len]
        self._prefix = bytearray(self.base)

    def detach(self) -> None:
        """Stop recording (the handle goes on with the real file layer)."""
        self.pager.io = self._saved_io

    def cuts(self) -> range:
        """Every crash point: after 0, 1, ..., len(log) operations."""
        return range(len(self.log) + 1)

    def durable_point(self, cut: int, model: str = "killed") -> int:
        """How many leading operations of the first `cut` surely reach the file: all of them
        for "killed", up to and including the last sync for "power". Two power-cut images
        with the same durable point and no rng are the same image."""
        if model == "killed":
            return cut
        for i in range(min(cut, len(self.log)) - 1, -1, -1):
            if self.log[i].kind == "s":
                return i + 1
        return 0

    def _durable_image(self, n: int) -> bytearray:
        """base + log[:n] (a fresh copy), built incrementally for ascending n."""
        if n < self._prefix_len:
            self._prefix_len, self._prefix = 0, bytearray(self.base)
        for op in self.log[self._prefix_len:n]:
            _apply(self._prefix, op)
        self._prefix_len = n
        return bytearray(self._prefix)

    def image(self, cut: int, model: str = "killed", rng: random.Random | None = None) -> bytes:
        """The file after a crash following the first `cut` operations."""
        if model not in ("killed", "power"):
            raise ValueError(f"model must be 'killed' or 'power', not {model!r}")
        n = self.durable_point(cut, model)
        loose = [op for op in self.log[n:cut] if op.kind != "s"]
        img = self._durable_image(n)
        if loose and rng is not None:
            survivors = []
            for op in loose:
                fate = rng.random()
                if fate < 1 / 3:
                    continue                          # lost
                if fate < 2 / 3 or op.kind == "t":
                    survivors.append(op)              # kept whole
                else:
                    survivors.extend(_torn(op, rng))  # some sectors made it
            rng.shuffle(survivors)                    # in any order
            for op in survivors:
                _apply(img, op)
        return bytes(img)


def _apply(img: bytearray, op: Op) -> None:
    if op.kind == "t":
        if op.offset < len(img):
            del img[op.offset:]
        else:
            img.extend(bytes(op.offset - len(img)))
    elif op.kind == "w":
        end = op.offset + len(op.data)
        if len(img) < end:
            img.extend(bytes(end - len(img)))
        img[op.offset:end] = op.data


def _torn(op: Op, rng: random.Random) -> list[Op]:
    """The sectors of a write that reached the disk (a random, possibly empty, subset)."""
    out = []
    first = op.offset - op.offset % SECTOR
    for s in range(first, op.offset + len(op.data), SECTOR):
        lo, hi = max(s, op.offset), min(s + SECTOR, op.offset + len(op.data))
        if rng.random() < 0.5:
            out.append(Op("w", lo, op.data[lo - op.offset:hi - op.offset]))
    return out
