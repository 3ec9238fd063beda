"""What the command line says in the cases a reviewer found unclear: get without --to (and a
local directory given as a PATH), audit prove past the end, info without the page cache's
counters unless -v, snapshot ls of an archive without snapshots."""
from __future__ import annotations

import json
import os

import pytest

import cartridge
from cartridge.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def arch(tmp_path) -> str:
    path = str(tmp_path / "a.cart")
    with cartridge.open(path, "x") as c:
        c.write("/d/f.txt", b"hello")
    return path


def test_get_without_to_names_the_current_directory(arch, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    rc, out, err = run(capsys, "get", arch, "/d/f.txt")
    assert rc == 0 and err == ""
    assert out.strip() == (f"got 1 file, 5 bytes (5 B) into the current directory ({work}; "
                           "--to DIR chooses another)")
    assert (work / "f.txt").read_bytes() == b"hello"
    rc, out, _ = run(capsys, "get", arch, "/d/f.txt", "--to", "out")
    assert rc == 0 and out.strip().endswith("into out")


@pytest.mark.parametrize("dest", ["./out", "out", "{tmp}"])
def test_get_with_a_local_directory_as_path_hints_at_to(arch, tmp_path, capsys, monkeypatch,
                                                       dest):
    """`get a.cart /d/f.txt ./out` (as cp takes it): the error says to use --to, and nothing
    is written."""
    monkeypatch.chdir(tmp_path)
    dest = dest.format(tmp=tmp_path)
    before = sorted(os.listdir(tmp_path))
    rc, out, err = run(capsys, "get", arch, "/d/f.txt", dest)
    assert rc == 1 and out == ""
    assert err.count("\n") == 1 and f"say --to {dest}" in err and "a.cart" in err, err
    assert sorted(os.listdir(tmp_path)) == before
    rc, _, err = run(capsys, "get", arch, "/nope")          # an archive path: no hint
    assert rc == 1 and err == "cartridge: error: no such file or directory: /nope\n"


def test_audit_prove_out_of_range_says_what_exists(arch, capsys):
    with cartridge.open(arch) as c:
        n = len(c.audit)
    assert n >= 1
    rc, _, err = run(capsys, "audit", "prove", arch, n + 5)
    assert rc == 1 and err == f"cartridge: error: no record {n + 5}: the log holds records 0 to " \
                              f"{n - 1}\n"
    rc, _, err = run(capsys, "audit", "prove", arch, 1, "--size", 1)
    assert rc == 1 and "the tree of the first 1 holds records 0 to 0" in err
    rc, _, err = run(capsys, "audit", "prove", arch, 0, "--size", n + 1)
    assert rc == 1 and f"the log has only {n} record" in err
    rc, out, _ = run(capsys, "audit", "prove", arch, n - 1)
    assert rc == 0 and json.loads(out)["seq"] == n - 1
    with cartridge.open(arch) as c, pytest.raises(ValueError) as e:   # the API: said once
        c.audit.inclusion_proof(n + 5)
    assert str(e.value) == f"no record {n + 5} in a log of {n} records"


def test_info_shows_cache_counters_only_verbose(arch, capsys):
    rc, out, _ = run(capsys, "info", arch)
    assert rc == 0 and "files:" in out and "reclaimable_bytes:" in out
    assert "cache:" not in out and "hit_ratio" not in out
    rc, out, _ = run(capsys, "info", arch, "-v")
    assert rc == 0 and "cache:" in out and "hit_ratio:" in out
    rc, out, _ = run(capsys, "info", arch, "--json")
    assert rc == 0 and "hit_ratio" in json.loads(out)["cache"]


def test_snapshot_ls_without_snapshots(arch, capsys):
    rc, out, _ = run(capsys, "snapshot", "ls", arch)
    assert rc == 0 and out.startswith("no snapshots in ") and out.count("\n") == 1
    rc, out, _ = run(capsys, "snapshot", "ls", arch, "--json")
    assert rc == 0 and json.loads(out) == []
    assert run(capsys, "snapshot", "create", arch, "v1")[0] == 0
    rc, out, _ = run(capsys, "snapshot", "ls", arch)
    assert rc == 0 and out.startswith("v1\t") and "no snapshots" not in out


def test_one_byte_is_singular(tmp_path, capsys, monkeypatch):
    """put and get say '1 byte', not '1 bytes'."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "one").write_bytes(b"x")
    assert main(["put", "o.cart", "one"]) == 0
    assert "put 1 file, 1 byte (1 B) into" in capsys.readouterr().out
    assert main(["get", "o.cart", "/one", "--to", "out"]) == 0
    assert "got 1 file, 1 byte (1 B) into out" in capsys.readouterr().out
