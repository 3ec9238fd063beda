"""Streaming file objects over archive members: "rb", "wb", "ab" and "r+b".

Readers pin the state they opened, so a file replaced meanwhile keeps reading as it was.
Writers keep at most a few modified 64 KiB chunks in memory and put the rest on fresh pages that
no committed state references; their new content becomes visible atomically at close(), as one
commit (or as a step of the open transaction). Closing without close() (garbage collection or an
exception inside `with`) discards what was written.
"""
from __future__ import annotations

import errno
import io
import operator
import os
from collections.abc import Callable

import numpy as np

from . import _handle as H
from . import namespace as N
from . import paths as P
from .content import byte_view, chunk_len, file_meta, publish_file
from .errors import ClosedError, PathIsDirectoryError
from .format import CHUNK_SIZE, KIND_FILE, PAGE_SIZE, STORE_EMPTY, STORE_INLINE, STORE_PACKED
from .iam import actions as A
from .records import Record, max_payload

STREAM_MODES = ("rb", "wb", "ab", "r+b")
DIRTY_BUDGET = 16          # chunks (1 MiB) held in memory before they go to pages
HOLE_FLUSH = 128           # chunks (8 MiB) of a hole filled at close() before they go to pages


def open_stream(cart, path: str, mode: str, *, perm: int | None = None,
                mtime: float | None = None) -> CartReader | CartWriter:
    """Cartridge.open(): a stream on member `path` of handle `cart`; a write stream publishes
    with permission bits `perm` and `mtime` (content.file_meta) when given."""
    if mode not in STREAM_MODES:
        raise ValueError(f"stream mode must be one of {STREAM_MODES} (binary only), not {mode!r}")
    meta = file_meta(perm, mtime)
    if mode == "rb" and meta != (None, None):
        raise ValueError("perm and mtime are for write streams, not 'rb'")
    with H.lock(cart):
        if mode == "rb":
            eng = H.ready(cart)
            p = P.normalize_file(path)
            rec = N.file_record(eng, p)
            return CartReader(cart, p, rec)
        eng = H.writer(cart)
        p = P.normalize_file(path)
        key = P.to_key(p)
        old = eng.get(key)
        if old is None:
            N.check_parents(eng, p)
            if N.implicit_dir(eng, key):
                raise PathIsDirectoryError(f"{p} is a directory")
            if mode == "r+b":
                N.file_record(eng, p)     # raises NotFoundError
        elif old.kind != KIND_FILE:
            raise PathIsDirectoryError(f"{p} is a directory")
        return CartWriter(cart, p, old, mode, meta)


# No file can be larger than the archive's address space: its bytes live below the lock byte
# at 2**62 (docs/FORMAT.md §9). A write or truncate past it is a ValueError, not an overflow.
MAX_FILE_SIZE = 1 << 62


class _Base(io.RawIOBase):
    principal: str | None = None     # the principal handle that opened it (the operation hook)
    mode: str                        # "rb", "wb", "ab" or "r+b" (set by each subclass)

    def __init__(self, cart, path: str):
        super().__init__()
        self._cart = cart
        self._lock = H.lock(cart)
        self._eng = eng = H.engine(cart)
        self.name = path
        self._pos = 0
        self._gen = eng.root.generation
        eng.pins[self._gen] += 1
        eng.sync_pins()
        if eng.allocator is not None:
            eng.allocator.hold_frees = True
        H.add_stream(cart, self)

    def _unpin(self) -> None:
        with self._lock:
            self._unpin_locked()

    def _unpin_locked(self) -> None:
        eng = self._eng
        eng.pins[self._gen] -= 1
        if eng.pins[self._gen] <= 0:
            del eng.pins[self._gen]
            if not self._cart.closed:
                eng.sync_pins()
        H.discard_stream(self._cart, self)
        if eng.allocator is not None and not H.streams(self._cart):
            eng.allocator.hold_frees = False

    def _check(self) -> None:
        if self.closed:
            raise ClosedError(f"{self.name}: stream is closed")
        if self._cart.closed:
            raise ClosedError(f"{self.name}: archive is closed")

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check()
        offset = operator.index(offset)         # as io's files: a float offset is a TypeError
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size() + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def _size(self) -> int:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<cartridge stream {self.name!r} mode={self.mode!r}>"


