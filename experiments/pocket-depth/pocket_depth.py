"""Do MaPLe and ProMetaR move when their prompt depth is scaled to the pocket CLIP's 4-layer towers?

Run:  python experiments/pocket-depth/pocket_depth.py [--depth 3] [--methods maple prometar]
      [--datasets ...] [--seeds 1 2 3] [--workers 2] [--csv experiments/pocket-depth/rows.csv]
      [--summary experiments/pocket-depth/summary.json]

The recipes' depth 9 (of ViT-B/16's 12 layers) is capped at the pocket towers' 4 layers
(``prompts._resolve_depth``): every layer. The proportional reading, round(9 x 4 / 12) = 3, is this
experiment's. Each row is one official-protocol base-to-new run (``run.preset_run``) whose recipe's
prompt gets ``text_depth = vision_depth = --depth`` (``--depth preset`` keeps the recipe: the committed
rows, to check that this path reproduces them). Runs go to ``--workers`` processes of one intra-op thread
each (as the benchmark's), rows to ``--csv`` as they finish; rows already there are skipped. At the end
the script compares the rows with ``results/official/b2n.csv`` on the same methods, datasets and seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import statistics
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "results" / "official" / "b2n.csv"
HERE = Path(__file__).resolve().parent
DATASETS = ("fashion", "emoji-novel-animals", "emoji-novel-food", "emoji-novel-mixed")
COLUMNS = ("method", "dataset", "seed", "depth", "base", "new", "hm", "train_s")
METRICS = ("base", "new", "hm")
PRESET = "preset"

_worker: dict = {}


def depth_run(method: str, dataset: str, seed: int, depth: str, model: str, pretrained: str):
    """The official preset's :class:`~metaprompt_lite.run.RunConfig`, its prompt at ``depth`` layers
    (text and vision) unless ``depth`` is ``"preset"``."""
    from metaprompt_lite.run import preset_run

    run = preset_run(method, "pocket", "b2n", "official", dataset=dataset, model=model, pretrained=pretrained,
                     seed=seed, progress=False)
    if depth == PRESET:
        return run
    prompt = replace(run.recipe.prompt, text_depth=int(depth), vision_depth=int(depth))
    return replace(run, recipe=replace(run.recipe, prompt=prompt))


def _start() -> None:
    """A worker: one intra-op thread, its own backbone, datasets and run cache."""
    import torch

    from metaprompt_lite.paths import default_model
    from metaprompt_lite.run import load_backbone

    torch.set_num_threads(1)
    model, pretrained = default_model()
    _worker.update(model=model, pretrained=pretrained, backbone=load_backbone(model, pretrained), datasets={},
                   caches={})


def _one(task: tuple[str, str, int, str]) -> dict:
    from metaprompt_lite.data import load_dataset
    from metaprompt_lite.run import run_base_to_new

    method, dataset, seed, depth = task
    if dataset not in _worker["datasets"]:
        _worker["datasets"][dataset] = load_dataset(dataset)
    cache = _worker["caches"].setdefault(dataset, {})
    run = depth_run(method, dataset, seed, depth, _worker["model"], _worker["pretrained"])
    result = run_base_to_new(run, _worker["datasets"][dataset], _worker["backbone"], cache)
    return {"method": method, "dataset": dataset, "seed": seed, "depth": depth,
            **{k: result[k] for k in (*METRICS, "train_s")}}


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def append(path: Path, row: dict) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(COLUMNS)
        writer.writerow([f"{row[c]:.4f}" if isinstance(row[c], float) else row[c] for c in COLUMNS])


def committed_rows(path: Path = COMMITTED) -> dict[tuple[str, str, str], dict]:
    return {(r["method"], r["dataset"], r["seed"]): r for r in read_rows(path)}


def compare(rows: list[dict], committed: dict, depth: str) -> dict:
    """Per method: the rows at ``depth`` against the committed rows of the same datasets and seeds —
    means, their difference, per-seed differences (each seed's mean over the datasets) and the seed
    spread (max - min of the per-seed means) of both sides; ``identical``: rows equal to 4 decimals."""
    out = {}
    for method in sorted({r["method"] for r in rows if r["depth"] == depth}):
        mine = [r for r in rows if r["depth"] == depth and r["method"] == method]
        pairs = [(r, committed[(method, r["dataset"], r["seed"])]) for r in mine]
        seeds = sorted({r["seed"] for r in mine}, key=int)
        summary = {"rows": len(mine), "identical": sum(all(a[m] == b[m] for m in METRICS) for a, b in pairs)}
        for m in METRICS:
            ours = statistics.mean(float(a[m]) for a, _ in pairs)
            theirs = statistics.mean(float(b[m]) for _, b in pairs)
            per_seed = {s: [(float(a[m]), float(b[m])) for a, b in pairs if a["seed"] == s] for s in seeds}
            ours_seed = {s: statistics.mean(x for x, _ in v) for s, v in per_seed.items()}
            theirs_seed = {s: statistics.mean(y for _, y in v) for s, v in per_seed.items()}
            summary[m] = {"depth": round(ours, 2), "committed": round(theirs, 2), "diff": round(ours - theirs, 2),
                          "diff_per_seed": {s: round(ours_seed[s] - theirs_seed[s], 2) for s in seeds},
                          "seed_spread_depth": round(max(ours_seed.values()) - min(ours_seed.values()), 2),
                          "seed_spread_committed": round(max(theirs_seed.values()) - min(theirs_seed.values()), 2),
                          "diff_per_dataset": {d: round(statistics.mean(float(a[m]) - float(b[m]) for a, b in pairs
                                                                        if a["dataset"] == d), 2)
                                               for d in sorted({a["dataset"] for a, _ in pairs})}}
        out[method] = summary
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", default="3", help="prompt depth (text and vision), or 'preset' (the committed)")
    parser.add_argument("--methods", nargs="+", default=["maple", "prometar"])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--csv", default=str(HERE / "rows.csv"))
    parser.add_argument("--summary", default=None, help="write the comparison here (JSON)")
    args = parser.parse_args(argv)
    path = Path(args.csv)
    done = {(r["method"], r["dataset"], r["seed"], r["depth"]) for r in read_rows(path)}
    # ProMetaR first: its runs are about 12x MaPLe's, so the short ones fill the tail
    tasks = [(m, d, s, args.depth) for m in sorted(args.methods, key=lambda m: m != "prometar")
             for d in args.datasets for s in args.seeds if (m, d, str(s), args.depth) not in done]
    print(f"{len(tasks)} runs to do at depth {args.depth} ({len(done)} rows already in {path})")
    if tasks:
        pool = multiprocessing.get_context("spawn").Pool(args.workers, initializer=_start)
        for row in pool.imap_unordered(_one, tasks):
            append(path, row)
            print(f"{row['method']:9s} {row['dataset']:20s} s{row['seed']} depth {row['depth']}: base "
                  f"{row['base']:.2f} new {row['new']:.2f} hm {row['hm']:.2f} ({row['train_s']:.0f} s)", flush=True)
        pool.close()
        pool.join()
    summary = compare(read_rows(path), committed_rows(), args.depth)
    print(json.dumps(summary, indent=1))
    if args.summary:
        Path(args.summary).write_text(json.dumps({"depth": args.depth, "datasets": args.datasets, "seeds": args.seeds,
                                                  "methods": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
