"""The command line (cartridge.cli): every subcommand in-process, plus two real subprocesses."""
from __future__ import annotations

import contextlib
import filecmp
import io
import json
import os
import subprocess
import sys

import pytest

import cartridge
from cartridge.cli import main
from cartridge.demo import run_demo

BIG = (1 << 20) + 12345          # > 1 MiB: goes through the streaming path


def _err_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cartridge: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def tree(tmp_path):
    """A local directory tree: nested dirs, an empty dir, a >1 MiB file, an empty file."""
    root = tmp_path / "src" / "docs"
    (root / "a" / "b").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "x.txt").write_bytes(b"hello\n")
    (root / "a" / "y.json").write_text(json.dumps({"k": [1, 2, 3]}))
    (root / "a" / "b" / "z.txt").write_bytes(b"deep " * 100)
    (root / "a" / "b" / "zero.bin").write_bytes(b"")
    (root / "a" / "big.bin").write_bytes(os.urandom(BIG))
    return root


@pytest.fixture
def tree_cart(tmp_path, tree):
    """An archive holding `tree` under /data/docs."""
    path = str(tmp_path / "t.cart")
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["put", path, str(tree), "--to", "/data"]) == 0
    assert out.getvalue().startswith("put 5 files, 4 directories")
    return path


# -- create / put ------------------------------------------------------------------------------
def test_create_and_exists(tmp_path, capsys):
    path = str(tmp_path / "new.cart")
    assert main(["create", path]) == 0
    assert "created" in capsys.readouterr().out
    with cartridge.open(path, "r") as cart:
        assert cart.listdir("/") == []
    assert main(["create", path]) == 1
    assert "exists" in _err_line(capsys)


def test_put_directory_layout(tree_cart, tree, capsys):
    with cartridge.open(tree_cart, "r") as cart:
        assert cart.read("/data/docs/x.txt") == b"hello\n"
        assert cart.read("/data/docs/a/big.bin") == (tree / "a" / "big.bin").read_bytes()
        assert cart.read("/data/docs/a/b/zero.bin") == b""
        assert cart.isdir("/data/docs/empty")
        assert cart.listdir("/data/docs") == ["a", "empty", "x.txt"]


def test_put_summary_and_single_file_destinations(tmp_path, tree, capsys):
    path = str(tmp_path / "s.cart")
    src = str(tree / "x.txt")
    assert main(["put", path, src]) == 0                      # default: into /
    out = capsys.readouterr().out.strip()
    assert out.startswith("put 1 file, 6 bytes") and "\n" not in out
    assert main(["put", path, src, "--to", "/renamed.txt"]) == 0          # exact target
    assert main(["put", path, src, "--to", "/dir/"]) == 0                 # inside a directory
    assert main(["put", path, src, str(tree / "a" / "y.json"), "--to", "/multi"]) == 0
    with cartridge.open(path, "r") as cart:
        assert sorted(i.path for i in cart.scan("/")) == [
            "/dir/x.txt", "/multi/x.txt", "/multi/y.json", "/renamed.txt", "/x.txt"]


def test_put_missing_source_creates_nothing(tmp_path, capsys):
    path = tmp_path / "n.cart"
    assert main(["put", str(path), str(tmp_path / "nope.txt")]) == 1
    assert "nope.txt" in _err_line(capsys)
    assert not path.exists()


def test_put_is_atomic(tmp_path, tree, capsys):
    """A failure part-way (after a large file was streamed) leaves the archive unchanged."""
    path = str(tmp_path / "atomic.cart")
    with cartridge.open(path, "x") as cart:
        cart.mkdir("/dst/x.txt", parents=True)          # a directory where a file will go
    assert main(["put", path, str(tree / "a" / "big.bin"), str(tree / "x.txt"), "--to", "/dst/"]) == 1
    assert "directory" in _err_line(capsys)
    with cartridge.open(path, "r") as cart:
        assert list(cart.scan("/")) == []
        assert cart.isdir("/dst/x.txt")


