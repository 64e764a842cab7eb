"""``metaprompt-lite``: the entry point of the command line. It builds the parser, dispatches to each
sub-command (a thin wrapper over package functions) and turns the errors a user can cause into one line.

Here: the ``train``, ``pretrain``, ``zeroshot`` and ``gram`` commands, and the error and signal handling.
Beside it: ``cli_args`` (every argument's type and check, in one place), ``cli_bench`` (the ``bench``,
``merge`` and ``report`` commands, bench_meta.json) and ``cli_data`` (``data``).

Errors a user can cause (a bad name, path or value, a damaged file, Ctrl-C) end in one line on
stderr, ``error: what is wrong — what to do``, and exit code 2; ``--debug`` (or
``METAPROMPT_LITE_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from metaprompt_lite import cli_bench, cli_data
from metaprompt_lite.cli_args import (PROTOCOLS, Parser, _add_model_arguments, _check_train, _pretrained,
                                      _resolve_pretrained, _seed, non_negative_int, positive_float, positive_int,
                                      thread_count)
from metaprompt_lite.pretrain_config import PretrainConfig
from metaprompt_lite.results_table import ACCURACY_COLUMNS, count_rows

# Only modules without torch are imported above: parsing the arguments, `--help` and a usage error take
# well under a second (benchmarks/cli_startup.py); each command imports what it runs when it runs.
DEBUG_ENV = "METAPROMPT_LITE_DEBUG"


def config_table(config: Any) -> str:
    """A dataclass as aligned ``key: value`` lines, as each command prints its config when it starts."""
    flat = asdict(config) if hasattr(config, "__dataclass_fields__") else dict(config)
    width = max(len(k) for k in flat) if flat else 0
    return "\n".join(f"  {k:<{width}} : {v}" for k, v in flat.items())


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


def _run_train(args) -> int:
    import torch

    from metaprompt_lite.data import load_dataset
    from metaprompt_lite.run import preset_run, run_base_to_new, run_domain_generalization

    dataset = load_dataset(args.dataset)
    pool = _check_train(args, dataset)  # before any output: the error is the only line
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
    cli_bench._bench_parser(sub)
    cli_bench._report_parser(sub)
    cli_bench._merge_parser(sub)
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
        return cli_bench._run_bench(args, config_table)
    if args.command == "merge":
        return cli_bench._run_merge(args)
    if args.command == "report":
        return cli_bench._run_report(args)
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
