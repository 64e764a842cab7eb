"""Optional: fetch a base-to-new dataset's images with ``torchvision.datasets`` and link them into
CoOp's layout.

Explained in ``docs/research_tier.md``. Loading always goes through CoOp's layout
(:mod:`metaprompt_lite.research.readers`); this module only saves a manual download where
torchvision has one, then makes the symbolic link CoOp's layout expects, e.g.

    torchvision.datasets.Flowers102(DATA/_torchvision, download=True)
    DATA/oxford_flowers/jpg  ->  DATA/_torchvision/flowers-102/jpg

The split files (``split_zhou_<Name>.json``) are CoOp's and are not in torchvision: download them
from the links in CoOp's ``DATASETS.md``. ImageNet, StanfordCars (original URLs gone) and UCF101
(CoOp uses its own middle-frame extraction) cannot be fetched this way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from metaprompt_lite.research.catalog import get_spec

TORCHVISION_DIR = "_torchvision"  # under DATA: where torchvision's own folder trees go


@dataclass(frozen=True)
class TorchvisionSource:
    """``torchvision.datasets.<cls>(DATA/<root>, download=True)``, then link each
    ``DATA/<root>/<src>`` as ``DATA/<dst>`` (no links when torchvision's tree is CoOp's already)."""

    cls: str
    root: str
    links: tuple[tuple[str, str], ...] = ()


SOURCES: dict[str, TorchvisionSource] = {
    "Caltech101": TorchvisionSource("Caltech101", TORCHVISION_DIR, (
        ("caltech101/101_ObjectCategories", "caltech-101/101_ObjectCategories"),)),
    "OxfordPets": TorchvisionSource("OxfordIIITPet", TORCHVISION_DIR, (
        ("oxford-iiit-pet/images", "oxford_pets/images"),
        ("oxford-iiit-pet/annotations", "oxford_pets/annotations"))),
    "Flowers102": TorchvisionSource("Flowers102", TORCHVISION_DIR, (("flowers-102/jpg", "oxford_flowers/jpg"),)),
    "Food101": TorchvisionSource("Food101", "."),  # DATA/food-101/images, CoOp's layout already
    "FGVCAircraft": TorchvisionSource("FGVCAircraft", TORCHVISION_DIR, (("fgvc-aircraft-2013b/data", "fgvc_aircraft"),)),
    "SUN397": TorchvisionSource("SUN397", "sun397"),  # DATA/sun397/SUN397
    "DTD": TorchvisionSource("DTD", TORCHVISION_DIR, (("dtd/dtd/images", "dtd/images"),)),
    "EuroSAT": TorchvisionSource("EuroSAT", "."),  # DATA/eurosat/2750
}


def link_into_layout(source: TorchvisionSource, data_root: str | os.PathLike) -> list[Path]:
    """Create the symbolic links of ``source`` under ``data_root``; returns the links (existing ones kept)."""
    data_root = Path(data_root)
    made = []
    for src, dst in source.links:
        target, link = data_root / source.root / src, data_root / dst
        if not target.exists():
            raise FileNotFoundError(f"torchvision did not create {target}; its folder layout may have changed")
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target.resolve(), target_is_directory=True)
        made.append(link)
    return made


def fetch_with_torchvision(name: str, data_root: str | os.PathLike, download: bool = True) -> str:
    """Download ``name``'s images with torchvision (needs internet) and link them into CoOp's layout.
    Returns what is still to do by hand (the split file)."""
    import torchvision.datasets

    spec = get_spec(name)
    if spec.name not in SOURCES:
        raise ValueError(f"{spec.name} cannot be fetched with torchvision; get it from {spec.source}. "
                         f"Expected layout:\n{spec.layout}")
    source = SOURCES[spec.name]
    root = Path(data_root) / source.root
    root.mkdir(parents=True, exist_ok=True)
    getattr(torchvision.datasets, source.cls)(str(root), download=download)
    link_into_layout(source, data_root)
    if spec.reader == "split_json":
        return (f"{spec.name}: images ready; now download {spec.split_file} into "
                f"{Path(data_root) / spec.dirs[0]} (links in CoOp's DATASETS.md)")
    return f"{spec.name}: ready"