def test_put_many_small_files_in_batches(tmp_path, monkeypatch, capsys):
    """Small files go in through write_many in bounded batches; every file lands, and a
    failure in a later batch takes the earlier batches back too."""
    import cartridge.cli as cli
    monkeypatch.setattr(cli, "PUT_BATCH_BYTES", 1000)        # a flush every few files
    src = tmp_path / "many"
    src.mkdir()
    want = {f"f{i:03d}.bin": os.urandom(i * 7 % 600) for i in range(120)}
    for name, data in want.items():
        (src / name).write_bytes(data)
    path = str(tmp_path / "many.cart")
    assert main(["put", path, str(src), "--to", "/in"]) == 0
    assert capsys.readouterr().out.startswith("put 120 files")
    with cartridge.open(path, "r") as cart:
        assert {i.path: cart.read(i.path) for i in cart.scan("/")} == {
            f"/in/many/{n}": d for n, d in want.items()}
    with cartridge.open(path, "a") as cart:
        cart.mkdir("/again/many/f119.bin", parents=True)     # the last file will collide
    assert main(["put", path, str(src), "--to", "/again"]) == 1
    assert "directory" in _err_line(capsys)
    with cartridge.open(path, "r") as cart:
        assert [i.path for i in cart.scan("/again")] == []


def test_sync_option(tmp_path, tree, capsys):
    path = str(tmp_path / "sync.cart")
    assert main(["--sync", "off", "put", path, str(tree / "x.txt")]) == 0
    assert main(["mkdir", "--sync", "normal", path, "/d"]) == 0
    assert main(["--sync", "bogus", "put", path, str(tree / "x.txt")]) == 2


# -- get / cat -----------------------------------------------------------------------------------
def _same_tree(a, b):
    cmp = filecmp.dircmp(a, b)
    assert not cmp.left_only and not cmp.right_only and not cmp.funny_files, (a, b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)
    for d in cmp.common_dirs:
        _same_tree(os.path.join(a, d), os.path.join(b, d))


def test_round_trip(tree_cart, tree, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["get", tree_cart, "/data/docs", "--to", str(out)]) == 0
    summary = capsys.readouterr().out.strip()
    assert summary.startswith("got 5 files")
    _same_tree(str(tree), str(out / "docs"))
    # the whole archive, and a single file
    assert main(["get", tree_cart, "/", "--to", str(tmp_path / "all")]) == 0
    _same_tree(str(tree), str(tmp_path / "all" / "data" / "docs"))
    assert main(["get", tree_cart, "/data/docs/a/big.bin", "--to", str(tmp_path / "one")]) == 0
    assert filecmp.cmp(tree / "a" / "big.bin", tmp_path / "one" / "big.bin", shallow=False)


def test_get_refuses_symlink_escape(tree_cart, tmp_path, capsys):
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "docs").symlink_to(outside, target_is_directory=True)
    assert main(["get", tree_cart, "/data/docs", "--to", str(dest)]) == 1
    assert "refusing" in _err_line(capsys)
    assert list(outside.iterdir()) == []


def test_get_missing_path_writes_nothing(tree_cart, tmp_path, capsys):
    dest = tmp_path / "dest"
    assert main(["get", tree_cart, "/data/docs/x.txt", "/nope", "--to", str(dest)]) == 1
    assert "/nope" in _err_line(capsys)
    assert not dest.exists()


def test_cat(tree_cart, tree, capsysbinary):
    assert main(["cat", tree_cart, "/data/docs/a/big.bin"]) == 0
    assert capsysbinary.readouterr().out == (tree / "a" / "big.bin").read_bytes()
    assert main(["cat", tree_cart, "/data/docs/x.txt"]) == 0
    assert capsysbinary.readouterr().out == b"hello\n"


def test_cat_directory_is_error(tree_cart, capsys):
    assert main(["cat", tree_cart, "/data"]) == 1
    assert "directory" in _err_line(capsys)


# -- ls / stat / info ----------------------------------------------------------------------------
def test_ls(tree_cart, capsys):
    assert main(["ls", tree_cart]) == 0
    assert capsys.readouterr().out.splitlines() == ["data/"]
    assert main(["ls", tree_cart, "/data/docs"]) == 0
    assert capsys.readouterr().out.splitlines() == ["a/", "empty/", "x.txt"]
    assert main(["ls", tree_cart, "/data/docs/x.txt"]) == 0
    assert capsys.readouterr().out.splitlines() == ["x.txt"]


