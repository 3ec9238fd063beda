"""Workloads that measure something other than time: cache hit ratios and space on disk.

Each returns a dict that perf/run.py stores next to the timings (in the results JSON's
metadata) and renders as its own table.
"""
from __future__ import annotations

import os
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np

import cartridge
from cartridge._core.arc import ARCCache, LRUCache
from cartridge._handle import engine

from .harness import perf_counter
from .workloads import FILE_MODE, MTIME, SQLAR, SQLAR_INSERT, Config, _lmdb, _sqlite

ZIPF_S = 0.99
SCAN_BURST = 1000        # scan-mixed: after every ZIPF_BURST zipfian reads, this many sweep reads
ZIPF_BURST = 3000
FILE_SIZE = 4096


def zipf_probabilities(n: int, s: float = ZIPF_S) -> np.ndarray:
    p = np.arange(1, n + 1, dtype=np.float64) ** -s
    return p / p.sum()


def zipf_trace(n_files: int, n_requests: int, scan_mixed: bool, seed: int = 7) -> np.ndarray:
    """File indices to read. Popularity ranks are shuffled over the files (the popular ones are
    not neighbours). Scan-mixed: bursts of ZIPF_BURST zipfian reads alternate with bursts of
    SCAN_BURST reads that sweep every file in path order (like a backup or `verify` running
    beside the application), so a quarter of the requests are the sweep."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_files)
    draws = perm[rng.choice(n_files, size=n_requests, p=zipf_probabilities(n_files))]
    if not scan_mixed:
        return draws
    out = []
    sweep = 0
    zi = 0
    while sum(len(x) for x in out) < n_requests:
        out.append(draws[zi:zi + ZIPF_BURST])
        zi += ZIPF_BURST
        out.append(np.arange(sweep, sweep + SCAN_BURST) % n_files)
        sweep += SCAN_BURST
        if zi >= len(draws):
            zi = 0
    return np.concatenate(out)[:n_requests]


def static_bound(n_files: int, cache_files: int) -> float:
    """Hit ratio of the best possible cache on independent zipfian requests: the `cache_files`
    most popular files always resident (no policy without foresight does better)."""
    return float(np.sort(zipf_probabilities(n_files))[::-1][:cache_files].sum())


def _use_cache(cart, cache) -> None:
    """Give an open handle a different page cache (same budget): the B-trees and the content
    store take the pager's cache when they are built."""
    eng = engine(cart)
    eng.pager.cache = cache
    eng.records.clear()
    eng._build_trees()


