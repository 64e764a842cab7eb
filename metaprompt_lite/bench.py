"""The benchmark: every method × dataset (or DG target) × seed, one CSV row each, resumable.

Explained in ``notebooks/09_benchmark_reproduction``. ``metaprompt-lite bench`` calls
:func:`bench`; ``metaprompt-lite report`` turns the CSVs into tables and figures.

Resumability: a row is appended as one complete line (and forced to disk) as soon as its run
finishes, and rows already in the CSV are skipped, so a killed benchmark loses at most the run in
progress; the CSV is validated on start and a line cut by a crash is dropped with a warning
(:mod:`metaprompt_lite.results_table`).
Frozen image features of the evaluation images are computed once per dataset and shared by
every method and seed (exact, since the backbone is frozen).

Many jobs: ``BenchConfig.shard = (K, N)`` runs the K-th of N disjoint parts of the grid into its own
file, for a job array; ``metaprompt-lite merge`` joins the parts (:mod:`metaprompt_lite.shard`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import torch
from tqdm import tqdm

from metaprompt_lite import results_table, shard
from metaprompt_lite.data import B2N_DATASETS, DG_BENCHMARKS, load_dataset
from metaprompt_lite.optim import steps_for
from metaprompt_lite.faults import fault_point
from metaprompt_lite.methods import B2N_METHODS, DG_METHODS, METHODS, budget, check_protocol, preset
from metaprompt_lite.provenance import code_version, weights_id
from metaprompt_lite.results_table import B2N_COLUMNS, DG_COLUMNS, run_key
from metaprompt_lite.run import (
    RunConfig, load_backbone, preset_run, row_settings, run_base_to_new, run_domain_generalization, training_set)



@dataclass
class BenchConfig:
    suite: str = "b2n"  # "b2n" | "dg"
    methods: Sequence[str] = ()
    datasets: Sequence[str] = ()
    seeds: Sequence[int] = (1, 2, 3)
    model: str = "pocket-clip"
    pretrained: str | None = None
    tier: str = "pocket"  # which tier's augmentation and presets: "pocket" | "paper"
    protocol: str = "official"  # whose budgets: "official" (the papers') | "tuned" (pocket validation)
    out_dir: str = "results"
    device: str = "cpu"
    progress: bool = True
    # name -> dataset (default: the offline suite); with workers > 1 it must be picklable
    # (a module-level function), since each worker process loads its own datasets
    loader: object = field(default=None, repr=False)
    workers: int = 0  # worker processes, one intra-op thread each; 0 = one per core (at most the groups)
    max_steps: int | None = None  # cap every run's steps (quick slices and tests), None = the presets'
    checkpoint_dir: str | None = None  # run checkpoints here: a killed run resumes mid-training
    # (K, N): run only the K-th of N disjoint parts of the grid, into <suite>.shard-K-of-N.csv
    # (metaprompt_lite.shard; `metaprompt-lite merge` joins the N files into <suite>.csv)
    shard: tuple[int, int] | None = None


def _done(path: Path, key_columns: Sequence[str],
          columns: Sequence[str] | None = None) -> dict[tuple[str, ...], dict[str, str]]:
    """The rows already in the results file by run key, after validating it and dropping a cut last
    line (:func:`metaprompt_lite.results_table.prepare_resume`). ``columns`` default: the suite's whose
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


@dataclass(frozen=True)
class Group:
    """The rows that share one training set: every method on one dataset (or DG target) and seed.
    A worker runs a group's methods one after the other, so the augmented batches and their frozen
    features are computed once for all of them (exact: the backbone is frozen)."""

    dataset: str
    target: str | None
    seed: int
    methods: tuple[str, ...]


