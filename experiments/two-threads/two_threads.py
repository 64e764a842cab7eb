"""Does a run with 2 intra-op threads compute what a 1-thread run computes, and how much faster is it?

Run:  python experiments/two-threads/two_threads.py [--steps 25] [--dataset flags-pixel]
      [--json experiments/two-threads/results.json]

The lever in question: when fewer runs than cores remain at the end of a benchmark, give the last
runs the idle cores. The benchmark's rows are the same bit for bit whichever worker runs them,
because every worker runs one thread; a lever that changes a row's bits with the machine's load
would end that. Each method trains ``--steps`` steps of its official base-to-new preset (pocket
CLIP, seed 1) once with 1 thread and once with 2, each in its own process; the script compares
every step's losses and the final base/new accuracies, and prints the training-time ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

METHODS = ("coop", "cocoop", "ivlp", "maple", "metaprompt", "prometar")


def one_side(threads: int, steps: int, dataset: str) -> dict:
    """Every method's run with ``threads`` intra-op threads (called in a child process)."""
    from dataclasses import replace

    import torch

    from metaprompt_lite.data import load_dataset
    from metaprompt_lite.paths import default_model
    from metaprompt_lite.run import load_backbone, preset_run, run_base_to_new

    torch.set_num_threads(threads)
    model, pretrained = default_model()
    backbone, data = load_backbone(model, pretrained), load_dataset(dataset)
    out = {}
    for method in METHODS:
        run = preset_run(method, "pocket", "b2n", "official", dataset=dataset, model=model, pretrained=pretrained,
                         seed=1, progress=False)
        result = run_base_to_new(replace(run, optim=replace(run.optim, max_steps=steps)), data, backbone, {})
        losses = [{k: v for k, v in entry.items() if k not in ("step_s", "train_s")} for entry in result["history"]]
        out[method] = {"base": result["base"], "new": result["new"], "losses": losses, "train_s": result["train_s"]}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--dataset", default="flags-pixel")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    sides = {}
    for threads in (1, 2):
        code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import two_threads; "
                f"print(json.dumps(two_threads.one_side({threads}, {args.steps}, {args.dataset!r})))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        sides[threads] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{args.steps} steps of each official preset on {args.dataset}, seed 1: 1 thread against 2")
    print(f"{'method':11s} {'same losses':>11s} {'max |loss diff|':>15s} {'same accuracies':>15s} {'1-thread s':>10s} "
          f"{'2-thread s':>10s} {'speed-up':>8s}")
    summary = {}
    for method in METHODS:
        a, b = sides[1][method], sides[2][method]
        diffs = [abs(x[k] - y[k]) for x, y in zip(a["losses"], b["losses"]) for k in x if k not in ("step", "epoch", "lr")]
        same = a["losses"] == b["losses"]
        same_acc = (a["base"], a["new"]) == (b["base"], b["new"])
        speedup = a["train_s"] / b["train_s"]
        summary[method] = {"same_losses": same, "max_loss_diff": max(diffs), "same_accuracies": same_acc,
                           "train_s_1": a["train_s"], "train_s_2": b["train_s"], "speedup": speedup}
        print(f"{method:11s} {str(same):>11s} {max(diffs):15.2e} {str(same_acc):>15s} {a['train_s']:10.2f} "
              f"{b['train_s']:10.2f} {speedup:7.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": args.steps, "dataset": args.dataset, "methods": summary},
                                              indent=1))


if __name__ == "__main__":
    main()
