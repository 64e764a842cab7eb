"""``metaprompt-lite``: the command line. Each sub-command is a thin wrapper over package functions.

Errors a user can cause (a bad name, path or value, a damaged file, Ctrl-C) end in one line on
stderr, ``error: what is wrong — what to do``, and exit code 2; ``--debug`` (or
``METAPROMPT_LITE_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

from metaprompt_lite import cli_data
from metaprompt_lite.paths import POCKET_CHECKPOINT, POCKET_MODEL, data_dir, default_model, results_dir
from metaprompt_lite.pretrain_config import PretrainConfig
from metaprompt_lite.provenance import code_version, machine
from metaprompt_lite.results_table import ACCURACY_COLUMNS, count_rows

# Only modules without torch are imported above: parsing the arguments, `--help` and a usage error take
# well under a second (benchmarks/cli_startup.py); each command imports what it runs when it runs.
PROTOCOLS = ("official", "tuned")  # methods.PROTOCOLS, without loading the methods (tests/test_cli_guards.py)

DEBUG_ENV = "METAPROMPT_LITE_DEBUG"
SEED_LIMIT = 2**32  # numpy's and the generators' seed range: 0 <= seed < 2**32


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: … — see `… --help```) instead of usage + message."""

    def error(self, message: str):
        hint = "" if " — " in message else f" — see `{self.prog} --help`"
        self.exit(2, f"error: {message}{hint}\n")


def config_table(config: Any) -> str:
    """A dataclass as aligned ``key: value`` lines, as each command prints its config when it starts."""
    flat = asdict(config) if hasattr(config, "__dataclass_fields__") else dict(config)
    width = max(len(k) for k in flat) if flat else 0
    return "\n".join(f"  {k:<{width}} : {v}" for k, v in flat.items())