def plan(config: BenchConfig, targets_of: dict[str, list[str | None]], done: dict[tuple[str, ...], dict],
         settings_of=None, path: Path | None = None) -> list[Group]:
    """The missing rows, grouped by (dataset, target, seed) and within that by batch size (the
    methods that draw the same batches share them), in the benchmark's fixed order.

    ``done``: the rows on disk by run key. ``settings_of(method, dataset, target, seed)``: the
    settings this benchmark would record (:func:`metaprompt_lite.run.row_settings`); a row on disk is
    skipped only when they match, and any that does not is an error naming the difference: a
    results file never holds two settings for one run."""
    groups, conflicts = [], []
    for name, targets in targets_of.items():
        for target in targets:
            for seed in config.seeds:
                methods = []
                for m in _methods(config):
                    key = run_key(m, name, target, seed)
                    if key not in done:
                        methods.append(m)
                    elif settings_of is not None:
                        differences = results_table.setting_differences(settings_of(m, name, target, seed), done[key])
                        if differences:
                            conflicts.append((key, differences))
                by_batch: dict[int, list[str]] = {}
                for m in methods:
                    batch = budget(m, config.suite, config.protocol, name).batch_size if METHODS[m].trainable else 0
                    by_batch.setdefault(batch, []).append(m)
                groups += [Group(name, target, seed, tuple(ms)) for ms in by_batch.values()]
    if conflicts:
        key, differences = conflicts[0]
        raise ValueError(f"{path or 'the results file'} already holds {len(conflicts)} of these runs made with other "
                         f"settings (e.g. {' '.join(key)}: {'; '.join(differences)}) — use another --out-dir for "
                         "these settings, or delete those rows to run them again")
    if done and settings_of is not None:  # the file's own settings, also where no run overlaps
        file_conflict(config, targets_of, done, settings_of, path)
    return groups


def file_conflict(config: BenchConfig, targets_of: dict[str, list[str | None]], done: dict[tuple[str, ...], dict],
                  settings_of, path: Path | None) -> None:
    """Refuse, before any training, rows whose file-wide settings (:data:`~metaprompt_lite.results_table.
    FILE_SETTINGS`, and per method :data:`~metaprompt_lite.results_table.METHOD_SETTINGS`) differ from the
    rows already in the file: one file holds one setting, or neither the report nor a resume could read it."""
    if not targets_of or not config.seeds:
        return
    name = next(iter(targets_of))
    target, seed = targets_of[name][0], config.seeds[0]
    for method in _methods(config):
        expected = settings_of(method, name, target, seed)
        for row in done.values():
            columns = results_table.FILE_SETTINGS + (results_table.METHOD_SETTINGS if row["method"] == method else ())
            differences = results_table.setting_differences({c: expected[c] for c in columns}, row)
            if differences:
                raise ValueError(f"{path or 'the results file'} holds rows made with other settings than this run's "
                                 f"({'; '.join(differences)}, found → this run) and a results file holds one setting — "
                                 "use another --out-dir for these settings, or the settings of the rows there")


def check_unique(config: BenchConfig) -> None:
    """Refuse a seed, method or dataset named twice: its rows would repeat a run key, which every reader refuses."""
    for what, values in (("seeds", config.seeds), ("methods", config.methods), ("datasets", config.datasets)):
        repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
        if repeated:
            raise ValueError(f"--{what} names {', '.join(repeated)} more than once — give each once")
    if not config.seeds:
        raise ValueError("no seeds to run — give at least one, e.g. --seeds 1")


def _methods(config: BenchConfig) -> list[str]:
    return list(config.methods) or list(B2N_METHODS if config.suite == "b2n" else DG_METHODS)


# Seconds per optimizer step of each method on one CPU thread of an otherwise idle machine, at the
# official budgets (benchmarks/roofline.py, its benchmarks/roofline.json "ms_per_step"): base-to-new on a
# 25-base-class dataset (emoji-novel-places), DG on a 40-class target (emoji-pacs/photo); a step's text
# passes grow with the classes. Only for the estimate printed when a benchmark starts, and for its order.
STEP_SECONDS = {"coop": 0.045, "cocoop": 0.023, "ivlp": 0.031, "maple": 0.029, "metaprompt": 0.097,
                "prometar": 0.188, "gram-coop": 0.044, "gram-ivlp": 0.029, "metaprompt-clean": 0.096,
                "prometar-base": 0.028, "prometar-netlr": 0.188}
