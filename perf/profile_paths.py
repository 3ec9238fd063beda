"""cProfile of cartridge's hot paths, for whoever optimises the engine.

    python perf/profile_paths.py                    # all paths, top 25 functions by own time
    python perf/profile_paths.py read commit -n 40  # some paths, more rows
    python perf/profile_paths.py --sort cumulative

Paths: read (cached random 4 KiB read), commit (4 KiB write as its own commit, sync="off"),
txn (4 KiB writes inside one transaction), stat (stat of a random existing path).
cProfile inflates Python-level call overhead; use the per-call counts to see how much work one
operation does, and py-spy (`py-spy record --native -- python perf/profile_paths.py read --no-profile`)
for wall-clock shares.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cartridge

N_FILES = 10_000
OPS = 50_000


def setup(tmp: Path):
    rng = random.Random(1)
    names = [f"/r/d{i % 100:02d}/f{i:06d}.bin" for i in range(N_FILES)]
    c = cartridge.open(tmp / "p.cart", "w", sync="off")
    with c.transaction():
        for n in names:
            c.write(n, rng.randbytes(4096))
    keys = [names[rng.randrange(N_FILES)] for _ in range(OPS)]
    for n in names:
        c.read(n)
    return c, names, keys


def workloads(c, names, keys):
    payload = b"x" * 4096

    def read():
        for k in keys:
            c.read(k)

    def commit():
        for k in keys[:10_000]:
            c.write(k, payload)

    rounds = iter(range(1 << 30))

    def txn():
        d = f"/t{next(rounds)}"
        with c.transaction():
            for i in range(10_000):
                c.write(f"{d}/f{i:06d}", payload)

    def stat():
        for k in keys:
            c.stat(k)

    return {"read": (read, OPS), "commit": (commit, 10_000), "txn": (txn, 10_000),
            "stat": (stat, OPS)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", default=["read", "commit", "txn", "stat"])
    ap.add_argument("-n", type=int, default=25, help="rows to print")
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--no-profile", action="store_true", help="just run (for py-spy)")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="cartridge-prof-"))
    try:
        c, names, keys = setup(tmp)
        wl = workloads(c, names, keys)
        for name in args.paths:
            fn, ops = wl[name]
            t0 = time.perf_counter()
            fn()
            plain = (time.perf_counter() - t0) / ops
            if args.no_profile:
                print(f"== {name}: {plain * 1e6:.2f} us/op")
                continue
            prof = cProfile.Profile()
            prof.enable()
            fn()
            prof.disable()
            s = io.StringIO()
            st = pstats.Stats(prof, stream=s)
            st.sort_stats(args.sort).print_stats(args.n)
            print(f"== {name}: {plain * 1e6:.2f} us/op without the profiler, {ops} ops profiled")
            out = s.getvalue()
            print(out[out.index("   ncalls"):] if "   ncalls" in out else out)
        c.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
