"""A guided tour: build a sample archive from generated data and exercise every capability.

    python -m cartridge demo [PATH]
    >>> from cartridge.demo import run_demo; run_demo("/tmp/demo.cart")

Everything is generated locally (seeded, no network). The tour is the list STEPS of Step(title,
function, writable): each function takes the Tour (the open archive, the dict model of what it
should hold, the generated data) and returns one line for the report, after checking its result
against the model (DemoError if the archive disagrees). A new capability adds one step:

    def _step_snapshot(t: Tour) -> str:
        ...                                   # use t.cart (writable steps) or t.path
        return "snapshot taken and restored: 266 files identical"
    STEPS.insert(STEPS.index(VERIFY_STEP), Step("snapshot", _step_snapshot))

Writable steps run in order on one handle opened "w"/"x"; then the read-only steps run on
handles they open themselves (t.path). The whole tour takes well under a second here.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np

import cartridge

from .errors import AccessDeniedError, AlreadyExistsError, ReadOnlyError
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


class Tour:
    """What the steps share: the archive, its expected content and the generated data."""

    def __init__(self, path: str, files: dict[str, bytes], arrays: dict[str, np.ndarray]):
        self.path = path
        self.files = files
        self.arrays = arrays
        self.model: dict[str, bytes] = dict(files)          # path -> bytes the archive must hold
        self.model.update((p, _npy_bytes(a)) for p, a in arrays.items())
        self.cart: Any = None                                # the writable handle (writable steps)
        self.large_path = "/blobs/large/stream.bin"
        self.large_sha = b""
        self.extra: dict[str, Any] = {}                      # numbers the report returns

    @property
    def n_files(self) -> int:
        """Files the archive holds: the model and the streamed large file."""
        return len(self.model) + 1


@dataclass
class Step:
    title: str
    run: Callable[[Tour], str]
    writable: bool = True          # runs on the tour's writable handle (else opens its own)
    ms: float = field(default=0.0, compare=False)


def _step_small_files(t: Tour) -> str:
    cart = t.cart
    with cart.transaction():
        for p, data in t.model.items():
            cart.write(p, data)
        cart.mkdir("/scratch/empty-dir", parents=True)
    small = sum(len(v) for v in t.model.values())
    return f"wrote {len(t.model)} small files ({_human(small)}) in one transaction"


def _step_stream(t: Tour) -> str:
    sha = hashlib.sha256()
    rng = np.random.default_rng(7)
    t0 = time.perf_counter()
    with t.cart.open(t.large_path, "wb") as f:      # never whole in memory on the write side
        left = LARGE_SIZE
        while left:
            chunk = rng.bytes(min(STREAM_CHUNK, left))
            sha.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    t.large_sha = sha.digest()
    mib_s = LARGE_SIZE / (1 << 20) / max(time.perf_counter() - t0, 1e-9)
    return f"streamed {_human(LARGE_SIZE)} into {t.large_path} ({mib_s:.0f} MiB/s)"


def _step_read_back(t: Tour) -> str:
    cart = t.cart
    for p, data in t.model.items():
        _check(cart.read(p) == data, f"read-back mismatch at {p}")
    for p, arr in t.arrays.items():
        back = np.load(io.BytesIO(cart.read(p)), allow_pickle=False)
        _check(back.dtype == arr.dtype and np.array_equal(back, arr), f"array mismatch at {p}")
    back_sha = hashlib.sha256()
    with cart.open(t.large_path, "rb") as f:
        while True:
            block = f.read(STREAM_CHUNK)
            if not block:
                break
            back_sha.update(block)
    _check(back_sha.digest() == t.large_sha, "streamed large file reads back differently")
    return f"{t.n_files} files (and {len(t.arrays)} numpy arrays), all identical"


def _step_ranged(t: Tour) -> str:
    again = np.random.default_rng(7)
    whole = b"".join(again.bytes(min(STREAM_CHUNK, LARGE_SIZE - o))
                     for o in range(0, LARGE_SIZE, STREAM_CHUNK))
    off = 3_000_001
    _check(t.cart.read(t.large_path, offset=off, size=10_000) == whole[off:off + 10_000],
           "ranged read mismatch")
    tail = t.cart.read(t.large_path, offset=LARGE_SIZE - 100, size=4096)
    _check(tail == whole[-100:], "ranged read past EOF should come back short")
    return (f"10000 bytes at offset {off}, and a read past EOF returned "
            f"{len(tail)} bytes")


def _step_rename(t: Tour) -> str:
    moved = [p for p in t.model if p.startswith("/docs/section5/")]
    t.cart.rename("/docs/section5", "/archive/old-section5")
    for p in moved:
        t.model["/archive/old-section5/" + p[len("/docs/section5/"):]] = t.model.pop(p)
    _check(not t.cart.exists("/docs/section5"), "renamed directory still exists")
    _check(t.cart.isdir("/archive/old-section5"), "renamed directory missing")
    return f"renamed /docs/section5 -> /archive/old-section5 ({len(moved)} files, atomically)"


def _step_delete(t: Tour) -> str:
    doomed = sorted(p for p in t.model if p.startswith("/docs/"))[::7]
    for p in doomed:
        t.cart.delete(p)
    t.cart.delete("/data/records/02", recursive=True)
    for p in doomed:
        del t.model[p]
    tree = [p for p in t.model if p.startswith("/data/records/02/")]
    for p in tree:
        del t.model[p]
    return f"deleted {len(doomed)} files and /data/records/02 ({len(tree)} files)"


def _step_rollback(t: Tour) -> str:
    cart = t.cart
    before = _state(cart)
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
    return (f"a transaction (write + delete + rename) raised on purpose: rolled back, "
            f"{len(after)} files unchanged")


def _step_listing(t: Tour) -> str:
    cart = t.cart
    scanned = list(cart.scan("/docs/section1/"))
    want = sorted(p for p in t.model if p.startswith("/docs/section1/"))
    _check([i.path for i in scanned] == want, "scan('/docs/section1/') disagrees")
    top = cart.listdir("/")
    ndirs = nfiles = 0
    for _d, dirs, fnames in cart.walk("/"):
        ndirs += len(dirs)
        nfiles += len(fnames)
    _check(nfiles == t.n_files, f"walk found {nfiles} files, expected {t.n_files}")
    st = cart.stat(t.large_path)
    _check(st.size == LARGE_SIZE, "stat size of the large file is wrong")
    t.extra["directories"] = ndirs
    return (f"scan('/docs/section1/') -> {len(scanned)} files; listdir('/') -> {len(top)} "
            f"entries; walk('/') -> {ndirs} directories, {nfiles} files; "
            f"stat {t.large_path}: checksum {st.checksum}")


def _step_sqlite(t: Tour) -> str:
    cart = t.cart
    conn = cart.sqlite("/db/app.db")
    try:
        conn.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, path TEXT, size INTEGER)")
        rows = [(p, len(d)) for p, d in sorted(t.files.items()) if p.endswith(".txt")]
        with cart.transaction():        # the database commit and a file write: one archive commit
            with conn:
                conn.executemany("INSERT INTO notes(path, size) VALUES(?, ?)", rows)
            cart.write("/db/loaded.txt", f"{len(rows)} rows\n".encode())
        n, total = conn.execute("SELECT count(*), sum(size) FROM notes").fetchone()
    finally:
        conn.close()
    _check((n, total) == (len(rows), sum(r[1] for r in rows)), "SQLite query disagrees")
    t.model["/db/loaded.txt"] = f"{len(rows)} rows\n".encode()
    t.model["/db/app.db"] = cart.read("/db/app.db")
    with tempfile.TemporaryDirectory(prefix="cartridge-demo-") as tmp:
        plain = os.path.join(tmp, "app.db")
        cart.sqlite_export("/db/app.db", plain)
        with sqlite3.connect(plain) as lite:       # the exported copy: plain stdlib sqlite3
            again = lite.execute("SELECT count(*) FROM notes").fetchone()[0]
        lite.close()
    _check(again == n, "the exported database disagrees")
    return (f"/db/app.db got {n} rows in the same commit as /db/loaded.txt; "
            f"exported copy read by the stdlib sqlite3: {again} rows")


def _step_policy(t: Tour) -> str:
    cart = t.cart
    cart.set_policy("readers", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["cart:GetObject", "cart:List"], "Resource": "/docs/*"}]})
    ann = cart.as_principal("ann")
    readable = sorted(p for p in t.model if p.startswith("/docs/"))[0]
    _check(ann.read(readable) == t.model[readable], "an allowed read failed")
    denied = []
    for what, call in (("write /docs/x.txt", lambda: ann.write("/docs/x.txt", b"no")),
                       ("read /README.txt", lambda: ann.read("/README.txt"))):
        try:
            call()
        except AccessDeniedError:
            denied.append(what)
    _check(len(denied) == 2, f"a policy failed to deny: only {denied} were denied")
    _check(not cart.exists("/docs/x.txt"), "a denied write left a file")
    decision = cart.check_access("ann", "cart:DeleteObject", readable).decision.value
    _check(decision != "Allow", "check_access allowed an action no statement allows")
    return (f"'readers' lets ann read {readable}; denied: {', '.join(denied)}; "
            f"check_access(cart:DeleteObject) -> {decision}")


def _step_verify(t: Tour) -> str:
    info = t.cart.info()
    report = t.cart.verify()
    _check(report.ok, "verify found problems: " + "; ".join(report.problems))
    t.extra["verify_ok"] = True
    return (f"info: {info['files']} files, {_human(info['total_bytes'])} of content in a "
            f"{_human(info['file_size'])} file; verify (deep): OK, {report.files_checked} "
            f"files / {report.bytes_checked} bytes checked")


def _step_reopen(t: Tour) -> str:
    with cartridge.open(t.path, "r") as ro:
        _check(ro.read("/README.txt") == t.model["/README.txt"], "reopened archive lost data")
        _check(len(list(ro.scan("/"))) == t.n_files, "reopened archive has a different file count")
        _check(ro.verify(deep=False).ok, "quick verify after reopen failed")
        try:
            ro.write("/nope.txt", b"x")
        except ReadOnlyError:
            refused = True
        else:
            refused = False
        _check(refused, "a read-only handle accepted a write")
    return "reopened: data intact, quick verify OK, writes refused"


def _step_snapshot(t: Tour) -> str:
    cart = t.cart
    before = _state(cart)
    info = cart.snapshot("demo-before-cleanup")
    doomed = sorted(p for p in t.model if p.startswith("/docs/"))
    cart.delete("/docs", recursive=True)
    _check(not cart.exists("/docs"), "delete of /docs left files")
    with cart.at(info.name) as old:
        _check(old.read(doomed[0]) == t.model[doomed[0]], "the snapshot lost a file")
    cart.restore(info.name)
    _check(_state(cart) == before, "restore did not bring the files back exactly")
    cart.delete_snapshot(info.name)
    return (f"snapshot at generation {info.generation} (O(1)); deleted /docs ({len(doomed)} "
            f"files), read one back from the snapshot, restored all in one commit")


def _step_compact(t: Tour) -> str:
    cart = t.cart
    scratch = "/tmp/scratch.bin"
    cart.write(scratch, bytes(8 * 1024 * 1024))
    grown = cart.info()["file_bytes"]
    cart.delete(scratch)
    stats = cart.vacuum()
    _check(stats.file_bytes < grown, "vacuum gave nothing back after deleting 8 MiB")
    return (f"wrote and deleted 8 MiB; vacuum moved {stats.pages_moved} pages and shrank the "
            f"file {_human(grown)} -> {_human(stats.file_bytes)}")


def engram_path(path: str) -> str:
    """Where the tour of the archive PATH exports its Engram: beside it, named after it
    (x.cart -> x.eng; never PATH itself)."""
    path = os.path.abspath(path)
    stem, ext = os.path.splitext(path)
    eng = (stem if ext == ".cart" else path) + ".eng"
    return eng


def _step_engram(t: Tour) -> str:
    try:
        from .engram.demo import engram_demo_step
    except ImportError:           # the `engram` extra (lz4, zstandard, cryptography) is missing
        return "skipped: install the engram extra (pip install 'cartridge[engram]')"
    eng = engram_path(t.path)
    line = engram_demo_step(t.cart, os.path.dirname(eng), os.path.basename(eng))
    return line[len("engram: "):] if line.startswith("engram: ") else line


def _step_audit(t: Tour) -> str:
    log = t.cart.audit
    head = log.head()
    report = log.verify()
    _check(report.ok, "the audit log does not verify: " + "; ".join(report.problems))
    denied = [r for r in log.entries(result="denied")]
    _check(bool(denied), "the policy step's denials are not in the audit log")
    from .audit import verify_inclusion
    seq = denied[0].seq
    proof = log.inclusion_proof(seq, head.size)
    _check(verify_inclusion(denied[0].leaf_hash, seq, head.size, proof, head.root),
           "an inclusion proof did not verify")
    return (f"{head.size} records verified (hash chain, Merkle root "
            f"{head.root.hex()[:16]}...); {len(denied)} denials recorded; record {seq} proven "
            f"with {len(proof)} hashes")


VERIFY_STEP = Step("verify", _step_verify)
# The tour, in order. Later capabilities (audit log verified, snapshot restored, compaction,
# an Engram exported and verified) each add one step here: see the module doc.
STEPS: list[Step] = [
    Step("files", _step_small_files),
    Step("stream", _step_stream),
    Step("read back", _step_read_back),
    Step("ranged reads", _step_ranged),
    Step("rename", _step_rename),
    Step("delete", _step_delete),
    Step("transaction", _step_rollback),
    Step("listing", _step_listing),
    Step("sqlite", _step_sqlite),
    Step("policy", _step_policy),
    Step("snapshot", _step_snapshot),
    Step("compaction", _step_compact),
    Step("engram", _step_engram),
    Step("audit", _step_audit),
    VERIFY_STEP,
    Step("read-only", _step_reopen, writable=False),
]


class StepResult(NamedTuple):
    title: str
    line: str
    ms: float


def run_demo(path: str | os.PathLike | None = None, out=None, *, overwrite: bool = False,
             steps: list[Step] | None = None) -> dict:
    """Build a sample archive at `path` (default: in a temporary directory, removed afterwards),
    run the tour (`steps`, default STEPS) on it and print a short report to `out`. Returns the
    numbers shown. Its Engram step exports beside the archive (x.cart -> x.eng, engram_path).
    Refuses to replace an existing archive or Engram unless overwrite=True."""
    out = sys.stdout if out is None else out
    if path is None:      # a throwaway archive: built, checked, then removed
        with tempfile.TemporaryDirectory(prefix="cartridge-demo-") as tmp:
            result = run_demo(os.path.join(tmp, "demo.cart"), out, steps=steps)
        print("(the archive lived in a temporary directory, now removed; "
              "give a PATH to keep it: cartridge demo PATH)", file=out)
        return result
    path = os.fspath(path)
    steps = STEPS if steps is None else steps
    if not overwrite and any(s.run is _step_engram for s in steps):
        eng = engram_path(path)           # the tour writes this file too: never over a user's
        if os.path.lexists(eng):
            raise AlreadyExistsError(f"{eng} already exists (the tour exports its Engram "
                                     "there): choose another PATH, or replace both with --force")

    def say(msg: str) -> None:
        print(safe_message(msg), file=out)

    files, arrays = _generate(np.random.default_rng(20240601))
    t = Tour(path, files, arrays)
    say(f"cartridge demo: {path}")
    results: list[StepResult] = []

    def run(step: Step) -> None:
        t0 = time.perf_counter()
        line = step.run(t)
        ms = round((time.perf_counter() - t0) * 1000, 2)
        results.append(StepResult(step.title, line, ms))
        say(f"  {len(results):2d}. {step.title}: {line}  [{ms:.1f} ms]")

    with cartridge.open(path, "w" if overwrite else "x", sync="normal") as cart:
        t.cart = cart
        for step in steps:
            if step.writable:
                run(step)
    t.cart = None
    for step in steps:
        if not step.writable:
            run(step)

    total_ms = round(sum(r.ms for r in results), 1)
    total_bytes = sum(len(v) for v in t.model.values()) + LARGE_SIZE
    verified = t.extra.get("verify_ok", False)
    say(f"done: {len(results)} steps, {t.n_files} files, {_human(total_bytes)} in {path} "
        f"({_human(os.path.getsize(path))} on disk), {total_ms:.0f} ms"
        + (", verify OK" if verified else ""))
    return {
        "path": path,
        "files": t.n_files,
        "directories": t.extra.get("directories"),
        "bytes": total_bytes,
        "file_size": os.path.getsize(path),
        "verify_ok": verified,
        "steps": [r.title for r in results],
        "timings_ms": {r.title: r.ms for r in results},
        "total_ms": total_ms,
    }
