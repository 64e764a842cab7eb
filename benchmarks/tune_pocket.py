"""Tune the pocket presets on a validation split of the *base* classes only.

Never touches new classes, test images or DG target domains. For each B2N dataset, the base classes
are cut in two (the papers' rule again): "pseudo-base" (first half) and "pseudo-new" (second half);
from the *train pool* of the base classes, one source drawing per class is the pseudo-train pool and
the other drawings are the validation images. Each candidate (lr, epochs) of each method is scored
by the harmonic mean of pseudo-base and pseudo-new validation accuracy, averaged over the datasets
given, one seed. The winners are what ``metaprompt_lite.methods._TUNED`` holds.

Run:  python benchmarks/tune_pocket.py [--methods coop ...] [--datasets ...] | tee results/tuned/tuning.log
Prints a line per candidate and the chosen preset per method; writes results/tuned/tuning.csv after each
method (so an interrupted run keeps the methods it finished).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import time
from dataclasses import replace
from pathlib import Path

import torch

from metaprompt_lite.backbone import load_clip
from metaprompt_lite.data import load_dataset
from metaprompt_lite.data.store import ImageDataset
from metaprompt_lite.methods import preset
from metaprompt_lite.paths import default_model
from metaprompt_lite.run import RunConfig, run_base_to_new
from metaprompt_lite.splits import base_new_split

GRID_LR = (0.002, 0.008)
# Epochs: up to 4 (CoCoOp, whose text pass runs once per image and costs ~5x a CoOp epoch, 2), to keep the
# full benchmark near its 45-minute ceiling on 2 CPU cores, against the previous cap (2; CoCoOp 1). Every
# paper trains longer (5 to 200 epochs on ViT-B/16), so the cap is cost, as the methods.py comment says.
GRID_EPOCHS = {"cocoop": (1, 2)}
DEFAULT_EPOCHS = (2, 4)


def validation_dataset(dataset: ImageDataset) -> ImageDataset:
    """Base classes only; split 0 = the first source drawing of each class in the pool, split 1 = the
    pool's other drawings (or, with a single drawing per class, every other image)."""
    base, _ = base_new_split(len(dataset.classnames))
    keep = ((dataset.split == 0) & torch.isin(dataset.labels, base)).nonzero().flatten().tolist()
    first: dict[int, str] = {}
    split = []
    for k, i in enumerate(keep):
        label = int(dataset.labels[i])
        first.setdefault(label, dataset.drawing[i])
        split.append(0 if dataset.drawing[i] == first[label] else 1)
    split = torch.tensor(split)
    if (split == 1).sum() == 0:  # one drawing per class (photos): alternate images instead
        split = torch.arange(len(keep)) % 2
    index = torch.tensor(keep)
    return ImageDataset(name=f"{dataset.name}-val", suite="b2n", classnames=[dataset.classnames[i] for i in base],
                        templates=dataset.templates, domains=dataset.domains, images=dataset.images[index],
                        labels=dataset.labels[index], domain=dataset.domain[index], split=split,
                        drawing=[dataset.drawing[i] for i in keep])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="*", default=["coop", "cocoop", "ivlp", "maple", "metaprompt",
                                                          "prometar", "gram-coop", "gram-ivlp"])
    parser.add_argument("--datasets", nargs="*", default=["emoji-novel-places", "flags-pixel", "cards"])
    parser.add_argument("--out", default="results/tuned/tuning.csv")
    args = parser.parse_args()
    backbone = load_clip(*default_model())
    sets = [validation_dataset(load_dataset(n)) for n in args.datasets]
    rows = []
    for method in args.methods:
        _, optim, shots = preset(method)
        scores = {}
        for lr, epochs in itertools.product(GRID_LR, GRID_EPOCHS.get(method, DEFAULT_EPOCHS)):
            hms = []
            for ds in sets:
                config = RunConfig(method=method, dataset=ds.name, model=backbone.name, pretrained=backbone.pretrained,
                                   seed=1, shots=shots, optim=replace(optim, lr=lr, epochs=epochs), progress=False)
                start = time.perf_counter()
                r = run_base_to_new(config, ds, backbone)
                seconds = time.perf_counter() - start
                hms.append(r["hm"])
                rows.append({"method": method, "lr": lr, "epochs": epochs, "dataset": ds.name, "base": r["base"],
                             "new": r["new"], "hm": r["hm"], "seconds": round(seconds, 2)})
            scores[(lr, epochs)] = sum(hms) / len(hms)
            print(f"{method:10s} lr {lr:<6} epochs {epochs}: validation HM {scores[(lr, epochs)]:.2f}", flush=True)
        best = max(scores, key=scores.get)
        print(f"==> {method}: lr {best[0]}, epochs {best[1]}", flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
