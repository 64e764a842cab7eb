"""Training throughput at the papers' budgets: an older engine against this one, side by side in one run.

Run:  python benchmarks/throughput_official.py [--old 826c10d] [--methods ...] [--json FILE]

The slice: base-to-new on cards and emoji-novel-objects (52 and 50 classes, datasets every engine
here knows) x {coop, cocoop, metaprompt, prometar} (``--methods``: others) x seed 1, every row at
its official budget as this checkout's presets give it (epochs, batch size, learning rate, warm-up,
shots: CoOp 200 epochs at batch 32, CoCoOp 10 at batch 1, MetaPrompt 8 at batch 16, ProMetaR 10 at
batch 4).

The new side runs ``bench --protocol official`` on the slice from this checkout (worker processes
with one thread each). The old side (``--old``) runs from a ``git archive`` of that revision:

- a revision with the official protocol (e.g. the one before a speed change) runs the same ``bench``,
  the same way; then the rows must be the same in every column but time and code version, and the
  script says whether they are;
- an older one, such as the default 826c10d (the last commit before the throughput work), runs
  each row through its ``run_base_to_new`` with the same budget, in one process with torch's
  default threads, as that engine's benchmark ran. Its per-step recipes are its own (MetaPrompt's
  meta-update and ProMetaR's steps moved to the official code's later, and it drew crops from the
  run's generator), so its accuracies differ and the figure compares speed at equal budgets (the
  same steps at the same batch sizes), not identical arithmetic.

Throughput is training steps (the rows' histories) per second of the slice's wall time, evaluation
and set-up included; the ratio new / old is the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import OLD_ENGINE, ROOT, _extract, _side, bench_rows, curve_steps  # noqa: E402  (the sibling's helpers)

DATASETS = ("cards", "emoji-novel-objects")
METHODS = ("coop", "cocoop", "metaprompt", "prometar")
# the old engine's OptimConfig has these fields (no ``schedule``: its cosine ran per step)
OLD_OPTIM_FIELDS = ("lr", "momentum", "weight_decay", "warmup_epochs", "warmup_lr", "epochs", "batch_size",
                    "max_steps")


def budgets(max_steps: int | None = None, methods=METHODS) -> dict:
    """Each row's official budget from this checkout's presets, as plain numbers for the old side."""
    from metaprompt_lite.run import preset_run

    out = {}
    for dataset in DATASETS:
        for method in methods:
            run = preset_run(method, "pocket", "b2n", "official", dataset=dataset)
            optim = {k: getattr(run.optim, k) for k in OLD_OPTIM_FIELDS}
            if max_steps is not None:
                optim["max_steps"] = max_steps
            out[f"{method}/{dataset}"] = {"optim": optim, "shots": run.shots, "flip": run.flip}
    return out


def _old_rows(out_dir: Path, plan: dict) -> dict:
    """The old side: every row of ``plan`` through the old engine's ``run_base_to_new``."""
    from metaprompt_lite.backbone import load_clip
    from metaprompt_lite.data import load_dataset
    from metaprompt_lite.optim import OptimConfig
    from metaprompt_lite.paths import default_model
    from metaprompt_lite.run import RunConfig, run_base_to_new

    t0 = time.perf_counter()  # from the backbone's load, as the new side's bench
    model, pretrained = default_model()
    backbone = load_clip(model, pretrained)
    result = {"rows": {}, "steps": 0, "train_s_by_method": {}}
    cache: dict = {}
    for key, spec in plan.items():
        method, dataset = key.split("/")
        config = RunConfig(method=method, dataset=dataset, model=model, pretrained=pretrained, seed=1,
                           shots=spec["shots"], flip=spec["flip"], optim=OptimConfig(**spec["optim"]), progress=False)
        row = run_base_to_new(config, load_dataset(dataset), backbone, cache)
        result["rows"][f"{key}/1"] = row["hm"]
        result["steps"] += len(row["history"])
        result["train_s_by_method"][method] = result["train_s_by_method"].get(method, 0.0) + row["train_s"]
    result["wall_s"] = time.perf_counter() - t0
    return result


def _bench_rows(out_dir: Path, methods: list[str], workers: int, max_steps: int | None) -> dict:
    """A side that has the official protocol: ``bench --protocol official`` on the slice; every
    column of every row is kept (for the comparison), and the steps are counted from the curves."""
    from metaprompt_lite.bench import BenchConfig, bench
    from metaprompt_lite.paths import default_model

    model, pretrained = default_model()
    t0 = time.perf_counter()
    path = bench(BenchConfig(suite="b2n", protocol="official", methods=methods, datasets=DATASETS, seeds=(1,),
                             model=model, pretrained=pretrained, out_dir=str(out_dir), progress=False,
                             workers=workers, max_steps=max_steps))
    result = {"wall_s": time.perf_counter() - t0, "rows": {}, "columns": {}, "steps": 0, "train_s_by_method": {}}
    for key, row in bench_rows(path):
        result["rows"][key] = float(row["hm"])
        result["columns"][key] = row
        by_method = result["train_s_by_method"]
        by_method[row["method"]] = by_method.get(row["method"], 0.0) + float(row["train_s"])
    result["steps"] = curve_steps(out_dir)
    return result


