"""Re-execute notebooks in place and store their outputs (what nbval compares against).

    python scripts/execute_notebooks.py [notebooks/03_*.ipynb ...]      (default: every numbered notebook)

Syncs each pair from its .py first (jupytext), runs every cell except those marked ``# NBVAL_SKIP``
(research-tier cells that need a GPU and internet: they keep empty outputs), prints the run time and
records it in ``notebooks/run_times.json`` (what ``scripts/reading_times.py`` adds to each notebook's
reading time). Kept outside notebooks/ so that `jupytext --sync notebooks/*.py` pairs only the notebooks.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
RUN_TIMES = NOTEBOOKS / "run_times.json"
SKIP_TAG = "skip-execution"


def execute(path: Path) -> float:
    script = path.with_suffix(".py")
    notebook = jupytext.read(script)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for cell in notebook.cells:
        if cell.cell_type == "code" and "# NBVAL_SKIP" in cell.source:
            cell.metadata.setdefault("tags", []).append(SKIP_TAG)
    t0 = time.perf_counter()
    NotebookClient(notebook, timeout=900, kernel_name="python3", skip_cells_with_tag=SKIP_TAG,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    elapsed = time.perf_counter() - t0
    for cell in notebook.cells:
        tags = [t for t in cell.metadata.get("tags", []) if t != SKIP_TAG]
        if tags:
            cell.metadata["tags"] = tags
        else:
            cell.metadata.pop("tags", None)
        cell.metadata.pop("execution", None)
    notebook.metadata.pop("kernelspec", None)
    # jupytext.read records the text format it read; a clean clone's `jupytext --sync` would drop it
    # again (and so rewrite the file): keep it out (tests/test_notebooks_sync.py)
    notebook.metadata.get("jupytext", {}).pop("text_representation", None)
    nbformat.write(notebook, path)
    return elapsed


def record_run_time(name: str, seconds: float, path: Path = RUN_TIMES) -> None:
    """Set ``name``'s run time (seconds, one decimal) in the JSON file, atomically (the others kept)."""
    times = json.loads(path.read_text()) if path.is_file() else {}
    times[name] = round(seconds, 1)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(times.items())), indent=1) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    paths = [Path(p).with_suffix(".ipynb") for p in sys.argv[1:]] or sorted(p.with_suffix(".ipynb") for p in NOTEBOOKS.glob("[0-9]*.py"))
    for p in paths:
        seconds = execute(p.resolve())
        record_run_time(p.stem, seconds)
        print(f"{p.name}: {seconds:.0f} s", flush=True)
