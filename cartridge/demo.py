"""A guided tour: build a sample archive from generated data and exercise the public API.

    python -m cartridge demo [PATH]
    >>> from cartridge.demo import run_demo; run_demo("/tmp/demo.cart")

Everything is generated locally (seeded, no network). Each step checks its result against a
plain dict model and raises DemoError if the archive disagrees.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager

import numpy as np

import cartridge

from .errors import ReadOnlyError
from .terminal import safe_message

N_TEXT = 240            # small text files in nested directories
N_JSON = 60             # small JSON documents
N_ARRAYS = 12           # numpy arrays saved with np.save
LARGE_SIZE = 8 << 20    # one large file written by streaming
STREAM_CHUNK = 256 << 10


class DemoError(RuntimeError):
    """The archive did not hold what the demo put in (a bug worth reporting)."""


class _Rollback(Exception):
    """Raised on purpose inside a transaction to show that it rolls back."""


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise DemoError(what)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _generate(rng: np.random.Generator) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """Small files (path -> bytes) and numpy arrays (path -> array, stored as .npy bytes)."""
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
             "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
             "sierra", "tango", "uniform", "victor", "whiskey", "xray"]
    files: dict[str, bytes] = {}
    for i in range(N_TEXT):
        section, topic = i % 6, (i // 6) % 5
        n = int(rng.integers(5, 120))
        text = " ".join(words[j] for j in rng.integers(0, len(words), n))
        files[f"/docs/section{section}/topic{topic}/note{i:03d}.txt"] = f"# note {i}\n{text}\n".encode()
    for i in range(N_JSON):
        doc = {"id": i, "name": f"record-{i}", "tags": [words[j] for j in rng.integers(0, 24, 3)],
               "score": round(float(rng.random()), 6), "nested": {"level": i % 4, "ok": bool(i % 2)}}
        files[f"/data/records/{i // 20:02d}/record{i:03d}.json"] = json.dumps(doc, indent=1).encode()
    files["/README.txt"] = b"A cartridge demo archive built from generated data.\n"
    files["/empty.bin"] = b""
    arrays: dict[str, np.ndarray] = {}
    for i in range(N_ARRAYS):
        shape = (int(rng.integers(8, 64)), int(rng.integers(8, 64)))
        dtype = (np.float32, np.float64, np.int16, np.uint8)[i % 4]
        arr = (rng.random(shape) * 100).astype(dtype)
        arrays[f"/blobs/arrays/array{i:02d}.npy"] = arr
    return files, arrays


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _state(cart) -> list[tuple[str, int, str | None]]:
    return [(i.path, i.size, i.checksum) for i in cart.scan("/")]


def run_demo(path: str | os.PathLike | None = None, out=None, *, overwrite: bool = False) -> dict:
    """Build a sample archive at `path` (default: in a temporary directory, removed afterwards),
    exercise the API on it and print a short summary to `out`. Returns the numbers shown.
    Refuses to replace an existing file unless overwrite=True."""
    out = sys.stdout if out is None else out
    if path is None:      # a throwaway archive: built, checked, then removed
        with tempfile.TemporaryDirectory(prefix="cartridge-demo-") as tmp:
            result = run_demo(os.path.join(tmp, "demo.cart"), out)
        print("(the archive lived in a temporary directory, now removed; "
              "give a PATH to keep it: cartridge demo PATH)", file=out)
        return result
    path = os.fspath(path)
    timings: dict[str, float] = {}

    @contextmanager
    def timed(step: str):
        t0 = time.perf_counter()
        yield
        timings[step] = round((time.perf_counter() - t0) * 1000, 2)

    def say(msg: str) -> None:
        print(safe_message(msg), file=out)

    rng = np.random.default_rng(20240601)
    files, arrays = _generate(rng)
    model = dict(files)
    model.update((p, _npy_bytes(a)) for p, a in arrays.items())
    say(f"cartridge demo: {path}")

    with cartridge.open(path, "w" if overwrite else "x", sync="normal") as cart:
        # 1. many small files and the .npy blobs, in one transaction
        with timed("write small files"), cart.transaction():
            for p, data in model.items():
                cart.write(p, data)
            cart.mkdir("/scratch/empty-dir", parents=True)
        small_bytes = sum(len(v) for v in model.values())
        say(f"  wrote {len(model)} small files ({_human(small_bytes)}) in one transaction"
            f"  [{timings['write small files']:.1f} ms]")

        # 2. one large file, streamed in chunks (never whole in memory on the write side)
        large_path = "/blobs/large/stream.bin"
        sha = hashlib.sha256()
        stream_rng = np.random.default_rng(7)
        with timed("stream large file"), cart.open(large_path, "wb") as f:
            left = LARGE_SIZE
            while left:
                chunk = stream_rng.bytes(min(STREAM_CHUNK, left))
                sha.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        mib_s = LARGE_SIZE / (1 << 20) / max(timings["stream large file"] / 1000, 1e-9)
        say(f"  streamed {_human(LARGE_SIZE)} into {large_path}"
            f"  [{timings['stream large file']:.1f} ms, {mib_s:.0f} MiB/s]")

        # 3. read everything back and compare
        with timed("read back and compare"):
            for p, data in model.items():
                _check(cart.read(p) == data, f"read-back mismatch at {p}")
            for p, arr in arrays.items():
                back = np.load(io.BytesIO(cart.read(p)), allow_pickle=False)
                _check(back.dtype == arr.dtype and np.array_equal(back, arr), f"array mismatch at {p}")
            back_sha = hashlib.sha256()
            with cart.open(large_path, "rb") as f:
                while True:
                    block = f.read(STREAM_CHUNK)
                    if not block:
                        break
                    back_sha.update(block)
            _check(back_sha.digest() == sha.digest(), "streamed large file reads back differently")
        say(f"  read back {len(model) + 1} files, all identical"
            f"  [{timings['read back and compare']:.1f} ms]")

        # 4. ranged reads (one inside, one running past the end)
        with timed("ranged read"):
            again = np.random.default_rng(7)
            whole = b"".join(again.bytes(min(STREAM_CHUNK, LARGE_SIZE - o))
                             for o in range(0, LARGE_SIZE, STREAM_CHUNK))
            off = 3_000_001
            _check(cart.read(large_path, offset=off, size=10_000) == whole[off:off + 10_000],
                   "ranged read mismatch")
            tail = cart.read(large_path, offset=LARGE_SIZE - 100, size=4096)
            _check(tail == whole[-100:], "ranged read past EOF should come back short")
            del whole
        say(f"  ranged reads: 10000 bytes at offset {off}, and a read past EOF returned"
            f" {len(tail)} bytes  [{timings['ranged read']:.1f} ms]")

        # 5. rename a directory tree (atomic)
        moved = [p for p in model if p.startswith("/docs/section5/")]
        with timed("rename directory"):
            cart.rename("/docs/section5", "/archive/old-section5")
        for p in moved:
            model["/archive/old-section5/" + p[len("/docs/section5/"):]] = model.pop(p)
        _check(not cart.exists("/docs/section5"), "renamed directory still exists")
        _check(cart.isdir("/archive/old-section5"), "renamed directory missing")
        say(f"  renamed /docs/section5 -> /archive/old-section5 ({len(moved)} files)"
            f"  [{timings['rename directory']:.1f} ms]")

        # 6. delete some files and a whole tree
        doomed = sorted(p for p in model if p.startswith("/docs/"))[::7]
        with timed("delete"):
            for p in doomed:
                cart.delete(p)
            cart.delete("/data/records/02", recursive=True)
        for p in doomed:
            del model[p]
        tree = [p for p in model if p.startswith("/data/records/02/")]
        for p in tree:
            del model[p]
        say(f"  deleted {len(doomed)} files and /data/records/02 ({len(tree)} files)"
            f"  [{timings['delete']:.1f} ms]")

        # 7. a transaction that fails on purpose: nothing of it may survive
        before = _state(cart)
        with timed("rolled-back transaction"):
            try:
                with cart.transaction():
                    cart.write("/docs/never.txt", b"this write is rolled back")
                    cart.delete("/README.txt")
                    cart.rename("/data", "/data-renamed")
                    raise _Rollback()
            except _Rollback:
                pass
        after = _state(cart)
        _check(after == before, "a rolled-back transaction changed the archive")
        _check(not cart.exists("/docs/never.txt") and cart.exists("/README.txt"),
               "a rolled-back transaction left traces")
        say(f"  transaction with write+delete+rename raised on purpose: rolled back, "
            f"{len(after)} files unchanged  [{timings['rolled-back transaction']:.1f} ms]")

        # 8. scan by prefix, listdir, walk, stat
        with timed("scan/listdir/walk"):
            scanned = list(cart.scan("/docs/section1/"))
            want = sorted(p for p in model if p.startswith("/docs/section1/"))
            _check([i.path for i in scanned] == want, "scan('/docs/section1/') disagrees")
            top = cart.listdir("/")
            ndirs = nfiles = 0
            for _d, dirs, fnames in cart.walk("/"):
                ndirs += len(dirs)
                nfiles += len(fnames)
            _check(nfiles == len(model) + 1, f"walk found {nfiles} files, expected {len(model) + 1}")
        say(f"  scan('/docs/section1/') -> {len(scanned)} files, "
            f"{_human(sum(i.size for i in scanned))}; listdir('/') -> {top}")
        say(f"  walk('/') -> {ndirs} directories, {nfiles} files  [{timings['scan/listdir/walk']:.1f} ms]")
        st = cart.stat(large_path)
        _check(st.size == LARGE_SIZE, "stat size of the large file is wrong")
        say(f"  stat {large_path}: size={st.size} checksum={st.checksum}")

        # 9. info and a deep verify
        info = cart.info()
        with timed("verify"):
            report = cart.verify()
        _check(report.ok, "verify found problems: " + "; ".join(report.problems))
        say(f"  info: {info['files']} files, {info['directories']} explicit directories, "
            f"{_human(info['total_bytes'])} of content in a {_human(info['file_size'])} file")
        say(f"  verify (deep): OK, {report.files_checked} files / {report.bytes_checked} bytes checked"
            f"  [{timings['verify']:.1f} ms]")

    # 10. reopen read-only: the data is still there and writes are refused
    with timed("reopen read-only"), cartridge.open(path, "r") as ro:
        _check(ro.read("/README.txt") == model["/README.txt"], "reopened archive lost data")
        _check(len(list(ro.scan("/"))) == len(model) + 1, "reopened archive has a different file count")
        quick = ro.verify(deep=False)
        _check(quick.ok, "quick verify after reopen failed")
        try:
            ro.write("/nope.txt", b"x")
        except ReadOnlyError:
            refused = True
        else:
            refused = False
        _check(refused, "a read-only handle accepted a write")
    say(f"  reopened read-only: data intact, quick verify OK, writes refused"
        f"  [{timings['reopen read-only']:.1f} ms]")

    total_ms = round(sum(timings.values()), 1)
    total_bytes = sum(len(v) for v in model.values()) + LARGE_SIZE
    say(f"done: {len(model) + 1} files, {_human(total_bytes)} in {path} "
        f"({_human(os.path.getsize(path))} on disk), {total_ms:.0f} ms, verify OK")
    return {
        "path": path,
        "files": len(model) + 1,
        "directories": ndirs,
        "bytes": total_bytes,
        "file_size": os.path.getsize(path),
        "verify_ok": True,
        "timings_ms": timings,
        "total_ms": total_ms,
    }
