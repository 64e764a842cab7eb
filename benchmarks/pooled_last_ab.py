"""The pooled last blocks on and off, interleaved in one process: each method's training time with
the encoders' last block run in full against run at the pooled positions only.

Run:  python benchmarks/pooled_last_ab.py   (about 3 min on one core)

``throughput_official.py`` runs its two sides one after the other, so drift of the machine's speed
between them is inside its ratio. Here the two arms alternate (A B, B A, A B) within one process on
one thread, as a benchmark worker runs: CoOp 150 steps, CoCoOp 300, MetaPrompt 30 of their official
base-to-new presets on emoji-novel-places, seed 1. The "full" arm hands each model the fast encoder
with ``pool_last=False`` (:class:`metaprompt_lite.fastpath.FastEncoder`), which is what the engine did
before the pooled blocks.
"""

from __future__ import annotations

from dataclasses import replace

import torch

import metaprompt_lite.run as run_module
from metaprompt_lite.data import load_dataset
from metaprompt_lite.fastpath import FastEncoder
from metaprompt_lite.methods import prompted_clip
from metaprompt_lite.paths import default_model
from metaprompt_lite.run import load_backbone, preset_run, run_base_to_new

RUNS = (("coop", 150), ("cocoop", 300), ("metaprompt", 30))
DATASET = "emoji-novel-places"


def main() -> None:
    torch.set_num_threads(1)
    model, pretrained = default_model()
    backbone, dataset = load_backbone(model, pretrained), load_dataset(DATASET)
    arm = {"pool_last": True}

    def built(*args, **kwargs):  # the recipe's model, its fast encoder with this arm's last blocks
        model = prompted_clip(*args, **kwargs)
        model.encoder = FastEncoder(pool_last=arm["pool_last"], store=model.encoder.store)
        return model

    run_module.prompted_clip = built
    seconds: dict[tuple[str, bool], float] = {}
    for repeat in range(3):
        for method, steps in RUNS:
            for on in ((True, False) if repeat % 2 else (False, True)):
                arm["pool_last"] = on
                run = preset_run(method, "pocket", "b2n", "official", dataset=DATASET, model=model,
                                 pretrained=pretrained, seed=1, progress=False)
                result = run_base_to_new(replace(run, optim=replace(run.optim, max_steps=steps)), dataset, backbone, {})
                seconds[method, on] = seconds.get((method, on), 0.0) + result["train_s"]
    run_module.prompted_clip = prompted_clip
    for method, steps in RUNS:
        print(f"{method:11s} {steps:4d} steps x 3: full {seconds[method, False]:6.1f} s, pooled "
              f"{seconds[method, True]:6.1f} s, ratio {seconds[method, False] / seconds[method, True]:.3f}x")


if __name__ == "__main__":
    main()
