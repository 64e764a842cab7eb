"""``metaprompt-lite bench|merge|report``: the benchmark's commands.

``bench`` runs the grid (or a ``--shard K/N`` of it) and records what ran, on what and how long in
bench_meta.json beside the rows; ``merge`` joins the shards' files; ``report`` writes the tables and
figures. Like ``cli_data``, this module imports nothing of ``cli`` (imports point one way): what it
shares with the other commands comes from ``cli_args``, or is handed in (``config_table``).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Callable

from metaprompt_lite.cli_args import (PROTOCOLS, _add_model_arguments, _check_writable, _pretrained, _seed, _shard,
                                      non_negative_int, positive_int)
from metaprompt_lite.paths import POCKET_MODEL, data_dir, results_dir
from metaprompt_lite.provenance import code_version, machine


def _bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="the main job: every method x dataset x seed (resumable CSV rows)")
    p.add_argument("--suite", choices=("b2n", "dg", "all"), default="all",
                   help="b2n (base-to-new), dg (domain generalisation) or all (default: all)")
    p.add_argument("--methods", nargs="+", default=None, help="default: every method of the suite")
    p.add_argument("--datasets", nargs="+", default=None,
                   help="default: every dataset of the suite (`metaprompt-lite data list` names them)")
    p.add_argument("--seeds", nargs="+", type=_seed, default=[1, 2, 3], help="one row per seed (default: 1 2 3)")
    p.add_argument("--tier", choices=("pocket", "paper"), default="pocket",
                   help="augmentation and presets: pocket (embedded; default) or paper (ViT-B/16, GPU)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="official",
                   help="whose training budgets: official (each paper's epochs, batch, lr; default) or tuned "
                   "(chosen on base-class validation, pocket tier only)")
    p.add_argument("--out-dir", default=None,
                   help="where b2n.csv, dg.csv (accuracies in %%), curves/ and the report go (default: "
                   "runs/bench/PROTOCOL, outside git; the committed results only when asked: --out-dir "
                   "results/PROTOCOL)")
    p.add_argument("--data-root", default=None,
                   help="research tier: folder of the papers' datasets (CoOp/DomainBed layouts, see "
                   "docs/research_tier.md); default: the offline suite")
    p.add_argument("--no-report", action="store_true", help="do not write OUT_DIR/README.md and its figures")
    p.add_argument("--workers", type=non_negative_int, default=0,
                   help="worker processes, one thread each (default 0: one per CPU core; 1 on a GPU)")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help="cap every run's steps (a quick slice; default: none)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="keep each run's checkpoints here, so that a killed run resumes mid-training (default: none)")
    p.add_argument("--shard", type=_shard, default=None, metavar="K/N",
                   help="run only the K-th of N parts of the grid, into OUT_DIR/<suite>.shard-K-of-N.csv (a job "
                   "array; then `metaprompt-lite merge`); no report")
    _add_model_arguments(p)


def _suite_datasets(args, suite: str) -> tuple[str, ...]:
    """The ``--datasets`` that belong to ``suite`` (all of them for one suite; with ``--suite all``,
    each suite takes its own). A dataset of the other suite asked for one suite is an error: a DG
    benchmark has no base and new classes, a base-to-new dataset no domains."""
    from metaprompt_lite.data import B2N_DATASETS, DG_BENCHMARKS
    from metaprompt_lite.research import RESEARCH_B2N, RESEARCH_DG

    if args.data_root:
        own, other = (RESEARCH_B2N, RESEARCH_DG) if suite == "b2n" else (RESEARCH_DG, RESEARCH_B2N)
    else:
        own, other = (B2N_DATASETS, DG_BENCHMARKS) if suite == "b2n" else (DG_BENCHMARKS, B2N_DATASETS)
    names = tuple(args.datasets or ())
    if args.suite == "all":
        return tuple(n for n in names if n not in other)
    for name in names:
        if name in other:
            kind = "a DG benchmark" if suite == "b2n" else "a base-to-new dataset"
            raise ValueError(f"{name} is {kind}, not part of the {suite} suite — use --suite "
                             f"{'dg' if suite == 'b2n' else 'b2n'} (or all) for it, or one of {', '.join(own)}")
    return names


def default_bench_dir(args) -> str:
    """``runs/bench/PROTOCOL``, the main job's folder; a run capped by ``--max-steps`` or on another model
    gets its own (``runs/bench/official-max-steps-5``), so a quick slice never lands in the main job's files."""
    name = args.protocol
    if args.max_steps is not None:
        name += f"-max-steps-{args.max_steps}"
    if args.model != POCKET_MODEL or _pretrained(args.pretrained) is None:
        name += f"-{args.model}" + ("-random" if _pretrained(args.pretrained) is None else "")
    return os.path.join("runs", "bench", name)


