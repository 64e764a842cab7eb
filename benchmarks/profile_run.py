"""Where one benchmark row's time goes, per method: a wall-clock profile of the real code path.

Run:  python benchmarks/profile_run.py [--protocol official] [--dataset emoji-novel-places]
      [--dg emoji-pacs:sketch] [--threads 1] [--methods coop cocoop ...] [--json out.json]

Committed: ``profile_official.json`` (the official budgets, the benchmark's headline workload) and
``profile_run.json`` (the tuned budgets, measured on an earlier engine).

Each method runs one row exactly as ``metaprompt-lite bench`` does (pocket tier, seed 1), with timers
wrapped around the functions the time can go to. A timer counts *exclusive* time: a call nested in
another timed call is charged to the inner one only. The categories:

  augment        engine.augment (random resized crops of the batch)
  frozen image   the frozen image encoder f_I, minus its stem (training batches and evaluation images)
  image stem     the vision tower's convolutional stem (``visual.conv1``), frozen or prompted
  prompted image the prompted image encoder f̃_I, minus its stem
  text encoder   prompted f̃_T and frozen f_T text passes
  backward       autograd (``Tensor.backward``, ``torch.autograd.grad``)
  optimizer      optimizer steps
  meta step      what a meta update does besides the above (copies, restores, bookkeeping)
  evaluation     evaluation besides its encoder passes
  other          the rest: Python overhead of the loop, set-up, losses, logits

Single-threaded by default, as the benchmark's workers run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from metaprompt_lite import engine, fastpath, methods, run
from metaprompt_lite.core import clip as clip_module
from metaprompt_lite.core import steps
from metaprompt_lite.backbone import load_clip
from metaprompt_lite.data import load_dataset
from metaprompt_lite.paths import default_model

CATEGORIES = ("augment", "frozen image", "image stem", "prompted image", "text encoder", "backward",
              "optimizer", "meta step", "evaluation", "other")
METHODS = ("coop", "cocoop", "ivlp", "maple", "metaprompt", "prometar", "gram-coop")


class Timers:
    """Exclusive wall time per category: entering a nested timer pauses the enclosing one."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.stack: list[list] = []  # [category, start, time spent in children]

    @contextlib.contextmanager
    def timing(self, category: str):
        entry = [category, time.perf_counter(), 0.0]
        self.stack.append(entry)
        try:
            yield
        finally:
            self.stack.pop()
            elapsed = time.perf_counter() - entry[1]
            self.total[category] += elapsed - entry[2]
            if self.stack:
                self.stack[-1][2] += elapsed

    def wrap(self, owner, name: str, category: str | None = None, by_context=None) -> None:
        """Replace ``owner.name`` by a timed version; ``by_context(args)`` may pick the category."""
        original = getattr(owner, name)
        timers = self

        def timed(*args, **kwargs):
            with timers.timing(by_context(args) if by_context else category):
                return original(*args, **kwargs)

        timed.__wrapped__ = original
        setattr(owner, name, timed)


def _instrument(timers: Timers, backbone) -> None:
    """Install the timers (module attributes are patched where callers look them up)."""
    timers.wrap(engine, "augment", "augment")
    timers.wrap(clip_module, "encode_image_layers", "prompted image")  # the plain passes (core.clip.Encoder)
    timers.wrap(clip_module, "encode_text_layers", "text encoder")
    timers.wrap(fastpath, "encode_image_pooled", "prompted image")  # the fast encoder's passes
    timers.wrap(fastpath, "encode_text_shared_prefix", "text encoder")
    # the frozen encoders (CLIP's own forward)
    clip = backbone.model
    original_encode_image = clip.encode_image

    def encode_image(*args, **kwargs):
        with timers.timing("frozen image"):
            return original_encode_image(*args, **kwargs)

    clip.encode_image = encode_image
    timers.wrap(clip, "encode_text", "text encoder")
    stem = clip.visual.conv1
    original_stem = stem.forward

    def stem_forward(*args, **kwargs):
        with timers.timing("image stem"):
            return original_stem(*args, **kwargs)

    stem.forward = stem_forward
    timers.wrap(torch.Tensor, "backward", "backward")
    timers.wrap(torch.autograd, "grad", "backward")
    timers.wrap(torch.optim.SGD, "step", "optimizer")
    for name in ("episodic_meta_update", "official_quirks_meta_update"):  # where core.steps looks them up
        timers.wrap(steps, name, "meta step")
    timers.wrap(methods, "prometar_step", "meta step")  # where methods.make_step looks it up
    timers.wrap(run, "evaluate", "evaluation")
    timers.wrap(run, "frozen_features", "evaluation")


def profile(method: str, dataset, target: str | None, backbone, timers: Timers, protocol: str = "official") -> dict:
    """One bench row of ``method``; returns the seconds per category and the step count."""
    config = run.preset_run(method, "pocket", "b2n" if target is None else "dg", protocol, dataset=dataset.name,
                            target=target, model=backbone.name, pretrained=backbone.pretrained, seed=1,
                            progress=False)
    timers.total.clear()
    t0 = time.perf_counter()
    with timers.timing("other"):
        if target is None:
            result = run.run_base_to_new(config, dataset, backbone, cache=None)
        else:
            result = run.run_domain_generalization(config, dataset, backbone, cache=None)
    wall = time.perf_counter() - t0
    seconds = {c: round(timers.total.get(c, 0.0), 3) for c in CATEGORIES}
    return {"method": method, "dataset": dataset.name, "target": target, "wall_s": round(wall, 3),
            "steps": len(result["history"]), "seconds": seconds}


def _print(rows: list[dict]) -> None:
    head = f"{'row':28s} {'wall s':>7s} {'steps':>5s} " + " ".join(f"{c[:10]:>10s}" for c in CATEGORIES)
    print(head)
    for r in rows:
        name = f"{r['method']} {r['dataset']}" + (f":{r['target']}" if r["target"] else "")
        shares = " ".join(f"{100 * r['seconds'][c] / r['wall_s']:9.1f}%" for c in CATEGORIES)
        print(f"{name:28s} {r['wall_s']:7.2f} {r['steps']:5d} {shares}")
    total = sum(r["wall_s"] for r in rows)
    sums = {c: sum(r["seconds"][c] for r in rows) for c in CATEGORIES}
    print(f"{'all rows':28s} {total:7.2f} {'':5s} " + " ".join(f"{100 * sums[c] / total:9.1f}%" for c in CATEGORIES))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="emoji-novel-places", help="a base-to-new dataset")
    parser.add_argument("--dg", default="emoji-pacs:sketch", help="a DG benchmark:target ('' to skip)")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--protocol", choices=("official", "tuned"), default="official")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    backbone = load_clip(*default_model())
    timers = Timers()
    _instrument(timers, backbone)
    rows = []
    jobs = [(args.dataset, None)]
    if args.dg:
        name, target = args.dg.split(":")
        jobs.append((name, target))
    dg_methods = ("coop", "cocoop", "maple", "metaprompt")
    for name, target in jobs:
        dataset = load_dataset(name)
        for method in args.methods:
            if target is not None and method not in dg_methods:
                continue
            rows.append(profile(method, dataset, target, backbone, timers, args.protocol))
            print(f"  {method} {name}{':' + target if target else ''}: {rows[-1]['wall_s']:.1f} s",
                  file=sys.stderr, flush=True)
    _print(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "torch": torch.__version__,
                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
