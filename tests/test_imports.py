"""The package's import structure: every module imports alone, the cartridge.* import graph
(function-local imports included) has no cycle, and the layers import only downwards
(docs/ARCHITECTURE.md)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "cartridge"

# the engine and everything below it: nothing from the handle or feature layers
ENGINE = {"engine", "pager", "allocator", "content", "nodestore", "records", "format", "locking",
          "verify", "create", "paths", "errors", "policystore", "snapstore", "compactor", "localfile",
          "source", "terminal", "iam", "packs"}
# above the engine, below the handle: they never import the handle (archive) or cli/demo
FEATURES = {"_handle", "namespace", "policies", "guard", "streams", "sqlite", "engram", "audit"}
# the contract imports only pure engine-level modules (path normalising, the IAM action names)
CONTRACT_DEPS = {"cartridge.errors", "cartridge.paths", "cartridge.iam", "cartridge.iam.actions"}
# the face and the integrations over it (cartridge.fsspec: the cart:// filesystem)
TOP = {"archive", "cli", "cli_engram", "demo", "speedtest", "__main__", "__init__", "fsspec",
       "progress", "jsonout", "cliargs",
       "testing"}   # cartridge.testing: the crash simulator and a range server, for tests


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if "vendor" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    for f in (PKG / "_core").glob("*.pyx"):
        out[f"cartridge._core.{f.stem}"] = f
    return out


def _exports() -> dict[str, str]:
    """Names cartridge/__init__.py re-exports, mapped to the module that defines them."""
    out = {}
    for node in ast.parse((PKG / "__init__.py").read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for a in node.names:
                out[a.asname or a.name] = f"cartridge.{node.module}"
    return out


def _imports(name: str, path: Path, mods: dict, source: str | None = None) -> set[str]:
    """cartridge.* modules that `name` imports anywhere (outside `if TYPE_CHECKING:`); a name
    taken from the package face (`from . import Cartridge`) counts as its defining module, and
    `import cartridge` as the package `cartridge` (which sits in the top layer)."""
    if path.suffix == ".pyx":
        text = path.read_text()
        found = set()
        for line in text.splitlines():
            s = line.strip()
            for kw in ("from ", "cimport ", "import "):
                if s.startswith(kw) and "cartridge" in s.split()[1]:
                    found.add(s.split()[1])
        return found
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    exports = _exports()
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node, typing_only=False):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("cartridge"))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = pkg.split(".")
                    base = base[:len(base) - child.level + 1]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                if mod.startswith("cartridge"):
                    for a in child.names:
                        sub = f"{mod}.{a.name}"
                        if sub in mods:             # from . import paths: the module paths
                            found.add(sub)
                        elif mod == "cartridge" and a.name in exports:
                            found.add(exports[a.name])  # from . import Cartridge: cartridge.archive
                        else:
                            found.add(mod)          # the package face itself (its __init__)
            visit(child)
    visit(tree)
    return found


def _deps(name: str, path: Path, mods: dict, source: str | None = None) -> set[str]:
    """The graph edges out of `name`: its cartridge.* imports that are modules, itself excluded."""
    return {m for m in _imports(name, path, mods, source) if m in mods and m != name}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _deps(name, path, mods) for name, path in mods.items()}


def _short(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
            if m not in state:
                dfs(m)
        stack.pop()
        state[n] = 2
    for n in sorted(graph):
        if n not in state:
            dfs(n)


def _layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in graph.items():
        layer = _short(mod)
        for dep in deps:
            d = _short(dep)
            if mod.startswith("cartridge._core.") and not dep.startswith("cartridge._core.") \
                    and dep != "cartridge.errors":
                bad.append(f"kernel {mod} imports {dep}")
            elif layer in ENGINE and (d in FEATURES or d in TOP):
                bad.append(f"engine-level {mod} imports {dep}")
            elif layer in FEATURES and d in TOP:
                bad.append(f"feature {mod} imports {dep}")
            elif layer == "guard" and d == "sqlite":
                bad.append(f"{mod} imports {dep}")
            elif layer == "_handle" and dep not in CONTRACT_DEPS:
                bad.append(f"the contract {mod} imports {dep}")
    return bad


def test_layers():
    bad = _layer_violations(_graph())
    assert not bad, bad


@pytest.mark.parametrize("source", [
    "def f():\n    from . import Cartridge\n",
    "def f():\n    from . import paths, Cartridge\n",
    "def f():\n    import cartridge\n",
    "def f():\n    from . import __version__\n",
])
def test_package_face_import_is_seen(source):
    """A feature module taking a name from the package face (or the package itself) is an
    upward import: the graph builder must not drop it as 'the package'."""
    mods = _modules()
    name = "cartridge.guard"
    deps = _deps(name, mods[name], mods, source)
    assert deps & {"cartridge", "cartridge.archive"}, deps
    assert _layer_violations({name: deps})


@pytest.mark.parametrize("module", sorted(m for m in _modules() if not m.endswith("__main__")))
def test_imports_alone(module):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", f"import {module}"], env=env, cwd=str(ROOT),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_import_cartridge_loads_no_apsw():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = ("import cartridge, sys; assert 'apsw' not in sys.modules; "
            "assert 'cartridge.sqlite' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(ROOT), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_import_cartridge_loads_no_engram_dependencies():
    """lz4, zstandard and cryptography are the `engram` extra: loaded only by cartridge.engram."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = ("import cartridge, sys; "
            "loaded = {'lz4', 'zstandard', 'cryptography', 'cartridge.engram'} & set(sys.modules); "
            "assert not loaded, loaded")
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(ROOT), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_import_cartridge_loads_no_fsspec():
    """fsspec is optional (the fsspec extra): neither importing cartridge nor opening a local
    archive loads it; cartridge.fsspec imports the real fsspec, not itself."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = ("import sys, tempfile, os, cartridge\n"
            "p = os.path.join(tempfile.mkdtemp(), 'x.cart')\n"
            "cartridge.open(p, 'w').close(); cartridge.open(p).close()\n"
            "assert 'fsspec' not in sys.modules, 'fsspec loaded'\n"
            "import cartridge.fsspec as cf\n"
            "import fsspec\n"
            "assert fsspec.__name__ == 'fsspec' and fsspec is not cf and hasattr(fsspec, 'filesystem')\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(ROOT),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # run from inside the package directory, cartridge/fsspec.py would shadow fsspec: it says so
    r = subprocess.run([sys.executable, "-c", "import fsspec"], env=env, cwd=str(ROOT / "cartridge"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "shadowing the fsspec package" in r.stderr, r.stderr


# attributes a subclass of fsspec.AbstractFileSystem is meant to use (fsspec's own state)
_INHERITED = {("fsspec.py", "_intrans"), ("fsspec.py", "_cache")}
_NAMEDTUPLE = {"_replace", "_asdict", "_fields", "_make"}


def _private_reaches(path: Path, source: str | None = None) -> list[str]:
    """`x._name` where `_name` is defined nowhere in the module itself (not a def, class, name or
    self./cls. attribute of its own): another module's private state. The contract
    (`_handle.py`) is the one module allowed to read the handle's private attributes."""
    tree = ast.parse(path.read_text() if source is None else source)
    own: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(n.name)
        elif isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) \
                and n.value.id in ("self", "cls"):
            own.add(n.attr)
        elif isinstance(n, ast.Name):
            own.add(n.id)
    bad = []
    for n in ast.walk(tree):
        if not (isinstance(n, ast.Attribute) and n.attr.startswith("_")
                and not n.attr.startswith("__")):
            continue
        if isinstance(n.value, ast.Name) and n.value.id in ("self", "cls", "H", "os", "sys"):
            continue
        if n.attr in _NAMEDTUPLE or n.attr in own or (path.name, n.attr) in _INHERITED:
            continue
        bad.append(f"{path.relative_to(ROOT) if source is None else path.name}:{n.lineno}: "
                   f"{ast.unparse(n)}")
    return bad


def test_no_private_reach_across_modules():
    """Issue 12: no module reads another module's private attributes (`cart._eng`,
    `eng._changed`, `pager._staged`...); each goes through a public method or the contract."""
    bad = []
    for path in _modules().values():
        if path.suffix == ".py" and path.name != "_handle.py":
            bad += _private_reaches(path)
    assert not bad, bad


def test_private_reach_is_seen():
    path = PKG / "compactor.py"
    assert _private_reaches(path, "def f(eng):\n    eng._changed = True\n")
    assert not _private_reaches(path, "class C:\n    def f(self):\n        self._x = 1\n"
                                      "def g(c):\n    return c._x\n")


def test_layering_table_is_complete():
    """Every module of the package sits in one layer of the table above, so that the layer
    check applies to it (a new module must be placed, not silently unchecked)."""
    placed = ENGINE | FEATURES | TOP | {"_core"}
    missing = sorted({_short(m) for m in _modules()} - placed - {"__init__"})
    assert not missing, f"modules missing from the layering table: {missing}"