def _run_bench(args, config_table: Callable[[Any], str]) -> int:
    """Run the grid, suite by suite, printing each suite's config with ``config_table`` (the command line's
    format, handed in by ``cli``); then the report, the summary and the comparison with the committed results."""
    from metaprompt_lite.bench import BenchConfig, bench, check_unique, estimate
    from metaprompt_lite.compare import comparison_text
    from metaprompt_lite.report import report, summary_text
    from metaprompt_lite.research import RESEARCH_B2N, RESEARCH_DG, load_research_dataset
    from metaprompt_lite.shard import shard_name

    suites = ("b2n", "dg") if args.suite == "all" else (args.suite,)
    check_unique(BenchConfig(methods=args.methods or (), datasets=args.datasets or (), seeds=tuple(args.seeds)))
    args.out_dir = args.out_dir or default_bench_dir(args)
    names = {suite: _suite_datasets(args, suite) for suite in suites}
    if args.suite == "all" and args.datasets:  # a suite none of whose datasets was named is skipped
        suites = tuple(suite for suite in suites if names[suite])
    _check_writable(args.out_dir)
    if args.checkpoint_dir:
        _check_writable(args.checkpoint_dir, "--checkpoint-dir")
    configs = {}
    for suite in suites:
        datasets, loader = names[suite], None
        if args.data_root:
            loader = partial(load_research_dataset, root=args.data_root)
            datasets = datasets or (RESEARCH_B2N if suite == "b2n" else RESEARCH_DG)
        configs[suite] = BenchConfig(suite=suite, methods=args.methods or (), datasets=datasets, loader=loader,
                                     seeds=tuple(args.seeds), model=args.model,
                                     pretrained=_pretrained(args.pretrained), tier=args.tier, protocol=args.protocol,
                                     out_dir=args.out_dir, device=args.device, workers=args.workers,
                                     max_steps=args.max_steps, checkpoint_dir=args.checkpoint_dir, shard=args.shard)
    # every suite's checks (its results file and settings included) before any output: a refusal is one line
    counts = {suite: estimate(configs[suite]) for suite in suites}
    print(f"results go to {args.out_dir}/ (the same command again resumes)", file=sys.stderr)
    print(f"backbone: {args.model} ({_pretrained(args.pretrained) or 'random weights: --pretrained none'})",
          file=sys.stderr)
    if len(suites) > 1:  # the whole job's estimate
        print(f"bench: {sum(c[0] for c in counts.values())} runs to do in all, roughly "
              f"{sum(c[1] for c in counts.values()):.0f} min ("
              + ", ".join(f"{suite} {c[0]} runs, {c[1]:.0f} min" for suite, c in counts.items())
              + f") on {max(c[2] for c in counts.values())} worker(s)", file=sys.stderr)
    t0, walls = time.perf_counter(), {}
    for suite in suites:
        t_suite, config = time.perf_counter(), configs[suite]
        print("BenchConfig\n" + config_table(config), file=sys.stderr)
        name = f"{suite}.csv" if args.shard is None else shard_name(suite, args.shard)
        args.results_file = os.path.join(args.out_dir, name)  # named if interrupted
        last, sitting = [t_suite], start_sitting(suite)

        def record_wall(suite: str = suite, sitting: dict = sitting) -> None:
            """Add the wall time since the last record: a run killed later keeps the time of its rows."""
            now = time.perf_counter()
            _record_bench_meta(args, {suite: now - last[0]}, update_sitting(sitting))
            last[0] = now

        bench(config, on_row=record_wall)
        record_wall()
        walls[suite] = time.perf_counter() - t_suite
    print(f"bench wall time: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if args.shard is not None:  # no <suite>.csv here until the shards are merged
        print(f"shard {args.shard[0]}/{args.shard[1]} done; when every shard is: metaprompt-lite merge --out-dir "
              f"{args.out_dir}", file=sys.stderr)
        return 0
    if not args.no_report:
        print(f"report: {report(args.out_dir)}", file=sys.stderr)
    print(summary_text(args.out_dir))
    reference = results_dir() / args.protocol
    if reference.is_dir() and Path(args.out_dir).resolve() != reference.resolve():
        comparison = comparison_text(args.out_dir, reference)
        if comparison:
            print("\nBeside the committed results\n" + comparison)
    return 0


def _portable_path(path: str | None) -> str | None:
    """A checkpoint under the data directory as ``data/...`` (the committed results must not name
    this machine's clone), or as ``$METAPROMPT_LITE_DATA/...`` when that variable moved the data
    directory elsewhere; any other path or tag unchanged."""
    if path is None or not Path(path).exists():
        return path
    prefix = "$METAPROMPT_LITE_DATA" if os.environ.get("METAPROMPT_LITE_DATA") else "data"
    try:
        return f"{prefix}/{Path(path).resolve().relative_to(data_dir().resolve()).as_posix()}"
    except ValueError:
        return path


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its ended worker processes (a pool's workers
    are counted when the pool closes, at the end of a suite)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def start_sitting(suite: str) -> dict:
    """One invocation's record of a suite: when it started, the machine's load average then (1, 5 and
    15 min: near 0 on an otherwise idle machine), and the clocks to measure it by."""
    return {"suite": suite, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "load_average_start": [round(x, 2) for x in os.getloadavg()], "rows": 0,
            "_wall0": time.perf_counter(), "_cpu0": _cpu_seconds()}


def update_sitting(sitting: dict) -> dict:
    """The sitting after one more row: its wall and CPU minutes so far and the load average now (on an
    idle machine about the number of workers)."""
    sitting["rows"] += 1
    sitting["wall_minutes"] = round((time.perf_counter() - sitting["_wall0"]) / 60, 3)
    sitting["cpu_minutes"] = round((_cpu_seconds() - sitting["_cpu0"]) / 60, 3)
    sitting["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return sitting


def _record_bench_meta(args, walls: dict[str, float], sitting: dict | None = None) -> None:
    """results/bench_meta.json: what ran, on what, how long. Wall times are added per suite, after
    every row, over resumed invocations (a killed invocation loses only the time since its last row), and
    each invocation's ``sitting`` (start time, load average at start and end, wall and CPU minutes) is
    kept, so that the file says whether the machine was otherwise idle. A shard writes its own,
    bench_meta.shard-K-of-N.json (shards may share a folder)."""
    import torch

    shard = getattr(args, "shard", None)
    name = "bench_meta.json" if shard is None else f"bench_meta.shard-{shard[0]}-of-{shard[1]}.json"
    path = Path(args.out_dir) / name
    meta = json.loads(path.read_text()) if path.is_file() else {}
    meta.update(model=args.model, pretrained=_portable_path(_pretrained(args.pretrained)), tier=args.tier,
                protocol=args.protocol, code=code_version(),
                machine=f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}", **machine())
    meta["seeds"] = sorted(set(meta.get("seeds", [])) | set(args.seeds))
    by_suite = meta.setdefault("wall_minutes_by_suite", {})
    for suite, seconds in walls.items():
        by_suite[suite] = by_suite.get(suite, 0.0) + seconds / 60
    meta["wall_minutes"] = sum(by_suite.values())
    if sitting is not None:
        public = {k: v for k, v in sitting.items() if not k.startswith("_")}
        sittings = meta.setdefault("sittings", [])
        same = [i for i, s in enumerate(sittings) if (s["suite"], s["started"]) == (public["suite"], public["started"])]
        if same:
            sittings[same[0]] = public
        else:
            sittings.append(public)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=1))