DG_STEP_SECONDS = {"coop": 0.052, "cocoop": 0.029, "maple": 0.036, "metaprompt": 0.283}
REFERENCE_CLASSES = {"b2n": 25, "dg": 40}


def group_seconds(config: BenchConfig, group: Group, dataset) -> float:
    """A rough estimate of one group's seconds on one thread: steps × seconds per step at the reference
    dataset (:data:`STEP_SECONDS`, :data:`DG_STEP_SECONDS`) × classes / the reference's classes."""
    table = STEP_SECONDS if group.target is None else {**STEP_SECONDS, **DG_STEP_SECONDS}
    reference = REFERENCE_CLASSES["b2n" if group.target is None else "dg"]
    total = 0.0
    for method in (m for m in group.methods if METHODS[m].trainable):
        run = run_config(config, method, group.dataset, group.target, group.seed)
        index, _, _ = training_set(run, dataset)
        steps, _ = steps_for(len(index), run.optim)
        classes = len(dataset.classnames) / (2 if group.target is None else 1)
        total += steps * table.get(method, 0.2) * classes / reference
    return total


def largest_first(config: BenchConfig, groups: list[Group], datasets: dict) -> tuple[list[Group], float]:
    """``groups`` by estimated cost, largest first (so that the last runs of a pool are short ones and
    no core idles through a long tail), and their estimated total seconds on one thread. Rows do not
    depend on the order: each is a pure function of its run."""
    cost = {group: group_seconds(config, group, datasets[group.dataset]) for group in groups}
    return sorted(groups, key=lambda g: -cost[g]), sum(cost.values())


def run_config(config: BenchConfig, method: str, dataset: str, target: str | None, seed: int) -> RunConfig:
    """The :class:`~metaprompt_lite.run.RunConfig` of one row of the benchmark."""
    run = preset_run(method, config.tier, config.suite, config.protocol, dataset=dataset, target=target,
                     model=config.model, pretrained=config.pretrained, seed=seed, device=config.device,
                     progress=False, out_dir=config.checkpoint_dir)
    if config.max_steps is not None:
        run = replace(run, optim=replace(run.optim, max_steps=config.max_steps))
    return run


def run_group(config: BenchConfig, group: Group, dataset, backbone, cache: dict):
    """Yield (row, curve name, history) for each method of ``group``, in order; each row carries
    what made it (:func:`metaprompt_lite.run.row_settings`)."""
    for key in [k for k in cache if k[0] == "batches"]:  # the previous group's batches
        del cache[key]
    weights, code = weights_id(config.pretrained), code_version()
    for method in group.methods:
        run = run_config(config, method, group.dataset, group.target, group.seed)
        t0 = time.perf_counter()
        if group.target is None:
            result = run_base_to_new(run, dataset, backbone, cache)
            row = {"method": method, "dataset": group.dataset, "seed": group.seed, **result}
            curve = f"{method}-{group.dataset}-s{group.seed}"
        else:
            result = run_domain_generalization(run, dataset, backbone, cache)
            row = {"method": method, "benchmark": group.dataset, "target": group.target, "seed": group.seed, **result}
            curve = f"{method}-{group.dataset}-{group.target}-s{group.seed}"
        row["train_s"] = time.perf_counter() - t0 if not result["history"] else result["train_s"]
        row.update(row_settings(run, dataset, weights, code))
        yield row, curve, result.pop("history")


def _loader(config: BenchConfig):
    return config.loader if config.loader is not None else load_dataset


# --------------------------------------------------------------------------- worker processes
_worker: dict = {}  # per worker process: its config, backbone, datasets and caches