def _seed(text: str) -> int:
    """A seed from the command line: an integer with 0 <= seed < 2**32."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed {text!r} is not an integer — use 0 <= seed < 2**32") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"seed {value} is out of range — use 0 <= seed < 2**32 (4294967296)")
    return value


def _shard(text: str) -> tuple[int, int]:
    """``--shard K/N``: the K-th of N parts of the grid, 1 <= K <= N."""
    k, _, n = text.partition("/")
    try:
        shard = int(k), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N — use two integers, e.g. --shard 1/4") from None
    if not 1 <= shard[0] <= shard[1]:
        raise argparse.ArgumentTypeError(f"shard {text} is out of range — use K/N with 1 <= K <= N, e.g. "
                                         f"--shard 1/{max(shard[1], 2)}")
    return shard


def _number(text: str, kind: type):
    """``text`` as an int or a finite float, or the argparse error saying what was expected."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or (kind is float and not math.isfinite(value)):
        what = "a whole number" if kind is int else "a finite number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def positive_int(text: str) -> int:
    """A count that must be at least 1 (batch size, epochs, steps, shots, threads): checked while
    parsing, so a 0 or a negative number is a one-line usage error before anything is loaded."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value}")
    return value


def thread_count(text: str) -> int:
    """``--threads``: at least 1 and at most this machine's cores (more only slows a run down: 999
    threads on 2 cores ran 40 times slower)."""
    value = positive_int(text)
    cores = os.cpu_count() or 1
    if value > cores:
        raise argparse.ArgumentTypeError(f"{value} is more than this machine's {cores} cores — use 1 to {cores}")
    return value


def non_negative_int(text: str) -> int:
    """A count where 0 means 'the default' (``bench --workers 0``: one per core)."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0 (a learning rate: 0 divides by zero in the warm-up, a negative one
    climbs the loss)."""
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def device(text: str) -> str:
    """A torch device this machine has: ``cpu``, or ``cuda``/``cuda:N``/``mps`` when present. Checked
    while parsing, so a typo or a missing GPU fails in one line before a model or dataset loads."""
    if text == "cpu":  # the default: no need to load torch to parse the arguments
        return text
    import torch

    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r} (use cpu, cuda or cuda:N)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r} needs a CUDA GPU and this machine has none (or torch was "
                                             "built without CUDA) — use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: there is no GPU {parsed.index}, this machine has "
                                             f"{torch.cuda.device_count()} — use cuda:0 .. "
                                             f"cuda:{torch.cuda.device_count() - 1}")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r} needs an Apple GPU (MPS) and this machine has none — use "
                                         "--device cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"device {text!r} is not supported (use cpu, cuda or cuda:N)")
    return text


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=POCKET_MODEL, help=f"open_clip model name (default: {POCKET_MODEL})")
    parser.add_argument("--pretrained", default=None,
                        help="open_clip tag (e.g. openai) or checkpoint path; 'none' = random weights "
                        f"(default for {POCKET_MODEL}: data/{POCKET_CHECKPOINT})")
    parser.add_argument("--device", type=device, default="cpu",
                        help="cpu, cuda, cuda:N or mps, one this machine has (default: cpu)")


def _resolve_pretrained(args) -> None:
    """Fill in the default checkpoint: the committed pocket CLIP, or an error naming it and the fix
    (never a silent fall back to random weights); another model needs an explicit ``--pretrained``."""
    if args.pretrained is not None:
        return
    if args.model != POCKET_MODEL:
        raise ValueError(f"--model {args.model} needs --pretrained — give an open_clip tag (e.g. openai), a "
                         "checkpoint file, or none for random weights")
    args.pretrained = default_model()[1]


def _pretrained(value: str | None) -> str | None:
    return None if value in (None, "", "none", "None") else value


def _load_backbone(args):
    """The backbone of ``--model``/``--pretrained``/``--device`` (after :func:`_resolve_pretrained`)."""
    from metaprompt_lite.run import load_backbone

    return load_backbone(args.model, _pretrained(args.pretrained), args.device)


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train and evaluate one method on one dataset (one seed)")
    p.add_argument("--method", default="coop", metavar="METHOD",
                   help="coop (default), cocoop, ivlp, maple, metaprompt, prometar, gram-coop, gram-ivlp, zsclip, ... "
                   "(an unknown name lists them all)")
    p.add_argument("--dataset", required=True, help="a dataset of `metaprompt-lite data list`")
    p.add_argument("--target", default=None, help="DG benchmarks only (required there): the held-out domain")
    p.add_argument("--seed", type=_seed, default=1, help="default: 1")
    p.add_argument("--tier", choices=("pocket", "paper"), default="pocket",
                   help="the preset (as `bench` runs it) that the options below override (default: pocket)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="official",
                   help="whose training budget: official (each paper's epochs, batch, lr; default) or tuned "
                   "(chosen on base-class validation, pocket tier only)")
    p.add_argument("--shots", type=positive_int, default=None,
                   help="images per class (default: the preset's, capped at what the dataset has)")
    p.add_argument("--epochs", type=positive_int, default=None, help="default: the preset's")
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate > 0 (default: the preset's)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: the preset's")
    p.add_argument("--max-steps", type=positive_int, default=None, help="cap on training steps (default: none)")
    p.add_argument("--threads", type=thread_count, default=1,
                   help="intra-op threads (default 1, as a benchmark worker: the same numbers as its row)")
    p.add_argument("--meta-order", type=int, choices=(1, 2), default=None)
    p.add_argument("--meta-update", choices=("official", "clean"), default=None,
                   help="MetaPrompt's domain-split update: official (the default of `metaprompt`) or clean")
    p.add_argument("--out-dir", default="runs", help="checkpoints (resumable); '' to disable (default: runs)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (accuracies in %%)")
    _add_model_arguments(p)


def _check_target(args, dataset) -> None:
    """``--target``: required by a DG benchmark and one of its domains; refused on a base-to-new
    dataset (it has no domains, and silently ignoring it would report another run than asked)."""
    from metaprompt_lite.data import DG_BENCHMARKS

    if dataset.suite == "dg":
        if args.target is None:
            raise ValueError(f"--target is required for the DG benchmark {args.dataset} — use one of "
                             f"{', '.join(dataset.domains)}")
        if args.target not in dataset.domains:
            raise ValueError(f"{args.dataset} has no domain {args.target!r} — use --target with one of "
                             f"{', '.join(dataset.domains)}")
    elif args.target is not None:
        raise ValueError(f"--target is for DG benchmarks; {args.dataset} is a base-to-new dataset — drop "
                         f"--target {args.target}, or use a DG benchmark ({', '.join(DG_BENCHMARKS)})")


def _check_shots(args, dataset, pool: int) -> None:
    """A typed ``--shots`` above the images a class has (``pool``: :func:`~metaprompt_lite.splits.smallest_pool`)
    would be capped without a word (the preset's 16 is, by design): refuse it, so the run is the one asked for."""
    if args.shots is not None and args.shots > pool:
        where = "per class and source domain" if dataset.suite == "dg" else "per base class in its train pool"
        raise ValueError(f"--shots {args.shots} is more than {args.dataset} has: {pool} images {where} — use "
                         f"--shots {pool} or fewer")


def _run_train(args) -> int:
    import torch

    from metaprompt_lite.data import load_dataset
    from metaprompt_lite.run import preset_run, run_base_to_new, run_domain_generalization
    from metaprompt_lite.splits import smallest_pool

    dataset = load_dataset(args.dataset)
    _check_target(args, dataset)  # before any output: the error is the only line
    pool = smallest_pool(dataset, args.target)  # the fewest images a class has to draw its shots from
    _check_shots(args, dataset, pool)
    if args.out_dir:  # the checkpoints go there: an unwritable folder fails now, not after the training
        _check_writable(args.out_dir, "--out-dir")
    config = preset_run(args.method, args.tier, dataset.suite, args.protocol, dataset=args.dataset, target=args.target,
                        model=args.model, pretrained=_pretrained(args.pretrained), seed=args.seed,
                        device=args.device, out_dir=args.out_dir or None)
    optim = config.optim
    for field_name, value in (("epochs", args.epochs), ("lr", args.lr),
                              ("batch_size", args.batch_size), ("max_steps", args.max_steps)):
        if value is not None:
            optim = replace(optim, **{field_name: value})
    overrides = {}
    if args.meta_order is not None:
        overrides["meta_order"] = args.meta_order
    if args.meta_update is not None:
        overrides["meta_update"] = args.meta_update
    # a bad override fails here, in MethodConfig's checks; without one the preset's recipe stays as it is
    recipe = replace(config.recipe, **overrides) if overrides else config.recipe
    config = replace(config, optim=optim, shots=args.shots or config.shots, recipe=recipe)
    changed = [name for name in ("shots", "epochs", "lr", "batch_size", "max_steps", "meta_order", "meta_update")
               if getattr(args, name) is not None]
    print(f"preset: {args.method} on the {args.tier} tier, {dataset.suite} suite, {args.protocol} protocol "
          "(as `bench` runs it)"
          + (f", overridden: {', '.join(changed)}" if changed else ""), file=sys.stderr)
    print("RunConfig\n" + config_table(config), file=sys.stderr)
    if config.recipe.trainable:
        drawn = min(config.shots, pool)  # as run.drawn_shots, which the results rows record
        if drawn < config.shots:  # the offline suite's pools are smaller than the papers' 16 shots
            print(f"shots: {drawn} per class drawn ({config.shots} asked; the train pool has no more)", file=sys.stderr)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)  # one thread, as a benchmark worker: the same arithmetic as its row
    try:
        if dataset.suite == "dg":
            result = run_domain_generalization(config, dataset)
        else:
            result = run_base_to_new(config, dataset)
    finally:  # called in-process (tests, notebooks), the command leaves torch's thread count as it was
        torch.set_num_threads(threads)
    result.pop("history", None)  # train_s is already the whole run's, also when it resumed from a checkpoint
    print(json.dumps(result) if args.json else format_result(result))
    return 0


