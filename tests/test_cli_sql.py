"""`cartridge sql ARCHIVE DB SQL`: tables, JSON, writes through a writable handle, errors."""
from __future__ import annotations

import json

import pytest

import cartridge
from cartridge.cli import main


def _archive(tmp_path):
    path = str(tmp_path / "s.cart")
    with cartridge.open(path, "w") as c:
        conn = c.sqlite("/app.db")
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, blob BLOB, x REAL)")
        conn.executemany("INSERT INTO t VALUES(?, ?, ?, ?)",
                         [(1, "ann", b"\x01\x02", 1.5), (2, "bob", None, None)])
        conn.close()
    return path


def test_select_table(tmp_path, capsys):
    path = _archive(tmp_path)
    assert main(["sql", path, "/app.db", "SELECT id, name, blob FROM t ORDER BY id"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["id", "name", "blob"]
    assert set(out[1]) <= {"-", " "}
    assert out[2].split() == ["1", "ann", "x'0102'"]
    assert out[3].split() == ["2", "bob", "NULL"]
    assert out[-1] == "(2 rows)"


def test_select_json(tmp_path, capsys):
    path = _archive(tmp_path)
    assert main(["sql", path, "/app.db", "SELECT * FROM t ORDER BY id", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"id": 1, "name": "ann", "blob": "0102", "x": 1.5},
                    {"id": 2, "name": "bob", "blob": None, "x": None}]


def test_write_statement_commits(tmp_path, capsys):
    path = _archive(tmp_path)
    assert main(["sql", path, "/app.db", "INSERT INTO t(name) VALUES('cy')"]) == 0
    capsys.readouterr()
    assert main(["sql", path, "/app.db", "SELECT count(*) AS n FROM t", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 3}]
    with cartridge.open(path, "r") as c:
        assert c.verify().ok


def test_errors(tmp_path, capsys):
    path = _archive(tmp_path)
    assert main(["sql", path, "/nope.db", "SELECT 1"]) == 1
    assert "no such database" in capsys.readouterr().err
    assert main(["sql", path, "/app.db", "SELEC nonsense"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cartridge: error: SQL error") and "Traceback" not in err
    assert main(["sql", str(tmp_path / "missing.cart"), "/app.db", "SELECT 1"]) == 1
    assert main(["sql", path, "/new.db", "CREATE TABLE u(a)", "--create"]) == 0
    with cartridge.open(path, "r") as c:
        assert c.exists("/new.db")


def test_consecutive_selects_are_separate_tables(tmp_path, capsys):
    path = _archive(tmp_path)
    assert main(["sql", path, "/app.db", "SELECT id FROM t WHERE id=1; SELECT id FROM t"]) == 0
    out = capsys.readouterr().out
    assert out.count("(1 row)") == 1 and out.count("(2 rows)") == 1


def test_select_without_rows_prints_its_header(tmp_path, capsys):
    path = _archive(tmp_path)
    assert main(["sql", path, "/app.db", "SELECT id, name FROM t WHERE 0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["id", "name"]
    assert out[-1] == "(0 rows)"


def test_json_duplicate_columns_and_infinity(tmp_path, capsys):
    path = _archive(tmp_path)
    assert main(["sql", path, "/app.db", "SELECT id, id, 1e999 AS big, -1e999 AS small "
                 "FROM t WHERE id=1", "--json"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert data == [{"id": 1, "id:2": 1, "big": "Infinity", "small": "-Infinity"}]


def test_multi_statement_failure_commits_nothing(tmp_path, capsys):
    path = _archive(tmp_path)
    rc = main(["sql", path, "/app.db", "INSERT INTO t(id) VALUES(10); INSERT INTO nope VALUES(1)"])
    assert rc == 1
    capsys.readouterr()
    with cartridge.open(path, "r") as c:
        conn = c.sqlite("/app.db")
        assert conn.execute("SELECT count(*) FROM t WHERE id=10").fetchall() == [(0,)]
        conn.close()


def test_attach_of_a_new_member(tmp_path, capsys):
    path = _archive(tmp_path)
    assert main(["sql", path, "/app.db", "ATTACH '/new.db' AS n; CREATE TABLE n.u(a); "
                 "INSERT INTO n.u VALUES(7); SELECT a FROM n.u"]) == 0
    assert "(1 row)" in capsys.readouterr().out
    with cartridge.open(path, "r") as c:
        assert c.isfile("/new.db")