PARENT_POLL_S = 1.0  # how often a worker without prctl checks that its parent still lives


def _die_with_parent(parent: int) -> None:
    """End this worker as soon as the benchmark process ``parent`` dies, even by SIGKILL (which runs no
    handler, so the pool cannot terminate its workers): otherwise orphaned workers run on for minutes,
    competing with a resumed benchmark for the cores. On Linux the kernel sends SIGKILL on the
    parent's death (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread polls ``os.getppid()``.
    Checked once after arming too: the parent may have died before."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # 1 = PR_SET_PDEATHSIG
                if os.getppid() != parent:
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass  # no prctl: poll instead

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


WORKER_PIDS_ENV = "METAPROMPT_LITE_WORKER_PIDS"  # tests: a file each worker appends its pid to, once set up


def _start_worker(config: BenchConfig, rows, parent: int) -> None:
    """A worker's set-up: die with the benchmark process; leave Ctrl-C to it (a terminal sends SIGINT
    to the whole process group: the parent stops the pool, workers print no traceback); one thread;
    its own backbone."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tqdm's default lock holds a multiprocessing semaphore, registered with the resource tracker: a worker
    # stopped by pool.terminate() never unregisters it, and the tracker warns of a leak at exit. A worker's
    # bars are off; a thread lock serves them.
    tqdm.set_lock(threading.RLock())
    if os.environ.get(WORKER_PIDS_ENV):
        with open(os.environ[WORKER_PIDS_ENV], "a") as f:
            f.write(f"{os.getpid()}\n")
    torch.set_num_threads(1)
    _worker.update(config=config, rows=rows, backbone=load_backbone(config.model, config.pretrained, config.device), datasets={}, cache={})


def _work(group: Group) -> int:
    """Run one group in a worker; each finished row goes to the parent at once (so an interrupted
    benchmark keeps every finished row)."""
    config, datasets = _worker["config"], _worker["datasets"]
    if group.dataset not in datasets:
        datasets[group.dataset] = _loader(config)(group.dataset)
    for item in run_group(config, group, datasets[group.dataset], _worker["backbone"], _worker["cache"]):
        _worker["rows"].put(("row", *item))
    return len(group.methods)


def _results(config: BenchConfig, groups: list[Group], workers: int, datasets: dict, backbone) -> Iterator[tuple]:
    """Every row of ``groups``: in this process (on ``backbone``) for one worker, else from a pool of
    processes, each loading its own backbone."""
    if workers <= 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the same arithmetic as a worker: rows do not depend on `workers`
        try:
            cache: dict = {}
            for group in groups:
                yield from run_group(config, group, datasets[group.dataset], backbone, cache)
        finally:
            torch.set_num_threads(threads)
        return
    try:
        pickle.dumps(config)
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise ValueError(f"the benchmark's loader cannot be sent to worker processes ({error}) — make it a "
                         "module-level function, or run with workers=1 (--workers 1)") from None
    yield from _pool_results(config, groups, workers)


class WorkerDied(ChildProcessError):
    """A worker process ended without finishing its runs (killed by a signal, e.g. the out-of-memory
    killer's SIGKILL): an error, never a wait for rows that cannot come."""


def _signal_name(exitcode: int) -> str:
    """``SIGKILL (signal 9)`` for a process ended by a signal (negative exit code), else ``exit code N``."""
    if exitcode < 0:
        try:
            return f"{signal.Signals(-exitcode).name} (signal {-exitcode})"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def _worker_main(config: BenchConfig, tasks, rows, parent: int) -> None:
    """A worker process: set up (:func:`_start_worker`), then run the groups of ``tasks`` until its
    ``None``. It tells the parent which group it starts, sends each row, and sends its error (if any)
    before it ends: whatever ends a worker, the parent knows which run was cut."""
    try:
        _start_worker(config, rows, parent)
        for group in iter(tasks.get, None):
            rows.put(("start", os.getpid(), group))
            _work(group)
    except BaseException as error:  # noqa: BLE001 -- every error goes to the parent, which raises it
        try:
            pickle.dumps(error)
        except Exception:  # noqa: BLE001 -- an error that cannot be sent is sent as its text
            error = RuntimeError(f"{type(error).__name__}: {error}")
        rows.put(("error", os.getpid(), error))


