"""Benchmarks: cartridge against native files, SQLite (sqlar table), LMDB and zipfile.

    python -m perf --write-readme           # the full report: perf/README.md + perf/scaling.png
    python -m perf --quick                  # small sizes, a few minutes, prints the targets
    python -m perf --only read4k,lookup     # a subset (--skip to leave some out)
    python -m perf --from-json FILE --write-readme       # re-render the README from saved results
    python -m pyperf stats perf/.data/results-full.json  # pyperf's own view of the values

Every workload runs all its peers in this one process (see perf/harness.py for why and how);
results are saved as one pyperf BenchmarkSuite JSON file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):            # `python perf/run.py`: make `perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyperf

from perf import harness, workloads
from perf.harness import fmt_time
from perf.measures import MEASURES
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
    md["run_command"] = " ".join(["python", "-m", "perf"] + [shlex.quote(a) for a in argv])
    md["seq_bytes"] = cfg.seq_bytes
    md["run_sizes"] = (f"cached reads: up to {cfg.read_files:,} files and {_mib(cfg.read_bytes)} "
                       f"per size; uncached reads: {cfg.uncached_ops} per value; commits: "
                       f"{cfg.read_files:,} files; bulk load: {cfg.bulk_files:,} files of 1 KiB;"
                       f" lookup and listing at {', '.join(label(n) for n in cfg.lookup_sizes)}"
                       f" files; sequential: {_mib(cfg.seq_bytes)}; zipfian: "
                       f"{_mib(cfg.zipf_cache)} cache, {cfg.zipf_requests:,} requests; space: "
                       f"{cfg.space_files:,} files per size")
    md["mem_total"] = mem_total()
    md["storage"] = storage_desc(HERE)
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


def mem_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / (1 << 20):.0f} GiB"
    except (OSError, ValueError):
        pass
    return "?"


def storage_desc(where: Path) -> str:
    """Filesystem and device of the benchmark data (from /proc/mounts)."""
    try:
        best = ("", "?", "?")
        real = str(where.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, fstype = line.split()[:3]
            if real.startswith(mnt) and len(mnt) > len(best[0]):
                best = (mnt, dev, fstype)
        return f"{best[2]} on {best[1]} (mounted at {best[0]})"
    except OSError:
        return "?"


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
def _ratio(v: float, thr: float, le: bool = True) -> tuple[str, str, bool]:
    return f"{v:.2f}", f"{'<=' if le else '>='} {thr:g}", (v <= thr) if le else (v >= thr)


def _targets(m: dict, meas: dict, md: dict) -> list[tuple[str, object, str | None]]:
    """(description, function returning (measured, threshold, met), key of the LIMITS note
    that explains a miss) for every target of the issue; a KeyError means the workload was
    not run."""
    seq = int(md.get("seq_bytes", 64 << 20))

    def best_lmdb_sqlite():
        peers = [m["commit-off", p] for p in ("lmdb", "lmdb-nowritemap", "sqlite")
                 if ("commit-off", p) in m]
        if not peers:
            raise KeyError("commit-off")
        return m["commit-off", "cartridge"] / min(peers)

    def lookup_growth(big):
        return lambda: _ratio(m["lookup", f"cartridge@{big}"] / m["lookup", "cartridge@1K"], 1.5)

    def listing():
        worst = max(v for (w, p), v in m.items() if w == "listdir" and p.startswith("cartridge@"))
        return f"{worst * 1e6:.0f} us", "<= 200 us", worst <= 200e-6

    def zipf(variant, policy):
        for r in meas["zipf"]["rows"]:
            if r["variant"] == variant and r["policy"] == policy:
                return r["hit_ratio"]
        raise KeyError(variant)

    def arc_vs_lru():
        d = (zipf("scan-mixed", "ARC") - zipf("scan-mixed", "LRU")) * 100
        return f"{d:+.1f} points", ">= +5 points", d >= 5

    def arc_pure():
        v = zipf("pure", "ARC") * 100
        return f"{v:.1f}%", ">= 90%", v >= 90

    def space10k():
        rows = {r["store"]: r["overhead_per_file"] for r in meas["space"]["rows"]
                if r["size"] == 10240}
        c, q = rows["cartridge"], rows["sqlite"]
        return f"{c:,.0f} B vs {q:,.0f} B", "cartridge <= SQLite", c <= q

    def seqread():
        v = m["seqread", "memcpy"] / m["seqread", "cartridge"] * 100
        return f"{v:.0f}%", ">= 80%", v >= 80

    def seqwrite():
        v = seq / m["seqwrite", "cartridge"] / (1 << 30)
        return f"{v:.2f} GiB/s", ">= 1 GiB/s", v >= 1

    def bulk():
        v = 1 / m.get(("bulk", "cartridge-write_many"), m["bulk", "cartridge"])
        return f"{v:,.0f} files/s", ">= 300,000 files/s", v >= 300_000

    out = [
        ("cached random 4 KiB read: cartridge / LMDB get",
         lambda: _ratio(m["read4k", "cartridge"] / m["read4k", "lmdb"], 1.0), None),
        ("cached random 4 KiB read: cartridge / native open()+read() (>= 5x faster)",
         lambda: _ratio(m["read4k", "cartridge"] / m["read4k", "native"], 0.2), None),
        ('4 KiB write, own commit, sync="off": cartridge / best of LMDB and SQLite (syncing off)',
         lambda: _ratio(best_lmdb_sqlite(), 0.7), "commit"),
        ('4 KiB write, own commit, sync="normal": cartridge / SQLite WAL synchronous=NORMAL',
         lambda: _ratio(m["commit-normal", "cartridge"] / m["commit-normal", "sqlite"], 1.0),
         "commit-normal"),
        ('4 KiB write, own commit, sync="full": cartridge / SQLite WAL synchronous=FULL',
         lambda: _ratio(m["commit-full", "cartridge"] / m["commit-full", "sqlite"], 1.0),
         "commit-full"),
        ('4 KiB write, own commit, sync="full": cartridge / native write()+fsync()',
         lambda: _ratio(m["commit-full", "cartridge"] / m["commit-full", "native"], 1.05),
         "commit-full"),
        ("bulk load of 1 KiB files in one transaction (write_many)", bulk, "bulk"),
    ]
    sizes = sorted({p.split("@")[1] for (w, p) in m if w == "lookup" and "@" in p},
                   key=_size_key)
    for big in sizes:
        if big != "1K":
            out.append((f"lookup (stat) at {big} files / at 1K", lookup_growth(big), "lookup"))
    for size in sizes:          # issue 18: every size against LMDB, stat and exists
        for peer, what in (("cartridge", "stat"), ("cartridge-exists", "exists")):
            out.append((f"lookup ({what}) at {size} files: cartridge / LMDB get",
                        lambda size=size, peer=peer: _ratio(
                            m["lookup", f"{peer}@{size}"] / m["lookup", f"lmdb@{size}"], 2.0),
                        "lookup-lmdb"))
    out += [
        ("SQLite inside: 300,000-row insert, cartridge / native file",
         lambda: _ratio(m["sqlinsert", "cartridge"] / m["sqlinsert", "native"], 1.3), "sqlpages"),
        ("SQLite inside: point lookups with cache_size=50, cartridge / native file",
         lambda: _ratio(m["sqllookup", "cartridge"] / m["sqllookup", "native"], 1.3), "sqlpages"),
    ]
    out += [
        ("listing 1,000 children, slowest archive size", listing, None),
        ("zipfian scan-mixed: ARC hit ratio - LRU hit ratio", arc_vs_lru, None),
        ("zipfian pure: ARC hit ratio", arc_pure, "zipf"),
        (f"sequential read of {_mib(seq)} (readinto) as % of memcpy bandwidth", seqread,
         "seqread"),
        (f'sequential write of {_mib(seq)}, sync="off"', seqwrite, None),
        ("space overhead per 10 KiB file", space10k, "space"),
    ]
    return out


def _size_key(lab: str) -> int:
    mult = {"K": 1000, "M": 1_000_000}
    return int(lab[:-1]) * mult[lab[-1]] if lab[-1] in mult else int(lab)


def _mib(n: int) -> str:
    return f"{n >> 30} GiB" if n >= 1 << 30 and n % (1 << 30) == 0 else f"{n >> 20} MiB"


def render(results: list[harness.Result], md: dict, meas: dict | None = None) -> str:
    meas = meas or {}
    m = {(r.workload, r.peer): r.median for r in results}
    by_w: dict[str, list[harness.Result]] = {}
    for r in results:
        by_w.setdefault(r.workload, []).append(r)
    L = []
    L.append("# cartridge benchmarks\n")
    L.append("Generated by `python -m perf --write-readme` — do not edit by hand; rerun it. "
             "Absolute times are noise on a shared machine: the ratios between peers measured in "
             "the same run are what count. **ratio = cartridge / peer (median time per op): below "
             "1 means cartridge is faster.**\n")
    L.append("## Machine and run\n")
    L.append(f"- CPU: {md.get('cpu_model', '?')}, {md.get('cores', '?')} logical cores"
             f" ({md.get('cpu_freq', '')}); memory {md.get('mem_total', '?')}")
    L.append(f"- Python {md.get('python_version', '?')} on {md.get('platform', '?')}")
    L.append(f"- Storage: {md.get('storage', '?')}")
    L.append(f"- {md.get('versions', '')}")
    L.append(f"- Date: {md.get('date', '?')[:19]}; load average at start: "
             f"{md.get('load_avg_start', '?')}, at end: {md.get('load_avg_end', '?')} "
             f"(on {md.get('cores', '?')} cores, shared with other jobs); whole run took "
             f"{md.get('run_seconds', '?')} s")
    L.append(f"- Engine: git {md.get('engine_revision', '?')}")
    L.append(f"- Command: `{md.get('run_command', '?')}` ({md.get('run_mode', '?')} mode)")
    L.append(f"- Sizes: {md.get('run_sizes', '?')}")
    L.append(f"- Sampling: {md.get('run_values', '?')}, after calibration and one warm-up value; "
             "peers interleaved round by round")
    if md.get("failed_workloads"):
        L.append(f"- **Failed (not in the tables)**: {md['failed_workloads']}")
    L.append("")

    L.append("## Targets (issue 4)\n")
    L.append("| target | measured | threshold | met |")
    L.append("|---|---:|---:|:---:|")
    missed: set[str] = set()
    for desc, fn, why in _targets(m, meas, md):
        try:
            v, thr, ok = fn()
        except (KeyError, ZeroDivisionError, TypeError, ValueError):
            L.append(f"| {desc} | not run | | — |")
            continue
        L.append(f"| {desc} | {v} | {thr} | {'yes' if ok else '**no**'} |")
        if not ok and why:
            missed.add(why)
    L.append("")

    if missed:               # only the notes of the targets this run missed
        L.append("### What limits the targets not met\n")
        L.extend(text for key, text in LIMITS if key in missed)
        L.append("")
    L.append("## Results\n")
    seq = int(md.get("seq_bytes", 64 << 20))
    for w, (_, title) in WORKLOADS.items():
        rs = by_w.get(w)
        if not rs:
            continue
        L.append(f"### `{w}` — {title}\n")
        if w in ("lookup", "listdir"):
            L.extend(_sized_table(rs))
            if w == "lookup" and len(rs) > 5:
                L.append("\n![lookup cost by archive size](scaling.png)")
        else:
            L.extend(_table(w, rs, m, seq))
        L.append("")
    if "zipf" in meas:
        L.extend(_zipf_table(meas["zipf"]))
    if "space" in meas:
        L.extend(_space_table(meas["space"]))
    L.append(METHOD)
    return "\n".join(L) + "\n"


def _table(w, rs, m, seq: int) -> list[str]:
    cart = m.get((w, "cartridge"))
    rate = w in ("seqread", "seqwrite")
    L = []
    head = "| peer | median per op | stdev | " + ("GiB/s | % of memcpy | " if rate else
                                                    "files/s | " if w == "bulk" else "ops/s | ")
    L.append(head + "cartridge / peer | how |")
    L.append("|---|---:|---:|" + ("---:|---:|" if rate else "---:|") + "---:|---|")
    memcpy = m.get((w, "memcpy"))
    for r in rs:
        ratio = f"{cart / r.median:.2f}" if cart and r.peer != "cartridge" else "—"
        if rate:
            extra = (f"{seq / r.median / (1 << 30):.2f} | "
                     f"{(memcpy / r.median * 100 if memcpy else float('nan')):.0f}% | ")
        else:
            extra = f"{1 / r.median:,.0f} | "
        name = f"**{r.peer}**" if r.peer == "cartridge" else r.peer
        L.append(f"| {name} | {fmt_time(r.median)} | {fmt_time(r.stdev)} | {extra}{ratio} | "
                 f"{r.note} |")
    return L


def _sized_table(rs) -> list[str]:
    """Peers named kind@size: one row per kind, one column per size."""
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
    sizes.sort(key=_size_key)
    small = sizes[0]
    head = "| peer | " + " | ".join(f"@{z}" for z in sizes) + " | " + " | ".join(
        f"{z} / {small}" for z in sizes[1:]) + " | how |"
    L = [head, "|---|" + "---:|" * (2 * len(sizes) - 1) + "---|"]
    for k in kinds:
        vals = [val.get((k, z)) for z in sizes]
        cells = [fmt_time(v) if v else "—" for v in vals]
        cells += [f"{v / vals[0]:.2f}" if v and vals[0] else "—" for v in vals[1:]]
        name = f"**{k}**" if k == "cartridge" else k
        L.append(f"| {name} | " + " | ".join(cells) + f" | {note[k]} |")
    L.append("")
    L.append("cartridge / peer at each size:\n")
    L.append("| peer | " + " | ".join(f"@{z}" for z in sizes) + " |")
    L.append("|---|" + "---:|" * len(sizes))
    for k in kinds:
        if k == "cartridge":
            continue
        cells = []
        for z in sizes:
            c, v = val.get(("cartridge", z)), val.get((k, z))
            cells.append(f"{c / v:.2f}" if c and v else "—")
        L.append(f"| {k} | " + " | ".join(cells) + " |")
    return L


def _zipf_table(z: dict) -> list[str]:
    L = ["### `zipf` — Zipfian reads over 10x more data than the cache: ARC against LRU\n",
         f"{z['files']:,} files of {z['file_size']} bytes ({z['files'] * z['file_size'] >> 20} MiB)"
         f" read through `Cartridge.read` with a {z['budget_bytes'] >> 20} MiB page cache, "
         f"zipfian popularity (s = {z['s']}); {z['requests']:,} requests, the first "
         f"{z['warmup']:,} warm up. The LRU is cartridge's `LRUCache` put in place of the ARC "
         "with the same byte budget. Hit ratio = hits / lookups of the page cache.\n",
         "| workload | ARC hit ratio | LRU hit ratio | ARC - LRU | ARC us/read | LRU us/read |",
         "|---|---:|---:|---:|---:|---:|"]
    rows = {(r["variant"], r["policy"]): r for r in z["rows"]}
    for v in ("pure", "scan-mixed"):
        a, b = rows.get((v, "ARC")), rows.get((v, "LRU"))
        if a and b:
            L.append(f"| {v} | {a['hit_ratio'] * 100:.1f}% | {b['hit_ratio'] * 100:.1f}% | "
                     f"{(a['hit_ratio'] - b['hit_ratio']) * 100:+.1f} points | "
                     f"{a['us_per_read']:.2f} | {b['us_per_read']:.2f} |")
    L.append(f"\nNo policy can beat always keeping the most popular files resident: on these "
             f"independent zipfian requests that gives **{z['static_bound'] * 100:.1f}%** "
             "(the sum of the probabilities of the files that fit), the ceiling for the pure "
             "workload.\n")
    return L


def _space_table(sp: dict) -> list[str]:
    rows = sp["rows"]
    stores = []
    for r in rows:
        if r["store"] not in stores:
            stores.append(r["store"])
    sizes = sorted({r["size"] for r in rows})
    val = {(r["store"], r["size"]): r for r in rows}
    L = ["### `space` — Space on disk per file\n",
         f"{sp['files']:,} files of each size written into a new store; bytes allocated on disk "
         "(st_blocks x 512: sparse, never-written parts of a file do not count) beyond the "
         "files' own bytes, divided by the number of files. Native files count each file's "
         "blocks and the directories' blocks (not inodes).\n",
         "| store | " + " | ".join(f"{s:,} B files: overhead per file" for s in sizes) + " |",
         "|---|" + "---:|" * len(sizes)]
    for st in stores:
        cells = []
        for s in sizes:
            r = val.get((st, s))
            cells.append(f"{r['overhead_per_file']:,.0f} B ({r['allocated'] / (r['files'] * s):.2f}x)"
                         if r else "—")
        name = f"**{st}**" if st == "cartridge" else st
        L.append(f"| {name} | " + " | ".join(cells) + " |")
    L.append("\n(in parentheses: bytes on disk / bytes of content)\n")
    return L


def plot_scaling(results: list[harness.Result], path: Path) -> bool:
    """perf/scaling.png: lookup time by archive size, one line per peer (needs matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[perf]'): no scaling.png")
        return False
    series: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        if r.workload == "lookup" and "@" in r.peer:
            kind, size = r.peer.split("@")
            series.setdefault(kind, []).append((_size_key(size), r.median * 1e6))
    if not series or max(len(v) for v in series.values()) < 2:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for kind, pts in series.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                linewidth=2.5 if kind == "cartridge" else 1.2, label=kind)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("files in the archive / store")
    ax.set_ylabel("median time per lookup (us)")
    ax.set_title("Lookup of a random existing path by archive size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


LIMITS = [          # (target key, what limits it): printed for the targets a run misses
    ("commit", """\
- **Single-write commit vs LMDB** (`commit-off`): LMDB with `writemap` commits by writing into
  its shared mapping — no system call at all. A cartridge commit copies ~6 pages (the content
  page, the catalog path, the allocation-map path) to fresh places and writes them plus the
  root slot: about 7 `pwrite` calls (~9 us; first-fit pages of a steady stream of commits are
  scattered one-page holes, so they rarely coalesce into one call), plus ~25 us of Python
  (copy-on-write of each node, allocation-map entries, record encode, root slot) spread over
  about a hundred calls. Reaching 0.7x LMDB would need a write mapping of the archive, which
  the shadow-paging design does not use (a stray write through a mapping is the corruption it
  rules out). Against SQLite (same durability setting) the gap is about 1.3x."""),
    ("commit-normal", """\
- **Single-write commit, `sync="normal"`** (`commit-normal`): a `"normal"` commit issues no sync
  (docs/FORMAT.md §8.1); it costs what a `"off"` commit costs (the `commit-off` row: the
  Python commit path, ~6 pages written, plus the default audit log's records, ~10 pages in all)
  plus a share of the `fdatasync` that comes when the commits since the last one no longer fit
  one seal (16 runs, 256 pages). Profile (`cProfile`, 10,000-file archive, 2,000 commits after
  3,000 of warm-up): in the free tail of a new file, sequential placement fits ~30 commits per
  sync (0.03 syncs per commit); in this workload's steady state (random replacement of 4 KiB
  files among 10,000 fills the file with one-page holes) the pages of a commit land in ~10
  separate runs, so a seal holds about two commits: 0.35 syncs per commit with `audit="off"`,
  0.48 with the audit log, at 2.6 ms per `fdatasync` on this machine's disk, i.e. ~0.9-1.2 ms
  per commit, against SQLite's WAL, which appends its frames in one place and syncs only at
  checkpoints. What would lift it: fewer, contiguous pages per commit (issue 18 item 1), and a
  seal that can name more runs (a seal page listing them: a format change, minor 1.5). Measured
  in a roomy archive with `audit="off"` (tests/test_perf_smoke.py), the ratio is about 1.4."""),
    ("commit-full", """\
- **Single-write commit, `sync="full"`** (`commit-full`): one `fdatasync` per commit, like
  SQLite's WAL at `synchronous=FULL` and like `write()+fsync()`; what differs is what that sync
  flushes: a small cartridge commit writes ~6 pages (10 with the audit log) to separate places,
  SQLite appends one or two frames to its WAL, and the native file rewrites one page (plus the
  journal commit of its truncation). On this machine's virtual disk a sync costs 2-5 ms and
  grows with the number of separate dirty runs, so the ratio follows the pages per commit
  (profile: 85-90% of a `"full"` commit is the `fdatasync`). Contiguous placement of a commit's
  pages (issue 18 item 1) is the lever."""),
    ("bulk", """\
- **Bulk load** (`bulk`): `write_many()` (the target's figure) costs about 1.5 us of CPU per
  1 KiB file — collecting and sorting the pairs, one check per directory, packing and
  checksumming the files onto shared page runs (Cython), filling the catalog leaf by leaf —
  plus the kernel's copy of one 4 KiB page per file (each file starts on a page boundary, so
  400 MB of page cache for 100 MB of data). Run back to back it loads about 400,000 files/s;
  interleaved with the other peers, as here, every run's 400 MB of page cache is memory the
  VM has just given back to its host, and faulting it in again (0.4-0.6 s per run on this
  machine) dominates. write_many now packs 1 KiB files (format 1.4, `perf/pack_bench.py`).
  `write()` per
  file stays at ~12 us: per call, the B-tree insert, content placement and directory checks
  run from Python."""),
    ("lookup", """\
- **Lookup growth** (`lookup`): the read path is C end to end (path keys, record decode,
  the per-path memo, node reads, and since issue 18 stat()/exists() themselves:
  `readpath.lookup_info` answers from the memoised record and its FileInfo), so the 1K base
  itself is small (stat ~0.5 us) and the ratio is taken against it. The default page cache now
  follows the catalog (64 MiB + 128 B per file and directory, at most RAM/8 or 1 GiB), so at 1M
  files (~21K leaves, 85 MB) no lookup re-reads a leaf any more (the cache's hit ratio went from
  ~94.5% to 100% in `perf record`); the implicit parent directories of a path are kept in a
  side table of the memo that its shrinking leaves alone (a miss used to walk the catalog three
  times: the path and its two parents). What is left at 1M is one descent through nodes spread
  over 85 MB, a cache miss at each level (~2 us against ~0.25 us at 1K, measured with
  `catalog.get`), plus the memo misses' dict traffic and the allocation of a record and a
  FileInfo (and the garbage collector's passes over them: ~15% of a 1M-file stat in
  `perf record`). LMDB (no checksums, no decode, the whole OS page cache mapped) grows ~5-7x
  over the same range and SQLite ~2-4x (table below). Each peer cycles through its own random
  keys."""),
    ("lookup-lmdb", """\
- **Lookup against LMDB** (`lookup`, issue 18: <= 2x LMDB `get` at every size): at 1K both
  are a few hundred ns and what separates them is the Python call itself (a method call, the
  handle's lock, the closed/failed checks: ~0.15 us of the ~0.5 us); at 1M and more it is the
  descent above: LMDB's get of a cold key also misses the CPU caches, but on fewer, denser
  pages, and allocates one bytes object (not tracked by the garbage collector) where a
  cartridge stat builds a record and a FileInfo. Closing the rest would need a catalog whose
  leaves hold fixed-size records read in place (no decoded record objects, no per-path memo)
  — a format and API change (FileInfo objects made lazily), not done here. 10M files was not
  measured in this run when it is missing from the table (building it takes ~10 minutes per
  store on this machine); 1M -> 10M adds one B-tree level."""),
    ("sqlpages", """\
- **SQLite pages** (`sqlinsert`, `sqllookup`, issue 18: <= 1.3x a native file): in autocommit
  mode SQLite brackets every statement with xLock, two xAccess calls (hot journal, WAL),
  xFileSize, xDeviceCharacteristics and xUnlock; these were Python methods (~11 us of Python per
  point lookup) and are now C kernels (`cartridge/_core/vfslock.pyx`, `Overlay.vfs_size`) with
  the Python methods kept as the reference for every other case; xRead/xWrite were already C
  (`pageio.Overlay`). What is left per statement is apsw's dispatch of those six calls into
  Python-callable objects (building the argument tuples, the GIL, converting results: ~0.3-0.5
  us each) and the statement guard (`exec_trace`, called by apsw before every statement *and
  every executemany row*: its argument tuple plus ~6 attribute reads, ~0.3 us per inserted row).
  The insert also publishes the whole database at COMMIT (checksums and writes of every changed
  64 KiB chunk), which the native side spreads over the transaction. Only a VFS written in C
  against SQLite's `sqlite3_io_methods` (no apsw dispatch, the guard as a C callback) would
  remove the dispatch cost; it would also need the lock table and member state in C."""),
    ("zipf", """\
- **Pure zipfian hit ratio**: with a cache of one tenth of the files, no policy can exceed the
  ceiling printed under the `zipf` table (the summed popularity of the files that fit, ~80% for
  these sizes); ARC comes within a few points of it. 90% would need a cache holding about a
  third of the files."""),
    ("seqread", """\
- **Sequential read vs memcpy** (`seqread`): the kernel's copy from the page cache alone
  (`native`) reaches ~80-90% of memcpy on an idle machine; checking every 64 KiB chunk's xxh3
  costs one more pass over the data (now AVX2, ~70 GB/s from cache), overlapped with the next
  read on a second thread — which needs the second core, shared here with other jobs (see the
  load average above). At lighter load the same code measured 60-66% while developing."""),
    ("space", """\
- **Space for 10 KiB files**: a 10 KiB file takes three whole 4 KiB pages (2 KiB of padding),
  plus its catalog record; SQLite stores the 2 KiB remainder inside the B-tree leaf with other
  rows. The difference (about 100 B per file) is the catalog record in partly filled leaves;
  packs (format 1.4) take files only up to 16 KiB, not the tails of larger files
  (FORMAT section 14.4); `perf/pack_bench.py` measures the small sizes."""),
]


METHOD = """## How it is measured

**One command.** `python -m perf --write-readme` (or `tox -e perf`) runs every workload and
rewrites this file and `perf/scaling.png`; `--quick` uses small sizes (a few minutes),
`--only`/`--skip` pick workloads, `--from-json perf/.data/results-full.json --write-readme`
re-renders without running. Needs the perf extra: `pip install -e ".[perf]"` (pyperf, py-lmdb,
and matplotlib for the plot). Large stores (the lookup and listing archives up to 10M files)
are built once and cached under `perf/.data/` (gitignored), keyed by the format and workload
versions.

**Process model.** `perf/run.py` does not use `pyperf.Runner`'s worker processes. The Runner
would spawn ~20 workers per benchmark, and each would have to rebuild (or reopen and re-warm) the
workload's data, and the peers of one workload would be timed in different processes minutes
apart, mixing machine drift into the ratios we care about. Instead every workload sets up all its
peers in this one process and `perf/harness.py` times them the way pyperf's
`Runner.bench_time_func` does: a time function is called with a loop count and returns the
elapsed `pyperf.perf_counter()` seconds (setup that must happen per loop, like a fresh store for
the bulk load or dropping the OS cache for the uncached reads, is excluded). Loops are calibrated
per peer by doubling until one value lasts at least the minimum time, one warm-up value follows,
then values are taken in rounds that visit every peer once, starting from a different peer each
round. The results are saved as a `pyperf.BenchmarkSuite` (`perf/.data/results-<mode>.json`, or
`-o FILE`; the hit ratios and space figures beside it in `*.measures.json`), so
`python -m pyperf stats` / `compare_to` / `hist` work on them. The tables show the median.

**Workloads.**
- `read1k` / `read4k` / `read64k` / `read1m`: files of that size (random bytes) in 100
  directories, at most 10,000 files and 48 MiB per size (so 48 files of 1 MiB), read whole in a
  fixed random order; every peer reads every file once before timing, so the OS page cache and
  each store's own cache are warm (cartridge's default cache is 64 MiB). For 64 KiB and 1 MiB,
  `cartridge-buffer` is `read_buffer()` (a memoryview, no copy after the read) and
  `cartridge-readinto` reads into a preallocated buffer.
- `uncached4k` / `uncached1m`: random reads where the file's bytes are in no cache: before each
  timed read, `posix_fadvise(POSIX_FADV_DONTNEED)` drops every store's files from the OS page
  cache (untimed). Cartridge runs with a 2 MiB page cache and its content chunk is evicted from
  it too; SQLite keeps its default 2 MB page cache; both keep the B-tree pages they hold. LMDB's
  mapped pages cannot be dropped while mapped, so its environment is closed and reopened
  (untimed, `readahead=False`) before each read: its B-tree pages come from disk as well. The
  disk is a virtual disk: what "from disk" costs depends on the host.
- `commit-off` / `commit-normal` / `commit-full`: a random one of N existing 4 KiB files is
  replaced, each write its own commit, at each `sync` mode against the peers' equivalent:
  SQLite WAL with `synchronous` OFF / NORMAL / FULL; LMDB `sync=False` / `sync=True,
  metasync=False` (its data is flushed, the last commit may be lost on power loss, like
  cartridge's "normal") / `sync=True, metasync=True`; native files without / with `fsync`
  (never atomic; not run for "normal", which has no native equivalent).
- `bulk`: 100,000 new 1 KiB files (1,000 directories, random order) into a fresh, empty store in
  one transaction; the commit (and zipfile's `close()`) is inside the timed region; time per file.
  cartridge runs twice: `write()` per file inside `transaction()`, and one `write_many()` of all
  the (path, data) pairs (the target's figure).
- `lookup`: `stat()` of random existing paths `/l/dXXXX/fNNNNNNN.dat` in stores of 1K, 10K, 100K,
  1M and 10M files of 16 bytes (a fixed sequence of uniform draws, at most 1,000,000 distinct
  and at most 20 per file; cycled), so at 1M and beyond most lookups miss any per-path memo a
  store keeps and most B-tree pages miss the 64 MiB page cache; stores built once in path order
  (100,000 per transaction, `sync="off"`). Plotted in `scaling.png`.
- `listdir`: the sorted names of the 1,000 files of one directory (`/l/dXXXX`, in the middle of
  the key space) of the same stores; SQLite is a range query on the primary key, LMDB a cursor
  walk; `native@1K` is `sorted(os.listdir())` of a real directory of 1,000 files.
- `seqread`: one 1 GiB file read into a preallocated numpy buffer, against `np.copyto` of two
  1 GiB arrays as the memory-bandwidth baseline (every byte is checked once against the source
  before timing).
- `seqwrite`: one 1 GiB numpy array written as a file (replacing the previous version), syncing
  off everywhere, against the same `np.copyto` baseline.
- `zipf`: an archive of 4 KiB files holding 10x the page cache budget, read through
  `Cartridge.read` with zipfian popularity (s = 0.99, popularity ranks shuffled over the files);
  "scan-mixed" interleaves bursts of 3,000 zipfian reads with bursts of 1,000 reads that sweep
  all files in path order (a backup beside the application). The same archive and trace run with
  the page cache replaced by cartridge's `LRUCache` of the same byte budget. The hit ratio is the
  page cache's own (hits / lookups after the warm-up fifth).
- `space`: 10,000 files of 100 B, 4 KiB and 10 KiB written into a new store of each kind; bytes
  allocated on disk beyond the content.

**Peers.** cartridge uses `sync="off"` (except in `commit-normal`/`commit-full`) and the default
64 MiB cache; `cartridge-ro` is the same archive opened read-only (mode `"r"`), which re-checks
the root slots for a newer commit on every call. SQLite is the stdlib `sqlite3` module on a
`sqlar` table (`name TEXT PRIMARY KEY, mode, mtime, sz, data`) with `journal_mode=WAL` and
`synchronous=OFF` (WAL+OFF still survives a killed process); for `seqread` it is `apsw`'s
`Blob.readinto`, since `sqlite3` has no readinto. LMDB is py-lmdb with `sync=False,
metasync=False` and `writemap=True` (the faster variant; `lmdb-nowritemap` is shown for
`commit-off` and the target uses the best LMDB or SQLite figure); reads use one long-lived read
transaction (`lmdb-txn` opens one per get). Native files are plain `open()` calls (and
`os.open`+`os.pread`+`os.close` for `native-pread`) without fsync (and without the
write-to-temp-and-rename that would make them atomic). zipfile is `ZIP_STORED` with the
`ZipFile` object kept open. h5py is not a peer (not installed here).

**Profiles.** `python perf/profile_paths.py [read|commit|txn|stat]` prints cProfile's top
functions for cartridge's cached read, single-write commit, write-in-a-transaction and stat paths.
Separate benchmarks live beside this suite: `perf/space_bench.py` (snapshots, compaction
cycles, vacuum against SQLite's VACUUM, delete_snapshot cost; issue 14), `perf/pack_bench.py`
(dense small files in packs against an sqlar table and LMDB; issue 16), `perf/iam_bench.py`
(policy decisions and principal handles, see docs/IAM.md), `perf/sqlite_bench.py` (SQLite
databases inside an archive, see docs/SQLITE.md), `perf/remote_bench.py` (remote, read-only
archives through fsspec's memory filesystem and loopback HTTP, against local reads and zip over
fsspec, see docs/FSSPEC.md) and `perf/engram_bench.py` (Engram export and reading against
zipfile and tarfile + lz4, and the memory of export/import; see docs/ENGRAM.md) and
`perf/audit_bench.py` (the audit log's cost against audit="off", its ring, verify(), proofs and
space; see docs/AUDIT.md).
"""


# -- main ----------------------------------------------------------------------------------
ALL = list(WORKLOADS) + list(MEASURES)


def _load(path: str) -> tuple[list[harness.Result], dict, dict]:
    suite = pyperf.BenchmarkSuite.load(path)
    results = harness.from_suite(suite)
    md = suite.get_benchmarks()[0].get_metadata()
    side = Path(path).with_suffix(".measures.json")
    meas = json.loads(side.read_text()) if side.exists() else {}
    return results, md, meas


def _publish(text: str, results, write: bool) -> None:
    if write:
        README.write_text(text)
        print(f"wrote {README}")
        if plot_scaling(results, HERE / "scaling.png"):
            print(f"wrote {HERE / 'scaling.png'}")
    else:
        start = text.index("## Targets")
        print(text[start:text.index("## How it is measured")])


def _measure(w: str, builder, cfg: Config, wdir: Path, t0: float) -> list[harness.Result]:
    peers = builder(cfg, wdir, log=print)
    print(f"  set up in {time.monotonic() - t0:.1f} s; measuring {len(peers)} peers")
    try:
        # a bulk value is a whole transaction into a fresh store, a sequential one a whole
        # large file: fewer values keep the full run within bounds
        vals = max(3, cfg.values // 3) if w in ("bulk", "seqread", "seqwrite") else cfg.values
        return harness.run_workload(w, peers, values=vals, min_time=cfg.min_time)
    finally:
        for p in peers:
            p.close()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m perf", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    ap.add_argument("--only", help="comma-separated workloads: " + ",".join(ALL))
    ap.add_argument("--skip", help="comma-separated workloads to leave out")
    ap.add_argument("--write-readme", action="store_true",
                    help="rewrite perf/README.md and perf/scaling.png")
    ap.add_argument("-o", "--output", help="pyperf JSON output (default perf/.data/results-<mode>.json)")
    ap.add_argument("--from-json", help="do not run: render the README/summary from this JSON")
    ap.add_argument("--tmpdir", help="where to build the workload data (default: system temp)")
    ap.add_argument("--values", type=int, help="values per peer (override)")
    ap.add_argument("--lookup-sizes", help="comma-separated file counts for the lookup and listing "
                    "workloads, e.g. 1000,1000000 (a 10M store takes minutes to build, once)")
    ap.add_argument("--seq-bytes", type=int, help="sequential read/write size in MiB (override)")
    ap.add_argument("--min-time", type=float, help="seconds per value, at least (override)")
    args = ap.parse_args(argv)

    if args.from_json:
        results, md, meas = _load(args.from_json)
        _publish(render(results, md, meas), results, args.write_readme)
        return 0

    cfg = Config.make(args.quick)
    if args.values:
        cfg.values = args.values
    if args.min_time:
        cfg.min_time = args.min_time
    if args.lookup_sizes:
        cfg.lookup_sizes = tuple(int(x) for x in args.lookup_sizes.split(","))
    if args.seq_bytes:
        cfg.seq_bytes = args.seq_bytes << 20
    names = ALL if not args.only else [w.strip() for w in args.only.split(",")]
    if args.skip:
        names = [w for w in names if w not in {x.strip() for x in args.skip.split(",")}]
    unknown = [w for w in names if w not in ALL]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from {ALL}")
    md = machine_meta(cfg, argv)
    print(f"cartridge perf ({md['run_mode']}): {md['cpu_model']}, {md['cores']} cores, "
          f"Python {md.get('python_version')}")
    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="cartridge-perf-", dir=args.tmpdir))
    results: list[harness.Result] = []
    meas: dict = {}
    out = Path(args.output) if args.output else workloads.DATA_DIR / f"results-{md['run_mode']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    failed = []

    def save() -> None:        # after every workload: a late failure loses nothing measured
        md["run_seconds"] = round(time.monotonic() - t_start)
        try:
            md["load_avg_end"] = round(os.getloadavg()[0], 2)
        except OSError:
            pass
        if failed:
            md["failed_workloads"] = ", ".join(failed)
        if results:
            harness.to_suite(results, md).dump(str(out), replace=True)
        out.with_suffix(".measures.json").write_text(json.dumps(meas, indent=1))

    try:
        for w in names:
            builder, title = WORKLOADS[w] if w in WORKLOADS else MEASURES[w]
            print(f"[{w}] {title}: setting up")
            t0 = time.monotonic()
            wdir = tmp / w
            wdir.mkdir()
            try:
                if w in MEASURES:
                    meas[w] = builder(cfg, wdir, log=print)
                else:
                    results += _measure(w, builder, cfg, wdir, t0)
            except Exception:
                traceback.print_exc()
                print(f"  {w} FAILED; going on with the others")
                failed.append(w)
            finally:
                shutil.rmtree(wdir, ignore_errors=True)
            print(f"  done in {time.monotonic() - t0:.1f} s")
            save()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    save()
    print(f"results: {out} ({md['run_seconds']} s)" + (f"; FAILED: {failed}" if failed else ""))
    _publish(render(results, md, meas), results, args.write_readme)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
