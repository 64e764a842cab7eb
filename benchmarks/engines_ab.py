"""Two revisions' training speed, interleaved: each method's capped official run on an old revision and
on this checkout, alternately (A B, then B A), each in a fresh process on one thread, as a benchmark
worker runs. The sequential side-by-side of ``throughput_official.py`` puts the machine's drift between
its two sides into its ratio; here both arms share it.

    python benchmarks/engines_ab.py [--old 2c5aa53] [--repeats 2]

Prints each arm's training seconds, the ratio old / new per method (above 1: this checkout is faster)
and the HM of both arms, which must be equal when the revisions compute the same bits.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = (("coop", 100), ("cocoop", 300), ("metaprompt", 40))  # (method, steps): about 5 s an arm
DATASET = "emoji-novel-objects"
ARM = """
import sys
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
from dataclasses import replace
import metaprompt_lite
from metaprompt_lite.data import load_dataset
from metaprompt_lite.paths import default_model
from metaprompt_lite.run import load_backbone, preset_run, run_base_to_new
assert metaprompt_lite.__file__.startswith(sys.argv[1]), metaprompt_lite.__file__
model, pretrained = default_model()
backbone, dataset = load_backbone(model, pretrained), load_dataset(sys.argv[4])
run = preset_run(sys.argv[2], "pocket", "b2n", "official", dataset=sys.argv[4], model=model, pretrained=pretrained,
                 seed=1, progress=False)
out = run_base_to_new(replace(run, optim=replace(run.optim, max_steps=int(sys.argv[3]))), dataset, backbone, {})
print(out["train_s"], out["hm"])
"""


def arm(tree: Path, method: str, steps: int) -> tuple[float, float]:
    """(training seconds, HM) of one capped run of ``method`` with the package in ``tree``."""
    out = subprocess.run([sys.executable, "-c", ARM, str(tree), method, str(steps), DATASET], check=True,
                         capture_output=True, text=True, cwd=tree).stdout.split()
    return float(out[-2]), float(out[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="2c5aa53", help="git revision of the old arm")
    parser.add_argument("--repeats", type=int, default=2, help="A B / B A rounds")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        old = Path(folder)
        archive = subprocess.run(["git", "archive", args.old], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        for method, steps in RUNS:
            seconds, hm = {"old": 0.0, "new": 0.0}, {}
            for repeat in range(args.repeats):
                for side in (("old", "new") if repeat % 2 == 0 else ("new", "old")):
                    s, hm[side] = arm(old if side == "old" else ROOT, method, steps)
                    seconds[side] += s
            print(f"{method:11s} {steps:4d} steps x {args.repeats}: old {seconds['old']:6.2f} s, new "
                  f"{seconds['new']:6.2f} s, old/new {seconds['old'] / seconds['new']:.3f}; HM old {hm['old']:.4f}, "
                  f"new {hm['new']:.4f}" + ("" if hm["old"] == hm["new"] else "  (differ)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
