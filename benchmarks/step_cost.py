"""Milliseconds per training step of each method on the embedded default (pocket CLIP), and the
ratios the methods issue sets as targets:

    first-order MetaPrompt ≤ 3.5 × an IVLP step;   second-order ≤ 2 × first-order.

Run:  python benchmarks/step_cost.py [--dataset emoji-novel-places] [--batch-size 16] [--steps 10]
Every method steps on the same batches (50 base classes, batch 16, like the pocket presets);
the first 2 steps are warm-up and not timed; the median of the timed steps is reported.

The research-tier step (the methods issue asks for its time and peak memory on this CPU):

      python benchmarks/step_cost.py --model ViT-B-16 --pretrained none --batch-size 4 --steps 2 --warmup 1 --memory

runs the same steps on open_clip's ViT-B/16 with random weights (real shapes; images upsampled to
224 px). ``--memory`` runs each method in its own process and reports its peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from metaprompt_lite.backbone import load_clip
from metaprompt_lite.data import load_dataset
from metaprompt_lite.core.loop import Batch, make_generator
from metaprompt_lite.optim import OptimConfig
from metaprompt_lite.engine import augment
from metaprompt_lite.methods import get_method
from metaprompt_lite.paths import default_model
from metaprompt_lite.core.prompts import PromptedCLIP
from metaprompt_lite.splits import base_new_split, select_classes
from metaprompt_lite.methods import start_training

VARIANTS = (("coop", "coop", {}), ("ivlp", "ivlp", {}), ("metaprompt-1st", "metaprompt", {}),
            ("metaprompt-2nd", "metaprompt-clean", {"meta_order": 2}), ("prometar", "prometar", {}))


def step_ms(backbone, dataset, name: str, overrides: dict, batch_size: int, steps: int, warmup: int = 2) -> float:
    torch.manual_seed(0)
    method = get_method(name, **overrides)
    base, _ = base_new_split(len(dataset.classnames))
    pool = (dataset.split == 0).nonzero().flatten()
    index, labels = select_classes(dataset.labels[pool], base)
    images = dataset.images[pool[index]]
    if images.shape[-1] != backbone.image_size:  # e.g. 64 px suite images on a 224 px ViT-B/16
        images = torch.nn.functional.interpolate(images, size=backbone.image_size, mode="bilinear")
    model = PromptedCLIP(backbone, method.prompt, [dataset.classnames[i] for i in base], dataset.templates[:1])
    optim = OptimConfig(lr=0.002, batch_size=batch_size)
    total = warmup + steps
    state, step = start_training(model, method, optim, total)
    model.train()
    generator = make_generator(1)
    times = []
    for k in range(total):
        choice = torch.randperm(len(images), generator=generator)[:batch_size]
        batch = Batch(augment(images[choice], generator), labels[choice], torch.zeros(batch_size, dtype=torch.long))
        t0 = time.perf_counter()
        step(state, batch)
        state.scheduler.step()
        if k >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="emoji-novel-places")
    parser.add_argument("--model", help="open_clip model name (default: the embedded pocket CLIP)")
    parser.add_argument("--pretrained", help="checkpoint path or tag; 'none' for random weights")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--memory", action="store_true", help="one process per method: peak memory too")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # child process of --memory: one variant, JSON out
    args = parser.parse_args()
    if args.model:
        model_name, pretrained = args.model, None if args.pretrained in (None, "none") else args.pretrained
    else:
        model_name, pretrained = default_model()
    variants = [v for v in VARIANTS if args.only in (None, v[0])]
    if not variants:
        parser.error(f"unknown variant {args.only!r}; choose from {[v[0] for v in VARIANTS]}")
    if args.memory and not args.only:
        print(f"{model_name} ({pretrained or 'random weights'}), {args.dataset}, batch {args.batch_size}, "
              f"one process per method")
        ms = {}
        for label, _, _ in variants:
            command = [sys.executable, __file__, "--only", label] + [
                a for a in sys.argv[1:] if a != "--memory"]
            out = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            ms[label] = out["ms"]
            print(f"{label:16s} {out['ms']:9.1f} ms/step   peak RSS {out['peak_mb']:7.0f} MB "
                  f"(after loading the model {out['loaded_mb']:.0f} MB)", flush=True)
        _ratios(ms)
        return
    torch.manual_seed(0)
    backbone = load_clip(model_name, pretrained)
    dataset = load_dataset(args.dataset)
    loaded_mb = _peak_rss_mb()
    if args.only:
        label, name, overrides = variants[0]
        value = step_ms(backbone, dataset, name, overrides, args.batch_size, args.steps, args.warmup)
        print(json.dumps({"ms": value, "peak_mb": _peak_rss_mb(), "loaded_mb": loaded_mb}))
        return
    print(f"backbone {backbone.name} ({backbone.pretrained}), {args.dataset}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    ms = {}
    for label, name, overrides in variants:
        ms[label] = step_ms(backbone, dataset, name, overrides, args.batch_size, args.steps, args.warmup)
        print(f"{label:16s} {ms[label]:8.1f} ms/step", flush=True)
    _ratios(ms)


def _ratios(ms: dict[str, float]) -> None:
    r1 = ms["metaprompt-1st"] / ms["ivlp"]
    r2 = ms["metaprompt-2nd"] / ms["metaprompt-1st"]
    print(f"metaprompt-1st / ivlp           = {r1:.2f}  (target ≤ 3.5: {'met' if r1 <= 3.5 else 'MISSED'})")
    print(f"metaprompt-2nd / metaprompt-1st = {r2:.2f}  (target ≤ 2.0: {'met' if r2 <= 2.0 else 'MISSED'})")
    print(f"prometar / ivlp                 = {ms['prometar'] / ms['ivlp']:.2f}")


if __name__ == "__main__":
    main()
