"""scripts/reading_times.py: each notebook's reading time (200 words a minute of its source and printed
output, plus its recorded run time) is what the README's table says, and the course fits 2.5 hours."""

import json
import re

from conftest import import_script

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_words_count_sources_and_text_outputs(tmp_path):
    script = import_script("scripts/reading_times.py")
    notebook = {"cells": [
        {"cell_type": "markdown", "source": ["# A title\n", "two words"]},
        {"cell_type": "code", "source": "x = 1", "outputs": [{"output_type": "stream", "text": ["one two three\n"]},
                                                             {"output_type": "execute_result",
                                                              "data": {"text/plain": "4", "image/png": "abc"}}]}]}
    (tmp_path / "01_a.ipynb").write_text(json.dumps(notebook))
    (tmp_path / "run_times.json").write_text(json.dumps({"01_a": 90.0}))
    times = script.reading_times(tmp_path)
    assert times["01_a"]["words"] == 5 + 3 + 3 + 1  # "# A title two words", "x = 1", "one two three", "4"
    assert times["01_a"]["total"] == 2  # 12 words (0.06 min) + 1.5 min of run, rounded up


def test_the_readme_gives_each_notebooks_reading_time_and_the_course_fits_two_and_a_half_hours():
    script = import_script("scripts/reading_times.py")
    times = script.reading_times()
    readme = (ROOT / "README.md").read_text()
    listed = {name: int(minutes) for name, minutes in re.findall(r"^\| `(\d\d_\w+)` \| (\d+) \|", readme, re.M)}
    assert listed == {name: t["total"] for name, t in times.items()}, "run `python scripts/reading_times.py`"
    total = sum(listed.values())
    assert re.search(rf"^\| all \| {total} \|", readme, re.M) and total <= script.MAX_TOTAL_MINUTES
