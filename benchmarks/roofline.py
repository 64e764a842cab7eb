"""How far the official grid runs from this machine's arithmetic peak: FLOPs per training step of each
method at its official budget, the step's measured speed as a share of the peak, and the FLOP floor of
the whole committed official grid beside its recorded wall time.

Run:  python benchmarks/roofline.py [--dataset emoji-novel-places] [--dg-target emoji-pacs/photo]
      [--steps 5] [--warmup 2]            (about 6 minutes on one thread; writes benchmarks/roofline.json)

What it measures, and how:

* **Peak.** ``torch.mm`` of two large square matrices (2048²) on one thread, best of a few, timed by
  thread time: fp32 (the pocket CLIP's dtype: the headline) and bf16 (reported beside it).
* **FLOPs per step.** ``torch.utils.flop_counter.FlopCounterMode`` around real steps of each method
  (forward and backward; the optimizer update issues no matrix product), on every dataset (base-to-new)
  and every DG target: a step's text pass grows with the classes and its image pass with the batch, so
  no scaling from one dataset is needed. The counter sees matrix products, attention and convolutions
  only (elementwise work is not counted: the floor is a lower bound). ``warm`` is the mean of 3 steps on
  batches whose frozen image stem and features are already there, as the methods of a benchmark group
  after the first find them; ``cold`` adds the part of those the step uses, as on a fresh batch.
* **Seconds per step.** ``time.thread_time()`` around each step on one intra-op thread (as each of the
  benchmark's worker processes runs), median of ``--steps`` steps after ``--warmup``, fresh batches:
  thread time, because the machine is shared and wall time counts other processes' work. Measured on
  one base-to-new dataset (``--dataset``) and one DG target (``--dg-target``); achieved GFLOP/s =
  cold FLOPs / seconds.
* **The grid's floor.** Each committed row of ``results/official/b2n.csv`` and ``dg.csv`` with its
  steps read from its curve (``results/official/curves/``; the seed-1 rows' checked against the steps
  the engine plans, ``steps_for``), times the warm FLOPs of its method on its dataset (or target), plus
  the shared frozen stem and features once per step of each benchmark group (dataset or target, seed,
  batch size: the methods that share batches), plus the evaluation passes (each row's forward pass over its test images, counted
  once per method and dataset, and each dataset's frozen test features once). Divided by 2 × the fp32
  peak: the minutes two cores need at best. The zsclip-bare rows are left out, as the recorded wall
  time leaves them out (``results/official/bench_meta.json``); the recorded wall time is then given
  as a multiple of the floor.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from metaprompt_lite.data import B2N_DATASETS, DG_BENCHMARKS, load_dataset
from metaprompt_lite.optim import steps_for
from metaprompt_lite.engine import seed_everything, training_batch
from metaprompt_lite.fastpath import frozen_features
from metaprompt_lite.methods import B2N_METHODS, DG_METHODS, METHODS, prompted_clip
from metaprompt_lite.paths import default_model
from metaprompt_lite.run import evaluate, evaluate_base_new, load_backbone, preset_run, training_set
from metaprompt_lite.splits import base_new_split, dg_pools
from metaprompt_lite.methods import start_training

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = ROOT / "results" / "official"
OUT = Path(__file__).with_name("roofline.json")
CORES = 2
LEFT_OUT = ("zsclip-bare",)  # rows the recorded wall time does not include


# --------------------------------------------------------------------------- arithmetic
def gflop_per_s(flops: float, seconds: float) -> float:
    """Achieved GFLOP/s of ``flops`` done in ``seconds``."""
    return flops / seconds / 1e9


def percent_of_peak(gflops: float, peak_gflops: float) -> float:
    """``gflops`` as a percentage of ``peak_gflops``."""
    return 100.0 * gflops / peak_gflops


def floor_minutes(flops: float, peak_gflops: float, cores: int = CORES) -> float:
    """Minutes of wall time ``flops`` need at ``peak_gflops`` per core on ``cores`` cores: the floor no
    implementation of the same arithmetic can go under on this machine."""
    return flops / (cores * peak_gflops * 1e9) / 60.0


class _GlobalOnly:
    """Stands in for ``FlopCounterMode``'s per-module tracker, which fails on a module called under
    ``torch.no_grad`` with a parameter as its input (MaPLe's coupling in evaluation): the total needs
    no per-module split, so every count goes to "Global", the one the total sums."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def count_flops(fn) -> int:
    """FLOPs of the matrix products and convolutions ``fn()`` runs (forward, and backward if it runs one)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 3) -> float:
    """GFLOP/s of one ``torch.mm`` of two n×n matrices on the calling thread (thread time), best of
    ``repeats`` after one untimed product."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.thread_time()
        torch.mm(a, b)
        best = min(best, time.thread_time() - t0)
    return gflop_per_s(2 * n**3, best)


# --------------------------------------------------------------------------- one method's steps
@dataclass
class Probe:
    """One method's training set up as the benchmark sets it up (preset, seed 1), ready to step."""

    run: object
    model: object
    state: object
    step: object
    images: torch.Tensor
    labels: torch.Tensor
    domains: torch.Tensor
    batch_size: int
    total: int


def probe(method: str, suite: str, dataset, backbone, target: str | None = None, seed: int = 1) -> Probe:
    """``method``'s official run on ``dataset`` (DG: held-out ``target``), built as ``run.run_base_to_new``
    and ``run.run_domain_generalization`` build it, its optimizer and step function from
    ``steps.start_training`` over the run's real number of steps."""
    run = preset_run(method, "pocket", suite, "official", dataset=dataset.name, target=target, seed=seed,
                     progress=False)
    seed_everything(seed)
    index, labels, domains = training_set(run, dataset)
    classes = list(dataset.classnames)
    if target is None:
        classes = [classes[i] for i in base_new_split(len(classes))[0]]
    model = prompted_clip(backbone, run.recipe, classes, dataset.templates, dataset.name, seed=seed)
    total, warmup = steps_for(len(index), run.optim)
    state, step = start_training(model, run.recipe, run.optim, total, warmup, seed, target is not None,
                                 gram_artifact=run.gram_artifact)
    model.train()
    domains = torch.zeros_like(labels) if domains is None else domains
    return Probe(run, model, state, step, dataset.images[index], labels, domains,
                 min(run.optim.batch_size, len(index)), total)


def next_batch(p: Probe):
    """The batch of the probe's current step, fresh (as ``engine.training_batch`` draws it)."""
    run = p.run
    return training_batch(p.images, p.labels, p.domains, run.seed, p.state.step % p.total, p.batch_size,
                          run.flip, run.min_scale, run.interpolation)


def take_step(p: Probe, batch) -> None:
    """One training step as ``engine.train`` takes it: the method's step, the scheduler, the counter."""
    p.step(p.state, batch)
    p.state.scheduler.step()
    p.state.step += 1


def step_seconds(p: Probe, steps: int, warmup: int) -> float:
    """Median thread seconds of the method's step function over ``steps`` fresh batches after ``warmup``."""
    times = []
    for k in range(warmup + steps):
        batch = next_batch(p)
        t0 = time.thread_time()
        take_step(p, batch)
        if k >= warmup:
            times.append(time.thread_time() - t0)
    return statistics.median(times)


def step_flops(p: Probe, steps: int = 3) -> dict:
    """FLOPs of the method's step: ``warm``, the mean over ``steps`` steps on batches whose frozen stem
    and features are already there (a step may vary: an episode's split, a meta-regulariser's turn),
    ``warm_min`` and ``warm_max``; the two shared parts (``stem``; ``frozen``, the features given the
    stem) and whether the step uses them (seen on one fresh batch); ``cold``, a step on a fresh batch
    (warm + the shared parts it uses), as the first method of a benchmark group takes it."""
    batch = next_batch(p)
    take_step(p, batch)
    uses_stem, uses_frozen = "stem" in batch.store, "frozen" in batch.store
    warm, stem, frozen = [], 0, 0
    for k in range(steps):
        batch = next_batch(p)
        if k == 0:
            stem = count_flops(lambda: batch.image_stem(p.model))
            frozen = count_flops(lambda: batch.frozen_image(p.model))
        else:
            batch.frozen_image(p.model)
        warm.append(count_flops(lambda: take_step(p, batch)))
    mean = sum(warm) / len(warm)
    cold = mean + stem * (uses_stem or uses_frozen) + frozen * uses_frozen
    return {"cold": cold, "warm": mean, "warm_min": min(warm), "warm_max": max(warm), "stem": stem,
            "frozen": frozen, "uses_stem": uses_stem, "uses_frozen": uses_frozen, "batch_size": p.batch_size,
            "steps": p.total}


def eval_flops(p: Probe, dataset, backbone, cache: dict, target: str | None) -> int:
    """FLOPs of the run's evaluation (base and new test images; DG: the target's), its frozen test
    features already in ``cache``."""
    method = p.run.recipe
    if target is None:
        return count_flops(lambda: evaluate_base_new(p.model, method, dataset, backbone, cache))
    test = dg_pools(dataset.split, dataset.domain, dataset.domains.index(target))[1].nonzero().flatten()
    frozen = frozen_features(backbone, dataset, test, cache)
    return count_flops(lambda: evaluate(p.model, method, dataset.images[test], dataset.labels[test],
                                        list(dataset.classnames), frozen))


def test_features_flops(dataset, backbone, cache: dict, target: str | None) -> int:
    """FLOPs of the frozen features of a dataset's test images (DG: the target's), computed once per
    dataset and shared by every row; fills ``cache`` with them as evaluation asks for them."""
    if target is None:
        zero_shot = prompted_clip(backbone, METHODS["zsclip"], list(dataset.classnames), dataset.templates)
        evaluate_base_new(zero_shot, METHODS["zsclip"], dataset, backbone, cache)  # fills the cache's subsets
        test = (dataset.split == 1).nonzero().flatten()
    else:
        test = dg_pools(dataset.split, dataset.domain, dataset.domains.index(target))[1].nonzero().flatten()
        frozen_features(backbone, dataset, test, cache)
    return count_flops(lambda: frozen_features(backbone, dataset, test, None))


# --------------------------------------------------------------------------- the grid
def grid_rows(suite: str, official: Path = OFFICIAL) -> list[dict]:
    """The committed rows of a suite (zsclip-bare left out), each with ``place`` (dataset, or
    benchmark/target) and ``steps`` (the last step of its curve; 0 for zero-shot rows)."""
    rows = []
    with open(official / f"{suite}.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["method"] in LEFT_OUT:
                continue
            place = row["dataset"] if suite == "b2n" else f"{row['benchmark']}/{row['target']}"
            curve = official / "curves" / f"{row['method']}-{place.replace('/', '-')}-s{row['seed']}.json"
            steps = json.loads(curve.read_text())[-1]["step"] if METHODS[row["method"]].trainable else 0
            rows.append({"method": row["method"], "place": place, "seed": int(row["seed"]), "steps": steps,
                         "batch_size": int(row["batch_size"])})
    return rows


def grid_flops(rows: list[dict], steps: dict, evals: dict, test_features: dict) -> dict:
    """The FLOPs of a suite's rows: training (each row's steps × its warm step, plus the shared frozen
    stem and features once per step of each group of rows sharing batches: place, seed, batch size)
    and evaluation (each row's pass, plus each place's frozen test features once).
    ``steps[(method, place)]``: :func:`step_flops`; ``evals[(method, place)]``, ``test_features[place]``."""
    train = 0
    groups: dict[tuple, dict] = {}
    for row in rows:
        if not row["steps"]:
            continue
        s = steps[(row["method"], row["place"])]
        train += row["steps"] * s["warm"]
        group = groups.setdefault((row["place"], row["seed"], row["batch_size"]),
                                  {"steps": 0, "stem": 0, "frozen": 0, "uses_stem": False, "uses_frozen": False})
        group["steps"] = max(group["steps"], row["steps"])
        group["stem"], group["frozen"] = s["stem"], s["frozen"]
        group["uses_stem"] |= s["uses_stem"] or s["uses_frozen"]  # the features start from the stem
        group["uses_frozen"] |= s["uses_frozen"]
    shared = sum(g["steps"] * (g["stem"] * g["uses_stem"] + g["frozen"] * g["uses_frozen"]) for g in groups.values())
    evaluation = sum(evals[(row["method"], row["place"])] for row in rows)
    evaluation += sum(test_features[place] for place in {row["place"] for row in rows})
    return {"train": train + shared, "shared_batch_features": shared, "eval": evaluation,
            "total": train + shared + evaluation}


def places(suite: str) -> list[tuple[str, str | None]]:
    """(dataset, target) of every place of a suite: each base-to-new dataset; each DG benchmark's targets."""
    if suite == "b2n":
        return [(name, None) for name in B2N_DATASETS]
    return [(name, target) for name in DG_BENCHMARKS for target in load_dataset(name).domains]


def place_name(dataset: str, target: str | None) -> str:
    return dataset if target is None else f"{dataset}/{target}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="emoji-novel-places", help="base-to-new dataset the steps are timed on")
    parser.add_argument("--dg-target", default="emoji-pacs/photo", help="DG benchmark/target the DG steps are timed on")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"peak, one thread, torch.mm 2048²: fp32 {peak['fp32']:.1f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s",
          flush=True)
    model_name, pretrained = default_model()
    backbone = load_backbone(model_name, pretrained)
    meta = json.loads((OFFICIAL / "bench_meta.json").read_text())
    timed_at = {"b2n": args.dataset, "dg": args.dg_target}
    out = {"peak_gflops": peak, "cores": CORES, "timed_at": timed_at, "steps_timed": args.steps,
           "warmup": args.warmup, "methods": {}, "grid": {}}
    for suite, names in (("b2n", B2N_METHODS), ("dg", DG_METHODS)):
        rows = grid_rows(suite)
        trained = [m for m in names if METHODS[m].trainable]
        evaluated = [m for m in names if m not in LEFT_OUT]
        steps, evals, test_features, checked = {}, {}, {}, 0
        print(f"\n{suite}: method, place, cold GFLOP/step (warm), ms/step (thread), GFLOP/s, % fp32 peak", flush=True)
        for dataset_name, target in places(suite):
            dataset = load_dataset(dataset_name)
            place = place_name(dataset_name, target)
            cache: dict = {}
            test_features[place] = test_features_flops(dataset, backbone, cache, target)
            for method in evaluated:
                p = probe(method, suite, dataset, backbone, target)
                if method in trained:
                    for row in rows:  # the curves' steps are the engine's
                        if (row["method"], row["place"]) == (method, place) and row["seed"] == 1:
                            if row["steps"] != p.total:
                                print(f"error: {method} on {place} ran {row['steps']} steps but the engine plans "
                                      f"{p.total} — measure with the code that made results/official", file=sys.stderr)
                                sys.exit(2)
                            checked += 1
                    if place == timed_at[suite]:
                        seconds = step_seconds(p, args.steps, args.warmup)
                    else:
                        seconds = None
                    steps[(method, place)] = step_flops(p)
                    if seconds is not None:
                        cold = steps[(method, place)]["cold"]
                        achieved = gflop_per_s(cold, seconds)
                        out["methods"][f"{suite}/{method}"] = {
                            "place": place, "gflop_per_step_cold": cold / 1e9,
                            "gflop_per_step_warm": steps[(method, place)]["warm"] / 1e9,
                            "batch_size": p.batch_size, "ms_per_step": seconds * 1e3, "gflop_per_s": achieved,
                            "percent_fp32_peak": percent_of_peak(achieved, peak["fp32"]),
                            "percent_bf16_peak": percent_of_peak(achieved, peak["bf16"])}
                        print(f"  {method:17s} {place:20s} {cold / 1e9:7.3f} ({steps[(method, place)]['warm'] / 1e9:.3f})"
                              f" {seconds * 1e3:8.1f} {achieved:7.2f} {percent_of_peak(achieved, peak['fp32']):6.1f} %",
                              flush=True)
                evals[(method, place)] = eval_flops(p, dataset, backbone, cache, target)
        flops = grid_flops(rows, steps, evals, test_features)
        wall = meta["wall_minutes_by_suite"][suite]
        floor = floor_minutes(flops["total"], peak["fp32"])
        out["grid"][suite] = {
            "rows": len(rows), "steps": sum(r["steps"] for r in rows), "steps_checked_against_engine": checked,
            "tflop_train": flops["train"] / 1e12, "tflop_shared_batch_features": flops["shared_batch_features"] / 1e12,
            "tflop_eval": flops["eval"] / 1e12, "tflop_total": flops["total"] / 1e12,
            "eval_share": flops["eval"] / flops["total"], "floor_minutes_fp32": floor,
            "floor_minutes_bf16": floor_minutes(flops["total"], peak["bf16"]),
            "wall_minutes": wall, "wall_over_floor": wall / floor,
            "gflop_per_step": {f"{m}@{pl}": s["warm"] / 1e9 for (m, pl), s in steps.items()}}
        g = out["grid"][suite]
        print(f"{suite} grid: {g['rows']} rows, {g['steps']} steps, {g['tflop_total']:.1f} TFLOP "
              f"(evaluation {100 * g['eval_share']:.1f} %); floor {floor:.2f} min on {CORES} cores at the fp32 peak; "
              f"recorded {wall:.1f} min = {g['wall_over_floor']:.0f}× the floor", flush=True)
    total_flops = sum(g["tflop_total"] for g in out["grid"].values()) * 1e12
    floor = floor_minutes(total_flops, peak["fp32"])
    out["grid"]["all"] = {"tflop_total": total_flops / 1e12, "floor_minutes_fp32": floor,
                          "floor_minutes_bf16": floor_minutes(total_flops, peak["bf16"]),
                          "wall_minutes": meta["wall_minutes"], "wall_over_floor": meta["wall_minutes"] / floor}
    print(f"whole grid: {total_flops / 1e12:.1f} TFLOP, floor {floor:.2f} min; recorded {meta['wall_minutes']:.1f} min "
          f"= {meta['wall_minutes'] / floor:.0f}× the floor")
    out["run_seconds"] = time.perf_counter() - started
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