def format_result(result: dict) -> str:
    """``base=54.49%  new=58.97%  hm=56.64%  train_s=1.20``: accuracies in %, seconds as such."""
    return "  ".join(f"{k}={v:.2f}" + ("%" if k in ACCURACY_COLUMNS else "") for k, v in result.items())


def _pretrain_parser(sub) -> None:
    defaults = PretrainConfig()
    p = sub.add_parser("pretrain", help="pretrain the pocket CLIP on the offline corpus (resumable)")
    p.add_argument("--corpus", default="data/corpus", help="built by `metaprompt-lite data build --corpus`")
    for name in ("out", "work_dir", "model"):
        p.add_argument("--" + name.replace("_", "-"), default=getattr(defaults, name))
    p.add_argument("--text-from", default=None, metavar="CHECKPOINT",
                   help="experiments: take this checkpoint's text tower instead of distilling one")
    p.add_argument("--seed", type=_seed, default=defaults.seed)
    for name in ("text_steps", "text_batch", "image_steps", "image_batch", "checkpoint_every"):
        p.add_argument("--" + name.replace("_", "-"), type=non_negative_int if name.endswith("steps") else positive_int,
                       default=getattr(defaults, name), help=f"default: {getattr(defaults, name)}")
    for name in ("text_lr", "image_lr", "concept_weight", "soft_label_tau", "regress_weight"):
        p.add_argument("--" + name.replace("_", "-"), type=positive_float if name.endswith("lr") else float,
                       default=getattr(defaults, name), help=f"default: {getattr(defaults, name)}")
    p.add_argument("--image-bf16", action=argparse.BooleanOptionalAction, default=defaults.image_bf16,
                   help="bf16 autocast in the image phase: ~25%% faster on CPUs with native bf16, ~14x slower "
                   "on AVX2-only ones; the committed checkpoint was trained in float32 (default)")


