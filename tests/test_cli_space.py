"""The CLI of issue 14: snapshot create|ls|rm|restore, compact, freeze, and info's space figures."""
from __future__ import annotations

import json
import os
import random

import pytest

import cartridge
from cartridge.cli import main


@pytest.fixture
def cart(tmp_path):
    p = str(tmp_path / "a.cart")
    rng = random.Random(1)
    with cartridge.open(p, "x") as c:
        for i in range(40):
            c.write(f"/f{i}", rng.randbytes(100_000))
    return p


def out_json(capsys):
    return json.loads(capsys.readouterr().out)


def test_snapshot_commands(cart, capsys):
    assert main(["snapshot", "create", cart, "before"]) == 0
    assert "snapshot before" in capsys.readouterr().out
    assert main(["snapshot", "create", cart, "before"]) == 1          # taken
    assert "already exists" in capsys.readouterr().err
    assert main(["snapshot", "create", cart, "second", "--json"]) == 0
    made = out_json(capsys)
    assert made["name"] == "second" and made["size"] == 40 * 100_000 and made["generation"] > 0
    assert main(["snapshot", "create", cart, "", "--json"]) == 2      # bad name: usage
    assert "printable" in capsys.readouterr().err
    assert main(["snapshot", "rm", cart, "second"]) == 0
    capsys.readouterr()
    assert main(["rm", cart, "/f1", "/f2"]) == 0
    capsys.readouterr()
    assert main(["snapshot", "ls", cart, "--json"]) == 0
    (s,) = out_json(capsys)
    assert s["name"] == "before" and s["size"] == 40 * 100_000
    assert main(["snapshot", "ls", cart]) == 0
    assert capsys.readouterr().out.startswith("before\t")
    assert main(["snapshot", "restore", cart, "before", "--json"]) == 0
    assert out_json(capsys)["files"] == 40
    with cartridge.open(cart) as c:
        assert c.exists("/f1")
    assert main(["snapshot", "rm", cart, "before", "--json"]) == 0
    assert out_json(capsys)["removed"] == "before"
    for args in (["snapshot", "rm", cart, "before"], ["snapshot", "restore", cart, "nope"]):
        assert main(args) == 1
        assert "no snapshot named" in capsys.readouterr().err
    assert main(["snapshot", "ls", str(cart) + ".missing"]) == 1


def test_info_shows_the_space_figures(cart, capsys):
    assert main(["snapshot", "create", cart, "s"]) == 0
    assert main(["rm", cart, "/f3"]) == 0
    capsys.readouterr()
    assert main(["info", cart, "--json"]) == 0
    info = out_json(capsys)
    for key in ("file_bytes", "live_bytes", "snapshot_bytes", "free_bytes",
                "reclaimable_bytes", "fragmentation"):
        assert key in info
    assert info["snapshot_bytes"] >= 100_000
    assert main(["info", cart]) == 0
    assert "reclaimable_bytes:" in capsys.readouterr().out


def test_compact_one_cycle_and_to_completion(cart, capsys):
    assert main(["rm", cart] + [f"/f{i}" for i in range(40) if i % 8]) == 0
    capsys.readouterr()
    assert main(["compact", cart, "--max-pages", "20", "--json"]) == 0
    one = out_json(capsys)
    assert 0 < one["pages_moved"] <= 36
    assert main(["compact", cart]) == 0
    assert capsys.readouterr().out.startswith("freed ")
    assert main(["compact", cart, "--json"]) == 0
    last = out_json(capsys)
    assert last["done"] and last["file_bytes"] == os.path.getsize(cart)
    assert main(["compact", cart, "--max-pages", "0"]) == 2        # usage
    assert main(["verify", cart]) == 0


def test_freeze(cart, capsys):
    assert main(["freeze", cart, "--json"]) == 0
    assert out_json(capsys)["frozen"] is True
    assert main(["rm", cart, "/f1"]) == 1
    assert "frozen" in capsys.readouterr().err
    assert main(["snapshot", "create", cart, "s"]) == 1
    assert main(["ls", cart, "/"]) == 0
    assert "f1" in capsys.readouterr().out