WORKER_POLL_S = 1.0  # how often the parent checks that its workers live while it waits for rows


def _pool_results(config: BenchConfig, groups: list[Group], workers: int) -> Iterator[tuple]:
    """Every row of ``groups`` from ``workers`` processes (spawned, one thread each). A worker that
    dies (its exit code is set while runs are missing) raises :class:`WorkerDied` within about a
    second, naming the run it was in and its signal; the other workers are stopped at once, and the
    rows already sent are kept by the caller."""
    context = multiprocessing.get_context("spawn")  # no fork of a process with torch threads
    tasks, rows = context.Queue(), context.Queue()
    for group in groups:
        tasks.put(group)
    for _ in range(workers):
        tasks.put(None)
    processes = [context.Process(target=_worker_main, args=(config, tasks, rows, os.getpid()), daemon=True)
                 for _ in range(workers)]
    for process in processes:
        process.start()
    running: dict[int, Group] = {}
    remaining = sum(len(g.methods) for g in groups)
    try:
        while remaining:
            try:
                kind, *payload = rows.get(timeout=WORKER_POLL_S)
            except queue.Empty:
                _check_workers(processes, running)
                continue
            if kind == "start":
                running[payload[0]] = payload[1]
            elif kind == "error":
                raise payload[1]
            else:
                remaining -= 1
                yield tuple(payload)
    finally:  # on an error or Ctrl-C: stop the other runs at once
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()
        for channel in (tasks, rows):
            channel.close()
            channel.cancel_join_thread()  # what is left in them is never read


def _check_workers(processes, running: dict[int, Group]) -> None:
    """Raise :class:`WorkerDied` for a worker that ended abnormally, or when all ended with runs missing."""
    for process in processes:
        if process.exitcode not in (None, 0):
            group = running.get(process.pid)
            where = (f" while running {'/'.join(group.methods)} on {group.dataset}"
                     f"{' ' + group.target if group.target else ''} seed {group.seed}" if group else " while starting")
            raise WorkerDied(f"a benchmark worker (pid {process.pid}) died by {_signal_name(process.exitcode)}{where}"
                             " (out of memory? the kernel's OOM killer sends SIGKILL); the finished rows are kept — "
                             "run the same command to resume (with fewer --workers if memory is short)")
    if all(process.exitcode is not None for process in processes):
        raise WorkerDied("every benchmark worker ended with runs still missing; the finished rows are kept — run "
                         "the same command to resume")


@dataclass
class Job:
    """A benchmark ready to run (:func:`prepare`): its file, datasets, and the missing runs as groups,
    largest first, with their estimated seconds on one thread."""

    config: BenchConfig
    path: Path
    columns: tuple[str, ...]
    datasets: dict
    targets_of: dict[str, list[str | None]]
    groups: list[Group]
    workers: int
    seconds: float


