"""Which speed levers help the official grid on this CPU? Milliseconds per training step (thread time,
one thread, median of timed steps) of the official methods' learners with and without each lever,
interleaved in one run so that the ratios are comparable.

    python experiments/cpu-levers/levers.py [--steps 8] [--out experiments/cpu-levers/levers.json]

Levers measured:
  - bf16 autocast around a whole training step (torch.autocast("cpu", torch.bfloat16));
  - the frozen image tower alone, batch 32, no grad: fp32, bf16 weights, bf16 autocast, torch.compile;
  - the memory allocator (glibc, jemalloc, tcmalloc via LD_PRELOAD; each in its own process), when the
    Debian packages libjemalloc2 / libtcmalloc-minimal4 are installed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from metaprompt_lite.backbone import load_clip
from metaprompt_lite.core.loop import Batch, make_generator
from metaprompt_lite.core.prompts import PromptedCLIP
from metaprompt_lite.data import load_dataset
from metaprompt_lite.engine import augment
from metaprompt_lite.methods import get_method, start_training
from metaprompt_lite.optim import OptimConfig
from metaprompt_lite.paths import default_model
from metaprompt_lite.splits import base_new_split, select_classes

LEARNERS = (("coop", 32), ("cocoop", 1), ("ivlp", 4), ("metaprompt", 16), ("prometar", 4))  # official batches
ALLOCATORS = {"jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
              "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"}


def step_ms(backbone, dataset, name: str, batch_size: int, steps: int, bf16: bool, warmup: int = 2) -> float:
    torch.manual_seed(0)
    method = get_method(name)
    base, _ = base_new_split(len(dataset.classnames))
    pool = (dataset.split == 0).nonzero().flatten()
    index, labels = select_classes(dataset.labels[pool], base)
    images = dataset.images[pool[index]]
    model = PromptedCLIP(backbone, method.prompt, [dataset.classnames[i] for i in base], dataset.templates[:1])
    state, step = start_training(model, method, OptimConfig(lr=0.002, batch_size=batch_size), warmup + steps)
    model.train()
    generator, times = make_generator(1), []
    for k in range(warmup + steps):
        choice = torch.randperm(len(images), generator=generator)[:batch_size]
        batch = Batch(augment(images[choice], generator), labels[choice], torch.zeros(batch_size, dtype=torch.long))
        t0 = time.thread_time()
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            step(state, batch)
        state.scheduler.step()
        if k >= warmup:
            times.append((time.thread_time() - t0) * 1000)
    return statistics.median(times)


def best_ms(run, repeats: int = 6) -> float:
    run()
    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        run()
        times.append(time.thread_time() - t0)
    return min(times) * 1000


def image_tower(backbone) -> dict:
    visual = backbone.model.visual.eval()
    x = torch.randn(32, 3, backbone.image_size, backbone.image_size, generator=torch.Generator().manual_seed(0))
    visual_bf16 = copy.deepcopy(visual).to(torch.bfloat16)
    with torch.no_grad():
        reference = visual(x)
        out = {"fp32": best_ms(lambda: visual(x)), "bf16 weights": best_ms(lambda: visual_bf16(x.bfloat16()))}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out["bf16 autocast"] = best_ms(lambda: visual(x))
        compiled = torch.compile(visual)
        t0 = time.perf_counter()
        same = torch.equal(compiled(x), reference)
        out["compile seconds"] = time.perf_counter() - t0
        out["torch.compile"] = best_ms(lambda: compiled(x))
        out["compile same bits"] = same
        out["bf16 relative error"] = float((visual_bf16(x.bfloat16()).float() - reference).abs().max()
                                           / reference.abs().max())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--dataset", default="emoji-novel-places")
    parser.add_argument("--out", default=str(Path(__file__).with_name("levers.json")))
    parser.add_argument("--fp32-steps-only", action="store_true", help=argparse.SUPPRESS)  # allocator child
    args = parser.parse_args()
    torch.set_num_threads(1)
    backbone = load_clip(*default_model())
    dataset = load_dataset(args.dataset)
    if args.fp32_steps_only:
        print(json.dumps({n: step_ms(backbone, dataset, n, b, args.steps, False) for n, b in LEARNERS}))
        return
    result = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "dataset": args.dataset, "steps": {}}
    print(f"{args.dataset}, one thread, {args.steps} timed steps; ms per step (thread time)")
    for name, batch in LEARNERS:
        fp32 = step_ms(backbone, dataset, name, batch, args.steps, False)
        bf16 = step_ms(backbone, dataset, name, batch, args.steps, True)
        result["steps"][name] = {"batch": batch, "fp32": fp32, "bf16 autocast": bf16}
        print(f"  {name:11s} batch {batch:2d}: fp32 {fp32:6.1f}  bf16 autocast {bf16:6.1f}  ({fp32 / bf16:.2f}x)",
              flush=True)
    tower = result["image_tower"] = image_tower(backbone)
    print("  frozen image tower, batch 32, no grad: " + ", ".join(
        f"{k} {tower[k]:.1f} ms ({tower['fp32'] / tower[k]:.2f}x)" for k in ("fp32", "bf16 weights", "bf16 autocast",
                                                                          "torch.compile"))
          + f"; compile {tower['compile seconds']:.0f} s, same bits {tower['compile same bits']}, "
          f"bf16 relative error {tower['bf16 relative error']:.1e}")
    allocators = {"glibc": None, **{k: v for k, v in ALLOCATORS.items() if Path(v).is_file()}}
    result["allocators"] = {}
    for repeat in range(2):  # interleaved, twice
        for label, library in allocators.items():
            env = dict(os.environ, **({"LD_PRELOAD": library} if library else {}))
            out = subprocess.run([sys.executable, __file__, "--fp32-steps-only", "--steps", str(args.steps),
                                  "--dataset", args.dataset], env=env, capture_output=True, text=True, check=True)
            result["allocators"].setdefault(label, []).append(json.loads(out.stdout.splitlines()[-1]))
    for label, runs in result["allocators"].items():
        total = statistics.mean(sum(r.values()) for r in runs)
        glibc = statistics.mean(sum(r.values()) for r in result["allocators"]["glibc"])
        print(f"  allocator {label:8s}: the five steps' sum {total:6.1f} ms ({glibc / total:.2f}x glibc)")
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
