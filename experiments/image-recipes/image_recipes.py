"""Compare image-phase recipes of the pocket CLIP at a short budget, on the unseen-concept probe.

Every variant starts from the same state: the committed checkpoint's text tower (locked) and the
seed's fresh image tower, exactly what ``metaprompt-lite pretrain --text-from`` gives the image phase;
only the image phase's options differ. Each variant trains ``--steps`` steps (resumable: its state
lives in ``<work>/<name>/image.pt``), then this prints the 50-way probe (single template, ensemble,
per style) and the B2N zero-shot base/new/HM means, and writes ``<work>/results.json``.

Run:  python experiments/image-recipes/image_recipes.py --steps 1000 --variant base --variant soft05:soft_label_tau=0.05
A variant is ``name`` or ``name:field=value,field=value`` over :class:`PretrainConfig` fields; the
warm-up is min(300, steps // 10) steps. A folder belongs to one config: re-running a name with other
fields or steps stops with an error instead of resuming a different run. About 0.6 s per step on
2 cores of an AVX2-only CPU (12 min for 1,000 steps with the text encoding and evaluation).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

from metaprompt_lite.backbone import load_clip
from metaprompt_lite.data import drawing_source, load_dataset
from metaprompt_lite.data.corpus import load_corpus
from metaprompt_lite.checkpoints import load_checkpoint
from metaprompt_lite.paths import data_dir
from metaprompt_lite.pretrain import PretrainConfig, text_state_from_checkpoint, train_image_tower
from metaprompt_lite.core.clip import text_classifier
from metaprompt_lite.zeroshot import image_features, zero_shot_suite

CHECKPOINT = data_dir() / "pocket-clip" / "pocket-clip.safetensors"


def parse_variant(text: str, base: PretrainConfig) -> tuple[str, PretrainConfig]:
    """``"soft:soft_label_tau=0.07,concept_weight=2"`` -> ("soft", config with those fields)."""
    name, _, assignments = text.partition(":")
    types = {f.name: type(getattr(base, f.name)) if getattr(base, f.name) is not None else str for f in fields(base)}
    changes = {}
    for item in filter(None, assignments.split(",")):
        key, _, value = item.partition("=")
        if key not in types:
            raise SystemExit(f"unknown PretrainConfig field {key!r} in variant {text!r}; fields: {sorted(types)}")
        changes[key] = types[key](value) if types[key] is not bool else value.lower() in ("1", "true", "yes")
    return name, replace(base, **changes)


def claim_work_dir(folder: Path, config: PretrainConfig) -> None:
    """Tie ``folder`` to ``config``: the first run writes ``config.json``; a later run with any other field
    (steps, seed, a loss option) stops instead of resuming the finished state under a new label."""
    folder.mkdir(parents=True, exist_ok=True)
    mine = {k: v for k, v in asdict(config).items() if k != "progress"}
    path = folder / "config.json"
    if path.is_file():
        theirs = json.loads(path.read_text())
        changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if changed:
            raise SystemExit(f"{folder} holds a run with other settings ({', '.join(changed)}); give this variant "
                             f"another name or --work, or delete {folder}")
    else:
        path.write_text(json.dumps(mine, indent=2))


def short_budget_config(steps: int) -> PretrainConfig:
    """The committed recipe at ``steps`` image steps, warming up for min(300, steps // 10) of them."""
    return PretrainConfig(image_steps=steps, warmup_steps=min(300, steps // 10))


def fresh_image_phase(config: PretrainConfig, folder: Path, text_from: str | Path):
    """The backbone the image phase of ``pretrain --text-from`` starts from: the seed's fresh image tower
    and ``text_from``'s text tower (its state kept in ``folder/text.pt``; ``folder`` tied to ``config``)."""
    claim_work_dir(folder, config)
    torch.manual_seed(config.seed)
    backbone = load_clip(config.model)
    if not (folder / "text.pt").is_file():
        text_state_from_checkpoint(backbone, text_from, config, folder / "text.pt")
    backbone.model.load_state_dict(load_checkpoint(folder / "text.pt")["model"])
    return backbone


def probe_by_style(backbone) -> dict[str, float]:
    """Single-template probe accuracy per source style (the manifest's drawing package)."""
    dataset = load_dataset("emoji-unseen")
    classifier = text_classifier(backbone, dataset.classnames, dataset.templates[:1])
    predictions = (image_features(backbone, dataset.images) @ classifier.t()).argmax(-1)
    correct = (predictions == dataset.labels).float()
    out: dict[str, float] = {}
    styles = [drawing_source(d) for d in dataset.drawing]
    for style in sorted(set(styles)):
        mask = torch.tensor([s == style for s in styles])
        out[style] = float(correct[mask].mean() * 100)
    return out


def evaluate(backbone) -> dict:
    probe = zero_shot_suite(backbone, "probe")
    b2n = [r for r in zero_shot_suite(backbone, "b2n") if r["templates"] == "single"]
    mean = lambda key: sum(r[key] for r in b2n) / len(b2n)  # noqa: E731
    return {"probe": next(r["all"] for r in probe if r["templates"] == "single"),
            "probe_ensemble": next(r["all"] for r in probe if r["templates"] == "ensemble"),
            "probe_by_style": probe_by_style(backbone),
            "b2n_base": mean("base"), "b2n_new": mean("new"), "b2n_hm": mean("hm")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--variant", action="append", default=None, help="name[:field=value,...] (repeatable)")
    parser.add_argument("--corpus", default=str(data_dir() / "corpus"))
    parser.add_argument("--text-from", default=str(CHECKPOINT))
    parser.add_argument("--work", default=".cache/image_recipes")
    args = parser.parse_args()
    base = short_budget_config(args.steps)
    corpus, _ = load_corpus(args.corpus)
    work = Path(args.work)
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for text in args.variant or ["base"]:
        name, config = parse_variant(text, base)
        folder = work / name
        backbone = fresh_image_phase(config, folder, args.text_from)
        start = time.perf_counter()
        report = train_image_tower(backbone, corpus, config, folder / "image.pt")
        report["image_s"] = time.perf_counter() - start
        report.update(evaluate(backbone))
        report["config"] = {k: v for k, v in asdict(config).items() if v != getattr(PretrainConfig(), k)}
        results[name] = report
        work.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=2))
        styles = " ".join(f"{k.split('/')[-1]} {v:.0f}" for k, v in report["probe_by_style"].items())
        print(f"{name:>14}: probe {report['probe']:.1f} (ens {report['probe_ensemble']:.1f}; {styles}) "
              f"B2N base/new/HM {report['b2n_base']:.2f}/{report['b2n_new']:.2f}/{report['b2n_hm']:.2f} "
              f"scale {report['logit_scale']:.1f} {report['image_s'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
