"""Hot paths of one build, for comparing two revisions side by side (min of repeats, ns/op).

    cd OLD_TREE && PYTHONPATH=$PWD python /path/to/perf/ab_hotpaths.py
    cd NEW_TREE && PYTHONPATH=$PWD python /path/to/perf/ab_hotpaths.py

Run the two alternately, several times, and compare each call's best time as new / old: the
minimum of many repeats is the least disturbed by a shared machine. 10,000 files of 4 KiB.
"""
from __future__ import annotations

import os
import random
import tempfile
import timeit

import cartridge


def best_per_op(fn, ops: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=1, repeat=repeat)) / ops * 1e9


def txn_writes(c, paths, data) -> None:
    """4 KiB writes inside one transaction (one commit at the end)."""
    with c.transaction():
        for p in paths:
            c.write(p, data)


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        c = cartridge.open(os.path.join(d, "ab.cart"), "w", sync="off")
        paths = [f"/d{i % 100}/f{i}" for i in range(10_000)]
        c.write_many((p, os.urandom(4096)) for p in paths)
        sample = random.Random(1).sample(paths, 1000)
        for p in sample:
            c.read(p)
        pr = c.as_principal("ann")
        data = os.urandom(4096)
        db = c.sqlite("/t.db")
        db.execute("CREATE TABLE t(x)")
        n = len(sample)
        r = {
            "read4k": best_per_op(lambda: [c.read(p) for p in sample], n, 15),
            "stat": best_per_op(lambda: [c.stat(p) for p in sample], n, 15),
            "exists": best_per_op(lambda: [c.exists(p) for p in sample], n, 15),
            "principal_read": best_per_op(lambda: [pr.read(p) for p in sample], n, 15),
            "listdir": min(timeit.repeat(lambda: c.listdir("/d1"), number=20, repeat=5)) / 20 * 1e9,
            "commit_off": best_per_op(lambda: [c.write(p, data) for p in sample[:200]], 200, 5),
            "txn_write4k": best_per_op(lambda: txn_writes(c, sample, data), n, 7),
            "write_many4k": best_per_op(lambda: c.write_many((p, data) for p in sample), n, 7),
            "sqlite_autocommit": best_per_op(
                lambda: [db.execute("INSERT INTO t VALUES(?)", (i,)) for i in range(200)], 200, 5),
        }
        db.close()
        c.close()
    print(" ".join(f"{k}={v:.0f}" for k, v in r.items()))


if __name__ == "__main__":
    main()
