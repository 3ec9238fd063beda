"""Benchmarks: cartridge against native files, SQLite (sqlar table), LMDB and zipfile.

    python perf/run.py --quick                  # small sizes, well under a minute
    python perf/run.py --write-readme           # full run (about 10 minutes), rewrites perf/README.md
    python perf/run.py --only read4k,lookup     # a subset
    python perf/run.py --from-json FILE --write-readme   # re-render the README from saved results
    python -m pyperf stats perf/.data/results-full.json  # pyperf's own view of the values

Every workload runs all its peers in this one process (see perf/harness.py for why and how);
results are saved as one pyperf BenchmarkSuite JSON file.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):            # `python perf/run.py`: make `perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyperf

from perf import harness, workloads
from perf.harness import fmt_time
from perf.workloads import WORKLOADS, Config, label

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_meta(cfg: Config, argv: list[str]) -> dict:
    from pyperf._collect_metadata import collect_metadata

    md = {k: v for k, v in collect_metadata().items()
          if k in ("cpu_count", "cpu_freq", "python_version", "python_implementation",
                   "platform", "perf_version", "date", "hostname", "aslr")}
    md["cpu_model"] = cpu_model()
    md["cores"] = os.cpu_count() or 1
    md["run_mode"] = "quick" if cfg.quick else "full"
    md["run_command"] = " ".join(["python", "perf/run.py"] + [shlex.quote(a) for a in argv])
    md["run_sizes"] = (f"{cfg.read_files} files of 4 KiB; {cfg.txn_writes} writes per transaction;"
                       f" lookup at {', '.join(label(n) for n in cfg.lookup_sizes)}"
                       f" files; {cfg.seq_bytes >> 20} MiB sequential read")
    md["run_values"] = f"{cfg.values} values per peer, each at least {cfg.min_time * 1e3:g} ms"
    import sqlite3

    import lmdb
    import numpy

    import cartridge
    md["versions"] = (f"cartridge {cartridge.__version__ if hasattr(cartridge, '__version__') else '?'}"
                      f" (format {workloads.cfmt.VERSION_MAJOR}.{workloads.cfmt.VERSION_MINOR}),"
                      f" SQLite {sqlite3.sqlite_version}, py-lmdb {lmdb.__version__}"
                      f" (LMDB {'.'.join(map(str, lmdb.version()))}), numpy {numpy.__version__},"
                      f" pyperf {pyperf.__version__}")
    try:
        md["load_avg_start"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    md["engine_revision"] = engine_revision()
    return md


def engine_revision() -> str:
    """git HEAD of the checkout, plus which engine files differ from it (others may be editing
    the working tree while the benchmarks run: the numbers belong to the tree as it was)."""
    import subprocess

    root = HERE.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "cartridge"],
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    files = [ln[3:] for ln in dirty if ln.strip()]
    return head + (f" + uncommitted changes in {', '.join(files)}" if files else " (clean)")


# -- the report ----------------------------------------------------------------------------
TARGETS = [
    # (description, measured-ratio function, threshold, how to read)
    ("cached random 4 KiB read: cartridge.read <= LMDB get (same run)",
     lambda m: m["read4k", "cartridge"] / m["read4k", "lmdb"], 1.0),
    ("cached random 4 KiB read: cartridge.read >= 5x faster than open()+read()",
     lambda m: m["read4k", "cartridge"] / m["read4k", "native"], 0.2),
    ('4 KiB write, own commit, sync="off": faster than LMDB txn per write (best LMDB variant)',
     lambda m: m["write-commit", "cartridge"] / min(m["write-commit", "lmdb"],
                                                    m["write-commit", "lmdb-nowritemap"]), 1.0),
    ('4 KiB write, own commit, sync="off": faster than SQLite txn per write (WAL, sync OFF)',
     lambda m: m["write-commit", "cartridge"] / m["write-commit", "sqlite"], 1.0),
    ("4 KiB write inside one transaction: <= 3 us per write (absolute; value in us)",
     lambda m: m["write-txn", "cartridge"] * 1e6, 3.0),
    ("lookup (stat) at large size <= 1.3x lookup at 1K files",
     lambda m: m["lookup", m["_large"]] / m["lookup", "cartridge@1K"], 1.3),
    ("64 MiB readinto >= 50% of memcpy bandwidth (time ratio cartridge/memcpy <= 2)",
     lambda m: m["seqread", "cartridge"] / m["seqread", "memcpy"], 2.0),
]


def render(results: list[harness.Result], md: dict) -> str:
    m = {(r.workload, r.peer): r.median for r in results}
    by_w: dict[str, list[harness.Result]] = {}
    for r in results:
        by_w.setdefault(r.workload, []).append(r)
    L = []
    L.append("# cartridge benchmarks\n")
    L.append("Generated by `perf/run.py --write-readme` — do not edit by hand; rerun it. "
             "Absolute times are noise on a shared machine: the ratios between peers measured in "
             "the same run are what count. **ratio = cartridge / peer (median time per op): below "
             "1 means cartridge is faster.**\n")
    L.append("## Machine and run\n")
    L.append(f"- CPU: {md.get('cpu_model', '?')}, {md.get('cores', '?')} logical cores"
             f" ({md.get('cpu_freq', '')})")
    L.append(f"- Python {md.get('python_version', '?')} on {md.get('platform', '?')}")
    L.append(f"- {md.get('versions', '')}")
    L.append(f"- Date: {md.get('date', '?')[:19]}; load average at start: "
             f"{md.get('load_avg_start', '?')}, at end: {md.get('load_avg_end', '?')} "
             f"(on {md.get('cores', '?')} cores); whole run took {md.get('run_seconds', '?')} s")
    L.append(f"- Engine: git {md.get('engine_revision', '?')}")
    L.append(f"- Command: `{md.get('run_command', '?')}` ({md.get('run_mode', '?')} mode)")
    L.append(f"- Sizes: {md.get('run_sizes', '?')}")
    L.append(f"- Sampling: {md.get('run_values', '?')}, after calibration and one warm-up value; "
             "peers interleaved round by round\n")

    L.append("## Targets\n")
    L.append("| target | measured | threshold | met |")
    L.append("|---|---:|---:|:---:|")
    large = [r.peer for r in by_w.get("lookup", []) if r.peer.startswith("cartridge@")
             and r.peer != "cartridge@1K"]
    for desc0, fn, thr in TARGETS:
        for big in (large if "lookup" in desc0 and large else [None]):
            m["_large"] = big
            desc = desc0.replace("large size", big.split("@")[1] + " files") if big else desc0
            try:
                v = fn(m)
            except (KeyError, ZeroDivisionError, TypeError):
                L.append(f"| {desc} | not run | {thr:g} | — |")
                continue
            L.append(f"| {desc} | {v:.2f} | <= {thr:g} | {'yes' if v <= thr else '**no**'} |")
    L.append("")

    L.append("## Results\n")
    for w, (_, title) in WORKLOADS.items():
        rs = by_w.get(w)
        if not rs:
            continue
        L.append(f"### `{w}` — {title}\n")
        if w == "lookup":
            L.extend(_lookup_table(rs))
        else:
            L.extend(_table(w, rs, m))
        L.append("")

    L.append(METHOD)
    return "\n".join(L) + "\n"


def _table(w, rs, m) -> list[str]:
    cart = m.get((w, "cartridge"))
    seq = w == "seqread"
    L = []
    head = "| peer | median per op | stdev | " + ("GB/s | % of memcpy | " if seq else "ops/s | ")
    L.append(head + "cartridge / peer | how |")
    L.append("|---|---:|---:|" + ("---:|---:|" if seq else "---:|") + "---:|---|")
    memcpy = m.get((w, "memcpy"))
    for r in rs:
        ratio = f"{cart / r.median:.2f}" if cart and r.peer != "cartridge" else "—"
        if seq:
            nbytes = 64 << 20
            extra = (f"{nbytes / r.median / 1e9:.2f} | "
                     f"{(memcpy / r.median * 100 if memcpy else float('nan')):.0f}% | ")
        else:
            extra = f"{1 / r.median:,.0f} | "
        name = f"**{r.peer}**" if r.peer == "cartridge" else r.peer
        L.append(f"| {name} | {fmt_time(r.median)} | {fmt_time(r.stdev)} | {extra}{ratio} | "
                 f"{r.note} |")
    return L


def _lookup_table(rs) -> list[str]:
    sizes = []
    kinds = []
    val = {}
    note = {}
    for r in rs:
        kind, size = r.peer.split("@")
        if size not in sizes:
            sizes.append(size)
        if kind not in kinds:
            kinds.append(kind)
        val[kind, size] = r.median
        note[kind] = r.note
    small = sizes[0]
    head = "| peer | " + " | ".join(f"@{z}" for z in sizes) + " | " + " | ".join(
        f"{z} / {small}" for z in sizes[1:]) + " | " + " | ".join(
        f"cartridge / peer @{z}" for z in sizes) + " | how |"
    L = [head, "|---|" + "---:|" * (3 * len(sizes) - 1) + "---|"]
    for k in kinds:
        vals = [val.get((k, z)) for z in sizes]
        cells = [fmt_time(v) for v in vals]
        cells += [f"{v / vals[0]:.2f}" if v and vals[0] else "—" for v in vals[1:]]
        for z, v in zip(sizes, vals):
            c = val.get(("cartridge", z))
            cells.append(f"{c / v:.2f}" if k != "cartridge" and c and v else "—")
        name = f"**{k}**" if k == "cartridge" else k
        L.append(f"| {name} | " + " | ".join(cells) + f" | {note[k]} |")
    return L


METHOD = """## How it is measured

