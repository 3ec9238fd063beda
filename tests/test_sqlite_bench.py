"""perf/sqlite_bench.py runs both sides with the pragmas it names (smoke test, no timings)."""
from __future__ import annotations

import apsw

from perf import sqlite_bench as sb


def test_same_pragmas_on_both_sides_and_defaults_labelled(tmp_path, capsys):
    cfgs = sb.configs("normal", ["memory", "delete"], defaults=True)
    assert [c[1] for c in cfgs[:2]] == [c[2] for c in cfgs[:2]]
    assert cfgs[1][1] == {"journal_mode": "DELETE", "synchronous": "NORMAL"}
    label, native, cart = cfgs[2]
    assert label.startswith("defaults") and native["journal_mode"] == "DELETE" and cart == {}
    for kind in ("native", "cartridge"):
        side = sb.Side(kind, tmp_path, "normal", kind, {"journal_mode": "DELETE",
                                                         "synchronous": "NORMAL"})
        conn = side.connect()
        assert conn.execute("PRAGMA journal_mode").fetchall() == [("delete",)]
        assert conn.execute("PRAGMA synchronous").fetchall() == [(1,)]
        conn.close()
        side.close()
    assert sb.main(["--sync", "off", "--quick", "--only", "autocommit", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "same pragmas: journal_mode=MEMORY synchronous=OFF" in out and "defaults:" in out
    assert apsw.sqlite_lib_version() in out
