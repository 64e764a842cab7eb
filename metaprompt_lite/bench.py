"""The benchmark: every method × dataset (or DG target) × seed, one CSV row each, resumable.

Explained in ``notebooks/09_benchmark_reproduction``. ``metaprompt-lite bench`` calls
:func:`bench`; ``metaprompt-lite report`` turns the CSVs into tables and figures.

Resumability: a row is appended as one complete line (and forced to disk) as soon as its run
finishes, and rows already in the CSV are skipped, so a killed benchmark loses at most the run in
progress; the CSV is validated on start and a line cut by a crash is dropped with a warning
(:mod:`metaprompt_lite.results_table`).
Frozen image features of the evaluation images are computed once per dataset and shared by
every method and seed (exact, since the backbone is frozen).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from metaprompt_lite import results_table
from metaprompt_lite.backbone import load_clip
from metaprompt_lite.faults import fault_point
from metaprompt_lite.methods import preset
from metaprompt_lite.run import RunConfig, run_base_to_new, run_domain_generalization

B2N_COLUMNS = ("method", "dataset", "seed", "base", "new", "hm", "train_s")
DG_COLUMNS = ("method", "benchmark", "target", "seed", "acc", "train_s")
B2N_METHODS = ("zsclip", "zsclip-ens", "coop", "cocoop", "ivlp", "maple", "metaprompt", "prometar",
               "gram-coop", "gram-ivlp")
DG_METHODS = ("zsclip", "zsclip-ens", "coop", "cocoop", "maple", "metaprompt")


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
    checkpoint_dir: str | None = None  # run checkpoints here: a killed run resumes mid-training


def _done(path: Path, key_columns: Sequence[str], columns: Sequence[str] | None = None) -> set[tuple[str, ...]]:
    """The run keys already in the results file, after validating it and dropping a cut last line
    (:func:`metaprompt_lite.results_table.prepare_resume`). ``columns`` default: the suite's whose
    key ``key_columns`` is."""
    if columns is None:
        columns = B2N_COLUMNS if tuple(key_columns) == B2N_COLUMNS[:3] else DG_COLUMNS
    return results_table.prepare_resume(path, columns, key_columns)


def append_row(path: Path, row: dict, columns: Sequence[str]) -> None:
    """Append one row (header first if the file is new) as one complete line, forced to disk."""
    results_table.append_row(path, row, columns)


def _save_curve(out_dir: Path, name: str, history: list[dict]) -> None:
    if history:
        path = out_dir / "curves" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(history))
        os.replace(tmp, path)  # a killed write leaves the old curve or none, never half of one


def bench(config: BenchConfig) -> Path:
    """Run every missing (method, dataset/target, seed) of the suite; returns the CSV path."""
    if config.suite not in ("b2n", "dg"):
        raise ValueError(f"unknown suite {config.suite!r}: use 'b2n' or 'dg'")
    if config.loader is None:
        from metaprompt_lite.data import B2N_DATASETS, DG_BENCHMARKS, load_dataset

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
                        optim=optim, progress=False, out_dir=config.checkpoint_dir)
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
        fault_point("mid-row")
        _save_curve(out_dir, curve, result["history"])  # before the row: a row on disk has its curve
        append_row(path, row, columns)
        fault_point("after-append")
    return path