**Process model.** `perf/run.py` does not use `pyperf.Runner`'s worker processes. The Runner
would spawn ~20 workers per benchmark, and each would have to rebuild (or reopen and re-warm) the
workload's data, and the peers of one workload would be timed in different processes minutes
apart, mixing machine drift into the ratios we care about. Instead every workload sets up all its
peers in this one process and `perf/harness.py` times them the way pyperf's
`Runner.bench_time_func` does: a time function is called with a loop count and returns the
elapsed `pyperf.perf_counter()` seconds (setup that must happen per loop, like a fresh store for
the transaction workload, is excluded). Loops are calibrated per peer by doubling until one value
lasts at least the minimum time, one warm-up value follows, then values are taken in rounds that
visit every peer once, starting from a different peer each round. The results are saved as a
`pyperf.BenchmarkSuite` (`perf/.data/results-<mode>.json`, or `-o FILE`), so
`python -m pyperf stats` / `compare_to` / `hist` work on them. The tables show the median.

**Workloads.**
- `read4k`: N files of 4 KiB of random bytes in 100 directories, read in a fixed random order;
  every peer reads every file once before timing (warm OS page cache and each store's cache).
  With this many distinct paths every per-path memo stays hot (cartridge's path-to-key and
  record caches, its content chunk cache); `lookup` at 1M shows what a miss costs.
- `write-commit`: the same N files pre-created, then a random one is replaced with 4 KiB per
  operation; every write is its own commit/transaction; no peer syncs.
- `write-txn`: N new 4 KiB files in random order into a fresh, empty store inside one
  transaction; the commit (and zipfile's `close()`) is inside the timed region; the time is
  divided by N.
- `lookup`: `stat()` of random existing paths `/l/dXXXX/fNNNNNNN.dat` (a fixed sequence of
  uniform draws, as many as the larger store has files, at most 20 per file at 1K; cycled), so
  at 1M most lookups miss any per-path memo a store keeps; stores of 16-byte files built once in
  path order (100,000 per transaction, `sync="off"`) and cached under `perf/.data/`
  keyed by cartridge's format version. Native files and zipfile are left out at 1M (a million
  inodes; zipfile's lookup is a dict lookup after parsing the whole central directory).
- `seqread`: one 64 MiB file read into a preallocated numpy buffer, against `np.copyto` of
  two 64 MiB arrays as the memory-bandwidth baseline.

**Peers.** cartridge uses `sync="off"` and the default 64 MiB cache; `cartridge-ro` is the same
archive opened read-only (mode `"r"`), which re-checks the root slots for a newer commit on every
call. SQLite is the stdlib `sqlite3` module on a `sqlar` table (`name TEXT PRIMARY KEY, mode,
mtime, sz, data`) with `journal_mode=WAL` and `synchronous=OFF` — the fastest setting that still
survives a killed process (WAL+OFF measured ~18 µs/commit here vs ~75 µs for DELETE; MEMORY
journal is faster but not crash-safe); for `seqread` it is `apsw`'s `Blob.readinto`, since
`sqlite3` has no readinto. LMDB is py-lmdb with `sync=False, metasync=False` and `writemap=True`
(the faster variant; `lmdb-nowritemap` is shown too and the write target uses the better of
the two); reads use one long-lived read transaction (`lmdb-txn` opens one per get). Native files
are plain `open()` calls without fsync (and without the write-to-temp-and-rename that would make
them atomic). zipfile is `ZIP_STORED` with the `ZipFile` object kept open.

**Profiles.** `python perf/profile_paths.py [read|commit|txn|stat]` prints cProfile's top
functions for cartridge's cached read, single-write commit, write-in-a-transaction and stat paths.
"""


# -- main ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="perf/run.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    ap.add_argument("--only", help="comma-separated workloads: " + ",".join(WORKLOADS))
    ap.add_argument("--write-readme", action="store_true", help="rewrite perf/README.md")
    ap.add_argument("-o", "--output", help="pyperf JSON output (default perf/.data/results-<mode>.json)")
    ap.add_argument("--from-json", help="do not run: render the README/summary from this JSON")
    ap.add_argument("--tmpdir", help="where to build the workload data (default: system temp)")
    ap.add_argument("--values", type=int, help="values per peer (override)")
    ap.add_argument("--lookup-sizes", help="comma-separated file counts for the lookup workload, "
                    "e.g. 1000,1000000,10000000 (the 10M stores take a few minutes to build once)")
    ap.add_argument("--min-time", type=float, help="seconds per value, at least (override)")
    args = ap.parse_args(argv)

    if args.from_json:
        suite = pyperf.BenchmarkSuite.load(args.from_json)
        results = harness.from_suite(suite)
        md = suite.get_benchmarks()[0].get_metadata()
        text = render(results, md)
        if args.write_readme:
            README.write_text(text)
            print(f"wrote {README}")
        else:
            print(text)
        return 0

    cfg = Config.make(args.quick)
    if args.values:
        cfg.values = args.values
    if args.min_time:
        cfg.min_time = args.min_time
    if args.lookup_sizes:
        cfg.lookup_sizes = tuple(int(x) for x in args.lookup_sizes.split(","))
    names = list(WORKLOADS) if not args.only else [w.strip() for w in args.only.split(",")]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    md = machine_meta(cfg, argv)
    print(f"cartridge perf ({md['run_mode']}): {md['cpu_model']}, {md['cores']} cores, "
          f"Python {md.get('python_version')}")
    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="cartridge-perf-", dir=args.tmpdir))
    results: list[harness.Result] = []
    try:
        for w in names:
            builder, title = WORKLOADS[w]
            print(f"[{w}] {title}: setting up")
            t0 = time.monotonic()
            wdir = tmp / w
            wdir.mkdir()
            peers = builder(cfg, wdir, log=print)
            print(f"  set up in {time.monotonic() - t0:.1f} s; measuring {len(peers)} peers")
            try:
                # a write-txn value is a whole transaction into a fresh store (native files: 10,000
                # file creations): fewer values keep the full run near 10 minutes
                vals = max(3, cfg.values // 3) if w == "write-txn" else cfg.values
                results += harness.run_workload(w, peers, values=vals, min_time=cfg.min_time)
            finally:
                for p in peers:
                    p.close()
                shutil.rmtree(wdir, ignore_errors=True)
            print(f"  done in {time.monotonic() - t0:.1f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    md["run_seconds"] = round(time.monotonic() - t_start)
    try:
        md["load_avg_end"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    out = Path(args.output) if args.output else workloads.DATA_DIR / f"results-{md['run_mode']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    harness.to_suite(results, md).dump(str(out), replace=True)
    print(f"results: {out} ({md['run_seconds']} s)")
    text = render(results, md)
    if args.write_readme:
        README.write_text(text)
        print(f"wrote {README}")
    else:
        start = text.index("## Targets")
        print(text[start:text.index("## How it is measured")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
