"""Training throughput of the benchmark, old engine against new, side by side in one run.

Run:  python benchmarks/throughput.py [--old 826c10d] [--new 61a208f] [--json benchmarks/throughput.json]

The slice: 3 base-to-new datasets (emoji-novel-objects, cards, fashion) x {coop, cocoop, maple, metaprompt,
prometar} x seed 1, plus one DG benchmark (emoji-pacs, all 4 targets) x {coop, cocoop, maple,
metaprompt} x seed 1, each with its pocket preset. Each side runs ``bench`` on the slice in a fresh
process: the old side from a ``git archive`` of ``--old`` (the engine before the throughput work: one
process, torch's default threads), the new side from ``--new`` (default: this checkout; worker
processes, one thread each). ``--new 61a208f`` is the new engine on the old recipes (the recipe changes
that follow it, toward the official code, change the work per step). Both read the same ``data/``. Throughput is training steps (the rows' curves) per second of
the slice's wall time, evaluation included; the ratio new / old is the figure. The accuracies of the
two sides are printed too: they differ because the new engine draws each step's crops from a
generator keyed by (seed, step) instead of the run's shared generator.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
# datasets both engines know (the old one predates suite v3's emoji-novel-places and flags-pixel); the
# committed JSON was measured on the previous suite's emoji-food, flags and cards
B2N = ("emoji-novel-objects", "cards", "fashion")
B2N_METHODS = ("coop", "cocoop", "maple", "metaprompt", "prometar")
DG = ("emoji-pacs",)
DG_METHODS = ("coop", "cocoop", "maple", "metaprompt")
OLD_ENGINE = "826c10d"  # the last commit before the throughput work
NEW_ENGINE_OLD_RECIPES = "61a208f"  # the new engine, before the recipes moved to the official code's


def run_side(out_dir: Path, workers: int | None) -> dict:
    """Run the slice with whichever ``metaprompt_lite`` is importable; returns wall times, steps and
    accuracies (called in a child process)."""
    from metaprompt_lite.bench import BenchConfig, bench
    from metaprompt_lite.paths import default_model

    model, pretrained = default_model()
    extra = {} if workers is None else {"workers": workers}
    result = {"wall_s": {}, "steps": 0, "rows": {}, "train_s_by_method": {}}
    for suite, datasets, methods in (("b2n", B2N, B2N_METHODS), ("dg", DG, DG_METHODS)):
        t0 = time.perf_counter()
        path = bench(BenchConfig(suite=suite, methods=methods, datasets=datasets, seeds=(1,), model=model,
                                 pretrained=pretrained, out_dir=str(out_dir), progress=False, **extra))
        result["wall_s"][suite] = time.perf_counter() - t0
        for key, row in bench_rows(path):
            result["rows"][key] = float(row["hm" if suite == "b2n" else "acc"])
            by_method, name = result["train_s_by_method"], f"{suite}/{row['method']}"
            by_method[name] = by_method.get(name, 0.0) + float(row["train_s"])
    result["steps"] = curve_steps(out_dir)
    return result


def bench_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(key, row) for each row of a ``bench`` CSV; the key joins the row's identifying columns with
    "/" (method/dataset/seed, or method/benchmark/target/seed for DG)."""
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            columns = ("method", "dataset", "seed") if "dataset" in row else ("method", "benchmark", "target", "seed")
            yield "/".join(row[c] for c in columns), row


def curve_steps(out_dir: Path) -> int:
    """The training steps of every row ``bench`` wrote to ``out_dir``: the lengths of its curves."""
    return sum(len(json.loads(curve.read_text())) for curve in (out_dir / "curves").glob("*.json"))


def _side(name: str, pythonpath: Path, *args, script: str = "throughput") -> dict:
    """``benchmarks/<script>.py``'s ``run_side(out_dir, *args)`` in a fresh process that imports the
    package under ``pythonpath`` (and only that one: checked)."""
    with tempfile.TemporaryDirectory() as out:
        # run from the output folder, not the clone: `python -c` puts the working directory first on
        # sys.path, and the clone's own metaprompt_lite/ would shadow the side's
        arguments = "".join(f", {a!r}" for a in args)
        code = (f"import json, sys; sys.path.insert(1, {str(ROOT / 'benchmarks')!r}); import {script}; "
                "import metaprompt_lite; print('package:', metaprompt_lite.__file__, file=sys.stderr); "
                f"print(json.dumps({script}.run_side(__import__('pathlib').Path({out!r}){arguments})))")
        env = {**os.environ, "PYTHONPATH": str(pythonpath), "METAPROMPT_LITE_DATA": str(ROOT / "data")}
        print(f"{name}: running the slice ...", file=sys.stderr, flush=True)
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=out, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"error: the {name} side failed:\n{done.stderr[-3000:]}")
        package = next(line for line in done.stderr.splitlines() if line.startswith("package:"))
        if not package.split()[1].startswith(str(pythonpath)):
            raise SystemExit(f"error: the {name} side imported {package.split()[1]}, not the code under {pythonpath}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def _extract(revision: str, tree: Path) -> None:
    """The package as it was at ``revision``, into ``tree``."""
    archive = subprocess.run(["git", "archive", revision, "metaprompt_lite"], cwd=ROOT, capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"error: cannot read revision {revision!r}: {archive.stderr.decode().strip()} — "
                         "run from a git clone of the project")
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", default=OLD_ENGINE, help="git revision of the old engine")
    parser.add_argument("--new", default=None,
                        help=f"git revision of the new side (default: this checkout; {NEW_ENGINE_OLD_RECIPES}: "
                        "the new engine on the old recipes)")
    parser.add_argument("--workers", type=int, default=0, help="the new side's workers (0 = one per core)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as old_tree, tempfile.TemporaryDirectory() as new_tree:
        _extract(args.old, Path(old_tree))
        old = _side(f"old ({args.old})", Path(old_tree), None)
        if args.new is not None:
            _extract(args.new, Path(new_tree))
        new = _side(f"new ({args.new or 'this checkout'})", Path(new_tree) if args.new else ROOT, args.workers)
    print(f"{'side':6s} {'b2n s':>8s} {'dg s':>8s} {'steps':>6s} {'steps/s':>8s}")
    for name, side in (("old", old), ("new", new)):
        wall = sum(side["wall_s"].values())
        side["steps_per_s"] = side["steps"] / wall
        print(f"{name:6s} {side['wall_s']['b2n']:8.1f} {side['wall_s']['dg']:8.1f} {side['steps']:6d} "
              f"{side['steps_per_s']:8.2f}")
    print("training seconds per method (sum over the slice's rows; the new side's are per worker):")
    for key in sorted(old["train_s_by_method"]):
        print(f"  {key:16s} old {old['train_s_by_method'][key]:7.1f}  new {new['train_s_by_method'].get(key, float('nan')):7.1f}")
    ratio = new["steps_per_s"] / old["steps_per_s"]
    print(f"throughput ratio new / old: {ratio:.2f}x  (cpu cores: {os.cpu_count()})")
    shared = sorted(set(old["rows"]) & set(new["rows"]))
    diffs = [new["rows"][k] - old["rows"][k] for k in shared]
    print(f"accuracy (HM for b2n, target accuracy for dg), new - old over {len(shared)} rows: "
          f"mean {sum(diffs) / len(diffs):+.2f}, largest |diff| {max(map(abs, diffs)):.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"old": args.old, "new": args.new, "cpu_cores": os.cpu_count(), "ratio": ratio,
                                               "old_side": old, "new_side": new}, indent=1))


if __name__ == "__main__":
    main()
