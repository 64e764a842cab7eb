"""How long each notebook of the course takes: reading at 200 words a minute (its markdown, its code and
its printed outputs) plus its own run time (``notebooks/run_times.json``, written by
``scripts/execute_notebooks.py`` when it executes a notebook).

    python scripts/reading_times.py            # the table, and the course's total

The README's table of reading times is this script's output (``tests/test_reading_times.py`` compares
them, and keeps the total at most 2.5 hours).
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
WORDS_PER_MINUTE = 200
MAX_TOTAL_MINUTES = 150


def words(text: str) -> int:
    return len(re.findall(r"\S+", text))


def notebook_words(path: Path) -> int:
    """Words a reader reads in an executed notebook: every cell's source and every text output."""
    notebook = json.loads(path.read_text())
    total = 0
    for cell in notebook["cells"]:
        total += words("".join(cell["source"]))
        for output in cell.get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/plain", "")
            total += words("".join(text) if isinstance(text, list) else text)
    return total


def reading_times(folder: Path = NOTEBOOKS) -> dict[str, dict[str, float]]:
    """{notebook: words, read (min), run (min), total (whole minutes, rounded up)} for every numbered notebook."""
    run_times = json.loads((folder / "run_times.json").read_text()) if (folder / "run_times.json").is_file() else {}
    out = {}
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        n = notebook_words(path)
        read, run = n / WORDS_PER_MINUTE, run_times.get(path.stem, 0.0) / 60
        out[path.stem] = {"words": n, "read": read, "run": run, "total": math.ceil(read + run)}
    return out


def main() -> int:
    times = reading_times()
    print("| notebook | minutes |\n|---|---|")
    for name, t in times.items():
        print(f"| `{name}` | {t['total']} |")
    total = sum(t["total"] for t in times.values())
    print(f"| all | {total} |")
    print(f"\n({sum(t['words'] for t in times.values())} words at {WORDS_PER_MINUTE} a minute, plus "
          f"{sum(t['run'] for t in times.values()):.1f} min of runs; at most {MAX_TOTAL_MINUTES} min in all)",
          file=sys.stderr)
    return 0 if total <= MAX_TOTAL_MINUTES else 1


if __name__ == "__main__":
    sys.exit(main())