class CartReader(_Base):
    """A read-only view of one committed version of a file."""

    mode = "rb"

    def __init__(self, cart, path: str, rec: Record):
        super().__init__(cart, path)
        self._rec = rec
        self.nread = 0           # bytes read so far (the operation hook's size)

    def readable(self) -> bool:
        return True

    def _size(self) -> int:
        return self._rec.size

    def readinto(self, buffer) -> int:
        self._check()
        with self._lock:
            rec = self._rec
            if rec.storage == STORE_EMPTY or self._pos >= rec.size:
                return 0
            n = self._eng.content.readinto(rec, self._pos, buffer, self.name)
        self._pos += n
        self.nread += n
        return n

    def read(self, size: int = -1) -> bytes:
        self._check()
        with self._lock:
            rec = self._rec
            if rec.storage == STORE_EMPTY or self._pos >= rec.size:
                return b""
            data = self._eng.content.read(rec, self._pos, size if size is not None else -1,
                                                self.name)
        self._pos += len(data)
        self.nread += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        if not self.closed:
            self._unpin()
        super().close()


class CartWriter(_Base):
    """A writable stream; publishes the new content at close()."""

    def __init__(self, cart, path: str, old: Record | None, mode: str,
                 meta: tuple[int | None, int | None] = (None, None)):
        super().__init__(cart, path)
        self.mode = mode
        self._meta = meta         # (st_mode, mtime_ns) set at publish; None: the defaults
        self._old = old
        self._key = P.to_key(path)
        eng = self._eng
        if mode == "wb" or old is None:
            self._base = None
            self._size_ = 0
        else:
            # a packed file (FORMAT §14) is read whole and then worked on like inline content
            self._base = old if old.storage != STORE_PACKED else eng.content.inline_view(old, path)
            self._size_ = old.size
        if mode == "ab":
            self._pos = self._size_
        self._dirty: dict[int, bytearray] = {}       # chunk index -> bytes being modified
        self._placed: dict[int, tuple[int, int]] = {}  # chunk index -> (start page, checksum)
        self._runs: dict[int, tuple[int, int]] = {}    # chunk index -> (start page, n pages)
        self._base_map = None
        if self._base is not None and self._base.storage not in (STORE_EMPTY, STORE_INLINE):
            self._base_map = eng.content.chunk_map(self._base, path)
        self._published = False
        # called with the size at publish, e.g. a policy check; raising cancels
        self.before_publish: Callable[[int], None] | None = None

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return self.mode == "r+b"

    def _size(self) -> int:
        return self._size_

    # -- chunk access -----------------------------------------------------------------------
    def _chunk_len(self, i: int) -> int:
        """Length chunk i has in the current content (0 beyond the end)."""
        return max(0, min(CHUNK_SIZE, self._size_ - i * CHUNK_SIZE))

    def _chunk_bytes(self, i: int) -> bytes:
        """Current content of chunk i (empty beyond the end)."""
        ln = self._chunk_len(i)
        if i in self._dirty:
            buf = self._dirty[i]
            if len(buf) < ln:          # the file grew past a partly written chunk: zeros
                buf.extend(bytes(ln - len(buf)))
            return bytes(buf[:ln])
        if ln == 0:
            return b""
        eng = self._eng
        if i in self._placed:
            start, csum = self._placed[i]
            raw = eng.pager.read_run(start, -(-ln // PAGE_SIZE))[:ln]
            return raw
        base = self._base
        if base is None:
            return bytes(ln)
        data = eng.content.read(base, i * CHUNK_SIZE, CHUNK_SIZE, self.name) if \
            i * CHUNK_SIZE < base.size else b""
        return data + bytes(ln - len(data))

    def _flush_chunks(self, indices: list[int]) -> None:
        """Put modified chunks on fresh pages, contiguous runs of indices in one write each."""
        eng = self._eng
        indices = sorted(indices)
        for i in indices:
            buf = self._dirty[i]
            ln = self._chunk_len(i)
            if len(buf) < ln:
                buf.extend(bytes(ln - len(buf)))
            elif len(buf) > ln:
                del buf[ln:]
        k = 0
        while k < len(indices):
            j = k
            while (j + 1 < len(indices) and indices[j + 1] == indices[j] + 1
                   and len(self._dirty[indices[j]]) == CHUNK_SIZE):
                j += 1
            group = indices[k:j + 1]
            data = b"".join(self._dirty[i] for i in group)
            cmap = eng.content.write_chunks(data, owner=self)
            for n, i in enumerate(group):
                ln = len(self._dirty[i])
                self._placed[i] = (int(cmap[n, 0]), int(cmap[n, 1]))
                self._runs[i] = (int(cmap[n, 0]), -(-ln // PAGE_SIZE))
                del self._dirty[i]
            k = j + 1

    def write(self, data) -> int:
        self._check()
        view = byte_view(data)
        n = len(view)
        if n == 0:
            return 0
        with self._lock:
            if self.mode == "ab":
                self._pos = self._size_
            pos = self._pos
            end = pos + n
            if end > MAX_FILE_SIZE:
                raise ValueError(f"a file cannot grow past {MAX_FILE_SIZE} bytes")
            off = 0
            while pos < end:
                i = pos // CHUNK_SIZE
                lo = pos - i * CHUNK_SIZE
                take = min(CHUNK_SIZE - lo, end - pos)
                buf = self._dirty.get(i)
                if buf is None:
                    if lo == 0 and take == CHUNK_SIZE:
                        buf = bytearray(view[off:off + take])
                        self._dirty[i] = buf
                        pos += take
                        off += take
                        self._size_ = max(self._size_, pos)
                        self._maybe_flush(i)
                        continue
                    buf = bytearray(self._chunk_bytes(i))
                    self._dirty[i] = buf
                if len(buf) < lo:
                    buf.extend(bytes(lo - len(buf)))
                buf[lo:lo + take] = view[off:off + take]
                pos += take
                off += take
                self._size_ = max(self._size_, pos)
                self._maybe_flush(i)
            self._pos = end
        return n

    def _maybe_flush(self, current: int) -> None:
        if len(self._dirty) < DIRTY_BUDGET:
            return
        full = [i for i, b in self._dirty.items() if len(b) == CHUNK_SIZE and i != current]
        if full:
            self._flush_chunks(full)

    def readinto(self, buffer) -> int:
        self._check()
        if self.mode != "r+b":
            raise io.UnsupportedOperation("stream not opened for reading")
        out = memoryview(buffer).cast("B")
        with self._lock:
            got = 0
            while got < len(out) and self._pos < self._size_:
                i = self._pos // CHUNK_SIZE
                lo = self._pos - i * CHUNK_SIZE
                data = self._chunk_bytes(i)
                take = min(len(data) - lo, len(out) - got)
                if take <= 0:
                    break
                out[got:got + take] = data[lo:lo + take]
                got += take
                self._pos += take
        return got

    def read(self, size: int | None = -1) -> bytes:
        """RawIOBase.read, where a size past the end, however large, means the rest."""
        if size is None or size < 0:
            return self.readall()
        self._check()
        return super().read(min(size, max(self._size_ - self._pos, 0)))

    def truncate(self, size: int | None = None) -> int:
        self._check()
        size = self._pos if size is None else operator.index(size)
        if size < 0:
            raise ValueError("negative size")
        if size > MAX_FILE_SIZE:
            raise ValueError(f"a file cannot grow past {MAX_FILE_SIZE} bytes")
        with self._lock:
            if size > self._size_:
                self._pos, keep = size - 1, self._pos
                self.write(b"\0")
                self._pos = keep
                return size
            last = (size - 1) // CHUNK_SIZE if size else -1
            for i in [i for i in self._dirty if i > last]:
                del self._dirty[i]
            for i in [i for i in self._placed if i > last]:
                del self._placed[i], self._runs[i]
            if size % CHUNK_SIZE and last >= 0:
                buf = bytearray(self._chunk_bytes(last)[:size - last * CHUNK_SIZE])
                self._placed.pop(last, None)
                self._runs.pop(last, None)
                self._dirty[last] = buf
            self._size_ = size
        return size

    # -- publishing -------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._cart.closed:
                self._publish()
        finally:
            self._discard()
            super().close()

    def _discard(self) -> None:
        """Drop what the stream allocated without publishing it (streams.abandon)."""
        with self._lock:
            self._discard_locked()

    def _discard_locked(self) -> None:
        if not self._published and not self._cart.closed:
            alloc = self._eng.allocator
            if alloc is not None:
                alloc.abandon(self)
        if not self.closed:
            self._unpin()

    def _publish(self) -> None:
        cart = self._cart
        with self._lock:
            eng = H.writer(cart)
            size = self._size_
            self._check_room(eng, size)
            if self._dirty:
                self._flush_chunks(list(self._dirty))
            n_chunks = -(-size // CHUNK_SIZE)
            cmap = np.empty((n_chunks, 2), dtype=np.uint64)
            base_map = self._base_map
            base_size = 0
            current = eng.get(self._key)
            if base_map is not None:
                assert self._base is not None       # the map is the base's (both set in __init__)
                base_size = self._base.size
                if current is None or current.encode() != self._base.encode():
                    # the file was replaced, renamed or deleted meanwhile: its pages are no longer
                    # ours to share, so every untouched chunk is copied (our pin keeps them readable)
                    base_map = None
            keep_runs = []
            flushed = False
            for i in range(n_chunks):
                if i in self._placed:
                    cmap[i] = self._placed[i]
                    keep_runs.append(self._runs[i])
                elif base_map is not None and i < len(base_map) and \
                        chunk_len(size, i) == chunk_len(base_size, i):
                    cmap[i] = base_map[i]
                else:   # an untouched chunk whose length changed, or an inline base: rewrite it
                    self._dirty[i] = bytearray(self._chunk_bytes(i))
                    if len(self._dirty) >= HOLE_FLUSH:     # a long hole goes to pages as it
                        self._flush_chunks(list(self._dirty))   # is made, not all in memory
                        flushed = True
            if self._dirty or flushed:
                self._flush_chunks(list(self._dirty))
                for i in list(self._placed):
                    if i < n_chunks:
                        cmap[i] = self._placed[i]
                keep_runs = [self._runs[i] for i in sorted(self._placed) if i < n_chunks]
            if self.before_publish is not None:
                self.before_publish(size)
            # Every chunk now exists on pages; small results go inline instead.
            def free_old(old: Record, storage: int) -> None:
                keep = {int(s) for s in cmap[:, 0]} if storage not in (STORE_EMPTY, STORE_INLINE) \
                    else set()
                eng.content.free(old, self.name, keep)

            with H.change(cart):
                old = eng.get(self._key)
                if size <= max_payload(len(self._key)):
                    data = b"".join(self._chunk_bytes_final(cmap, i, size) for i in range(n_chunks))
                    eng.allocator.attach(self, [])
                    rec = publish_file(eng, self._key, old, size, data=data, free_old=free_old,
                                       mode=self._meta[0], mtime=self._meta[1])
                else:
                    eng.allocator.attach(self, keep_runs)
                    rec = publish_file(eng, self._key, old, size, cmap=cmap, free_old=free_old,
                                       mode=self._meta[0], mtime=self._meta[1])
                if H.hooks:
                    H.note(cart, checksum=rec.checksum, size=size)
                self._published = True

    def _check_room(self, eng, size: int) -> None:
        """Before a file of `size` bytes is published: the chunks it has no pages for yet (a
        hole left by seek() or truncate() past the end: there are no sparse files) must fit
        the file system, or the error a full disk gives is raised now, naming the archive,
        before anything is allocated or written (a seek to 2**61 is not a MemoryError)."""
        have = (len(self._placed) + len(self._dirty)) * CHUNK_SIZE
        if self._base_map is not None and self._base is not None:
            have += self._base.size
        need = size - have
        if need <= 1 << 30:
            return              # small: a full disk, if any, says so as the pages are written
        st = os.fstatvfs(eng.pager.fd)
        room = st.f_bavail * st.f_frsize
        if need > room:
            room += eng.allocator.stats()["free_pages"] * PAGE_SIZE
        if need > room:
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: {P.shown(self._key)} "
                          f"would need {need} more bytes, {room} are free", eng.name)

    def _chunk_bytes_final(self, cmap, i: int, size: int) -> bytes:
        ln = chunk_len(size, i)
        return self._eng.pager.read_run(int(cmap[i, 0]), -(-ln // PAGE_SIZE))[:ln]

    def __del__(self) -> None:
        # Never publish from the garbage collector: only an explicit close() does.
        try:
            if not self.closed:
                self._discard()
                io.RawIOBase.close(self)
        except Exception:
            pass

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            io.RawIOBase.close(self)
            return
        self.close()
        return



def abandon(s: CartWriter | CartReader) -> None:
    """Drop a stream without publishing it (its handle is closing after an I/O error): a
    writer's pages go back and its pin is released; a reader is closed (it holds only a pin)."""
    if isinstance(s, CartWriter):
        s._discard()
    else:
        s.close()


def _read_size(s, args: tuple, kwargs: dict, result) -> int:
    return s.nread


def _written_size(s, args: tuple, kwargs: dict, result) -> int:
    return s._size()


def _stream_path(s, args: tuple, kwargs: dict) -> tuple[str, None]:
    return s.name, None


# A stream's close is one operation of its own (even when the handle's close() closes it):
# a reader's reports the bytes actually read, a writer's publish the file's new size and checksum.
H.instrument(CartReader, lambda s: s.principal,
             {"close": H.Op(A.GET_OBJECT, _read_size, _stream_path, "stream_close")},
             archive_of=lambda s: s._cart, own=True)
H.instrument(CartWriter, lambda s: s.principal,
             {"close": H.Op(A.PUT_OBJECT, _written_size, _stream_path, "stream_close", True)},
             archive_of=lambda s: s._cart, own=True)
