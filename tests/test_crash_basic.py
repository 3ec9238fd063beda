"""Fault injection for the commit protocol: record every write and sync the pager makes, then
rebuild the file as a power cut (only synced writes survive) or a killed process (every write up
to the cut survives) would leave it, at every write/sync boundary. Each image must open, pass
verify(), and hold exactly one committed state: the last durable one, or (where the mode
allows) a later one whole, never a mix."""
from __future__ import annotations

import os
import random
import warnings

import pytest

import cartridge
import cartridge.pager as pager_mod


class RecordingOS:
    """Stands in for the `os` module inside cartridge.pager and logs what reaches the file."""

    def __init__(self, real, fd: int):
        self._real = real
        self._fd = fd
        self.log: list[tuple] = []

    def __getattr__(self, name):
        return getattr(self._real, name)

    def pwrite(self, fd, data, offset):
        if fd == self._fd:
            self.log.append(("w", offset, bytes(data)))
        return self._real.pwrite(fd, data, offset)

    def pwritev(self, fd, bufs, offset):
        if fd == self._fd:
            self.log.append(("w", offset, b"".join(bytes(b) for b in bufs)))
        return self._real.pwritev(fd, bufs, offset)

    def ftruncate(self, fd, length):
        if fd == self._fd:
            self.log.append(("t", length))
        return self._real.ftruncate(fd, length)

    def fdatasync(self, fd):
        if fd == self._fd:
            self.log.append(("s",))
        return self._real.fdatasync(fd)

    fsync = fdatasync


def image(base: bytes, log: list[tuple], cut: int, keep_unsynced: bool) -> bytes:
    """The file after the first `cut` operations, unsynced writes kept or dropped."""
    last_sync = max((i for i in range(cut) if log[i][0] == "s"), default=-1)
    img = bytearray(base)
    for i in range(cut):
        op = log[i]
        if not keep_unsynced and i > last_sync and op[0] == "w":
            continue
        if op[0] == "t":
            del img[op[1]:]
            img.extend(bytes(op[1] - len(img)))
        elif op[0] == "w":
            off, data = op[1], op[2]
            if len(img) < off + len(data):
                img.extend(bytes(off + len(data) - len(img)))
            img[off:off + len(data)] = data
    return bytes(img)


def contents(path: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cartridge.open(path, "r") as c:
            report = c.verify()
            assert report.ok, report.problems
            return {i.path: c.read(i.path) for i in c.scan("/")}


def workload(c, rng: random.Random, states: list, marks: list, rec: RecordingOS) -> None:
    """A mix of commits: small and large writes, overwrites, deletes, a directory rename, a
    transaction, growth of the file and reuse of freed pages. After each commit returns, the
    expected state and the log position are recorded."""
    model = dict(states[-1])

    def done():
        states.append(dict(model))
        marks.append(len(rec.log))

    for i in range(6):
        data = rng.randbytes(rng.choice([50, 3000, 70_000]))
        c.write(f"/d/f{i}", data)
        model[f"/d/f{i}"] = data
        done()
    c.write("/d/f1", b"overwritten")
    model["/d/f1"] = b"overwritten"
    done()
    c.delete("/d/f2")
    del model["/d/f2"]
    done()
    c.rename("/d", "/e")
    model = {("/e" + k[2:] if k.startswith("/d/") else k): v for k, v in model.items()}
    done()
    with c.transaction():
        for j in range(40):
            c.write(f"/t/{j}", bytes([j]) * 100)
            model[f"/t/{j}"] = bytes([j]) * 100
        c.delete("/e/f0")
        del model["/e/f0"]
    done()
    big = rng.randbytes(600_000)          # grows the file
    c.write("/big", big)
    model["/big"] = big
    done()
    for _ in range(12):                   # rewrites recycle freed pages
        data = rng.randbytes(5000)
        c.write("/e/f3", data)
        model["/e/f3"] = data
        done()


@pytest.mark.parametrize("sync", ["full", "normal", "off"])
def test_every_cut_leaves_a_committed_state(tmp_path, monkeypatch, sync):
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "w") as c:
        c.write("/seed", b"seed")
    base = open(path, "rb").read()
    states = [{"/seed": b"seed"}]
    c = cartridge.open(path, "a", sync=sync)
    rec = RecordingOS(os, c._eng.fd)
    monkeypatch.setattr(pager_mod, "os", rec)
    marks = [0]
    workload(c, random.Random(7), states, marks, rec)
    monkeypatch.setattr(pager_mod, "os", os)
    c.close()
    log = rec.log
    # the workload really recycles pages: some page (not page 0) is written by two commits
    owner = {}
    reused = False
    for n in range(1, len(marks)):
        for op in log[marks[n - 1]:marks[n]]:
            if op[0] == "w" and op[1] >= 4096:
                for pg in range(op[1] // 4096, (op[1] + len(op[2]) - 1) // 4096 + 1):
                    reused |= owner.setdefault(pg, n) != n
    assert reused
    # power cut (unsynced writes lost) only where the mode promises to survive one
    models = [True] if sync == "off" else [True, False]
    cuts = range(len(log) + 1)
    checked = 0
    for keep in models:
        for cut in cuts:
            img = image(base, log, cut, keep)
            p = str(tmp_path / "crash.cart")
            with open(p, "wb") as f:
                f.write(img)
            got = contents(p)
            returned = max(i for i, m in enumerate(marks) if m <= cut)   # commits that returned
            ok = [j for j, st in enumerate(states) if st == got]
            assert ok, f"cut {cut}: state matches no committed state"
            j = ok[-1]
            # never older than what the mode promises, never beyond the commit in flight
            if sync == "full" or keep:
                assert j >= returned, (cut, j, returned)
            else:   # normal, power cut: the most recent commits may be lost, consistently
                assert j >= returned - 1, (cut, j, returned)
            assert j <= returned + 1, (cut, j, returned)
            checked += 1
    assert checked == len(models) * (len(log) + 1) and len(log) > 60
