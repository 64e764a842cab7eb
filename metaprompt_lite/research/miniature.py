"""Fabricate a miniature copy of a research dataset in its official on-disk layout.

Used by the tests (``tests/test_research_datasets.py``, ``tests/test_research_step.py``): a few small
generated JPEGs per class, a split file in CoOp's exact format, folder trees as CoOp / DomainBed
lay them out. The raw class names exercise the papers' clean-ups (``american_bulldog``,
``airplanes``, ``AnnualCrop``, ``Alarm_Clock``), so a loader that forgot one fails a test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from metaprompt_lite.research.catalog import DatasetSpec, clean_classname, get_spec

# raw (on-disk) class names per dataset; the rest of the classes are "<prefix>_class_<i>"
RAW_NAMES = {
    "OxfordPets": ["abyssinian", "american_bulldog"],
    "Caltech101": ["airplanes", "Faces", "accordion"],
    "EuroSAT": ["AnnualCrop", "SeaLake"],
    "Food101": ["apple_pie", "baby_back_ribs"],
    "UCF101": ["Apply_Eye_Makeup", "Band_Marching"],
    "SUN397": ["abbey", "airplane cabin"],
    "FGVCAircraft": ["707-320", "Boeing 717", "A300B4"],
    "ImageNet": ["tench", "goldfish", "great white shark"],
    "OfficeHome": ["Alarm_Clock", "Push_Pin"],
    "DomainNet": ["aircraft_carrier", "The_Eiffel_Tower"],
}
SPLIT_SIZES = {"train": 3, "val": 1, "test": 2}  # images per class in each split of the split file
DG_DOMAINS = {"PACS": ["art_painting", "cartoon", "photo"], "VLCS": ["Caltech101", "LabelMe", "SUN09"],
              "OfficeHome": ["Art", "Clipart", "Real World"], "DomainNet": ["clipart", "quickdraw", "real"]}


def _raw_names(spec: DatasetSpec, n_classes: int) -> list[str]:
    names = RAW_NAMES.get(spec.name, [])[:n_classes]
    return names + [f"{spec.name.lower()}_class_{i}" for i in range(len(names), n_classes)]


def _write_image(path: Path, seed: int, size: tuple[int, int]) -> None:
    """A non-square JPEG (so resize + centre-crop is exercised) whose colour depends on ``seed``."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 256, size=3)
    pixels = np.clip(colour + rng.integers(-20, 21, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)


def make_miniature(name: str, root: str | Path, n_classes: int = 4, image_size: tuple[int, int] = (40, 30),
                   splits: dict[str, int] | None = None) -> dict:
    """Write a miniature ``name`` under the data root ``root``; returns what a loader should find:
    ``{"classnames": cleaned names in label order, "counts": {split: images}, "domains": [...]}``."""
    spec = get_spec(name)
    splits = dict(SPLIT_SIZES if splits is None else splits)
    folder = Path(root) / spec.dirs[0]
    raw = _raw_names(spec, n_classes)
    seed = 0
    counts = {k: 0 for k in splits}

    def image(path: Path) -> None:
        nonlocal seed
        _write_image(path, seed, image_size if seed % 2 else image_size[::-1])
        seed += 1

    if spec.reader == "split_json":
        prefix = folder / spec.image_dir if spec.image_dir else folder
        split_json = {}
        for split, per_class in splits.items():
            items = []
            for label, cls in enumerate(raw):
                for k in range(per_class):
                    sub = f"cars_{split}" if spec.name == "StanfordCars" else cls
                    relpath = f"{sub}/{cls.replace(' ', '_')}_{split}_{k:04d}.jpg"
                    image(prefix / relpath)
                    items.append([relpath, label, cls])
            split_json[split] = items
            counts[split] = len(items)
        (folder / spec.split_file).write_text(json.dumps(split_json, indent=1))
    elif spec.reader == "imagenet":
        wnids = [f"n{label:08d}" for label in range(n_classes)]
        (folder / "classnames.txt").parent.mkdir(parents=True, exist_ok=True)
        (folder / "classnames.txt").write_text("".join(f"{w} {c}\n" for w, c in zip(wnids, raw)))
        for split, sub in (("train", "train"), ("test", "val")):
            for wnid in wnids:
                for k in range(splits[split]):
                    image(folder / spec.image_dir / sub / wnid / f"{wnid}_{k}.JPEG")
            counts[split] = n_classes * splits[split]
    elif spec.reader == "aircraft":
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "variants.txt").write_text("".join(f"{c}\n" for c in raw))
        for split, per_class in splits.items():
            lines = []
            for cls in raw:
                for _ in range(per_class):
                    image_id = f"{1000000 + seed:07d}"
                    image(folder / spec.image_dir / f"{image_id}.jpg")
                    lines.append(f"{image_id} {cls}\n")
            (folder / f"images_variant_{split}.txt").write_text("".join(lines))
            counts[split] = len(lines)
    elif spec.reader == "domainbed":
        domains = DG_DOMAINS[spec.name]
        per_class = sum(splits.values())
        for domain in domains:
            for cls in raw:
                for k in range(per_class):
                    image(folder / domain / cls / f"{k:05d}.jpg")
        counts = {"all": len(domains) * n_classes * per_class}
        return {"classnames": [clean_classname(c, spec.renames) for c in sorted(raw)], "counts": counts,
                "domains": sorted(domains), "folder": folder}
    return {"classnames": [clean_classname(c, spec.renames) for c in raw], "counts": counts,
            "domains": [spec.name], "folder": folder}
