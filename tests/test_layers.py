"""The package's import graph: no cycles, and every import points down DESIGN.md's layers.

The graph is read from the source with ``ast`` (module-level, function-level and
``TYPE_CHECKING`` imports alike), so a lazy import inside a function counts as much as one at
the top of a file; every module is also imported for real, so none is dead or broken.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import spikeopt

ROOT = Path(spikeopt.__file__).parent

# DESIGN.md's layers, bottom to top; a module may import its own layer or any lower one.
# Two modules sit lower than the diagram's "tune / dist" row, where their users are: dist is
# the Ray backend a population method shards its objective through (methods/strategy.py),
# builders the user-builder contract train() takes (train/loop.py); each imports only
# config, functional, population or tasks.
LAYERS: list[tuple[str, ...]] = [
    ("config",),
    ("functional",),
    ("nn",),
    ("population", "nir"),
    ("tasks",),
    ("methods", "dist", "watchdog"),
    ("train", "builders"),
    ("recipes",),
    ("tune", "compare", "diagnose", "api", "export", "report"),
    ("cli",),
]
LAYER_OF = {top: i for i, names in enumerate(LAYERS) for top in names}


def module_names() -> list[str]:
    """Every module of the package, by dotted name, from its files."""
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = module_names()


def source_of(name: str) -> Path:
    """The file of module ``name``."""
    base = ROOT.parent.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def imports_of(name: str) -> set[str]:
    """The spikeopt modules ``name`` imports anywhere in its file (``from pkg import mod``
    names the submodule ``pkg.mod`` when there is one)."""
    path = source_of(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            subs = [f"{base}.{a.name}" for a in node.names]
            targets = [s for s in subs if s in MODULES] or [base]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import a.b.c` of a name inside a.b
                target = target.rpartition(".")[0]
            if target.startswith("spikeopt") and target != name:
                out.add(target)
    return out


GRAPH = {name: imports_of(name) for name in MODULES}


def layer(name: str) -> int:
    """The layer of module ``name``; the package root (``__version__``) is below them all,
    which holds because it imports nothing."""
    parts = name.split(".")
    return LAYER_OF[parts[1]] if len(parts) > 1 else -1


def test_every_module_has_a_layer_and_imports():
    assert "spikeopt.functional.loss" in MODULES and "spikeopt.cli" in MODULES
    for name in MODULES:
        if name != "spikeopt":
            assert name.split(".")[1] in LAYER_OF, f"{name}: add its layer to LAYERS"
        importlib.import_module(name)
    # pkgutil sees the same modules the files do (nothing hidden from the graph)
    found = {m.name for m in pkgutil.walk_packages(spikeopt.__path__, "spikeopt.")}
    assert found <= set(MODULES)


def test_no_import_points_up_a_layer():
    upward = [
        f"{name} (layer {layer(name)}) imports {dep} (layer {layer(dep)})"
        for name, deps in GRAPH.items()
        for dep in sorted(deps)
        if layer(dep) > layer(name) and name != "spikeopt"
    ]
    assert not upward, "\n".join(upward)
    # the package root imports nothing when imported (no import side effects): its one entry
    # point, spikeopt.load, imports the layer it needs when called
    root = ast.parse(source_of("spikeopt").read_text(encoding="utf-8"))
    eager = [n for n in root.body if isinstance(n, (ast.Import, ast.ImportFrom))
             and (n.module if isinstance(n, ast.ImportFrom) else n.names[0].name or "")
             .startswith("spikeopt")]  # fmt: skip
    assert not eager, "the package root imports nothing at import time"
    assert GRAPH["spikeopt"] <= {"spikeopt.export"}, GRAPH["spikeopt"]


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(GRAPH[name]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[name] = 2

    for name in MODULES:
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from spikeopt import config as C", {"spikeopt.config"}),
        ("from spikeopt.population import Context", {"spikeopt.population"}),
        ("import spikeopt.nn.layers", {"spikeopt.nn.layers"}),
        ("def f():\n    from spikeopt.dist import x", {"spikeopt.dist"}),
    ],
)
def test_the_graph_reader(tmp_path, monkeypatch, source, expected):
    path = tmp_path / "probe.py"
    path.write_text(source)
    monkeypatch.setattr(f"{__name__}.source_of", lambda name: path)
    assert imports_of("spikeopt.probe") == expected