def test_ls_long_recursive(tree_cart, capsys):
    assert main(["ls", tree_cart, "/data/docs", "-R"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "/data/docs/a/", "/data/docs/a/b/", "/data/docs/a/b/z.txt", "/data/docs/a/b/zero.bin",
        "/data/docs/a/big.bin", "/data/docs/a/y.json", "/data/docs/empty/", "/data/docs/x.txt"]
    assert main(["ls", tree_cart, "/data/docs", "-l"]) == 0
    lines = capsys.readouterr().out.splitlines()
    with cartridge.open(tree_cart, "r") as cart:
        st = cart.stat("/data/docs/x.txt")
    mode, size, mtime, checksum, name = lines[2].split()
    assert (mode, size, checksum, name) == ("-rw-r--r--", "6", st.checksum, "x.txt")
    assert mtime.startswith("20") and "T" in mtime
    assert lines[0].split()[0].startswith("d") and lines[0].split()[1] == "-"
    assert lines[0].endswith("a/")
    assert main(["ls", tree_cart, "-lR"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 10


def test_stat(tree_cart, capsys):
    assert main(["stat", tree_cart, "/data/docs/x.txt"]) == 0
    out = capsys.readouterr().out
    assert "path:" in out and "/data/docs/x.txt" in out and "checksum:" in out
    assert main(["stat", tree_cart, "/data/docs/a/big.bin", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["size"] == BIG and doc["type"] == "file" and len(doc["checksum"]) == 16
    assert main(["stat", tree_cart, "/data", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["type"] == "directory"


def test_info(tree_cart, capsys):
    assert main(["info", tree_cart]) == 0
    out = capsys.readouterr().out
    assert "files:" in out and "total_bytes:" in out
    assert main(["info", tree_cart, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["files"] == 5 and doc["mode"] == "r"


# -- rm / mv / mkdir -----------------------------------------------------------------------------
def test_rm(tree_cart, capsys):
    assert main(["rm", tree_cart, "/data/docs"]) == 1
    line = _err_line(capsys)
    assert "not empty" in line and "-r" in line
    assert main(["rm", tree_cart, "/data/docs/x.txt", "/nope"]) == 1     # all or nothing
    assert "/nope" in _err_line(capsys)
    with cartridge.open(tree_cart, "r") as cart:
        assert cart.exists("/data/docs/x.txt")
    assert main(["rm", tree_cart, "/data/docs/x.txt", "/data/docs/empty"]) == 0
    assert main(["rm", tree_cart, "-r", "/data/docs/a"]) == 0
    with cartridge.open(tree_cart, "r") as cart:
        assert cart.listdir("/data/docs") == []
    assert main(["rm", tree_cart, "-r", "/"]) == 1
    assert "refusing" in _err_line(capsys)


def test_mv(tree_cart, capsys):
    assert main(["mv", tree_cart, "/data/docs/x.txt", "/top.txt"]) == 0
    assert main(["mv", tree_cart, "/data/docs/a", "/moved"]) == 0
    assert main(["mv", tree_cart, "/top.txt", "/moved"]) == 0            # into a directory
    with cartridge.open(tree_cart, "r") as cart:
        assert cart.listdir("/moved") == ["b", "big.bin", "top.txt", "y.json"]
        assert not cart.exists("/data/docs/a")
    assert main(["mv", tree_cart, "/nope", "/x"]) == 1
    assert "/nope" in _err_line(capsys)


def test_mkdir(tree_cart, capsys):
    assert main(["mkdir", tree_cart, "/new"]) == 0
    assert main(["mkdir", tree_cart, "/new"]) == 1
    assert "exists" in _err_line(capsys)
    assert main(["mkdir", tree_cart, "/p/q/r"]) == 1
    _err_line(capsys)
    assert main(["mkdir", tree_cart, "-p", "/p/q/r"]) == 0
    assert main(["mkdir", tree_cart, "-p", "/p/q/r"]) == 0
    with cartridge.open(tree_cart, "r") as cart:
        assert cart.isdir("/new") and cart.isdir("/p/q/r")


def test_mutating_commands_need_existing_archive(tmp_path, capsys):
    path = tmp_path / "absent.cart"
    for argv in (["rm", str(path), "/x"], ["mv", str(path), "/a", "/b"], ["mkdir", str(path), "/d"]):
        assert main(argv) == 1
        assert "absent.cart" in _err_line(capsys)
    assert not path.exists()


# -- verify --------------------------------------------------------------------------------------
def test_verify_healthy(tree_cart, capsys):
    assert main(["verify", tree_cart]) == 0
    assert capsys.readouterr().out.startswith("OK")
    assert main(["verify", tree_cart, "--quick"]) == 0
    assert capsys.readouterr().out.startswith("OK")


def test_verify_detects_damage(tmp_path, capsys):
    path = tmp_path / "bad.cart"
    payload = os.urandom(300_000)
    with cartridge.open(str(path), "x") as cart:
        cart.write("/big.bin", payload)
    raw = bytearray(path.read_bytes())
    at = raw.find(payload[5000:5100])
    assert at > 0
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert "problem:" in out and "FAILED" in out


# -- errors --------------------------------------------------------------------------------------
def test_missing_archive(tmp_path, capsys):
    for cmd in ("ls", "info", "verify"):
        assert main([cmd, str(tmp_path / "missing.cart")]) == 1
        assert "missing.cart" in _err_line(capsys)
    assert not (tmp_path / "missing.cart").exists()


def test_only_put_and_create_make_an_archive(tmp_path, capsys):
    """Every command but put and create opens an existing archive ("r" or "a" after a check):
    a mistyped name is an error and leaves no file behind."""
    policy = tmp_path / "p.json"
    policy.write_text('{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}')
    missing = str(tmp_path / "missing.cart")
    argvs = [["get", missing, "/a", "--to", str(tmp_path / "out")], ["cat", missing, "/a"],
             ["ls", missing], ["stat", missing, "/a"], ["info", missing], ["verify", missing],
             ["rm", missing, "/a"], ["mv", missing, "/a", "/b"], ["mkdir", missing, "/d"],
             ["sql", missing, "/a.db", "SELECT 1"], ["policy", "ls", missing],
             ["policy", "get", missing, "p"], ["policy", "rm", missing, "p"],
             ["policy", "set", missing, "p", str(policy)],
             ["policy", "check", missing, "--principal", "ann", "--action", "cart:GetObject",
              "--resource", "/a"]]
    for argv in argvs:
        assert main(argv) == 1, argv
        assert "missing.cart" in _err_line(capsys), argv
        assert not os.path.exists(missing), argv
    assert main(["create", missing]) == 0
    assert main(["create", missing]) == 1
    assert "exists" in _err_line(capsys)


def test_not_a_cartridge(tmp_path, capsys):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(20_000))
    for argv in (["ls", str(junk)], ["verify", str(junk)], ["put", str(junk), __file__]):
        assert main(argv) == 1
        assert "not a cartridge" in _err_line(capsys)


def test_missing_path_in_archive(tree_cart, capsys):
    for cmd in ("cat", "stat", "ls", "get"):
        assert main([cmd, tree_cart, "/no/such/file"]) == 1
        assert "/no/such/file" in _err_line(capsys)


def test_invalid_path(tree_cart, capsys):
    assert main(["stat", tree_cart, "/a/../b"]) == 1
    assert ".." in _err_line(capsys)


def test_usage_errors(capsys):
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["ls"]) == 2
    assert main(["--help"]) == 0
    assert "put" in capsys.readouterr().out


def test_keyboard_interrupt(monkeypatch, tree_cart, capsys):
    from cartridge import cli

    def boom(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_info", boom)
    assert main(["info", tree_cart]) == 130


# -- demo and real processes ---------------------------------------------------------------------
def test_demo_in_process(tmp_path, capsys):
    path = tmp_path / "demo.cart"
    assert main(["demo", str(path)]) == 0
    out = capsys.readouterr().out
    assert "verify OK" in out
    assert main(["demo", str(path)]) == 1               # refuses to clobber
    assert "exists" in _err_line(capsys)
    result = run_demo(path, out=io.StringIO(), overwrite=True)
    assert result["verify_ok"] and result["files"] > 200 and result["bytes"] > 8 << 20
    with cartridge.open(str(path), "r") as cart:
        assert cart.verify().ok


def _run(argv, timeout=60):
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)


def test_python_m_help():
    r = _run([sys.executable, "-m", "cartridge", "--help"])
    assert r.returncode == 0, r.stderr
    for cmd in ("create", "put", "get", "cat", "ls", "rm", "mv", "mkdir", "stat", "info", "verify", "demo"):
        assert cmd in r.stdout


def test_console_script_demo(tmp_path):
    import shutil

    # this interpreter's console script (beside it in a venv), not whichever is first on PATH
    exe = os.path.join(os.path.dirname(sys.executable), "cartridge")
    if not os.path.exists(exe):
        exe = shutil.which("cartridge", path=os.path.dirname(sys.executable))
    argv = [exe] if exe else [sys.executable, "-m", "cartridge"]
    path = tmp_path / "demo.cart"
    r = _run(argv + ["demo", str(path)], timeout=120)
    assert r.returncode == 0, r.stderr
    assert "verify OK" in r.stdout
    r = _run(argv + ["verify", str(path)])
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout + r.stderr
    r = _run(argv + ["ls", str(tmp_path / "nope.cart")])
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("cartridge: error: ")
