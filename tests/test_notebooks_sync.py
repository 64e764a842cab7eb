"""Every notebook pair (.py percent script + .ipynb) holds the same cells: CI fails when out of sync."""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PAIRS = sorted(p for p in NOTEBOOKS.glob("[0-9]*.py"))


def _cells(notebook) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in notebook.cells]


def test_there_are_notebooks_and_every_ipynb_has_its_script():
    assert PAIRS, "no notebooks found"
    for ipynb in NOTEBOOKS.glob("*.ipynb"):
        assert ipynb.with_suffix(".py").is_file(), f"{ipynb.name} has no paired .py"


@pytest.mark.parametrize("script", PAIRS, ids=lambda p: p.name)
def test_pair_in_sync(script):
    ipynb = script.with_suffix(".ipynb")
    assert ipynb.is_file(), f"{script.name} has no paired .ipynb: run `jupytext --sync {script}`"
    from_script = jupytext.read(script)
    stored = nbformat.read(ipynb, as_version=4)
    assert _cells(from_script) == _cells(stored), (
        f"{script.name} and {ipynb.name} differ: edit the .py, then `jupytext --sync {script}` "
        "and re-execute the notebook"
    )
    unexecuted = [i for i, c in enumerate(stored.cells) if c.cell_type == "code" and c.source.strip()
                  and "NBVAL_SKIP" not in c.source and c.get("execution_count") is None]
    assert not unexecuted, (f"{ipynb.name}: code cells {unexecuted} were never executed: "
                            f"python scripts/execute_notebooks.py {script.with_suffix('')}")
