"""The README's headline table is the committed official results, number for number: a re-run that
changes the CSVs and not the README fails here (the README's numbers are typed, so nothing else would
catch them going stale)."""

import re
from pathlib import Path

from metaprompt_lite.report import b2n_average, dg_table, read_results

ROOT = Path(__file__).resolve().parents[1]
B2N_NAMES = {"zero-shot": "zsclip", "CoOp": "coop", "CoCoOp": "cocoop", "IVLP": "ivlp", "MaPLe": "maple",
             "MetaPrompt": "metaprompt", "ProMetaR": "prometar", "GRAM-CoOp": "gram-coop", "GRAM-IVLP": "gram-ivlp"}
DG_NAMES = {"zero-shot (ensemble)": "zsclip-ens", "CoOp": "coop", "CoCoOp": "cocoop", "MaPLe": "maple",
            "MetaPrompt": "metaprompt"}


def headline_rows(text: str) -> list[list[str]]:
    table = text[text.index("**Official protocol**"):].split("\n\n")[1]
    return [[cell.strip().strip("*") for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]


def mismatches(text: str) -> tuple[list[tuple], int]:
    """(cells of the README text's headline table that differ from the committed results, cells compared)."""
    b2n = b2n_average(read_results(ROOT / "results" / "official" / "b2n.csv"))
    dg = dg_table(read_results(ROOT / "results" / "official" / "dg.csv"))["mean"]
    checked, wrong = 0, []
    for row in headline_rows(text):
        names, cells = [n.strip() for n in row[0].split("/")], row[1:4]
        for k, name in enumerate(names):
            for column, cell in zip(("base", "new", "hm"), cells, strict=True):
                if cell.split(" / ")[k] != f"{b2n.loc[B2N_NAMES[name], column]:.2f}":
                    wrong.append((name, column, cell))
                checked += 1
        if len(row) > 5 and row[5]:
            for benchmark, cell in zip(("emoji-pacs", "flags-dg"), row[6:8], strict=True):
                if cell != f"{dg.loc[(benchmark, DG_NAMES[row[5]])]:.2f}":
                    wrong.append((row[5], benchmark, cell))
                checked += 1
    return wrong, checked


def test_the_readme_headline_table_is_the_committed_official_results():
    wrong, checked = mismatches((ROOT / "README.md").read_text())
    assert not wrong, wrong
    assert checked == 9 * 3 + 5 * 2  # every cell: 9 base-to-new methods, 5 DG rows


def test_a_changed_number_is_caught():
    text = (ROOT / "README.md").read_text()
    changed = re.sub(r"\| CoOp \| (\d+\.\d\d) \|", lambda m: f"| CoOp | {float(m.group(1)) + 0.01:.2f} |", text, count=1)
    assert changed != text and mismatches(changed)[0] == [("CoOp", "base", changed.split("| CoOp | ")[1][:5])]
