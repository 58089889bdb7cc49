"""The folder tree is the architecture: imports point down, no cycles, features take plain parameters.

Every import is read from the source with ``ast`` — top-level and lazy (inside functions) alike, and
``importlib.import_module("literal")`` — so a cycle hidden behind a lazy import still fails here.
The rules (README, "Layout"):

* no import cycle between modules of ``distill/`` nor between scripts in ``scripts/``;
* ``counterfactual/``, ``privacy/`` and ``fairness/`` import only each other and the ground modules;
* ``builtin/`` imports only the ground modules;
* only ``commands/`` and ``cli`` import ``commands/``, ``cli`` or ``demo/``;
* the distillation core imports neither ``federated/`` nor ``demo/`` nor the command line;
* ``hub/`` does not import the core (the core publishes through it; the card reads the run's files);
* ``distill/`` holds at most 10 modules at its root besides ``__init__``, ``__main__`` and ``cli``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "distill"

#: Root modules every layer may import (``distill`` itself: ``__version__`` and the lazy public facade).
GROUND = {"distill", "distill.errors", "distill.outputs", "distill.occupations", "distill.runtime",
          "distill.divergences", "distill.model_loading", "distill.text_data", "distill.resources"}
FEATURES = ("distill.counterfactual", "distill.privacy", "distill.fairness")
TOP = ("distill.commands", "distill.cli", "distill.demo", "distill.__main__")


def _modules(root: Path, prefix: str) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = [prefix, *rel.parts] if prefix else list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imported_names(module: str, path: Path) -> list[str]:
    """Absolute dotted names imported anywhere in the file (``from X import y`` gives ``X.y`` and ``X``)."""
    is_pkg = path.name == "__init__.py"
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names += [f"{target}.{alias.name}" for alias in node.names] + [target]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
            names.append(node.args[0].value)
    return names


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the modules of ``modules`` it imports (a name resolves to its longest known module)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for name in _imported_names(module, path):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                graph[module].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _in(module: str, packages) -> bool:
    packages = (packages,) if isinstance(packages, str) else packages
    return any(module == p or module.startswith(p + ".") for p in packages)


def rule_breaks(graph: dict[str, set[str]]) -> list[str]:
    breaks = []
    for src, targets in sorted(graph.items()):
        for dst in sorted(targets):
            edge = f"{src} -> {dst}"
            if _in(src, FEATURES) and not (_in(dst, FEATURES) or dst in GROUND):
                breaks.append(f"{edge}: a feature package imports only features and ground modules")
            if _in(src, "distill.builtin") and not (_in(dst, "distill.builtin") or dst in GROUND):
                breaks.append(f"{edge}: the built-ins import only ground modules")
            if _in(dst, TOP) and not _in(src, ("distill.commands", "distill.cli", "distill.__main__")) \
                    and not (_in(src, "distill.demo") and _in(dst, "distill.demo")):
                breaks.append(f"{edge}: only commands/ and cli import commands/, cli or demo/")
            if _in(src, "distill.distillation") and _in(dst, ("distill.federated", "distill.demo", "distill.commands",
                                                                "distill.cli")):
                breaks.append(f"{edge}: the distillation core does not import what is built on it")
            if _in(src, "distill.hub") and _in(dst, "distill.distillation"):
                breaks.append(f"{edge}: the model card is built from the files of a run, not from the core")
    return breaks


def root_modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__", "cli"))


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph(_modules(PACKAGE, "distill"))) == []


def test_every_import_follows_the_layering_rules():
    assert rule_breaks(import_graph(_modules(PACKAGE, "distill"))) == []


def test_the_package_root_holds_at_most_ten_modules():
    assert len(root_modules()) <= 10, root_modules()


def test_scripts_have_no_import_cycle():
    scripts = _modules(REPO / "scripts", "")
    assert cycles(import_graph(scripts)) == []


# ---- the checker itself: it must see lazy imports and break rules it is given -------------------------------
@pytest.fixture
def toy(tmp_path):
    def make(files: dict[str, str]) -> dict[str, set[str]]:
        for rel, text in files.items():
            path = tmp_path / "distill" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return import_graph(_modules(tmp_path / "distill", "distill"))
    return make


def test_checker_finds_a_cycle_through_a_lazy_import(toy):
    graph = toy({"__init__.py": "", "a.py": "from .b import f\n",
                 "b.py": "def f():\n    from .a import g\n"})
    assert cycles(graph) == [["distill.a", "distill.b"]]


def test_checker_finds_a_cycle_through_import_module(toy):
    graph = toy({"__init__.py": "", "a.py": "import importlib\nimportlib.import_module('distill.b')\n",
                 "b.py": "import distill.a\n"})
    assert cycles(graph) == [["distill.a", "distill.b"]]


def test_checker_flags_a_feature_importing_the_core(toy):
    graph = toy({"__init__.py": "", "errors.py": "", "fairness/__init__.py": "",
                 "fairness/x.py": "from ..errors import E\ndef f():\n    from ..distillation.config import C\n",
                 "distillation/__init__.py": "", "distillation/config.py": ""})
    breaks = rule_breaks(graph)
    assert len(breaks) == 1 and breaks[0].startswith("distill.fairness.x -> distill.distillation.config")


def test_checker_flags_the_demo_imported_below_the_commands(toy):
    graph = toy({"__init__.py": "", "demo/__init__.py": "", "demo/pipeline.py": "",
                 "federated/__init__.py": "", "federated/evaluation.py": "from ..demo.pipeline import f\n",
                 "commands/__init__.py": "", "commands/demo.py": "from ..demo.pipeline import f\n"})
    assert rule_breaks(graph) == [
        "distill.federated.evaluation -> distill.demo.pipeline: only commands/ and cli import commands/, cli or demo/"]
