"""Headroom: how much base-class accuracy a dataset leaves above zero-shot CLIP.

A learned prompt (CoOp and after) only re-weights what the frozen image features already separate.
A *linear probe* fitted on those features measures how much that is: a multinomial logistic
regression on the normalised frozen features f_I of the base classes' train pool, scored on their
test images. The suite's design figure is

    headroom = probe accuracy − zero-shot accuracy   (base classes, single hand template)

Where it is near 0, no prompt can gain on base classes (the familiar concepts); where it is large, a
prompt can, and can overfit doing so (the papers' Aircraft, Cars, EuroSAT). Shown by
``metaprompt-lite data headroom`` and in data/README.md.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.nn import functional as F

from metaprompt_lite.core.clip import Backbone
from metaprompt_lite.engine import accuracy
from metaprompt_lite.splits import base_new_split, select_classes
from metaprompt_lite.core.clip import text_classifier
from metaprompt_lite.zeroshot import base_new_scores, image_features


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, n_classes: int,
                 weight_decay: float = 1e-3, steps: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [E, C], b [C]) minimising mean CE(x W + b, y) + weight_decay · ‖W‖², from zero, by L-BFGS.

    The loss is convex and the start is fixed, so the fit is deterministic (no seed)."""
    x = train_features.double()
    weight = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, train_labels) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach().float(), bias.detach().float()


def base_headroom(backbone: Backbone, dataset, look: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
    """{dataset, zeroshot, probe, headroom, chance, zeroshot_new} of a B2N ``dataset``.

    Zero-shot (single hand template) on the test images, base and new each among their own classes
    (:func:`zeroshot.base_new_scores`); the probe trains on every train-pool image of the base classes
    and is scored on their test images. ``look`` (uint8 images -> uint8 images) measures the dataset
    under a transformed look instead."""
    features = image_features(backbone, dataset.images if look is None else look(dataset.images))
    test = dataset.split == 1
    classifier = text_classifier(backbone, dataset.classnames, dataset.templates[:1])
    zeroshot = base_new_scores(features[test], dataset.labels[test], classifier)
    base, _ = base_new_split(len(dataset.classnames))
    index, labels = select_classes(dataset.labels, base)
    train = dataset.split[index] == 0
    if not train.any() or train.all():
        raise ValueError(f"{dataset.name} needs train-pool and test images of its base classes for a probe")
    weight, bias = linear_probe(features[index][train], labels[train], len(base))
    probe = accuracy(features[index][~train] @ weight + bias, labels[~train])
    return {"dataset": dataset.name, "zeroshot": zeroshot["base"], "probe": probe, "headroom": probe - zeroshot["base"],
            "chance": 100.0 / len(base), "zeroshot_new": zeroshot["new"]}


def headroom_rows(backbone: Backbone, datasets) -> list[dict]:
    """:func:`base_headroom` of each dataset, plus zero-shot as a multiple of chance on base and on new
    (the suite's rule: at least 5x on both for the unseen-concept and unseen-look datasets)."""
    rows = []
    for dataset in datasets:
        row = base_headroom(backbone, dataset)
        n_new = len(dataset.classnames) - len(base_new_split(len(dataset.classnames))[0])
        rows.append({**row, "x_chance_base": row["zeroshot"] / row["chance"],
                     "x_chance_new": row["zeroshot_new"] * n_new / 100.0})
    return rows
