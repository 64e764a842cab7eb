"""``metaprompt-lite``: the command line. Each sub-command is a thin wrapper over package functions."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from metaprompt_lite.engine import OptimConfig, config_table


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    from metaprompt_lite.paths import default_model

    model, pretrained = default_model()
    parser.add_argument("--model", default=model, help=f"open_clip model name (default: {model})")
    parser.add_argument("--pretrained", default=pretrained,
                        help="open_clip tag (e.g. openai) or checkpoint path; 'none' = random weights")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")


def _pretrained(value: str | None) -> str | None:
    return None if value in (None, "", "none", "None") else value


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train and evaluate one method on one dataset (one seed)")
    p.add_argument("--method", default="coop")
    p.add_argument("--dataset", required=True, help="a dataset of `metaprompt-lite data list`")
    p.add_argument("--target", default=None, help="DG benchmarks: the held-out domain")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--meta-order", type=int, choices=(1, 2), default=None)
    p.add_argument("--official-quirks", action="store_true")
    p.add_argument("--out-dir", default="runs", help="checkpoints (resumable); '' to disable")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_model_arguments(p)


def _run_train(args) -> int:
    from metaprompt_lite.data import load_dataset
    from metaprompt_lite.run import RunConfig, run_base_to_new, run_domain_generalization

    optim = OptimConfig()
    for field_name, value in (("epochs", args.epochs), ("lr", args.lr),
                              ("batch_size", args.batch_size), ("max_steps", args.max_steps)):
        if value is not None:
            optim = replace(optim, **{field_name: value})
    overrides = {}
    if args.meta_order is not None:
        overrides["meta_order"] = args.meta_order
    if args.official_quirks:
        overrides["official_quirks"] = True
    config = RunConfig(method=args.method, dataset=args.dataset, target=args.target,
                       model=args.model, pretrained=_pretrained(args.pretrained), seed=args.seed,
                       shots=args.shots, device=args.device, optim=optim,
                       method_overrides=overrides, out_dir=args.out_dir or None)
    config.resolved_method()  # fail fast on an unknown method or bad override
    dataset = load_dataset(args.dataset)
    print("RunConfig\n" + config_table(config), file=sys.stderr)
    if dataset.suite == "dg":
        if args.target is None:
            raise SystemExit(f"--target is required for the DG benchmark {args.dataset}: one of {list(dataset.domains)}")
        result = run_domain_generalization(config, dataset)
    else:
        result = run_base_to_new(config, dataset)
    result.pop("history", None)
    print(json.dumps(result) if args.json else "  ".join(f"{k}={v:.2f}" for k, v in result.items()))
    return 0


def _pretrain_parser(sub) -> None:
    from metaprompt_lite.pretrain import PretrainConfig

    defaults = PretrainConfig()
    p = sub.add_parser("pretrain", help="pretrain the pocket CLIP on the offline corpus (resumable)")
    p.add_argument("--corpus", default="data/corpus", help="built by `metaprompt-lite data build --corpus`")
    for name in ("out", "work_dir", "model"):
        p.add_argument("--" + name.replace("_", "-"), default=getattr(defaults, name))
    p.add_argument("--text-from", default=None, metavar="CHECKPOINT",
                   help="experiments: take this checkpoint's text tower instead of distilling one")
    for name in ("seed", "text_steps", "text_batch", "image_steps", "image_batch", "checkpoint_every"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("text_lr", "image_lr", "concept_weight", "soft_label_tau", "regress_weight"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    p.add_argument("--image-bf16", action=argparse.BooleanOptionalAction, default=defaults.image_bf16,
                   help="bf16 autocast in the image phase: ~25%% faster on CPUs with native bf16, ~14x slower "
                   "on AVX2-only ones; the committed checkpoint was trained in float32 (default)")


def _run_pretrain(args) -> int:
    from metaprompt_lite.data.corpus import load_corpus
    from metaprompt_lite.pretrain import PretrainConfig, pretrain

    fields = PretrainConfig.__dataclass_fields__
    config = PretrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    print("PretrainConfig\n" + config_table(config), file=sys.stderr)
    corpus, text = load_corpus(args.corpus)
    report = pretrain(config, corpus, text)
    print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2, default=str))
    return 0


def _zeroshot_parser(sub) -> None:
    p = sub.add_parser("zeroshot", help="zero-shot accuracy on a suite (single template and ensemble)")
    p.add_argument("--suite", choices=("b2n", "dg", "probe"), default="b2n")
    p.add_argument("--json", action="store_true")
    _add_model_arguments(p)


def _run_zeroshot(args) -> int:
    from metaprompt_lite.backbone import load_clip
    from metaprompt_lite.zeroshot import format_rows, zero_shot_suite

    backbone = load_clip(args.model, _pretrained(args.pretrained), args.device)
    print(f"backbone: {args.model} ({backbone.pretrained or 'random weights'})", file=sys.stderr)
    rows = zero_shot_suite(backbone, args.suite)
    print(json.dumps(rows, indent=1) if args.json else format_rows(rows))
    return 0


def _bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="the main job: every method x dataset x seed (resumable CSV rows)")
    p.add_argument("--suite", choices=("b2n", "dg", "all"), default="all")
    p.add_argument("--methods", nargs="*", default=None, help="default: every method of the suite")
    p.add_argument("--datasets", nargs="*", default=None, help="default: every dataset of the suite")
    p.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3])
    p.add_argument("--tier", choices=("pocket", "paper"), default="pocket",
                   help="hyper-parameter presets: pocket (embedded) or paper (ViT-B/16, GPU)")
    p.add_argument("--out-dir", default="results")
    p.add_argument("--data-root", default=None,
                   help="research tier: folder of the papers' datasets (CoOp/DomainBed layouts, see "
                   "docs/research_tier.md); default: the offline suite")
    p.add_argument("--no-report", action="store_true", help="do not write results/README.md and figures")
    _add_model_arguments(p)


def _run_bench(args) -> int:
    import time

    from metaprompt_lite.bench import BenchConfig, bench
    from metaprompt_lite.report import report, summary_text

    suites = ("b2n", "dg") if args.suite == "all" else (args.suite,)
    print(f"backbone: {args.model} ({args.pretrained or 'random weights: build/commit the pocket CLIP'})",
          file=sys.stderr)
    t0, walls = time.perf_counter(), {}
    for suite in suites:
        t_suite = time.perf_counter()
        datasets, loader = args.datasets or (), None
        if args.data_root:
            from functools import partial

            from metaprompt_lite.research import RESEARCH_B2N, RESEARCH_DG, load_research_dataset

            loader = partial(load_research_dataset, root=args.data_root)
            datasets = datasets or (RESEARCH_B2N if suite == "b2n" else RESEARCH_DG)
        config = BenchConfig(suite=suite, methods=args.methods or (), datasets=datasets, loader=loader,
                             seeds=tuple(args.seeds), model=args.model, pretrained=_pretrained(args.pretrained),
                             tier=args.tier, out_dir=args.out_dir, device=args.device)
        print("BenchConfig\n" + config_table(config), file=sys.stderr)
        bench(config)
        walls[suite] = time.perf_counter() - t_suite
        _record_bench_meta(args, {suite: walls[suite]})  # now: a later suite may be interrupted
    print(f"bench wall time: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if not args.no_report:
        print(f"report: {report(args.out_dir)}", file=sys.stderr)
    print(summary_text(args.out_dir))
    return 0


def _portable_path(path: str | None) -> str | None:
    """A checkpoint under the data directory as ``data/...`` (the committed results must not name
    this machine's clone), or as ``$METAPROMPT_LITE_DATA/...`` when that variable moved the data
    directory elsewhere; any other path or tag unchanged."""
    import os
    from pathlib import Path

    from metaprompt_lite.paths import data_dir

    if path is None or not Path(path).exists():
        return path
    prefix = "$METAPROMPT_LITE_DATA" if os.environ.get("METAPROMPT_LITE_DATA") else "data"
    try:
        return f"{prefix}/{Path(path).resolve().relative_to(data_dir().resolve()).as_posix()}"
    except ValueError:
        return path


def _record_bench_meta(args, walls: dict[str, float]) -> None:
    """results/bench_meta.json: what ran, on what, how long. Wall times are summed per suite over
    resumed invocations (an invocation killed before it ends adds nothing: add it by hand)."""
    import os
    import platform
    from pathlib import Path

    path = Path(args.out_dir) / "bench_meta.json"
    meta = json.loads(path.read_text()) if path.is_file() else {}
    meta.update(model=args.model, pretrained=_portable_path(_pretrained(args.pretrained)), tier=args.tier,
                machine=f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {__import__('torch').__version__}")
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
    p.add_argument("--meta-steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    _add_model_arguments(p)


def _run_gram(args) -> int:
    from metaprompt_lite.gram import GramConfig
    from metaprompt_lite.gram_build import build_artifact

    config = GramConfig(meta_steps=args.meta_steps, seed=args.seed)
    print("GramConfig\n" + config_table(config), file=sys.stderr)
    for method in args.methods:
        print(build_artifact(method, args.corpus, args.model, _pretrained(args.pretrained), config))
    return 0


def _report_parser(sub) -> None:
    p = sub.add_parser("report", help="results/*.csv -> results/README.md (tables) and figures")
    p.add_argument("--out-dir", default="results")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metaprompt-lite",
        description="Prompt learning for CLIP (CoOp, CoCoOp, IVLP, MaPLe, MetaPrompt, ProMetaR, GRAM), "
        "offline on CPU or with real open_clip weights.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data = sub.add_parser("data", help="list or build the offline benchmark suite")
    from metaprompt_lite.data import cli as data_cli

    data_cli.add_arguments(data)
    _train_parser(sub)
    _pretrain_parser(sub)
    _zeroshot_parser(sub)
    _bench_parser(sub)
    _report_parser(sub)
    _gram_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "data":
        from metaprompt_lite.data import cli as data_cli

        return data_cli.run(args)
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
    if args.command == "report":
        from metaprompt_lite.report import report, summary_text

        print(f"wrote {report(args.out_dir)}", file=sys.stderr)
        print(summary_text(args.out_dir))
        return 0
    raise AssertionError(args.command)  # argparse rejects unknown commands before this


if __name__ == "__main__":
    sys.exit(main())
