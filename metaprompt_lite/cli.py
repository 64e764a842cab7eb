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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "data":
        from metaprompt_lite.data import cli as data_cli

        return data_cli.run(args)
    if args.command == "train":
        return _run_train(args)
    raise AssertionError(args.command)  # argparse rejects unknown commands before this


if __name__ == "__main__":
    sys.exit(main())
