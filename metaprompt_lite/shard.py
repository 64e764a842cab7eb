"""The benchmark in N independent jobs (a SLURM job array, ``xargs -P``), and the merge of their files.

Explained in ``docs/research_tier.md`` ("Many GPUs"). ``metaprompt-lite bench --shard K/N`` runs the
K-th of N disjoint parts of the (method, dataset or DG target, seed) grid into
``<out-dir>/<suite>.shard-K-of-N.csv``; ``metaprompt-lite merge`` checks the shard files together
and writes ``<out-dir>/<suite>.csv`` in the benchmark's fixed order, the file an unsharded run writes
(the same rows, bit for bit, but ``train_s``).

- **Unit**: a :class:`~metaprompt_lite.bench.Group`, every method on one (dataset, target, seed), so
  a shard still computes a group's augmented batches once for all of its methods.
- **Balance**: greedy largest-first. Groups in decreasing order of a cost estimate, each to the shard
  with the least estimated cost so far (ties: the grid order, then the lowest shard). The estimate is
  the dataset's classes × source domains: the few-shot training set at fixed shots, and the width of
  every text pass. Every group of the grid holds the same methods, so a per-method cost table would
  not change the split.
- **Deterministic**: the split is computed on the whole grid (its datasets and N), never on the rows
  a shard file already holds, so a resumed shard is the same shard.
- **Plan**: beside each shard file, ``<suite>.shard-K-of-N.json`` records the grid, N, every group's
  shard and the settings that change rows (tier, protocol, model, weights, step cap). Resuming a shard under
  another plan is refused; ``merge`` requires one plan for all its files and checks the union of
  their rows against that grid: no run twice (even with equal values), none outside it, none missing.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from metaprompt_lite.methods import B2N_METHODS, DG_METHODS
from metaprompt_lite.provenance import weights_id
from metaprompt_lite.results_table import (
    B2N_COLUMNS, DG_COLUMNS, LINE_END, ResultsError, format_row, read_table, run_key, sort_rows)

SHARD_FILE = re.compile(r"^(b2n|dg)\.shard-(\d+)-of-(\d+)\.csv$")
SHOWN = 3  # keys quoted in a merge error


def check_shard(shard: tuple[int, int]) -> None:
    """``(K, N)`` with 1 <= K <= N, else a ValueError saying so."""
    k, n = shard
    if not 1 <= k <= n:
        raise ValueError(f"shard {k}/{n} is out of range — use K/N with 1 <= K <= N, e.g. --shard 1/{max(n, 2)}")


def shard_name(suite: str, shard: tuple[int, int]) -> str:
    """``b2n.shard-2-of-4.csv``: the results file of shard 2 of 4."""
    return f"{suite}.shard-{shard[0]}-of-{shard[1]}.csv"


def split(groups: Sequence, n: int, cost: Sequence[int]) -> list[int]:
    """The shard (1..n) of each group: greedy largest-first on ``cost`` (one number per group), ties in
    the order of ``groups`` and to the lowest shard. Depends on ``groups``, ``cost`` and ``n`` only."""
    load = [0] * n
    shard_of = [0] * len(groups)
    for i in sorted(range(len(groups)), key=lambda i: (-cost[i], i)):
        s = min(range(n), key=lambda s: (load[s], s))
        shard_of[i] = s + 1
        load[s] += cost[i]
    return shard_of


def group_cost(dataset, target: str | None) -> int:
    """The cost estimate of one group: classes × source domains (1 for base-to-new)."""
    return len(dataset.classnames) * (1 if target is None else max(1, len(dataset.domains) - 1))


def _settings(config) -> dict:
    """What a plan's shards must share: the weights by content (``provenance.weights_id``), so that
    clones at different paths make one plan."""
    return {"tier": config.tier, "protocol": config.protocol, "model": config.model,
            "weights": weights_id(config.pretrained), "max_steps": config.max_steps}


def select(config, methods: Sequence[str], targets_of: dict, datasets: dict, grid: Sequence, todo: Sequence,
           path: Path) -> list:
    """The groups of ``todo`` (the missing rows) that belong to shard ``config.shard`` of ``grid`` (the
    whole grid, planned with nothing done). Writes the plan beside ``path`` on the first call and
    refuses a resume under another one."""
    k, n = config.shard
    # the unit: a (dataset or target, seed) cell, whose methods share training batches
    cells = list(dict.fromkeys((g.dataset, g.target, g.seed) for g in grid))
    shard_of = split(cells, n, [group_cost(datasets[name], target) for name, target, _ in cells])
    plan = {"suite": config.suite, "shard": [k, n], "settings": _settings(config), "methods": list(methods),
            "cells": [[name, target] for name, targets in targets_of.items() for target in targets],
            "seeds": list(config.seeds),
            "groups": [[name, target, seed, s] for (name, target, seed), s in zip(cells, shard_of)]}
    plan_path = path.with_suffix(".json")
    if plan_path.is_file():
        old = _read_plan(plan_path)
        for field in plan:
            if old.get(field) != plan[field]:
                raise ValueError(f"{plan_path} holds another plan for this shard ({field}: {_short(old.get(field))} "
                                 f"there, {_short(plan[field])} now) — run every shard with the same arguments, or "
                                 f"delete {path.name} and {plan_path.name} to start this shard afresh")
    else:
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = plan_path.with_name(plan_path.name + ".tmp")
        lines = [f" {json.dumps(field)}: {json.dumps(value)}" for field, value in plan.items()]  # a field a line
        tmp.write_text("{\n" + ",\n".join(lines) + "\n}\n")
        os.replace(tmp, plan_path)
    mine = {cell for cell, s in zip(cells, shard_of) if s == k}
    return [g for g in todo if (g.dataset, g.target, g.seed) in mine]


def _short(value, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read_plan(path: Path) -> dict:
    try:
        plan = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path.with_suffix('.csv')} has no plan {path.name} beside it — copy the .json "
                         "with the .csv (`bench --shard` writes both)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a shard plan ({error}) — run that shard again in a fresh "
                         "--out-dir") from None
    if not isinstance(plan, dict) or not {"suite", "shard", "settings", "methods", "cells", "seeds",
                                          "groups"} <= set(plan):
        raise ValueError(f"{path} is not a shard plan (fields missing) — run that shard again in a fresh --out-dir")
    return plan




def _quote(keys: Iterable[tuple[str, ...]], note=lambda key: "") -> str:
    keys = list(keys)
    shown = ", ".join(",".join(key) + note(key) for key in keys[:SHOWN])
    return shown + (", …" if len(keys) > SHOWN else "")


def shard_files(out_dir: str | os.PathLike, suites: Sequence[str]) -> list[Path]:
    """Every ``<suite>.shard-K-of-N.csv`` of ``suites`` in ``out_dir``, by suite, N and K."""
    found = []
    for path in Path(out_dir).glob("*.shard-*-of-*.csv"):
        match = SHARD_FILE.match(path.name)
        if match and match[1] in suites:
            found.append(((match[1], int(match[3]), int(match[2])), path))  # by suite, N, K
    return [path for _, path in sorted(found)]


def merge(files: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> list[tuple[Path, int, int]]:
    """Check the shard files together and write each suite's ``<out_dir>/<suite>.csv`` in the
    benchmark's fixed order. Every suite is checked before any file is written. Returns
    (path, rows, shard files) per suite written.

    Refused, in one line naming the first few runs and their count: files of different plans (or
    without one), a run in two files, a run outside the plan's grid, a run of the grid in no file;
    and an existing ``<suite>.csv`` that differs from the merge (it is not overwritten)."""

    by_suite: dict[str, list[tuple[Path, dict]]] = {}
    for file in map(Path, files):
        if not file.is_file():  # before its name: a typo in a path is a missing file, not a misnamed one
            raise FileNotFoundError(f"{file} does not exist{' (it is a folder)' if file.is_dir() else ''} — name the "
                                    "<suite>.shard-K-of-N.csv files that `metaprompt-lite bench --shard K/N` wrote, "
                                    "or give none to merge every shard file in --out-dir")
        match = SHARD_FILE.match(file.name)
        if match is None:
            raise ValueError(f"{file} is not a shard file — name the <suite>.shard-K-of-N.csv files that "
                             "`metaprompt-lite bench --shard K/N` writes")
        plan = _read_plan(file.with_suffix(".json"))
        if plan["suite"] != match[1] or plan["shard"] != [int(match[2]), int(match[3])]:
            raise ValueError(f"{file.with_suffix('.json')} is the plan of {plan['suite']} shard "
                             f"{plan['shard'][0]}/{plan['shard'][1]}, not of {file.name} — copy each shard's .json "
                             "with its .csv")
        by_suite.setdefault(match[1], []).append((file, plan))
    merged = []
    for suite, shards in sorted(by_suite.items()):
        columns = B2N_COLUMNS if suite == "b2n" else DG_COLUMNS
        key_columns = columns[:3] if suite == "b2n" else columns[:4]
        first_file, plan = shards[0]
        seen_shard: dict[int, Path] = {}
        for file, other in shards:
            for field in plan:  # every field but K
                ours, theirs = plan[field], other.get(field)
                if field == "shard":
                    field, ours, theirs = "N", ours[1], theirs[1]
                if ours != theirs:
                    raise ValueError(f"{first_file.name} and {file.name} come from different plans ({field}: "
                                     f"{_short(ours)} vs {_short(theirs)}) — merge the shards of one plan: name "
                                     "their files, or run the odd shard again with the others' arguments")
            if other["shard"][0] in seen_shard:
                raise ValueError(f"shard {other['shard'][0]}/{other['shard'][1]} is given twice "
                                 f"({seen_shard[other['shard'][0]]} and {file}) — name each shard's file once")
            seen_shard[other["shard"][0]] = file
        n = plan["shard"][1]
        shard_of = {(name, target, str(seed)): s for name, target, seed, s in plan["groups"]}
        cells, seeds = [(name, target) for name, target in plan["cells"]], plan["seeds"]
        known = B2N_METHODS if suite == "b2n" else DG_METHODS
        methods = list(dict.fromkeys([*known, *plan["methods"]]))  # as bench() orders its file
        order = [(m, name, target, s) for name, target in cells for m in methods for s in seeds]
        grid = [run_key(*run) for run in order if run[0] in plan["methods"]]
        rows: dict[tuple[str, ...], list[tuple[Path, dict]]] = {}
        for file, _ in shards:
            table = read_table(file, columns, key_columns)
            if table.partial is not None:
                raise ResultsError(f"{file} ends in a cut line {table.partial[:60]!r} (an interrupted write) — "
                                   "run that shard again: it drops the line and runs its row again")
            for row in table.rows:
                rows.setdefault(tuple(row[c] for c in key_columns), []).append((file, row))
        twice = [key for key, entries in rows.items() if len(entries) > 1]
        if twice:
            def where(key):
                values = {tuple(row[c] for c in columns if c != "train_s") for _, row in rows[key]}
                return (f" ({' and '.join(file.name for file, _ in rows[key])}, "
                        f"{'equal' if len(values) == 1 else 'different'} values)")
            raise ValueError(f"{len(twice)} {suite} run(s) are in more than one shard file: {_quote(twice, where)} — "
                             "keep each run in one file: delete the extra lines")
        in_grid = set(grid)
        outside = [key for key in rows if key not in in_grid]
        if outside:
            raise ValueError(f"{len(outside)} {suite} run(s) are outside the grid the shards were planned from: "
                             f"{_quote(outside, lambda key: f' ({rows[key][0][0].name})')} — delete those lines")
        missing = [key for key in grid if key not in rows]
        if missing:
            def owner(key):
                return shard_of[(key[1], None if len(key) == 3 else key[2], key[-1])]
            to_run = ", ".join(f"{s}/{n}" for s in sorted({owner(key) for key in missing}))
            raise ValueError(f"{len(missing)} of {len(grid)} {suite} runs are missing: "
                             f"{_quote(missing, lambda key: f' (shard {owner(key)}/{n})')} — run shard(s) {to_run} "
                             "(`metaprompt-lite bench --shard K/N` with the same arguments; it resumes), then merge")
        merged.append((suite, columns, [entries[0][1] for entries in rows.values()], order, len(shards)))
    staged = []  # every suite's merge in a temporary file first: an error writes no suite
    try:
        for suite, columns, table_rows, order, count in merged:
            path = Path(out_dir) / f"{suite}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".merge")
            with tmp.open("w", newline="") as f:
                f.write(",".join(columns) + LINE_END)
                f.writelines(format_row(row, columns) for row in table_rows)
            staged.append(tmp)
            sort_rows(tmp, columns, order)
            if path.exists() and path.read_bytes() != tmp.read_bytes():
                raise ValueError(f"{path} exists and differs from the merge of the shards — move it away (merge "
                                 "writes it afresh from the shard files)")
    except BaseException:
        for tmp in staged:
            tmp.unlink(missing_ok=True)
        raise
    written = []
    for tmp, (suite, _, table_rows, _, count) in zip(staged, merged):
        path = tmp.with_name(f"{suite}.csv")
        os.replace(tmp, path)
        written.append((path, len(table_rows), count))
    return written
