"""The benchmark: every method × dataset (or DG target) × seed, one CSV row each, resumable.

Explained in ``notebooks/09_benchmark_reproduction``. ``metaprompt-lite bench`` calls
:func:`bench`; ``metaprompt-lite report`` turns the CSVs into tables and figures.

Resumability: a row is appended (and flushed to disk) as soon as its run finishes, and rows
already in the CSV are skipped, so a killed benchmark loses at most the run in progress.
Frozen image features of the evaluation images are computed once per dataset and shared by
every method and seed (exact, since the backbone is frozen).
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from metaprompt_lite.backbone import load_clip
from metaprompt_lite.data import B2N_DATASETS, DG_BENCHMARKS, load_dataset
from metaprompt_lite.methods import B2N_METHODS, DG_METHODS, preset
from metaprompt_lite.run import RunConfig, run_base_to_new, run_domain_generalization

B2N_COLUMNS = ("method", "dataset", "seed", "base", "new", "hm", "train_s")
DG_COLUMNS = ("method", "benchmark", "target", "seed", "acc", "train_s")


@dataclass
class BenchConfig:
    suite: str = "b2n"  # "b2n" | "dg"
    methods: Sequence[str] = ()
    datasets: Sequence[str] = ()
    seeds: Sequence[int] = (1, 2, 3)
    model: str = "pocket-clip"
    pretrained: str | None = None
    tier: str = "pocket"  # which hyper-parameter preset: "pocket" | "paper"
    out_dir: str = "results"
    device: str = "cpu"
    progress: bool = True
    loader: object = field(default=None, repr=False)  # name -> dataset (default: the offline suite)


def _done(path: Path, key_columns: Sequence[str]) -> set[tuple[str, ...]]:
    if not path.is_file():
        return set()
    with path.open(newline="") as f:
        return {tuple(row[c] for c in key_columns) for row in csv.DictReader(f)}


def append_row(path: Path, row: dict, columns: Sequence[str]) -> None:
    """Append one row (header first if the file is new) and force it to disk."""
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        if new:
            writer.writeheader()
        writer.writerow({c: (f"{row[c]:.4f}" if isinstance(row[c], float) else row[c]) for c in columns})
        f.flush()
        os.fsync(f.fileno())


def _save_curve(out_dir: Path, name: str, history: list[dict]) -> None:
    if history:
        path = out_dir / "curves" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(history))


def bench(config: BenchConfig) -> Path:
    """Run every missing (method, dataset/target, seed) of the suite; returns the CSV path."""
    if config.suite not in ("b2n", "dg"):
        raise ValueError(f"unknown suite {config.suite!r}: use 'b2n' or 'dg'")
    if config.loader is None:
        loader = load_dataset
        all_datasets = B2N_DATASETS if config.suite == "b2n" else DG_BENCHMARKS
    else:
        loader, all_datasets = config.loader, ()
    datasets = list(config.datasets) or list(all_datasets)
    methods = list(config.methods) or list(B2N_METHODS if config.suite == "b2n" else DG_METHODS)
    for m in methods:
        preset(m, config.tier)  # unknown method / tier: fail before any work
    out_dir = Path(config.out_dir)
    path = out_dir / f"{config.suite}.csv"
    columns = B2N_COLUMNS if config.suite == "b2n" else DG_COLUMNS
    done = _done(path, columns[:3] if config.suite == "b2n" else columns[:4])
    backbone = load_clip(config.model, config.pretrained, config.device)
    cache: dict = {}
    loaded = {name: loader(name) for name in datasets}
    jobs = []
    for name in datasets:
        targets = [None] if config.suite == "b2n" else list(loaded[name].domains)
        for target in targets:
            for method in methods:
                for seed in config.seeds:
                    key = (method, name, str(seed)) if target is None else (method, name, target, str(seed))
                    if key not in done:
                        jobs.append((name, target, method, seed))
    for name, target, method, seed in tqdm(jobs, desc=f"bench {config.suite}", disable=not config.progress):
        method_config, optim, shots = preset(method, config.tier)
        run = RunConfig(method=method, dataset=name, target=target, model=config.model,
                        pretrained=config.pretrained, seed=seed, shots=shots, device=config.device,
                        optim=optim, progress=False)
        t0 = time.perf_counter()
        if target is None:
            result = run_base_to_new(run, loaded[name], backbone, cache)
            row = {"method": method, "dataset": name, "seed": seed, **result}
            curve = f"{method}-{name}-s{seed}"
        else:
            result = run_domain_generalization(run, loaded[name], backbone, cache)
            row = {"method": method, "benchmark": name, "target": target, "seed": seed, **result}
            curve = f"{method}-{name}-{target}-s{seed}"
        row["train_s"] = time.perf_counter() - t0 if not result["history"] else result["train_s"]
        append_row(path, row, columns)
        _save_curve(out_dir, curve, result["history"])
    return path
