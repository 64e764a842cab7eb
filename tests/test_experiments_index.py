"""experiments/ stays one folder with an index: every experiment has a short README, its results,
and a row in experiments/README.md that links to it; no row points to a folder that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
MAX_WORDS = 200


def experiment_folders(root: Path = EXPERIMENTS) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def indexed_folders(index: str) -> list[str]:
    """The folders the index's table links to, as ``[name](name/)`` in a row's first cell."""
    return re.findall(r"^\| \[([\w.-]+)\]\(\1/\)", index, flags=re.MULTILINE)


def test_the_index_parser_reads_first_cell_links_only():
    index = "| [a](a/) (d) | q |\n| [b-2](b-2/) | q |\ntext [c](c/)\n| x | [d](d/) |\n| [e](f/) | q |\n"
    assert indexed_folders(index) == ["a", "b-2"]


def test_every_experiment_is_indexed_and_every_row_has_its_folder():
    folders = experiment_folders()
    assert len(folders) >= 8
    rows = indexed_folders((EXPERIMENTS / "README.md").read_text())
    assert sorted(rows) == folders and len(rows) == len(set(rows))


def test_every_experiment_has_a_short_readme_and_its_results():
    for name in experiment_folders():
        folder = EXPERIMENTS / name
        words = len((folder / "README.md").read_text().split())
        assert words <= MAX_WORDS, f"experiments/{name}/README.md has {words} words (at most {MAX_WORDS})"
        assert any(p.suffix in {".json", ".csv"} for p in folder.iterdir()), f"experiments/{name} has no results"