def run_side(out_dir: Path, side: str, *arguments) -> dict:
    """One side, in a child process: ``side`` "run" (the old engine's rows; ``arguments``: the plan of
    budgets) or "bench" (``arguments``: methods, workers, max_steps)."""
    return _old_rows(out_dir, *arguments) if side == "run" else _bench_rows(out_dir, *arguments)


def has_official_bench(revision: str) -> bool:
    """Whether ``revision``'s benchmark knows the official protocol (then it runs the same ``bench``)."""
    shown = subprocess.run(["git", "show", f"{revision}:metaprompt_lite/bench.py"], cwd=ROOT, capture_output=True,
                           text=True)
    return shown.returncode == 0 and "protocol" in shown.stdout


def differing_rows(old: dict, new: dict, ignore: tuple[str, ...] = ("train_s", "code")) -> list[str]:
    """The rows whose columns differ between two ``bench`` sides, time and code version aside."""
    return [key for key in sorted(set(old) | set(new))
            if {k: v for k, v in old.get(key, {}).items() if k not in ignore}
            != {k: v for k, v in new.get(key, {}).items() if k not in ignore}]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", default=OLD_ENGINE, help="git revision of the old engine")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help="the slice's methods")
    parser.add_argument("--workers", type=int, default=0, help="the bench sides' workers (0 = one per core)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="cap every row's steps (a quick check of the script; the figure needs the full budgets)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    same_bench = has_official_bench(args.old)
    plan = budgets(args.max_steps, args.methods)
    with tempfile.TemporaryDirectory() as old_tree:
        _extract(args.old, Path(old_tree))
        old = (_side(f"old ({args.old})", Path(old_tree), "bench", args.methods, args.workers, args.max_steps,
                     script="throughput_official") if same_bench else
               _side(f"old ({args.old})", Path(old_tree), "run", plan, script="throughput_official"))
    new = _side("new (this checkout)", ROOT, "bench", args.methods, args.workers, args.max_steps,
                script="throughput_official")
    print(f"slice: b2n {', '.join(DATASETS)} x {', '.join(args.methods)} x seed 1, official budgets"
          + (f", capped at {args.max_steps} steps" if args.max_steps is not None else ""))
    print(f"old side: {args.old}, " + ("the same bench" if same_bench else "its run_base_to_new, one process"))
    print(f"{'side':6s} {'wall s':>8s} {'steps':>6s} {'steps/s':>8s}")
    for name, side in (("old", old), ("new", new)):
        side["steps_per_s"] = side["steps"] / side["wall_s"]
        print(f"{name:6s} {side['wall_s']:8.1f} {side['steps']:6d} {side['steps_per_s']:8.2f}")
    print("training seconds per method (sum over the slice's rows, per worker thread for a bench side):")
    for method in args.methods:
        old_s, new_s = old["train_s_by_method"].get(method, 0.0), new["train_s_by_method"].get(method, 0.0)
        print(f"  {method:16s} old {old_s:7.1f}  new {new_s:7.1f}" + (f"  {old_s / new_s:5.2f}x" if new_s else ""))
    ratio = new["steps_per_s"] / old["steps_per_s"]
    print(f"throughput ratio new / old: {ratio:.2f}x  (cpu cores: {os.cpu_count()})")
    differing = None
    if same_bench:
        differing = differing_rows(old["columns"], new["columns"])
        print(f"rows identical in every column but time and code: {len(new['columns']) - len(differing)} of "
              f"{len(new['columns'])}" + (f"; differing: {', '.join(differing)}" if differing else ""))
    else:
        shared = sorted(set(old["rows"]) & set(new["rows"]))
        diffs = [new["rows"][k] - old["rows"][k] for k in shared]
        print(f"HM, new - old over {len(shared)} rows (each engine's recipe): mean {sum(diffs) / len(diffs):+.2f}, "
              f"largest |diff| {max(map(abs, diffs)):.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "old": args.old, "old_side_runs": "bench" if same_bench else "run_base_to_new",
            "slice": {"datasets": DATASETS, "methods": args.methods, "seeds": [1]}, "budgets": plan,
            "max_steps": args.max_steps, "cpu_cores": os.cpu_count(), "ratio": ratio, "differing_rows": differing,
            "old_side": old, "new_side": new}, indent=1))


if __name__ == "__main__":
    main()
