"""Engram export and reading against the peers a user would pick, same content, same run.

    python perf/engram_bench.py                  # 10,000 files of 1-16 KiB; RSS on 512 MiB
    python perf/engram_bench.py --big-mib 2048   # the 2 GiB memory case (slow: perf/slow)
    python perf/engram_bench.py --quick          # 1,000 files, RSS on 128 MiB (smoke test)

Workloads:
  export    every file of an archive of N small files (1-16 KiB, text-like content) out to one
            file: cart.export_engram(compression="lz4", verify=False) [and with verify], against
            zipfile (ZIP_DEFLATED, level 1) and tarfile through lz4.frame, both fed by cart.read
            of the same files (the same source for all three), each output fsynced as
            export_engram's is. MB/s of content; ratios
            cartridge/peer of the times (lower is better).
  read-all  every file of that Engram (EngramReader.read) against every file of the zip
            (ZipFile.read); ratio of the times.
  memory    how far RSS grows (peak VmHWM, reset through /proc/self/clear_refs once the modules
            are loaded, minus the RSS then) in a child process exporting, then in one importing,
            an archive of --big-mib MiB in 64 MiB files (framed); with the default 64 MiB page
            cache and with a 4 MiB one.
Each time is the minimum of --repeat rounds; the sides run interleaved, one run each per round.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lz4.frame

import cartridge
from cartridge import engram

MIB = 1 << 20
WORDS = (b"alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi "
         b"rho sigma tau upsilon phi chi psi omega 0123456789 {}[]:,\n").split(b" ")


def make_content(n: int, seed: int = 15) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        size = rng.randint(1024, 16 * 1024)
        parts = []
        total = 0
        while total < size:
            w = rng.choice(WORDS) + (b" " if rng.random() < 0.8 else bytes([rng.randrange(256)]))
            parts.append(w)
            total += len(w)
        out.append((f"/d{i % 50:02d}/f{i:05d}.bin", b"".join(parts)[:size]))
    return out


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process: every thread) of one run."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def bench_small(tmp: Path, n: int, repeat: int) -> dict:
    files = make_content(n)
    total = sum(len(d) for _, d in files)
    cart_path = tmp / "small.cart"
    with cartridge.open(cart_path, "w", sync="off") as c:
        c.write_many(files)
    eng, zp, tp = tmp / "s.eng", tmp / "s.zip", tmp / "s.tar.lz4"
    names = [p for p, _ in files]
    res: dict = {"files": n, "bytes": total}
    with cartridge.open(cart_path) as cart:
        def export_eng():
            cart.export_engram(eng, compression="lz4", verify=False)      # synced, renamed

        def export_eng_verified():
            cart.export_engram(eng, compression="lz4")

        # the peers' files are synced too (export_engram syncs its output before the rename
        # that makes it appear): like for like, a file on disk
        def export_zip():
            with zipfile.ZipFile(zp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
                for p in names:
                    z.writestr(p[1:], cart.read(p))
            _sync(zp)

        def export_tar():
            with lz4.frame.open(tp, "wb") as f, tarfile.open(fileobj=f, mode="w|") as t:
                for p in names:
                    data = cart.read(p)
                    info = tarfile.TarInfo(p[1:])
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
            _sync(tp)

        # interleaved (one run of each per round, minimum per side): on a shared machine a
        # burst of load then hits every side alike
        runs = (("engram lz4", export_eng), ("engram lz4 + verify", export_eng_verified),
                ("zipfile deflate-1", export_zip), ("tarfile + lz4", export_tar))
        for _ in range(repeat):
            for label, fn in runs:
                wall, cpu = timed(fn)
                key = f"export {label}"
                res[key] = min(res.get(key, wall), wall)
                res["cpu " + key] = min(res.get("cpu " + key, cpu), cpu)
    res["size engram"], res["size zip"], res["size tar.lz4"] = (
        os.path.getsize(eng), os.path.getsize(zp), os.path.getsize(tp))

    def read_eng():
        with engram.open(eng) as r:
            for p in r.namelist():
                r.read(p)

    def read_zip():
        with zipfile.ZipFile(zp) as z:
            for p in z.namelist():
                z.read(p)

    for _ in range(repeat):
        for key, fn in (("read-all engram", read_eng), ("read-all zipfile", read_zip)):
            wall, cpu = timed(fn)
            res[key] = min(res.get(key, wall), wall)
            res["cpu " + key] = min(res.get("cpu " + key, cpu), cpu)
    return res


CHILD = r"""
import json, os, resource, sys, time
import cartridge
from cartridge import engram
import cartridge.engram.export, cartridge.engram.importer


