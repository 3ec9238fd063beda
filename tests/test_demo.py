"""`cartridge demo` (issue 17, item 5): a tour of every capability, built from a list of step
functions (a later capability adds one), each checked against a model."""
from __future__ import annotations

import io
import subprocess
import sys

import pytest

import cartridge
from cartridge import demo


def test_the_tour_covers_every_capability(tmp_path):
    out = io.StringIO()
    result = demo.run_demo(tmp_path / "d.cart", out=out)
    text = out.getvalue()
    assert result["verify_ok"] and result["steps"] == [s.title for s in demo.STEPS]
    for title in ("files", "stream", "transaction", "sqlite", "policy", "snapshot", "compaction",
                  "engram", "audit", "verify", "read-only"):
        assert title in result["steps"], title
    assert "signed and verified with key" in text           # the engram extra is in the test extra
    assert "denials recorded; record" in text and "restored all in one commit" in text
    assert "denied: write /docs/x.txt, read /README.txt" in text, text
    assert "exported copy read by the stdlib sqlite3" in text
    assert text.splitlines()[-1].startswith(f"done: {len(demo.STEPS)} steps") and "verify OK" in text
    with cartridge.open(str(tmp_path / "d.cart")) as c:    # what the tour left is really there
        assert c.verify().ok and "readers" in c.policies()
        assert c.sqlite("/db/app.db", readonly=True).execute(
            "SELECT count(*) FROM notes").fetchone()[0] == 241
        with pytest.raises(cartridge.AccessDeniedError):
            c.as_principal("ann").read("/README.txt")
        assert c.snapshots() == [] and c.audit.verify().ok


def test_a_step_is_one_function(tmp_path):
    """How a later capability joins the tour: one Step in the list, run in order, reported."""
    def marker(t: demo.Tour) -> str:
        t.cart.write("/marker", b"m")
        t.model["/marker"] = b"m"
        return "marker written"

    steps = list(demo.STEPS)
    steps.insert(steps.index(demo.VERIFY_STEP), demo.Step("marker", marker))
    out = io.StringIO()
    result = demo.run_demo(tmp_path / "d.cart", out=out, steps=steps)
    assert "marker" in result["steps"] and "marker: marker written" in out.getvalue()
    assert result["steps"].index("marker") == result["steps"].index("verify") - 1


def test_a_failing_check_is_reported(tmp_path, monkeypatch):
    def broken(t: demo.Tour) -> str:
        t.model["/README.txt"] = b"not what the archive holds"
        return "model changed"

    steps = [demo.STEPS[0], demo.Step("broken", broken, writable=False),
             demo.Step("read-only", demo._step_reopen, writable=False)]
    with pytest.raises(demo.DemoError, match="lost data"):
        demo.run_demo(tmp_path / "d.cart", out=io.StringIO(), steps=steps)
    r = subprocess.run([sys.executable, "-m", "cartridge", "demo", str(tmp_path / "d.cart")],
                       capture_output=True)
    assert r.returncode == 1 and b"exists" in r.stderr and b"Traceback" not in r.stderr
