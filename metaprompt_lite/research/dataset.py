"""The research-tier dataset object: the same attributes the offline suite's datasets have, with
images read lazily from the papers' datasets on disk.

Explained in ``docs/research_tier.md``. ``metaprompt_lite.run`` (``run_base_to_new``,
``run_domain_generalization``) and ``metaprompt_lite.zeroshot`` read only

    name, suite ("b2n" | "dg"), classnames (label order), templates (first = the single hand
    template), domains, images (indexable → uint8 [B, 3, S, S]), labels, domain, split

so a :class:`ResearchDataset` goes through the one engine unchanged: base/new classes come from
:func:`metaprompt_lite.splits.base_new_split` on the label order, and few-shot draws from
:func:`metaprompt_lite.splits.few_shot_indices` on the train pool (``split == 0``), as on the
offline tier.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from metaprompt_lite.research.catalog import RESEARCH_B2N, RESEARCH_DG, get_spec
from metaprompt_lite.research.images import DEFAULT_SIZE, LazyImages, exists_all
from metaprompt_lite.research.readers import READERS, Records, dataset_folder
from metaprompt_lite.splits import TEST, TRAIN

PATH_CHECK_SAMPLE = 32  # files checked at load time (all would mean 1.3M stat calls on ImageNet)


@dataclass
class ResearchDataset:
    """One of the papers' datasets, shaped like the offline suite's datasets (see module docstring)."""

    name: str
    suite: str
    classnames: list[str]
    templates: list[str]
    domains: list[str]
    images: LazyImages
    labels: torch.Tensor  # [N] long
    domain: torch.Tensor  # [N] long, index into ``domains``
    split: torch.Tensor  # [N] long, 0 = few-shot train pool, 1 = test pool, 2 = both (DG: splits.dg_pools)
    root: Path = field(default=Path("."))

    def __len__(self) -> int:
        return len(self.labels)

    def summary(self) -> str:
        pool, test = int((self.split != TEST).sum()), int((self.split != TRAIN).sum())
        return (f"{self.name} ({self.suite}): {len(self.classnames)} classes, {len(self.domains)} domain(s), "
                f"{pool} train-pool / {test} test images at {self.images.size}px, from {self.root}")


def _from_records(name: str, suite: str, templates: list[str], records: Records, root: Path,
                  size: int, workers: int | None) -> ResearchDataset:
    if not records.paths:
        raise FileNotFoundError(f"{name}: no images found under {root}")
    missing = exists_all(records.paths[:PATH_CHECK_SAMPLE] + records.paths[-PATH_CHECK_SAMPLE:])
    if missing:
        raise FileNotFoundError(
            f"{name}: {len(missing)} of the first/last image files listed are missing, e.g. {missing[0]}. "
            "Is the image folder extracted in the place the layout expects? (docs/research_tier.md)"
        )
    return ResearchDataset(
        name=name, suite=suite, classnames=records.classnames, templates=templates,
        domains=records.domain_names, images=LazyImages(records.paths, size, workers),
        labels=torch.tensor(records.labels, dtype=torch.long),
        domain=torch.tensor(records.domains, dtype=torch.long),
        split=torch.tensor(records.splits, dtype=torch.long), root=root,
    )


def load_research_dataset(name: str, root: str | os.PathLike, size: int = DEFAULT_SIZE,
                          workers: int | None = None) -> ResearchDataset:
    """Load a research dataset by name (one of ``RESEARCH_B2N`` or ``RESEARCH_DG``, case-insensitive)
    from the data root ``root`` (CoOp's ``$DATA``: it holds ``imagenet/``, ``oxford_pets/``, ...).

    Nothing is decoded here: only the split file / folders are read. ``size`` is the side of the
    centre crop (224 for ViT-B/16); ``workers`` the decoding threads (default min(8, CPUs)).
    """
    spec = get_spec(name)
    folder = dataset_folder(spec, root)
    records = READERS[spec.reader](spec, folder)
    return _from_records(spec.name, spec.suite, spec.templates, records, folder, size, workers)


__all__ = ["ResearchDataset", "load_research_dataset", "RESEARCH_B2N", "RESEARCH_DG"]
