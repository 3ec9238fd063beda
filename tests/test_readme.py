"""The README's Python examples run as pasted (issue 19, item 11).

Every ```python block of README.md runs, in order, in one namespace and one fresh directory, as
a user pasting them into one session would. A line `expr  # comment` states a claim: when the
comment is a Python literal (`# b'hello'`) the expression must equal it; when it names an
exception (`# AccessDeniedError`) the expression must raise it. Other comments are prose.
"""
from __future__ import annotations

import ast
import builtins
import io
import os
import re
import tokenize

import pytest

import cartridge

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number in the README, source) of every ```python block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def _comments(src: str) -> dict[int, str]:
    """line number -> the text of the comment ending that line."""
    return {tok.start[0]: tok.string[1:].strip()
            for tok in tokenize.generate_tokens(io.StringIO(src).readline)
            if tok.type == tokenize.COMMENT}


def _claim(comment: str):
    """("equals", value) for a literal, ("raises", class) for an exception name, else None."""
    try:
        return "equals", ast.literal_eval(comment)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    word = re.match(r"[A-Za-z_]\w*", comment)
    if word:
        exc = getattr(cartridge, word.group(), None) or getattr(builtins, word.group(), None)
        if isinstance(exc, type) and issubclass(exc, BaseException):
            return "raises", exc
    return None


class _Claims(ast.NodeTransformer):
    """Turn each one-line expression statement that carries a claim into a checked call."""

    def __init__(self, comments: dict[int, str], first_line: int):
        self.comments, self.first_line, self.claims = comments, first_line, []

    def visit_Expr(self, node: ast.Expr):
        if node.lineno != node.end_lineno or node.lineno not in self.comments:
            return node
        claim = _claim(self.comments[node.lineno])
        if claim is None:
            return node
        self.claims.append((self.first_line + node.lineno - 1, claim))
        call = ast.Call(func=ast.Name("__readme_check__", ast.Load()),
                        args=[ast.Constant(len(self.claims) - 1),
                              ast.Lambda(ast.arguments([], [], None, [], [], None, []), node.value)],
                        keywords=[])
        return ast.copy_location(ast.Expr(call), node)


def run_blocks(text: str, namespace: dict) -> int:
    """Run every block of `text` in `namespace`; returns how many claims were checked."""
    checked = 0
    for first_line, src in python_blocks(text):
        tree = ast.parse(src)
        claims = _Claims(_comments(src), first_line)
        tree = ast.fix_missing_locations(claims.visit(tree))

        def check(i, thunk, claims=claims.claims):
            nonlocal checked
            line, (kind, want) = claims[i]
            checked += 1
            if kind == "raises":
                with pytest.raises(want):
                    thunk()
                return
            got = thunk()
            assert got == want, f"README.md line {line}: {got!r}, the comment says {want!r}"

        namespace["__readme_check__"] = check
        exec(compile(tree, f"README.md:{first_line}", "exec"), namespace)
    return checked


def test_readme_python_blocks_run_as_pasted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(README, encoding="utf-8") as f:
        text = f.read()
    assert len(python_blocks(text)) >= 3
    namespace: dict = {"__name__": "__readme__"}
    try:
        checked = run_blocks(text, namespace)
    finally:
        for name in ("conn", "cart"):
            obj = namespace.get(name)
            if obj is not None:
                obj.close()
    assert checked >= 4          # b'hello', b'ell', the listdir, the AccessDeniedError
    assert set(os.listdir(tmp_path)) >= {"data.cart", "app.db"}


def test_claims_are_checked():
    """The checker itself: a wrong literal, a missing raise and a broken block all fail."""
    for bad in ('```python\n1 + 1   # 3\n```\n', '```python\nint("5")   # ValueError\n```\n',
                '```python\nundefined_name\n```\n'):
        with pytest.raises((AssertionError, pytest.fail.Exception, NameError)):
            run_blocks(bad, {})
    assert run_blocks('```python\nx = [1]\nx + [2]   # [1, 2]\nx[5]   # IndexError\n'
                      'len(x)   # prose, not a claim\n```\n', {}) == 2


def test_readme_shell_tour_runs(tmp_path, monkeypatch):
    """The README's shell tour, after its Python blocks (which make data.cart and /app.db), each
    command in a real process: exit status 0, and --json output that parses."""
    import json
    import shlex
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    with open(README, encoding="utf-8") as f:
        text = f.read()
    namespace: dict = {"__name__": "__readme__"}
    try:
        run_blocks(text, namespace)
    finally:
        for name in ("conn", "cart"):
            if namespace.get(name) is not None:
                namespace[name].close()
    (tmp_path / "photos" / "2024").mkdir(parents=True)
    (tmp_path / "photos" / "2024" / "a.jpg").write_bytes(b"\xff\xd8" + b"x" * 5000)
    (tmp_path / "photos" / "b.jpg").write_bytes(b"\xff\xd8" + b"y" * 300)
    tour = text[text.index("And from the shell"):]
    block = tour[tour.index("```bash\n") + 8:tour.index("```", tour.index("```bash\n") + 8)]
    commands = [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
    assert len(commands) >= 6 and all(c[0] == "cartridge" for c in commands)
    for argv in commands:
        r = subprocess.run([sys.executable, "-m", "cartridge", *argv[1:]], capture_output=True,
                           timeout=120, env={**os.environ, "CARTRIDGE_PROGRESS": "0"})
        assert r.returncode == 0, (argv, r.stderr)
        if "--json" in argv:
            json.loads(r.stdout)
    assert (tmp_path / "out" / "photos" / "2024" / "a.jpg").read_bytes().startswith(b"\xff\xd8")


def test_the_two_commands_come_first_and_ci_runs_the_second():
    """The README opens with its two commands (install and demo; install with the test extra
    and run the tests), and .ci/run runs the second one verbatim (issue 17, items 4 and 6);
    tox.ini has the environments the README and docs/GUIDE.md §9 name."""
    root = os.path.dirname(README)
    with open(README, encoding="utf-8") as f:
        text = f.read()
    m = re.match(r"# cartridge\n\n```bash\n(.+)\n```\n```bash\n(.+)\n```\n", text)
    assert m, text[:300]
    install, test = m.groups()
    venv = "python3 -m venv .venv && . .venv/bin/activate && "
    assert install == venv + "pip install . && cartridge demo"
    assert test == venv + 'pip install -e ".[test]" && python -m pytest -q'
    ci = os.path.join(root, ".ci", "run")
    with open(ci, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    assert test in lines, lines
    assert os.access(ci, os.X_OK)
    import configparser

    tox = configparser.ConfigParser(interpolation=None)
    tox.read(os.path.join(root, "tox.ini"))
    envs = {e.strip() for e in tox["tox"]["envlist"].split(",")}
    assert {"py39", "py310", "py311", "py312", "py313", "lint"} <= envs, envs
    assert {"testenv:lint", "testenv:perf"} <= set(tox.sections())
    assert "ruff check ." in tox["testenv:lint"]["commands"]
    assert "mypy" in tox["testenv:lint"]["commands"]
