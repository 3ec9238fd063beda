"""Hand-crafted hostile archives for the tests: every checksum valid, the damage in the names
and the order of the catalog's keys, which no writer through the public API can produce.

Raw keys are written through the engine (open_engine, begin/put/commit); duplicate and
out-of-order keys by rewriting a catalog leaf's key bytes in place and sealing the page again.
Also the in-process CLI runner the hostile-input tests share.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys

import cartridge
from cartridge import format as F
from cartridge._core.checksum import seal_page
from cartridge._handle import engine
from cartridge.cli import main
from cartridge.create import open_engine

EXIT_CODES = {0, 1, 2, 3}


# -- building hostile archives ---------------------------------------------------------------------
def put_raw_keys(path: str, names: list[bytes], db: bool = False) -> None:
    """Rename seed files to raw catalog keys through the engine: valid checksums, hostile names.
    With db=True each seed is a small SQLite database (so sqlite() and sqlite_export() on a
    hostile member meet real content)."""
    with cartridge.open(path, "a", audit="off") as c:
        for i, _ in enumerate(names):
            if db:
                conn = c.sqlite(f"/seed{i}")
                conn.execute("CREATE TABLE t(v); INSERT INTO t VALUES('hostile')")
                conn.close()
            else:
                c.write(f"/seed{i}", b"x" * (10 + i))
    eng = open_engine(path, "a", sync="off", cache_size=1 << 20, timeout=None)
    try:
        eng.begin()
        for i, name in enumerate(names):
            eng.put(name, eng.delete(f"/seed{i}".encode()))
        eng.commit()
    finally:
        eng.close()


def base_archive(path: str) -> None:
    """A small valid archive the hostile keys are added to: a file, a directory, a database."""
    with cartridge.open(path, "x", sync="off", audit="off") as c:
        c.write("/ok.txt", b"fine\n")
        c.write("/d/inner.txt", b"inner\n")
        conn = c.sqlite("/app.db")
        conn.execute("CREATE TABLE t(v); INSERT INTO t VALUES(1)")
        conn.close()


def raw_name_archive(path: str, name: bytes) -> None:
    """The base archive plus one member (a SQLite database) under the raw catalog key `name`."""
    base_archive(path)
    put_raw_keys(path, [name], db=True)


def file_with_children(path: str) -> None:
    """A file /a with a key /a/b below it (and a file /a-x between them in key order)."""
    base_archive(path)
    with cartridge.open(path, "a", sync="off", audit="off") as c:
        for name in ("/a", "/a-x"):         # databases: sqlite() on them meets real content
            conn = c.sqlite(name)
            conn.execute("CREATE TABLE t(v)")
            conn.close()
    put_raw_keys(path, [b"/a/b"], db=True)


def _rewrite_catalog_key(path: str, old: bytes, new: bytes) -> None:
    """Overwrite the bytes of catalog key `old` with `new` (same length) in its leaf page and
    seal the page again: the node's checksum is valid, its key order is not."""
    assert len(old) == len(new)
    with cartridge.open(path, "r") as c:
        pages = [pno for pno, node in engine(c).catalog.pages()
                 if node.is_leaf and any(node.key(i) == old for i in range(node.nkeys))]
    assert len(pages) == 1, pages
    pno = pages[0]
    with open(path, "r+b") as f:
        f.seek(pno * F.PAGE_SIZE)
        page = bytearray(f.read(F.PAGE_SIZE))
        assert page.count(old) == 1
        page[page.index(old):page.index(old) + len(old)] = new
        seal_page(page)
        f.seek(pno * F.PAGE_SIZE)
        f.write(page)


def duplicate_keys(path: str) -> None:
    """Two catalog cells under the key /dup1 (the second was /dup2)."""
    base_archive(path)
    with cartridge.open(path, "a", sync="off", audit="off") as c:      # unsealed commit: no seal to break
        c.write("/dup1", b"one\n")
        c.write("/dup2", b"two\n")
    _rewrite_catalog_key(path, b"/dup2", b"/dup1")


