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


def test_the_engram_goes_beside_the_archive_and_never_over_a_file(tmp_path):
    """`cartridge demo x.cart` exports its Engram to x.eng beside it (it used to write demo.eng
    into that directory, replacing any file of that name); an existing one is refused, before
    anything is written, unless --force; an archive not named .cart gets NAME.eng."""
    pytest.importorskip("zstandard", reason="the engram extra is not installed")
    assert demo.engram_path(str(tmp_path / "x.cart")) == str(tmp_path / "x.eng")
    assert demo.engram_path(str(tmp_path / "y.eng")) == str(tmp_path / "y.eng.eng")
    assert demo.engram_path(str(tmp_path / "z")) == str(tmp_path / "z.eng")
    (tmp_path / "demo.eng").write_bytes(b"a user's own file")
    out = io.StringIO()
    demo.run_demo(tmp_path / "mine.cart", out=out)
    assert (tmp_path / "demo.eng").read_bytes() == b"a user's own file"
    assert (tmp_path / "mine.eng").read_bytes()[:4] == b"\x89ENG"
    assert "exported to mine.eng" in out.getvalue()
    (tmp_path / "mine2.eng").write_bytes(b"precious")
    with pytest.raises(cartridge.AlreadyExistsError, match="mine2.eng"):
        demo.run_demo(tmp_path / "mine2.cart", out=io.StringIO())
    assert not (tmp_path / "mine2.cart").exists()
    assert (tmp_path / "mine2.eng").read_bytes() == b"precious"
    r = subprocess.run([sys.executable, "-m", "cartridge", "demo", str(tmp_path / "mine2.cart")],
                       capture_output=True, timeout=120)
    assert r.returncode == 1 and r.stderr.count(b"\n") == 1 and b"--force" in r.stderr, r
    assert (tmp_path / "mine2.eng").read_bytes() == b"precious"
    r = subprocess.run([sys.executable, "-m", "cartridge", "demo", str(tmp_path / "mine.cart"),
                        "--force"], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mine.eng").read_bytes()[:4] == b"\x89ENG"


def test_without_the_engram_extra_the_step_says_how_to_get_it(tmp_path, monkeypatch):
    """The README's first command installs the core only: the tour still completes, and its
    Engram step says which extra it needs instead of failing."""
    monkeypatch.setitem(sys.modules, "cartridge.engram.demo", None)   # import -> ImportError
    out = io.StringIO()
    result = demo.run_demo(tmp_path / "core.cart", out=out)
    assert result["verify_ok"]
    line = next(x for x in out.getvalue().splitlines() if ". engram: " in x)
    assert "skipped: install the engram extra" in line and "cartridge[engram]" in line
    assert not (tmp_path / "core.eng").exists()