def _merge_parser(sub) -> None:
    p = sub.add_parser("merge", help="check the files of `bench --shard K/N` together and write <suite>.csv")
    p.add_argument("files", nargs="*", metavar="SHARD_CSV",
                   help="<suite>.shard-K-of-N.csv files, each with its .json beside it (default: every shard file "
                   "in --out-dir)")
    p.add_argument("--out-dir", default="results", help="where the merged b2n.csv / dg.csv go (default: results)")


def _run_merge(args) -> int:
    from metaprompt_lite.shard import merge, shard_files

    files = args.files or shard_files(args.out_dir, ("b2n", "dg"))
    if not files:
        raise ValueError(f"no shard files (<suite>.shard-K-of-N.csv) in {args.out_dir} — run `metaprompt-lite bench "
                         f"--shard K/N --out-dir {args.out_dir}` first, or name the files")
    for path, rows, count in merge(files, args.out_dir):
        print(f"wrote {path}: {rows} rows from {count} shard file{'s' * (count > 1)}", file=sys.stderr)
    return 0


def _report_parser(sub) -> None:
    p = sub.add_parser("report", help="results/*.csv -> results/README.md (tables) and figures")
    p.add_argument("--out-dir", default="results",
                   help="the folder of b2n.csv and dg.csv; README.md and the figures go there too (default: results)")


def _run_report(args) -> int:
    """Write the tables and figures of ``--out-dir`` (and of its protocol folders) and print their summaries."""
    from metaprompt_lite.report import report_all, summary_text

    written = report_all(args.out_dir)
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    for path in written:
        if path.name == "README.md" and path.parent != Path(args.out_dir):
            print(f"{path.parent.name}:\n{summary_text(path.parent)}\n")
    if len(written) == 1:
        print(summary_text(args.out_dir))
    return 0
