"""Class splits and few-shot draws: which classes are base or new, which images a run trains on.

Explained in ``notebooks/02_text_prompts`` (base-to-new) and ``notebooks/06_metaprompt_end_to_end``.

The papers' base-to-new protocol (CoCoOp): sort the class ids, the first ⌈n/2⌉ are *base* (train
and test), the rest *new* (test only); a run trains on ``shots`` images per base class drawn with its
seed from the train pool, and a class subset is always relabelled 0..k−1 so cross-entropy sees only
its own columns. The same draw serves every method, so methods differ only in what they learn.
"""

from __future__ import annotations

import math

import torch

from metaprompt_lite.core.meta import relabel

# A dataset's ``split`` per image: the train pool (few-shot draws), the test pool, or both. Both is a
# DG domain's image that may be drawn as a source shot and is also scored as a target: MetaPrompt
# scores PACS and OfficeHome targets on all their images, their train split among them.
TRAIN, TEST, BOTH = 0, 1, 2


def base_new_split(n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The papers' base-to-new rule: sorted class ids, base = first ceil(n/2), new = the rest."""
    if n_classes < 2:
        raise ValueError(f"a base-to-new split needs at least 2 classes, got {n_classes}")
    m = math.ceil(n_classes / 2)
    ids = torch.arange(n_classes)
    return ids[:m], ids[m:]


def select_classes(labels: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the examples whose label is in ``classes``, and their labels relabelled 0..len-1."""
    index = torch.isin(labels, classes).nonzero().flatten()
    return index, relabel(labels[index], classes)


def few_shot_indices(
    labels: torch.Tensor, shots: int, seed: int, groups: torch.Tensor | None = None
) -> torch.Tensor:
    """Draw ``shots`` examples per class (per class *and* group, e.g. source domain, when ``groups``
    is given) with the run's seed; a class with fewer examples gives all it has. Same seed, same
    draw, for every method. Returns sorted indices."""
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    generator = torch.Generator().manual_seed(int(seed))
    keys = labels if groups is None else labels * (int(groups.max()) + 1) + groups
    chosen = []
    for key in keys.unique(sorted=True).tolist():
        members = (keys == key).nonzero().flatten()
        order = torch.randperm(len(members), generator=generator)
        chosen.append(members[order[:shots]])
    return torch.cat(chosen).sort().values


def base_class_shots(dataset, shots: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A base-to-new run's training set: indices into ``dataset`` of ``shots`` train-pool (``split == 0``)
    images per base class, drawn with ``seed``, and their labels relabelled among the base classes."""
    base, _ = base_new_split(len(dataset.classnames))
    pool = (dataset.split == 0).nonzero().flatten()
    pool_index, pool_labels = select_classes(dataset.labels[pool], base)
    drawn = few_shot_indices(pool_labels, shots, seed)
    return pool[pool_index[drawn]], pool_labels[drawn]


def dg_pools(split: torch.Tensor, domain: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(drawable, scored) boolean masks of a DG run holding out domain ``target``: the source images a
    few-shot draw may take (train pool) and the target images it is scored on (test pool), as
    MetaPrompt's DG readers split them (shots from the sources' train split; VLCS and DomainNet scored
    on the target's test split). A dataset whose images are all one split carries no split: every
    image is in both (the offline suite's DG benchmarks, a DomainBed tree without split folders)."""
    if len(split.unique()) <= 1:
        drawable = scored = torch.ones_like(split, dtype=torch.bool)
    else:
        drawable, scored = split != TEST, split != TRAIN
    return drawable & (domain != target), scored & (domain == target)


def smallest_pool(dataset, target: str | None = None) -> int:
    """The fewest images a run can draw for one class: base-to-new, a base class's train-pool images;
    DG (``target`` held out), a class's drawable images in one source domain (:func:`dg_pools`).
    ``shots`` above it are capped (:func:`few_shot_indices` gives all there is), so a requested number
    above it is not honoured."""
    if target is None:
        base, _ = base_new_split(len(dataset.classnames))
        pool = dataset.labels[dataset.split == 0]
        return min(int((pool == c).sum()) for c in base.tolist())
    held_out = list(dataset.domains).index(target)
    drawable, _ = dg_pools(dataset.split, dataset.domain, held_out)
    sources = [d for d in range(len(dataset.domains)) if d != held_out]
    return min(int((drawable & (dataset.labels == c) & (dataset.domain == d)).sum())
               for c in range(len(dataset.classnames)) for d in sources)