def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])


what, cart, eng, dest, cache = sys.argv[1:6]
try:                     # reset the peak (VmHWM) to the current RSS: Linux >= 4.0
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    reset = True
except OSError:
    reset = False
before = status("VmRSS")
t0 = time.perf_counter()
if what == "export":
    with cartridge.open(cart, cache_size=int(cache)) as c:
        c.export_engram(eng, compression="lz4", verify=%(verify)s)
else:
    with cartridge.open(dest, "w", cache_size=int(cache)) as c:
        cartridge.import_engram(eng, c)
t = time.perf_counter() - t0
print(json.dumps({"before_kib": before, "peak_kib": status("VmHWM"), "reset": reset,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "seconds": t}))
"""


def _child(what: str, cart: Path, eng: Path, dest: Path, verify: bool, cache: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    out = subprocess.run([sys.executable, "-c", CHILD % {"verify": verify}, what, str(cart),
                          str(eng), str(dest), str(cache)], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_memory(tmp: Path, mib: int) -> dict:
    cart = tmp / "big.cart"
    file_mib = 64
    rng = random.Random(2)
    block = bytes(rng.randrange(256) for _ in range(32768)) + bytes(32 * 1024)  # 64 KiB, ~2:1
    with cartridge.open(cart, "w", sync="off") as c:
        for i in range(max(1, mib // file_mib)):
            with c.open(f"/big/f{i:03d}.bin", "wb") as f:
                for j in range(file_mib * MIB // len(block)):
                    f.write(bytes([j % 256]) + block[1:])
    eng, dest = tmp / "big.eng", tmp / "back.cart"
    res: dict = {"archive MiB": os.path.getsize(cart) / MIB, "runs": {}}
    for cache in (64 * MIB, 4 * MIB):          # the default page cache, and a small one
        run = res["runs"][cache] = {}
        run["export"] = _child("export", cart, eng, dest, True, cache)
        res["engram MiB"] = os.path.getsize(eng) / MIB
        run["import"] = _child("import", cart, eng, dest, True, cache)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--big-mib", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.quick:
        args.files, args.big_mib, args.repeat = 1000, 128, 1
    tmp = Path(tempfile.mkdtemp(prefix="engram-bench-", dir=args.dir))
    try:
        r = bench_small(tmp, args.files, args.repeat)
        mb = r["bytes"] / 1e6
        print(f"export of {r['files']:,} files, {mb:.1f} MB of content (min of {args.repeat}; "
              f"wall time, and CPU time of all threads; ratio cartridge/this, lower is better):")
        eng_t, eng_c = r["export engram lz4"], r["cpu export engram lz4"]
        for k in ("export engram lz4", "export engram lz4 + verify", "export zipfile deflate-1",
                  "export tarfile + lz4"):
            print(f"  {k[7:]:24} wall {r[k]:7.3f} s {mb / r[k]:7.1f} MB/s ratio {eng_t / r[k]:5.2f}"
                  f" | cpu {r['cpu ' + k]:7.3f} s ratio {eng_c / r['cpu ' + k]:5.2f}")
        print(f"  sizes: engram {r['size engram']:,}  zip {r['size zip']:,}  "
              f"tar.lz4 {r['size tar.lz4']:,}")
        print("read every file:")
        print(f"  engram  wall {r['read-all engram']:7.3f} s  cpu {r['cpu read-all engram']:7.3f} s"
              f"   zipfile wall {r['read-all zipfile']:7.3f} s  cpu {r['cpu read-all zipfile']:7.3f}"
              f" s   zipfile/engram wall {r['read-all zipfile'] / r['read-all engram']:5.2f}x  cpu "
              f"{r['cpu read-all zipfile'] / r['cpu read-all engram']:5.2f}x")
        if not args.no_memory:
            m = bench_memory(tmp, args.big_mib)
            print(f"peak RSS, {m['archive MiB']:.0f} MiB archive -> {m['engram MiB']:.0f} MiB "
                  f"Engram (64 MiB files, LZ4 frames):")
            for cache, run in m["runs"].items():
                for k in ("export", "import"):
                    r = run[k]
                    grew = (r["peak_kib"] - r["before_kib"]) / 1024
                    how = "peak - RSS before" if r["reset"] else "peak since start (no reset)"
                    print(f"  {k:7} cache_size={cache // MIB:2d} MiB: +{grew:6.1f} MiB ({how}; "
                          f"{r['before_kib'] / 1024:.1f} MiB before) in {r['seconds']:.1f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