def prepare(config: BenchConfig) -> Job:
    """Check ``config`` and its results file and plan the missing runs: everything :func:`bench` does
    before it trains, so that every refusal comes before any work (and :func:`estimate` can use it)."""
    if config.suite not in ("b2n", "dg"):
        raise ValueError(f"unknown suite {config.suite!r}: use 'b2n' or 'dg'")
    if config.loader is None:
        all_datasets = B2N_DATASETS if config.suite == "b2n" else DG_BENCHMARKS
    else:
        all_datasets = ()
    names = list(config.datasets) or list(all_datasets)
    check_protocol(config.tier, config.protocol)
    check_unique(config)
    for m in _methods(config):
        preset(m, config.tier, config.suite, config.protocol)  # unknown method / tier: fail before any work
    if config.shard is not None:
        shard.check_shard(config.shard)
    path = Path(config.out_dir) / (f"{config.suite}.csv" if config.shard is None
                                   else shard.shard_name(config.suite, config.shard))
    columns = B2N_COLUMNS if config.suite == "b2n" else DG_COLUMNS
    done = _done(path, columns[:3] if config.suite == "b2n" else columns[:4])
    datasets = {name: _loader(config)(name) for name in names}
    targets_of = {name: [None] if config.suite == "b2n" else list(datasets[name].domains) for name in names}
    weights, code = weights_id(config.pretrained), code_version()

    def settings_of(method: str, name: str, target: str | None, seed: int) -> dict:
        return row_settings(run_config(config, method, name, target, seed), datasets[name], weights, code)

    groups = plan(config, targets_of, done, settings_of, path)
    if config.shard is not None:  # split the whole grid (not what is done): a resumed shard is the same shard
        groups = shard.select(config, _methods(config), targets_of, datasets, plan(config, targets_of, {}),
                              groups, path)
    workers = config.workers or (1 if str(config.device).startswith("cuda") else os.cpu_count() or 1)
    workers = max(1, min(workers, len(groups)))
    groups, seconds = largest_first(config, groups, datasets)
    return Job(config, path, columns, datasets, targets_of, groups, workers, seconds)


def estimate(config: BenchConfig) -> tuple[int, float, int]:
    """The runs a benchmark would do, their rough minutes on its workers, and the workers: the start-up
    line of a job of several suites (it checks as :func:`bench` does and trains nothing)."""
    job = prepare(config)
    return sum(len(g.methods) for g in job.groups), job.seconds / job.workers / 60, job.workers


def bench(config: BenchConfig, on_row=None) -> Path:
    """Run every missing (method, dataset/target, seed) of the suite; returns the CSV path.
    ``on_row()`` is called after each row is on disk.

    Rows run in ``config.workers`` processes with one thread each (independent small runs use two
    cores better than one run with two threads on tiny matrices). A row is the same, bit for bit,
    whichever worker runs it and however many there are; the CSV is rewritten in the benchmark's
    fixed order at the end."""
    job = prepare(config)
    path, columns, datasets, targets_of = job.path, job.columns, job.datasets, job.targets_of
    out_dir, groups, workers = Path(config.out_dir), job.groups, job.workers
    # loaded here in any case: a bad model, checkpoint or device fails in one line before any worker starts
    backbone = load_backbone(config.model, config.pretrained, config.device)
    total = sum(len(g.methods) for g in groups)
    if total and config.progress:
        print(f"bench {config.suite}: {total} runs to do, roughly {job.seconds / workers / 60:.0f} min on {workers} "
              f"worker(s) ({config.protocol} protocol)", file=sys.stderr)
    with tqdm(total=total, desc=f"bench {config.suite} ({workers} worker{'s' * (workers > 1)})",
              disable=not config.progress) as bar:
        for row, curve, history in _results(config, groups, workers, datasets, backbone):
            fault_point("mid-row")
            _save_curve(out_dir, curve, history)  # before the row: a row on disk has its curve
            append_row(path, row, columns)
            fault_point("after-append")
            if on_row is not None:  # e.g. the CLI's wall-time record, kept up to date row by row
                on_row()
            bar.update(1)
    if path.is_file():  # also after a run killed between its last row and this sort
        # the suite's own method order first, so that a run of a few methods does not reshuffle the file
        known = B2N_METHODS if config.suite == "b2n" else DG_METHODS
        methods = list(dict.fromkeys([*known, *_methods(config)]))
        results_table.sort_rows(path, columns, [(m, n, t, s) for n, ts in targets_of.items() for t in ts
                                   for m in methods for s in config.seeds])
    return path
