"""Do this code's benchmark rows equal the committed ones, in every column but time and code?

    python benchmarks/rows_unchanged.py [--slices NAME ...] [--compare-only] [--out-dir runs/rows-unchanged]
                                        [--json benchmarks/rows_unchanged.json]

Runs ``metaprompt-lite bench`` with this checkout's code on three slices and compares each row with
the committed row of the same (method, dataset or benchmark and target, seed) under
``results/<protocol>/``:

- official base-to-new: every method × fashion, emoji-novel-animals, emoji-novel-food × seed 1;
- official DG: every method × flags-dg (its 4 target domains) × seed 1;
- tuned: the whole grid (every method, dataset, target and seed).

A row is unchanged when every column but ``train_s`` and ``code`` is equal as written in the CSV
(accuracies to 4 decimals, the unit the files keep). Each bench resumes from its CSV, so a killed
run is continued by running the script again. Prints one line per slice and the rows that differ;
exits 1 when any differs. ``--compare-only`` compares the slices' CSVs already in ``--out-dir``
without running anything (a bench refuses to resume a file made by other code); ``--json`` adds the
slices' comparisons to that file, keeping the others'. The committed rows were made on the machine ``bench_meta.json`` names;
on another CPU's kernels they are not expected to match (``docs/intervals.md``, "Across CPUs").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
IGNORED = ("train_s", "code")
KEYS = {"b2n": ["method", "dataset", "seed"], "dg": ["method", "benchmark", "target", "seed"]}
SLICES = [  # (name, protocol, suite, datasets (none: all), seeds)
    ("official b2n", "official", "b2n", ("fashion", "emoji-novel-animals", "emoji-novel-food"), (1,)),
    ("official dg", "official", "dg", ("flags-dg",), (1,)),
    ("tuned b2n", "tuned", "b2n", (), (1, 2, 3)),
    ("tuned dg", "tuned", "dg", (), (1, 2, 3)),
]


def run_slice(out: Path, protocol: str, suite: str, datasets: tuple[str, ...], seeds: tuple[int, ...]) -> Path:
    """The benchmark of one slice into ``out`` (resuming there), as ``metaprompt-lite bench`` runs it on
    the committed pocket CLIP, in this process (the code is read once, at the start); its CSV."""
    from metaprompt_lite.bench import BenchConfig, bench
    from metaprompt_lite.paths import default_model

    model, checkpoint = default_model()
    return bench(BenchConfig(suite=suite, datasets=datasets, seeds=seeds, model=model, pretrained=checkpoint,
                             protocol=protocol, out_dir=str(out), progress=False))


def compare(new: pd.DataFrame, committed: pd.DataFrame, keys: list[str]) -> dict:
    """How many rows of ``new`` have a committed twin, how many of those are equal in every column but
    :data:`IGNORED`, and the differing ones (key, column, new, committed)."""
    columns = [c for c in new.columns if c not in IGNORED and c not in keys]
    merged = new.merge(committed, on=keys, how="left", suffixes=("", "_committed"), indicator=True)
    missing = merged[merged["_merge"] != "both"]
    differences = []
    for _, row in merged[merged["_merge"] == "both"].iterrows():
        for column in columns:
            if str(row[column]) != str(row[f"{column}_committed"]):
                differences.append({**{k: row[k] for k in keys}, "column": column, "new": str(row[column]),
                                    "committed": str(row[f"{column}_committed"])})
    changed = {tuple(d[k] for k in keys) for d in differences}
    return {"rows": len(new), "code": sorted(set(new["code"])), "without_committed_twin": len(missing),
            "identical": len(new) - len(missing) - len(changed), "differences": differences}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "rows-unchanged")
    parser.add_argument("--json", type=Path, help="also write the comparison here (other slices kept)")
    parser.add_argument("--slices", nargs="+", choices=[s[0] for s in SLICES], default=[s[0] for s in SLICES])
    parser.add_argument("--compare-only", action="store_true", help="compare the CSVs in --out-dir, run nothing")
    args = parser.parse_args(argv)
    report = json.loads(args.json.read_text()) if args.json and args.json.is_file() else {}
    failed = False
    for name, protocol, suite, datasets, seeds in SLICES:
        if name not in args.slices:
            continue
        out = args.out_dir / name.replace(" ", "-")
        path = out / f"{suite}.csv" if args.compare_only else run_slice(out, protocol, suite, datasets, seeds)
        read = lambda p: pd.read_csv(p, dtype=str, keep_default_na=False)  # noqa: E731 -- as written
        result = compare(read(path), read(ROOT / "results" / protocol / f"{suite}.csv"), KEYS[suite])
        report[name] = result
        failed |= bool(result["differences"] or result["without_committed_twin"])
        print(f"{name}: {result['identical']} of {result['rows']} rows identical to the committed ones in every "
              f"column but {' and '.join(IGNORED)}; {len(result['differences'])} values differ; "
              f"{result['without_committed_twin']} rows without a committed twin")
        for difference in result["differences"][:20]:
            print("   ", difference)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
