"""Load the committed offline suite: ``data/suite/<name>.png`` (image atlas) + ``<name>.json``.

Every file is checked against ``data/suite/MANIFEST.json`` (sha256) before use: a mismatch is an
error, never a silent use of other data.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metaprompt_lite.data.render import from_atlas
from metaprompt_lite.paths import data_dir
from metaprompt_lite.splits import base_new_split

# Suite v3, in three kinds like the papers' 11 datasets (data/README.md): familiar concepts, concepts the
# pocket CLIP never saw as images (their names only as text), and a look pretraining never showed.
B2N_KINDS = {"emoji-objects": "familiar", "cards": "familiar", "fashion": "familiar",
             "emoji-novel-objects": "unseen concepts", "emoji-novel-mixed": "unseen concepts",
             "emoji-novel-animals": "unseen concepts", "emoji-novel-food": "unseen concepts",
             "emoji-novel-places": "unseen concepts", "flags-pixel": "unseen look", "emoji-pixel": "unseen look"}
B2N_DATASETS = tuple(B2N_KINDS)
DG_BENCHMARKS = ("emoji-pacs", "flags-dg")
PROBES = ("emoji-unseen",)
BUILD_HINT = "rebuild it with `metaprompt-lite data build` (see data/README.md)"


class StoreError(RuntimeError):
    """The suite store is missing, incomplete or corrupt."""


@dataclass
class ImageDataset:
    """One dataset of the suite, all in memory.

    ``images`` uint8 [N, 3, 64, 64]; ``labels`` index ``classnames``; ``domain`` indexes ``domains``;
    ``split`` is 0 for the few-shot train pool, 1 for test (DG benchmarks: every image is 1 and the
    domain decides); ``drawing[i]`` is the source drawing of image i (package:file#element).
    """

    name: str
    suite: str
    classnames: list[str]
    templates: list[str]
    domains: list[str]
    images: torch.Tensor
    labels: torch.Tensor
    domain: torch.Tensor
    split: torch.Tensor
    drawing: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"ImageDataset({self.name!r}, suite={self.suite}, classes={len(self.classnames)}, "
                f"images={len(self)}, domains={self.domains})")


def store_dir(root: Path | None = None) -> Path:
    return Path(root) if root is not None else data_dir() / "suite"


def list_datasets(suite: str | None = None) -> list[str]:
    """Names of the datasets of ``suite`` ("b2n", "dg", "probe") or all of them."""
    groups = {"b2n": B2N_DATASETS, "dg": DG_BENCHMARKS, "probe": PROBES}
    if suite is None:
        return [*B2N_DATASETS, *DG_BENCHMARKS, *PROBES]
    if suite not in groups:
        raise ValueError(f"unknown suite {suite!r} — use one of {sorted(groups)}")
    return list(groups[suite])


def _manifest(root: Path) -> dict:
    path = root / "MANIFEST.json"
    if not path.is_file():
        raise StoreError(f"no suite store at {root} (MANIFEST.json missing) — restore it with `git checkout data/suite` "
                         f"or {BUILD_HINT}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise StoreError(f"{path} is corrupt (not JSON) — restore it with `git checkout data/suite` or {BUILD_HINT}") from error


def _read_checked(root: Path, filename: str, manifest: dict) -> bytes:
    path = root / filename
    if not path.is_file():
        raise StoreError(f"{path} is missing — restore it with `git checkout data/suite` or {BUILD_HINT}")
    data = path.read_bytes()
    expected = manifest["files"].get(filename)
    if expected is None:
        raise StoreError(f"{filename} is not listed in {root / 'MANIFEST.json'} — {BUILD_HINT}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise StoreError(f"checksum mismatch for {path}: sha256 {actual[:12]}… but the manifest says "
                         f"{expected[:12]}… (the file was changed or cut short) — restore it with "
                         f"`git checkout data/suite` or {BUILD_HINT}")
    return data


def drawing_source(drawing: str) -> str:
    """The package a drawing id (``package:file#element``) comes from, e.g. ``"openmoji"``."""
    return drawing.split(":")[0]


def split_by_source(dataset: ImageDataset, pool_sources: set[str] | tuple[str, ...]) -> ImageDataset:
    """A copy of ``dataset`` whose few-shot pool is every image drawn from a package in
    ``pool_sources`` (the part of ``drawing`` before ':') and whose test set is the rest.

    Used to run base-to-new on the probe (concepts the pocket CLIP never saw as images):
    ``split_by_source(load_dataset("emoji-unseen"), {"openmoji", "@iconify-json/twemoji"})``.
    Raises ValueError for a source the dataset does not have, or if a class would end up with no pool
    or no test image."""
    if isinstance(pool_sources, str):
        raise TypeError(f"pool_sources must be a set of package names, not the string {pool_sources!r}")
    drawn_from = [drawing_source(d) for d in dataset.drawing]
    sources = sorted(set(drawn_from))
    unknown = sorted(set(pool_sources) - set(sources))
    if unknown:
        raise ValueError(f"{dataset.name} has no drawing from {unknown}; its sources are {sources}")
    pool = torch.tensor([source in pool_sources for source in drawn_from])
    for label in range(len(dataset.classnames)):
        mine = dataset.labels == label
        for side, name in ((pool, "pool"), (~pool, "test")):
            if not (mine & side).any():
                raise ValueError(f"{dataset.name}: class {dataset.classnames[label]!r} has no {name} image "
                                 f"with pool_sources={sorted(pool_sources)}; the dataset's sources are {sources}")
    return replace(dataset, name=f"{dataset.name}[pool={'+'.join(sorted(pool_sources))}]", suite="b2n",
                   split=(~pool).long())


def load_dataset(name: str, root: str | Path | None = None) -> ImageDataset:
    """One dataset of the offline suite (verified against the manifest), cached per process."""
    if name not in list_datasets():
        raise ValueError(f"unknown dataset {name!r} — use one of {', '.join(list_datasets())}")
    return _load(name, str(store_dir(root)))


@lru_cache(maxsize=None)
def _load(name: str, root_str: str) -> ImageDataset:
    root = Path(root_str)
    manifest = _manifest(root)
    if name not in manifest.get("datasets", []):
        raise StoreError(f"dataset {name} is not in the store at {root} (incomplete build) — {BUILD_HINT}")
    meta = json.loads(_read_checked(root, f"{name}.json", manifest))
    png = _read_checked(root, f"{name}.png", manifest)
    grid = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    images = torch.from_numpy(from_atlas(grid, meta["count"], meta["size"]))
    return ImageDataset(name=name, suite=meta["suite"], classnames=list(meta["classnames"]),
                        templates=list(meta["templates"]), domains=list(meta["domains"]), images=images,
                        labels=torch.tensor(meta["labels"]), domain=torch.tensor(meta["domain"]),
                        split=torch.tensor(meta["split"]), drawing=list(meta["drawing"]))


def summary(dataset: ImageDataset) -> dict:
    """The row ``metaprompt-lite data list`` prints for one dataset."""
    base, new = base_new_split(len(dataset.classnames))
    test = dataset.split == 1 if dataset.suite != "dg" else torch.ones_like(dataset.split, dtype=torch.bool)
    per_class = torch.bincount(dataset.labels[test], minlength=len(dataset.classnames))
    return {"dataset": dataset.name, "suite": dataset.suite, "classes": len(dataset.classnames),
            "base": len(base), "new": len(new), "train_pool": int((dataset.split == 0).sum()),
            "test": int(test.sum()), "test_per_class": int(per_class.min()),
            "domains": ",".join(dataset.domains)}
