"""Remote, read-only archives (docs/FSSPEC.md) against a local read and against the peer a user
would pick for a remote bundle of files: a zip archive read through fsspec's zip filesystem.

    python perf/remote_bench.py              # 2,000 small files, 200 random reads, median of 5
    python perf/remote_bench.py --quick      # smaller and fewer

Every side holds the same files (1-4 KiB each) and reads the same random sample, each round on a
freshly opened handle (so the remote sides fetch what they need: header, catalog path, content):
  cart-local    cartridge.open(path) on the local file
  cart-memory   cartridge.open("memory://...") (fsspec's memory filesystem: the cost of the
                ranged-read layer and block cache without a network)
  cart-http     cartridge.open("http://127.0.0.1:PORT/...") against a loopback server that
                honours Range (cartridge.testing.rangeserver): adds HTTP per request
  zip-local / zip-memory / zip-http   the same files in a ZIP_STORED archive, read through
                fsspec.filesystem("zip", fo=...) (zip-local: the zipfile module)
  cartfs-local  the cart:// fsspec filesystem over the local archive (cat_file per file)
  dirfs-local   fsspec's local filesystem over a plain directory of the same files: the peer
                of cart:// for a program that reads files through fsspec
Printed: seconds per round (open + the sample), ratios against cart-local and cartridge against
zip on the same transport, and the requests and bytes each remote side fetched per round. On a
real network each request costs a round trip, so requests per read matter more than loopback
seconds. Ratios only compare sides of the same run.
"""
from __future__ import annotations

import argparse
import io
import random
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fsspec

import cartridge
from cartridge.testing.rangeserver import RangeServer

SIDES = ("cart-local", "cart-memory", "cart-http", "zip-local", "zip-memory", "zip-http",
         "cartfs-local", "dirfs-local")


def build(d: Path, n_files: int, seed: int = 5) -> tuple[Path, Path, dict[str, bytes]]:
    rng = random.Random(seed)
    files = {f"/data/{i // 100:03d}/{i:06d}.json": rng.randbytes(rng.randint(1024, 4096))
             for i in range(n_files)}
    cart_path, zip_path = d / "bench.cart", d / "bench.zip"
    for p, data in files.items():
        dest = d / "dir" / p.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    with cartridge.open(cart_path, "w") as c:
        c.write_many(files.items())
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as z:
        for p, data in files.items():
            z.writestr(p.lstrip("/"), data)
    return cart_path, zip_path, files


def round_cart(target: str, sample: list[str], files: dict) -> tuple[int, int]:
    with cartridge.open(target) as c:
        for p in sample:
            if c.read(p) != files[p]:
                raise AssertionError(f"wrong bytes for {p}")
        st = c.info().get("remote") or {}
    return st.get("requests", 0), st.get("bytes_fetched", 0)


def round_fsspec(fs, root: str, sample: list[str], files: dict) -> tuple[int, int]:
    for p in sample:
        if fs.cat_file(root + p) != files[p]:
            raise AssertionError(f"wrong bytes for {p}")
    return 0, 0


def round_zip(target: str, sample: list[str], files: dict, counter: RangeServer | None) -> tuple[int, int]:
    before = (counter.requests, counter.bytes_sent) if counter else (0, 0)
    if target.startswith(("memory://", "http://")):
        fs = fsspec.filesystem("zip", fo=target, skip_instance_cache=True)
        for p in sample:
            if fs.cat_file(p.lstrip("/")) != files[p]:
                raise AssertionError(f"wrong bytes for {p}")
        fs.zip.close()
    else:
        with zipfile.ZipFile(target) as z:
            for p in sample:
                if z.read(p.lstrip("/")) != files[p]:
                    raise AssertionError(f"wrong bytes for {p}")
    if counter:
        return counter.requests - before[0], counter.bytes_sent - before[1]
    return 0, 0


