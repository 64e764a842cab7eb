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


@pytest.mark.parametrize("newer", ["py", "ipynb"])
def test_jupytext_sync_changes_nothing_in_a_clean_clone(tmp_path, newer):
    """`jupytext --sync` on a fresh clone (either file of a pair may look newer) rewrites no byte:
    the pairs carry no metadata that jupytext would add or drop."""
    import os

    from jupytext.cli import jupytext as jupytext_cli

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "jupytext.toml").write_bytes((root / "jupytext.toml").read_bytes())
    copy = tmp_path / "notebooks"
    copy.mkdir()
    before = {}
    for script in PAIRS:
        for path in (script, script.with_suffix(".ipynb")):
            before[path.name] = path.read_bytes()
            (copy / path.name).write_bytes(before[path.name])
            stamp = 2_000_000_000 if path.suffix == f".{newer}" else 1_000_000_000
            os.utime(copy / path.name, (stamp, stamp))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        jupytext_cli(["--sync", "--quiet", *(f"notebooks/{p.name}" for p in PAIRS)])
    finally:
        os.chdir(cwd)
    changed = [name for name, data in before.items() if (copy / name).read_bytes() != data]
    assert not changed, f"jupytext --sync rewrote {changed}"
