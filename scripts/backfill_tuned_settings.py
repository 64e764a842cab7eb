"""Give the committed tuned-protocol rows (results/tuned/) the settings columns that rows carry now.

Those rows were made before results files recorded what made each row. Their settings are known
exactly, and this script writes them in: protocol ``tuned``; the committed pocket CLIP (its sha256);
each method's tuned budget (``methods.budget``); the shots actually drawn from each dataset's
train pool (``run.drawn_shots``); and the code version of the package that made them, fingerprinted
from that commit's source (``provenance.code_fingerprint`` of a ``git archive`` of it: pass
``--made-by COMMIT``). Accuracies and times are copied unchanged. Run once::

    python scripts/backfill_tuned_settings.py --made-by <commit of the run> results/tuned
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from metaprompt_lite.data import load_dataset
from metaprompt_lite.paths import POCKET_MODEL, default_model
from metaprompt_lite.provenance import code_fingerprint, weights_id
from metaprompt_lite.results_table import B2N_COLUMNS, DG_COLUMNS, format_row, LINE_END
from metaprompt_lite.run import preset_run, row_settings


def made_by_version(commit: str) -> str:
    """``<version>+<fingerprint>`` of the package as it was at ``commit``."""
    archive = subprocess.run(["git", "archive", commit, "metaprompt_lite"], capture_output=True, check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        tarfile.open(fileobj=BytesIO(archive)).extractall(tmp, filter="data")
        package = Path(tmp) / "metaprompt_lite"
        version = next(line.split('"')[1] for line in (package / "__init__.py").read_text().splitlines()
                       if line.startswith("__version__"))
        return f"{version}+{code_fingerprint(str(package))}"


def backfill(path: Path, columns: tuple[str, ...], code: str) -> None:
    old = list(csv.DictReader(path.open(newline="")))
    weights = weights_id(default_model()[1])
    datasets = {}
    lines = [",".join(columns) + LINE_END]
    for row in old:
        dg = "benchmark" in row
        name = row["benchmark"] if dg else row["dataset"]
        datasets.setdefault(name, load_dataset(name))
        run = preset_run(row["method"], "pocket", "dg" if dg else "b2n", "tuned", dataset=name,
                         target=row.get("target"), model=POCKET_MODEL, seed=int(row["seed"]))
        full = {**row, **row_settings(run, datasets[name], weights, code)}
        lines.append(format_row(full, columns))
    path.write_text("".join(lines), newline="")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--made-by", required=True, help="the commit whose package made the rows")
    args = parser.parse_args(argv)
    code = made_by_version(args.made_by)
    backfill(args.results_dir / "b2n.csv", B2N_COLUMNS, code)
    backfill(args.results_dir / "dg.csv", DG_COLUMNS, code)
    print(f"settings written into {args.results_dir}/b2n.csv and dg.csv (code {code})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