def out_of_order_keys(path: str) -> None:
    """The key /b1 rewritten to /z9: it now sits before /c1 ... in its leaf."""
    base_archive(path)
    with cartridge.open(path, "a", sync="off", audit="off") as c:
        c.write("/b1", b"b\n")
        c.write("/c1", b"c\n")
    _rewrite_catalog_key(path, b"/b1", b"/z9")


def key_outside_its_leaf(path: str) -> tuple[bytes, bytes]:
    """Two catalog leaves; the first key of the second rewritten below the separator that
    leads to it (each node in order, the tree not): returns (old key, new key)."""
    base_archive(path)
    with cartridge.open(path, "a", sync="off", audit="off") as c:
        c.write_many((f"/f{i:03d}", b"f") for i in range(400))
    with cartridge.open(path, "r") as c:
        root = next(iter(engine(c).catalog.pages()))[1]
        assert not root.is_leaf
        sep = root.key(0)
        right = engine(c).catalog.store.load(root.child(1))
        first = right.key(0)
    new = first[:2] + b"!" + first[3:]         # '/f!36' sorts before every '/fNNN'
    assert new < sep <= first, (new, sep, first)
    _rewrite_catalog_key(path, first, new)
    return first, new


# -- running the CLI in-process --------------------------------------------------------------------
def run(argv: list[str], stdin: bytes = b"") -> tuple[int, bytes, str]:
    """main(argv) with stdout and stderr as strict UTF-8 streams: (exit code, stdout, stderr)."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", newline="\n")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", newline="\n")
    old_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    finally:
        sys.stdin = old_stdin
    out.flush()
    err.flush()
    return rc, out.buffer.getvalue(), err.buffer.getvalue().decode("utf-8")


def unsafe(text: str) -> list[str]:
    """The characters of `text` a terminal could act on (all but printable ones, newline, tab)."""
    return sorted({c for c in text if not c.isprintable() and c not in "\n\t"})


def check_run(argv: list[str], stdin: bytes = b"", content_on_stdout: bool = False):
    """Run and assert the contract: documented exit code, one error line, nothing unsafe."""
    rc, out, err = run(argv, stdin)
    what = f"{argv!r}: rc={rc} err={err!r} out={out[:300]!r}"
    assert rc in EXIT_CODES, what
    assert "Traceback" not in err and "internal error" not in err, what
    assert not unsafe(err), what
    if not content_on_stdout:
        text = out.decode("utf-8")          # strict: nothing undecodable either
        assert not unsafe(text), what
    lines = err.splitlines()
    if "--json" in argv and "--follow" not in argv and (rc in (0, 3) or (rc == 1 and not lines)):
        # (audit --follow --json streams one object per line: JSON lines, not one document)
        doc = json.loads(out)               # --json: the whole of stdout is one JSON document
        assert out.isascii(), what          # escaped as emit_json does (sql --json has its own)
    if rc == 1 and not lines:       # verify found problems: its report is on stdout
        assert "verify" in argv, what
        if "--json" in argv:
            assert doc["ok"] is False and doc["problems"], what
        else:
            assert out.splitlines()[-1].startswith(b"FAILED: "), what
    elif rc == 1:
        assert len(lines) == 1 and lines[0].startswith("cartridge: error: "), what
    elif rc == 2:
        assert 1 <= len(lines) <= 8 and ": error: " in lines[-1], what
    else:
        assert all(ln.startswith("cartridge: warning: ") for ln in lines), what
    return rc, out, err


# -- the local file system around an output ----------------------------------------------------
def snapshot(top: str) -> dict[str, tuple]:
    """Every entry below `top` (itself included): relative path -> (type, mode, size, content
    or link target), read without following symlinks."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [""] if dirpath == top else []:
            st = os.lstat(dirpath)
            out[name] = ("dir", st.st_mode, 0, None)
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = os.path.relpath(full, top)
            if os.path.islink(full):
                out[rel] = ("link", st.st_mode, 0, os.readlink(full))
            elif os.path.isdir(full):
                out[rel] = ("dir", st.st_mode, 0, None)
            else:
                with open(full, "rb") as f:
                    out[rel] = ("file", st.st_mode, st.st_size, f.read())
    return out
