"""The core (``metaprompt_lite/core``) is what the course reads: the maths of every method in one
folder. It imports nothing from the rest of the package (only torch, open_clip, higher and the
standard library), keeps every function short, stays small, and no module-level switch in the
package decides which code the maths runs. Read from the source with ``ast``."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "metaprompt_lite" / "core"
ALLOWED = {"torch", "open_clip", "higher", "tqdm", "metaprompt_lite.core"}
MAX_FUNCTION_LINES = 60  # nanoGPT's rule: a function fits on a screen (docstring not counted)
# a ContextVar, a `global` statement, or an assignment to another module's attribute
GREP_SWITCHES = r"ContextVar|^\s*global\s+[A-Za-z_]+(\s*,\s*[A-Za-z_]+)*\s*$|^\s*[a-z_]+_module\.[A-Za-z_]+\s*="
MAX_CORE_LINES = 1550  # "at most about 1,500 lines in all"


def foreign_imports(source: str, module: str = "metaprompt_lite.core.x") -> list[str]:
    """The imports in ``source`` (at the top or inside a function) of anything that is neither the
    standard library nor :data:`ALLOWED`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: ``from . import x`` stays in the core, ``from .. import x`` does not
                names = ["metaprompt_lite.core" if node.level == 1 else "metaprompt_lite"]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or name in ALLOWED or top in ALLOWED - {"metaprompt_lite.core"}:
                continue
            if name.startswith("metaprompt_lite.core.") or name == "metaprompt_lite.core":
                continue
            found.append(name)
    return found


def long_functions(source: str) -> list[tuple[str, int]]:
    """(name, lines) of every function longer than :data:`MAX_FUNCTION_LINES`, its docstring not counted."""
    long = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
                    and isinstance(first.value.value, str):
                lines -= first.end_lineno - first.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                long.append((node.name, lines))
    return long


def core_files(folder: Path = CORE) -> list[Path]:
    return sorted(folder.glob("*.py"))


def foreign_imports_of(folder: Path = CORE) -> dict[str, list[str]]:
    """{file: its foreign imports} for the files of ``folder`` that have any."""
    found = {path.name: foreign_imports(path.read_text()) for path in core_files(folder)}
    return {name: names for name, names in found.items() if names}


def test_the_core_imports_nothing_from_the_rest_of_the_package():
    assert foreign_imports_of() == {}


def test_the_import_check_fails_on_a_planted_import(tmp_path):
    """A copy of the core with one import of the package planted in it fails the check above, and
    the check sees imports inside functions and relative ones too."""
    assert foreign_imports("def f():\n    from metaprompt_lite.paths import data_dir\n") == ["metaprompt_lite.paths"]
    assert foreign_imports("from .. import engine\n") == ["metaprompt_lite"]
    assert foreign_imports("import numpy\nfrom metaprompt_lite.core.clip import memo\n") == ["numpy"]
    for path in core_files():
        (tmp_path / path.name).write_text(path.read_text())
    loss = tmp_path / "losses.py"
    loss.write_text(loss.read_text().replace("import torch\n", "import torch\nfrom metaprompt_lite.engine import accuracy\n", 1))
    assert foreign_imports_of(tmp_path) == {"losses.py": ["metaprompt_lite.engine"]}


def test_no_core_function_is_over_60_lines():
    long = {path.name: long_functions(path.read_text()) for path in core_files()}
    assert not {k: v for k, v in long.items() if v}, long
    assert long_functions("def f():\n" + "    x = 1\n" * 61) == [("f", 62)]  # the counter counts


def test_the_core_is_at_most_about_1500_lines():
    total = sum(len(path.read_text().splitlines()) for path in core_files())
    assert total <= MAX_CORE_LINES, f"the core has {total} lines"


def test_no_context_variable_or_module_level_switch_decides_which_code_runs():
    """No ``ContextVar`` anywhere in the package, no ``global`` statement, and no assignment from
    outside a module to another module's attribute (``module.flag = ...``), the ways a process-wide
    switch is set. ``git grep`` over the package's tracked files."""
    grep = subprocess.run(["git", "grep", "-nE", GREP_SWITCHES,
                           "--", "metaprompt_lite"], capture_output=True, text=True, cwd=ROOT)
    assert grep.returncode == 1 and not grep.stdout, grep.stdout
    for planted, found in (("_X = contextvars.ContextVar('x')\n", True), ("    global _registered\n", True),
                           ("    backbone_module.pool_last_block = full\n", True),
                           ("    global RNG state, in a docstring\n", False)):
        run = subprocess.run(["grep", "-nE", GREP_SWITCHES], input=planted, capture_output=True, text=True)
        assert (run.returncode == 0) == found, planted  # the pattern finds what it is there to find, only that


def test_the_maths_reads_without_speed_switches():
    """The core's encoders are the plain ones: nothing in the core pools a last block, shares a
    prefix or names the fast path (those live in ``metaprompt_lite.fastpath``)."""
    text = "\n".join(path.read_text() for path in core_files())
    assert not re.search(r"pool_last|share_prefix|MIN_POOLED_ROWS|fastpath\.", text.replace(
        "metaprompt_lite.fastpath", ""))