def zipf_hit_ratio(cfg: Config, tmp: Path, log=print) -> dict:
    """ARC against an LRU of the same byte budget, on an archive holding 10x the budget of 4 KiB
    files, read through Cartridge.read with zipfian (s=0.99) popularity, pure and scan-mixed."""
    budget = cfg.zipf_cache
    n_files = 10 * budget // FILE_SIZE
    path = tmp / "zipf.cart"
    rng = random.Random(9)
    blobs = [rng.randbytes(FILE_SIZE) for _ in range(256)]
    names = [f"/z/d{i // 1000:04d}/f{i:07d}.bin" for i in range(n_files)]
    t0 = perf_counter()
    with cartridge.open(path, "w", sync="off") as c, c.transaction():
        for i, name in enumerate(names):
            c.write(name, blobs[i % 256])
    log(f"  {n_files:,} files of 4 KiB ({n_files * FILE_SIZE >> 20} MiB, 10x the "
        f"{budget >> 20} MiB cache) written in {perf_counter() - t0:.1f} s")
    out = {"budget_bytes": budget, "files": n_files, "file_size": FILE_SIZE,
           "requests": cfg.zipf_requests, "warmup": cfg.zipf_requests // 5, "s": ZIPF_S,
           "static_bound": static_bound(n_files, budget // FILE_SIZE), "rows": []}
    for variant in ("pure", "scan-mixed"):
        trace = zipf_trace(n_files, cfg.zipf_requests, variant == "scan-mixed")
        keys = [names[i] for i in trace.tolist()]
        warm = cfg.zipf_requests // 5
        for policy, cls in (("ARC", ARCCache), ("LRU", LRUCache)):
            with cartridge.open(path, "r", cache_size=budget) as c:
                cache = cls(budget)
                _use_cache(c, cache)
                read = c.read
                for k in keys[:warm]:
                    read(k)
                cache.reset_stats()
                t0 = perf_counter()
                for k in keys[warm:]:
                    read(k)
                dt = perf_counter() - t0
                st = cache.stats()
            row = {"variant": variant, "policy": policy, "hit_ratio": st["hit_ratio"],
                   "hits": st["hits"], "misses": st["misses"],
                   "us_per_read": dt / (len(keys) - warm) * 1e6}
            out["rows"].append(row)
            log(f"  zipf {variant:<10} {policy}: hit ratio {st['hit_ratio'] * 100:.1f}% "
                f"({row['us_per_read']:.2f} us per read)")
    return out


# -- space ---------------------------------------------------------------------------------------
SPACE_SIZES = (100, 4096, 10240)


def _allocated(path: Path) -> tuple[int, int]:
    """(allocated bytes, apparent bytes) of a file or a directory tree."""
    if path.is_file():
        st = path.stat()
        return st.st_blocks * 512, st.st_size
    alloc = app = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            alloc += st.st_blocks * 512
            app += st.st_size
    return alloc, app


def space(cfg: Config, tmp: Path, log=print) -> dict:
    """Bytes on disk per file, beyond the file's own bytes, for each store and file size."""
    n = cfg.space_files
    rows = []
    rng = random.Random(10)
    for size in SPACE_SIZES:
        names = [f"/s/d{i % 100:02d}/f{i:07d}.bin" for i in range(n)]
        blobs = [rng.randbytes(size) for _ in range(64)]
        data = [blobs[i % 64] for i in range(n)]
        d = tmp / f"space-{size}"
        d.mkdir()
        got = {}
        p = d / "s.cart"
        with cartridge.open(p, "w", sync="off") as c, c.transaction():
            for k, v in zip(names, data):
                c.write(k, v)
        got["cartridge"] = _allocated(p)
        p = d / "s.sqlite"
        db = _sqlite(p)
        db.execute(SQLAR)
        db.execute("BEGIN")
        db.executemany(SQLAR_INSERT, ((k, FILE_MODE, MTIME, size, v) for k, v in zip(names, data)))
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        got["sqlite"] = _allocated(p)
        p = d / "s-lmdb"
        env = _lmdb(p)
        with env.begin(write=True) as t:
            for k, v in zip(names, data):
                t.put(k.encode(), v)
        env.close()
        got["lmdb"] = _allocated(p / "data.mdb")
        p = d / "s.zip"
        with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as z:
            for k, v in zip(names, data):
                z.writestr(k[1:], v)
        got["zipfile"] = _allocated(p)
        p = d / "native"
        for k, v in zip(names, data):
            fp = p / k[1:]
            fp.parent.mkdir(parents=True, exist_ok=True)
            fp.write_bytes(v)
        got["native"] = _allocated(p)
        for store, (alloc, app) in got.items():
            rows.append({"size": size, "store": store, "files": n, "allocated": alloc,
                         "apparent": app, "overhead_per_file": (alloc - n * size) / n})
        log("  " + f"{size:>6} B: " + ", ".join(
            f"{s} {(a - n * size) / n:,.0f} B/file" for s, (a, _) in got.items()))
        shutil.rmtree(d, ignore_errors=True)
    return {"files": n, "rows": rows}


MEASURES = {
    "zipf": (zipf_hit_ratio, "Zipfian reads over 10x the cache: ARC against LRU hit ratio"),
    "space": (space, "Space on disk per file"),
}