def measure(n_files: int, reads: int, repeat: int) -> dict:
    base = Path(tempfile.mkdtemp(prefix="cart-remotebench-"))
    mem = fsspec.filesystem("memory")
    names = ("/remote-bench.cart", "/remote-bench.zip")
    try:
        cart_path, zip_path, files = build(base, n_files)
        cart_bytes, zip_bytes = cart_path.read_bytes(), zip_path.read_bytes()
        mem.pipe(names[0], cart_bytes)
        mem.pipe(names[1], zip_bytes)
        rng = random.Random(11)
        paths = sorted(files)
        times: dict[str, list[float]] = {s: [] for s in SIDES}
        fetched: dict[str, tuple[int, int]] = {}
        with RangeServer({"/b.cart": cart_bytes, "/b.zip": zip_bytes}) as srv:
            targets = {"cart-local": str(cart_path), "cart-memory": "memory://" + names[0],
                       "cart-http": srv.url("/b.cart"), "zip-local": str(zip_path),
                       "zip-memory": "memory://" + names[1], "zip-http": srv.url("/b.zip")}
            for r in range(repeat):
                sample = rng.sample(paths, reads)
                order = SIDES if r % 2 == 0 else tuple(reversed(SIDES))
                for side in order:
                    t0 = time.perf_counter()
                    if side == "cartfs-local":
                        from cartridge.fsspec import CartridgeFileSystem
                        fs = CartridgeFileSystem(fo=str(cart_path), skip_instance_cache=True)
                        got = round_fsspec(fs, "", sample, files)
                        fs.close()
                    elif side == "dirfs-local":
                        got = round_fsspec(fsspec.filesystem("file"), str(base / "dir"), sample,
                                           files)
                    elif side.startswith("cart"):
                        got = round_cart(targets[side], sample, files)
                    else:
                        got = round_zip(targets[side], sample, files,
                                        srv if side == "zip-http" else None)
                    times[side].append(time.perf_counter() - t0)
                    fetched[side] = got
        return {"times": times, "fetched": fetched, "sizes": (len(cart_bytes), len(zip_bytes)),
                "n_files": n_files, "reads": reads}
    finally:
        for n in names:
            if mem.exists(n):
                mem.rm(n)
        shutil.rmtree(base, ignore_errors=True)


def report(res: dict, out: io.TextIOBase | None = None) -> None:
    w = (out or sys.stdout).write
    med = {s: statistics.median(v) for s, v in res["times"].items()}
    w(f"{res['n_files']} files of 1-4 KiB; archive {res['sizes'][0] / 1e6:.1f} MB, zip "
      f"{res['sizes'][1] / 1e6:.1f} MB; {res['reads']} random reads per round on a fresh handle\n")
    w(f"{'side':12} {'s/round':>9} {'vs cart-local':>14} {'requests':>9} {'KiB fetched':>12}\n")
    for s in SIDES:
        req, nbytes = res["fetched"].get(s, (0, 0))
        remote = s.endswith(("memory", "http"))
        reqs = f"{req:9d}" if remote and (s.startswith("cart") or s == "zip-http") else f"{'-':>9}"
        kib = f"{nbytes / 1024:12.0f}" if reqs.strip() != "-" else f"{'-':>12}"
        w(f"{s:12} {med[s]:9.4f} {med[s] / med['cart-local']:13.2f}x {reqs} {kib}\n")
    for t in ("local", "memory", "http"):
        w(f"cartridge / zip over {t:6}: {med['cart-' + t] / med['zip-' + t]:.2f}x\n")
    w(f"cart:// / fsspec local directory: {med['cartfs-local'] / med['dirfs-local']:.2f}x\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="500 files, 50 reads, 3 rounds")
    ap.add_argument("--files", type=int, default=None)
    ap.add_argument("--reads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=None)
    args = ap.parse_args(argv)
    n = args.files or (500 if args.quick else 2000)
    reads = min(n, args.reads or (50 if args.quick else 200))
    repeat = args.repeat or (3 if args.quick else 5)
    report(measure(n, reads, repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