def _run_pretrain(args) -> int:
    fields = PretrainConfig.__dataclass_fields__
    config = PretrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    print("PretrainConfig\n" + config_table(config), file=sys.stderr)
    from metaprompt_lite.data.corpus import corpus_manifest_path, load_corpus, write_corpus_manifest
    from metaprompt_lite.pretrain import pretrain

    corpus, text = load_corpus(args.corpus)
    report = pretrain(config, corpus, text)
    # what the new checkpoint was pretrained on, committed beside it: the held-out checks run on it anywhere
    manifest = write_corpus_manifest(args.corpus, corpus_manifest_path(config.out))
    print(f"corpus manifest: {manifest}", file=sys.stderr)
    print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2, default=str))
    return 0


def _zeroshot_parser(sub) -> None:
    p = sub.add_parser("zeroshot", help="zero-shot accuracy on a suite (single template and ensemble)")
    p.add_argument("--suite", choices=("b2n", "dg", "probe"), default="b2n")
    p.add_argument("--json", action="store_true")
    _add_model_arguments(p)


def _run_zeroshot(args) -> int:
    from metaprompt_lite.zeroshot import format_rows, zero_shot_suite

    backbone = _load_backbone(args)
    print(f"backbone: {args.model} ({backbone.pretrained or 'random weights'})", file=sys.stderr)
    rows = zero_shot_suite(backbone, args.suite)
    print(json.dumps(rows, indent=1) if args.json else format_rows(rows))
    return 0


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


def _check_writable(folder: str, option: str = "--out-dir") -> None:
    """Fail before any training if ``folder`` cannot take the results: it (or the first existing
    folder above it, where it would be created) must be a folder this process can create files in.
    Probed with a temporary file, which also catches a read-only file system; nothing stays behind."""
    path = Path(folder or ".").absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot write to {option} {folder}: {existing} is a file, not a folder — "
                                 "pass a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise PermissionError(f"cannot write to {option} {folder}: {existing} is not writable "
                              f"({error.strerror}) — pass a folder you can write to") from None


def _run_bench(args) -> int:
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
        last = [t_suite]

        def record_wall(suite: str = suite) -> None:
            """Add the wall time since the last record: a run killed later keeps the time of its rows."""
            now = time.perf_counter()
            _record_bench_meta(args, {suite: now - last[0]})
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


def _record_bench_meta(args, walls: dict[str, float]) -> None:
    """results/bench_meta.json: what ran, on what, how long. Wall times are added per suite, after
    every row, over resumed invocations (a killed invocation loses only the time since its last row). A shard
    writes its own, bench_meta.shard-K-of-N.json (shards may share a folder)."""
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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=1))


def _gram_parser(sub) -> None:
    p = sub.add_parser("gram", help="meta-train GRAM's prompt init + gradient regulator on the corpus")
    p.add_argument("--methods", nargs="*", default=["gram-coop", "gram-ivlp"])
    p.add_argument("--corpus", default="data/corpus")
    p.add_argument("--meta-steps", type=positive_int, default=200, help="default: 200")
    p.add_argument("--seed", type=_seed, default=0)
    _add_model_arguments(p)


