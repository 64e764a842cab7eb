"""Imports point one way: no cycles among the package's modules, and every import goes to the
module's own layer or a lower one (the layer order below, lowest first; inside the data subpackage
also the finer order of its modules, ``DATA_LAYERS``). Read from the source with
``ast`` (every import, at the top or inside a function), so nothing is imported to check it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "metaprompt_lite"

# lowest first; a module may import from its own layer and the layers above it in this list.
# "x.*" is every module of the subpackage x (and x itself).
LAYERS = [
    ("core.*",),  # the maths the course reads: imports nothing else of the package (tests/test_core.py)
    ("__init__", "paths", "provenance", "pretrain_config", "faults", "results_table", "intervals", "claims", "splits",
     "teacher", "optim", "data.*", "research.*"),  # no model; the optimiser and its schedules
    ("backbone", "fastpath", "checkpoints", "engine"),  # loading a CLIP; the fast encoder and caches; files; a run's loop
    ("zeroshot", "headroom"),  # zero-shot CLIP: templates, ensembles, base/new scores; linear-probe headroom
    ("gram_artifacts", "methods"),  # GRAM's artifacts on disk; every method as a recipe, and the presets
    ("run", "analysis", "pretrain", "model_card", "gram_build"),  # one run; pocket-CLIP and GRAM jobs
    ("bench", "shard", "report", "compare"),  # the benchmark, its shards and its tables
    ("cli", "cli_args", "cli_bench", "cli_data", "__main__"),  # the command line
]
# the data subpackage, in the same way (lowest first): every module of it, by exact name ("data" is its
# __init__); its imports of other data modules point down this list, whatever LAYERS allows the package
DATA_LAYERS = [
    ("data.render", "data.sources", "data.clipart"),  # reading and drawing source files; no choice made
    ("data", "data.store", "data.corpus", "data.sheets"),  # the committed store and the corpus, read back
    ("data.catalog",),  # what the sources offer to draw, and the captions of a drawing
    ("data.plan",),  # which drawing goes into which dataset, class, split and domain, and into the corpus
    ("data.build",),  # rendering the plan and writing the store and the corpus
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    """The layer of ``module``; an exact name wins over a subpackage pattern (``data.cli`` vs ``data.*``)."""
    for index, names in enumerate(LAYERS):
        if module in names:
            return index
    for index, names in enumerate(LAYERS):
        for name in names:
            if name.endswith(".*") and (module == name[:-2] or module.startswith(name[:-1])):
                return index
    raise AssertionError(f"metaprompt_lite.{module} has no layer: add it to LAYERS in tests/test_layers.py")


def data_layer_of(module: str) -> int:
    """The layer of a data module in :data:`DATA_LAYERS`."""
    for index, names in enumerate(DATA_LAYERS):
        if module in names:
            return index
    raise AssertionError(f"metaprompt_lite.{module} has no data layer: add it to DATA_LAYERS in tests/test_layers.py")


def imports(module: str) -> set[str]:
    """The package modules ``module`` imports (``from metaprompt_lite.data import render`` names
    ``data.render``; a name that is not a module names the package it comes from)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                source = ".".join(["metaprompt_lite", *base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" for alias in node.names] + [source]
        else:
            continue
        for target in targets:
            if target.startswith("metaprompt_lite."):
                name = target.removeprefix("metaprompt_lite.")
                if name in MODULES:
                    found.add(name)
            elif target == "metaprompt_lite" and isinstance(node, ast.ImportFrom):
                found.update(alias.name for alias in node.names if alias.name in MODULES)
    found.discard(module)
    return found


GRAPH = {module: imports(module) for module in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_imports_point_down_the_layers():
    upward = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m, targets in GRAPH.items() for t in sorted(targets) if layer_of(t) > layer_of(m)]
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def is_data(module: str) -> bool:
    return module == "data" or module.startswith("data.")


def test_every_data_module_has_a_data_layer():
    declared = {name for names in DATA_LAYERS for name in names}
    assert declared == {m for m in MODULES if is_data(m)}, "DATA_LAYERS and the data modules differ"


def test_data_imports_point_down_the_data_layers():
    upward = [f"{m} (data layer {data_layer_of(m)}) imports {t} (data layer {data_layer_of(t)})"
              for m, targets in GRAPH.items() if is_data(m)
              for t in sorted(targets) if is_data(t) and data_layer_of(t) > data_layer_of(m)]
    assert not upward, "data imports that point up the data layers:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a path that comes back to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target, path + [target])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_see_a_cycle_and_an_upward_import():
    """The checks themselves: a hand-made cycle is found, and the real graph has the edges the layers
    forbid in the other direction (so an empty result above is not a parser that reads nothing)."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert "splits" in GRAPH["run"] and "data.render" in GRAPH["data.store"] and "core.prometar" in GRAPH["core.steps"]
    assert layer_of("cli_data") > layer_of("methods") > layer_of("data.store")
    assert {"data.catalog", "data.clipart"} <= GRAPH["data.plan"] and "data.plan" in GRAPH["data.build"]
    assert [data_layer_of(m) for m in ("data.store", "data.catalog", "data.plan", "data.build")] == [1, 2, 3, 4]


def test_the_package_docstring_lists_every_module():
    """``metaprompt_lite/__init__.py`` names each module (subpackages by their name): the reader's map
    of the package stays whole."""
    import metaprompt_lite

    doc = metaprompt_lite.__doc__
    listed = set(re.findall(r"^- ``(\w+)``", doc, flags=re.M))
    modules = {module_name(p).split(".")[0] for p in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    assert modules == listed, (modules - listed, listed - modules)
