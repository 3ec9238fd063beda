"""What the operation hook and a pre-commit participant cost (cartridge/_handle.py).

    PYTHONPATH=$PWD python perf/hook_bench.py

In one process, alternately: no subscriber; a no-op subscriber wanting changes only plus a no-op
participant (the audit log's "writes" level); a no-op subscriber wanting everything plus the
participant (its "all" level). Prints ns per call (min over rounds of CPU time) and each ratio
against no subscriber. 10,000 files of 4 KiB, sync="off".
"""
from __future__ import annotations

import os
import random
import tempfile
import time
import timeit

import cartridge
from cartridge import _handle as H


class NoOp:
    def before_commit(self, eng) -> None:
        pass

    def after_rollback(self, eng) -> None:
        pass


def main(rounds: int = 6) -> None:
    with tempfile.TemporaryDirectory() as d:
        c = cartridge.open(os.path.join(d, "hook.cart"), "w", sync="off")
        paths = [f"/d{i % 100}/f{i}" for i in range(10_000)]
        c.write_many((p, os.urandom(4096)) for p in paths)
        sample = random.Random(1).sample(paths, 1000)
        data = os.urandom(4096)
        for p in sample:
            c.read(p)

        def txn() -> None:
            with c.transaction():
                for p in sample:
                    c.write(p, data)

        work = {"txn_write4k": (txn, 1000, 5),
                "commit_off": (lambda: [c.write(p, data) for p in sample[:200]], 200, 3),
                "read4k": (lambda: [c.read(p) for p in sample], 1000, 5)}
        levels = ("none", "changes", "all")
        best: dict[tuple[str, str], float] = {}
        for r in range(rounds):
            for level in levels if r % 2 else tuple(reversed(levels)):
                undo = []
                if level != "none":
                    undo.append(H.subscribe(lambda ev: None, changes_only=level == "changes"))
                    undo.append(H.add_participant(c, NoOp()))
                for name, (fn, n, repeat) in work.items():
                    t = min(timeit.repeat(fn, number=1, repeat=repeat, timer=time.process_time))
                    key = (name, level)
                    best[key] = min(best.get(key, float("inf")), t / n * 1e9)
                for u in undo:
                    u()
        c.close()
    for name in work:
        base = best[(name, "none")]
        print(f"{name:12s} none={base:7.0f} ns  " + "  ".join(
            f"{lv}={best[(name, lv)]:7.0f} ns ({best[(name, lv)] / base:.3f}x)" for lv in levels[1:]))


if __name__ == "__main__":
    main()