def _run_gram(args) -> int:
    from metaprompt_lite.core.gram import GramConfig
    from metaprompt_lite.gram_build import build_artifact

    config = GramConfig(meta_steps=args.meta_steps, seed=args.seed)
    print("GramConfig\n" + config_table(config), file=sys.stderr)
    for method in args.methods:
        print(build_artifact(method, args.corpus, args.model, _pretrained(args.pretrained), config))
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="metaprompt-lite",
        description="Prompt learning for CLIP (CoOp, CoCoOp, IVLP, MaPLe, MetaPrompt, ProMetaR, GRAM), "
        "offline on CPU or with real open_clip weights.",
    )
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error (also: {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data = sub.add_parser("data", help="list or build the offline benchmark suite")
    cli_data.add_arguments(data, _add_model_arguments)
    _train_parser(sub)
    _pretrain_parser(sub)
    _zeroshot_parser(sub)
    _bench_parser(sub)
    _report_parser(sub)
    _merge_parser(sub)
    _gram_parser(sub)
    return parser


def _dispatch(args) -> int:
    if hasattr(args, "pretrained"):
        _resolve_pretrained(args)
    if args.command == "data":
        return cli_data.run(args, _load_backbone)
    if args.command == "train":
        return _run_train(args)
    if args.command == "pretrain":
        return _run_pretrain(args)
    if args.command == "zeroshot":
        return _run_zeroshot(args)
    if args.command == "gram":
        return _run_gram(args)
    if args.command == "bench":
        return _run_bench(args)
    if args.command == "merge":
        return _run_merge(args)
    if args.command == "report":
        from metaprompt_lite.report import report_all, summary_text

        written = report_all(args.out_dir)
        print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
        for path in written:
            if path.name == "README.md" and path.parent != Path(args.out_dir):
                print(f"{path.parent.name}:\n{summary_text(path.parent)}\n")
        if len(written) == 1:
            print(summary_text(args.out_dir))
        return 0
    raise AssertionError(args.command)  # argparse rejects unknown commands before this


def _expected_errors() -> tuple[type[BaseException], ...]:
    """What a user can cause: bad names and values (ValueError, incl. damaged results files and
    checkpoints), paths (OSError), a damaged suite store, a non-finite loss. The store's error class
    only once its module is loaded (nothing else raises it), so an early error loads no torch."""
    store = sys.modules.get("metaprompt_lite.data.store")
    return (ValueError, OSError, FloatingPointError, *((store.StoreError,) if store else ()))


def one_line(error: BaseException, command: str = "COMMAND") -> str:
    """``what is wrong — what to do`` on one line, from an expected error of ``command``."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"cannot use {error.filename} ({error.strerror}) — check the path"
    message = " ".join(str(error).split()) or type(error).__name__
    if " — " not in message:
        message += f" — check the command's arguments (`metaprompt-lite {command} --help`); --debug shows the traceback"
    return message


def _interrupted(args, interrupt: KeyboardInterrupt) -> str:
    """The Ctrl-C line: what is really kept on disk, and how to go on."""
    results = getattr(args, "results_file", None)
    if results:
        return f"interrupted: {count_rows(results)} rows kept in {results}; run the same command to resume"
    if args.command == "train":
        engine = sys.modules.get("metaprompt_lite.engine")
        if engine is not None and isinstance(interrupt, engine.TrainingInterrupted):  # in the training loop: it knows its checkpoint
            return interrupt.kept()
        if args.out_dir and any(Path(args.out_dir).glob("*.pt")):  # before or after the training loop
            return (f"interrupted: the checkpoints in {args.out_dir} are kept (a finished run's included); run the "
                    "same command to resume")
        return "interrupted: no checkpoint was written; run the same command to start again"
    if args.command == "pretrain":
        return f"interrupted: the last checkpoints are kept in {args.work_dir}; run the same command to resume"
    return "interrupted: nothing was written; run the same command to start again"


def attach_negative_values(argv: list[str]) -> list[str]:
    """``--shard -1/2`` as ``--shard=-1/2`` (and ``--lr -1e-3`` likewise): argparse reads a value that
    starts with ``-`` and is not a plain negative number as an option, and would say only "expected one
    argument"; attached, the value reaches its own check and gets its own message."""
    out: list[str] = []
    for token in argv:
        if (out and out[-1].startswith("--") and "=" not in out[-1] and len(token) > 1 and token[0] == "-"
                and token[1].isdigit()):
            out[-1] += "=" + token
        else:
            out.append(token)
    return out


def main(argv: list[str] | None = None) -> int:
    """The ``metaprompt-lite`` entry point: run a command; an expected error or Ctrl-C becomes one
    line on stderr and exit code 2 (the traceback with ``--debug`` or ``METAPROMPT_LITE_DEBUG=1``)."""
    args = build_parser().parse_args(attach_negative_values(sys.argv[1:] if argv is None else argv))
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        previous = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:  # not the main thread (called from a thread): leave SIGTERM as it is
        previous = None
    try:
        return _dispatch(args)
    except KeyboardInterrupt as interrupt:
        if debug:
            raise
        print(_interrupted(args, interrupt), file=sys.stderr)
        return 2
    except _expected_errors() as error:
        if debug:
            raise
        print(f"error: {one_line(error, args.command)}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a job scheduler's stop): ended like Ctrl-C, so that the workers are stopped,
    the kept rows or checkpoints are named in one line, and the exit code is 2."""


def _terminated(signum, frame) -> None:
    raise Terminated()


if __name__ == "__main__":
    sys.exit(main())
