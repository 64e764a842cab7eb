"""``metaprompt-lite data list|headroom|build|sheet``: the command line of the offline suite.

A command-line module (it reports zero-shot and linear-probe figures through ``zeroshot`` and
``headroom``), so it sits with ``cli`` at the top of the package, not inside ``data/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

from metaprompt_lite.paths import data_dir

# data.build's CORPUS_VARIANTS, here so that parsing loads no torch (the data package does; a test checks them equal)
CORPUS_VARIANTS = 3


def add_arguments(parser: argparse.ArgumentParser, model_arguments: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``data`` actions; ``model_arguments`` adds the command line's shared --model/--pretrained/--device."""
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = sub.add_parser("list", help="print every dataset: classes (base/new), train pool, test images, domains")
    p.add_argument("--suite", choices=("b2n", "dg", "probe"), default=None)
    p = sub.add_parser("headroom", help="per B2N dataset: linear probe minus zero-shot on base classes (the suite's "
                       "design figure; ~30 s)")
    model_arguments(p)
    p = sub.add_parser("build", help="rebuild the suite (and the pretraining corpus) from registry packages")
    p.add_argument("--sources", default=None,
                   help="npm prefix holding the npm sources (default: $METAPROMPT_SOURCES or "
                   "~/.cache/metaprompt-lite/sources; installed there with npm if absent)")
    p.add_argument("--store", default=None, help="output directory (default: data/suite)")
    p.add_argument("--corpus", default=None, nargs="?", const="data/corpus",
                   help="also build the pretraining corpus here (default when given: data/corpus)")
    p.add_argument("--datasets", nargs="*", default=None)
    p.add_argument("--no-install", action="store_true", help="never run npm; fail with the install line")
    p.add_argument("--allow-fewer", action="store_true",
                   help="write the store's MANIFEST.json even if it then lists fewer datasets than before (the "
                   "others become unreadable); refused without it")
    p.add_argument("--no-b2n-concept-images", action="store_true",
                   help="experiment: no image of the object-category emoji B2N concepts in the corpus (their "
                   "captions stay, as text only); see data/pocket-clip/README.md")
    p.add_argument("--corpus-variants", type=int, default=CORPUS_VARIANTS,
                   help=f"renderings per corpus drawing: 1 = plain (the previous checkpoint's corpus); 3 = plus 2 on "
                   f"a random background, rotated and scaled, like the suite's images (default: {CORPUS_VARIANTS}, "
                   "the committed checkpoint's corpus; see data/pocket-clip/README.md)")
    p.add_argument("--clipart", action="store_true",
                   help="experiment: add Tux Paint stamps and Openclipart drawings (names no suite dataset "
                   "evaluates) to the corpus; needs apt packages tuxpaint-stamps-default openclipart-svg; see "
                   "experiments/clipart/")
    p = sub.add_parser("sheet", help="save a contact sheet (PNG) per dataset")
    p.add_argument("--out", default="figures/data")


def run(args, load_backbone: Callable[[argparse.Namespace], object]) -> int:
    """Run one ``data`` action; ``load_backbone(args)`` gives the model of the shared model arguments."""
    if args.data_command == "list":
        return _list(args.suite)
    if args.data_command == "build":
        return _build(args)
    if args.data_command == "headroom":
        return _headroom(load_backbone(args))
    if args.data_command == "sheet":
        from metaprompt_lite.data import list_datasets, load_dataset
        from metaprompt_lite.data.sheets import contact_sheet

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name in list_datasets():
            contact_sheet(load_dataset(name)).savefig(out / f"{name}.png", dpi=100, bbox_inches="tight")
            print(out / f"{name}.png")
        return 0
    raise AssertionError(args.data_command)


def _list(suite: str | None) -> int:
    from metaprompt_lite.data import list_datasets, load_dataset, summary
    from metaprompt_lite.zeroshot import format_rows

    print(format_rows([summary(load_dataset(name)) for name in list_datasets(suite)]))
    return 0


def _headroom(backbone) -> int:
    from metaprompt_lite.data import list_datasets, load_dataset
    from metaprompt_lite.data.store import B2N_KINDS
    from metaprompt_lite.headroom import headroom_rows
    from metaprompt_lite.zeroshot import format_rows

    datasets = [load_dataset(name) for name in list_datasets("b2n")]
    rows = headroom_rows(backbone, datasets)
    print(format_rows([{"kind": B2N_KINDS.get(row["dataset"], ""), **row} for row in rows]))
    return 0


def _build(args) -> int:
    from metaprompt_lite.data.build import build
    from metaprompt_lite.data.sources import SourceMissing, Sources, default_sources_dir, ensure_npm_sources

    prefix = Path(args.sources) if args.sources else default_sources_dir()
    if not args.no_install:
        try:
            ensure_npm_sources(prefix)
        except SourceMissing as error:
            print(f"warning: {error}", file=sys.stderr)
    store = Path(args.store) if args.store else data_dir(must_exist=False) / "suite"
    corpus = Path(args.corpus) if args.corpus else None
    if args.clipart and corpus is None:
        print("error: --clipart changes the pretraining corpus only — add --corpus [DIR]", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    report = build(store, corpus, Sources(npm=prefix), args.datasets,
                   b2n_concept_images=not args.no_b2n_concept_images, corpus_variants=args.corpus_variants,
                   clipart=args.clipart, allow_fewer=args.allow_fewer)
    print(f"built {len(report['datasets'])} datasets into {store} in {time.perf_counter() - t0:.0f} s")
    if "corpus" in report:
        empty = report["corpus"].pop("empty_drawings")
        print(f"corpus: {report['corpus']} in {corpus}")
        if empty:
            print(f"warning: {len(empty)} corpus drawings rendered empty (their images are blank or background "
                  f"only, kept so the corpus stays the committed checkpoint's): {', '.join(empty)}", file=sys.stderr)
    for name, reason in report["missing"].items():
        print(f"INCOMPLETE {name}: {reason}", file=sys.stderr)
    if report["missing"]:  # a failed build is a user-level error like any other: exit code 2
        print(f"error: {len(report['missing'])} datasets could not be built ({', '.join(sorted(report['missing'])[:4])}) "
              "— install their sources as the INCOMPLETE lines above say, then run the same command", file=sys.stderr)
        return 2
    return 0
