"""Readers of the papers' on-disk layouts: each returns image records (path, label, split, domain)
and the class names in label order.

Explained in ``docs/research_tier.md``. Three base-to-new layouts (CoOp's ``DATASETS.md``) and one
domain-generalisation layout (DomainBed's):

- ``split_zhou_<Name>.json``: ``{"train": [[relpath, label, classname], ...], "val": [...], "test": [...]}``
  — CoOp's fixed splits. The few-shot train pool is ``train``, the test pool ``test``; ``val``
  (CoOp's model-selection split, unused by the papers' final numbers) is left out.
- ImageNet: one folder per WordNet id under ``images/train`` and ``images/val``, labels = sorted
  folder order (as CoOp's reader), names from ``classnames.txt``; ``val`` is the test pool.
- FGVCAircraft: ``variants.txt`` (label = line number) and ``images_variant_{train,test}.txt``.
- DomainBed: ``<root>/<domain>/<class>/<image>``; domains and classes in sorted folder order. Each
  image's split follows MetaPrompt's DG readers (``datasets/vlcs.py``, ``domainnet.py``, ``pacs.py``,
  ``office_home.py``): shots from a source domain's ``train`` split; a target scored on its ``test``
  split (VLCS, DomainNet) or on all its images (PACS, OfficeHome), where the tree has splits: Dassl's
  split folders (``<domain>/{train,crossval,test}/<class>``) or split lists (DomainNet's
  ``splits/<domain>_{train,test}.txt``, PACS's ``splits/<domain>_{train,crossval}_kfold.txt``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from metaprompt_lite.research.catalog import SPLIT_FOLDER_NAMES, DatasetSpec, clean_classname
from metaprompt_lite.splits import BOTH, TEST, TRAIN  # the values of ``dataset.split``
SPLITS = {"train": TRAIN, "test": TEST}  # split-file keys that are read ("val" is not)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Records:
    """Parallel lists, one entry per image, plus the label-ordered class names and the domains."""

    paths: list[str]
    labels: list[int]
    splits: list[int]
    domains: list[int]
    classnames: list[str]
    domain_names: list[str]


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _label_names(pairs: dict[int, str], where: str, renames: dict[str, str]) -> list[str]:
    """Class names in label order; labels must be exactly 0..C-1."""
    n = len(pairs)
    if sorted(pairs) != list(range(n)):
        missing = sorted(set(range(max(pairs) + 1)) - set(pairs)) if pairs else []
        raise ValueError(f"{where}: labels must be 0..C-1 without gaps; missing {missing[:10]}")
    return [clean_classname(pairs[i], renames) for i in range(n)]


def read_split_json(spec: DatasetSpec, folder: Path) -> Records:
    """CoOp's ``split_zhou_<Name>.json`` (paths relative to ``folder / spec.image_dir``)."""
    split_path = folder / spec.split_file
    if not split_path.is_file():
        raise FileNotFoundError(
            f"{spec.name}: the split file {split_path} is missing. Download {spec.split_file} "
            f"(links in CoOp's DATASETS.md, https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md) "
            f"and put it in {folder}. Expected layout under DATA:\n{spec.layout}"
        )
    with split_path.open() as f:
        split = json.load(f)
    absent = [k for k in SPLITS if k not in split]
    if absent:
        raise ValueError(f"{split_path}: no {absent} list; a CoOp split file has 'train', 'val' and 'test'")
    prefix = folder / spec.image_dir if spec.image_dir else folder
    paths, labels, splits, names = [], [], [], {}
    for key, value in SPLITS.items():
        for item in split[key]:
            if len(item) != 3:
                raise ValueError(f"{split_path}: entries are [relpath, label, classname], got {item!r}")
            relpath, label, classname = item
            label = int(label)
            if names.setdefault(label, classname) != classname:
                raise ValueError(f"{split_path}: label {label} is both {names[label]!r} and {classname!r}")
            paths.append(str(prefix / relpath))
            labels.append(label)
            splits.append(value)
    classnames = _label_names(names, str(split_path), spec.renames)
    return Records(paths, labels, splits, [0] * len(paths), classnames, [spec.name])


def read_imagenet(spec: DatasetSpec, folder: Path) -> Records:
    """``images/{train,val}/<wnid>/*`` with names from ``classnames.txt``."""
    names_file = folder / "classnames.txt"
    if not names_file.is_file():
        raise FileNotFoundError(f"ImageNet: {names_file} is missing (one '<wnid> <class name>' per line; "
                                f"from CoOp's DATASETS.md). Expected layout under DATA:\n{spec.layout}")
    wnid_names = {}
    for line in names_file.read_text().splitlines():
        if line.strip():
            wnid, _, name = line.strip().partition(" ")
            wnid_names[wnid] = name.strip()
    image_root = folder / spec.image_dir
    train_dirs = _visible_dirs(image_root / "train") if (image_root / "train").is_dir() else []
    if not train_dirs:
        raise FileNotFoundError(f"ImageNet: no class folders in {image_root / 'train'}. "
                                f"Expected layout under DATA:\n{spec.layout}")
    wnids = [d.name for d in train_dirs]
    unnamed = [w for w in wnids if w not in wnid_names]
    if unnamed:
        raise ValueError(f"ImageNet: {len(unnamed)} folders have no name in {names_file}, e.g. {unnamed[:3]}")
    label_of = {w: i for i, w in enumerate(wnids)}
    paths, labels, splits = [], [], []
    for split_name, value in SPLITS.items():
        sub = image_root / ("train" if split_name == "train" else "val")
        if not sub.is_dir():
            raise FileNotFoundError(f"ImageNet: {sub} is missing. Expected layout under DATA:\n{spec.layout}")
        for class_dir in _visible_dirs(sub):
            if class_dir.name not in label_of:
                raise ValueError(f"ImageNet: {class_dir} is not a training class folder; sort the validation "
                                 "images into <wnid> folders (as CoOp's layout expects)")
            for file in _image_files(class_dir):
                paths.append(str(file))
                labels.append(label_of[class_dir.name])
                splits.append(value)
    classnames = [clean_classname(wnid_names[w], spec.renames) for w in wnids]
    return Records(paths, labels, splits, [0] * len(paths), classnames, [spec.name])


def read_aircraft(spec: DatasetSpec, folder: Path) -> Records:
    """FGVC-Aircraft's own lists: ``variants.txt`` and ``images_variant_{train,test}.txt``."""
    variants_file = folder / "variants.txt"
    if not variants_file.is_file():
        raise FileNotFoundError(f"FGVCAircraft: {variants_file} is missing. Expected layout under DATA:\n{spec.layout}")
    variants = [line.strip() for line in variants_file.read_text().splitlines() if line.strip()]
    label_of = {v: i for i, v in enumerate(variants)}
    paths, labels, splits = [], [], []
    for split_name, value in SPLITS.items():
        list_file = folder / f"images_variant_{split_name}.txt"
        if not list_file.is_file():
            raise FileNotFoundError(f"FGVCAircraft: {list_file} is missing. Expected layout under DATA:\n{spec.layout}")
        for line in list_file.read_text().splitlines():
            if not line.strip():
                continue
            image_id, _, variant = line.strip().partition(" ")
            if variant not in label_of:
                raise ValueError(f"{list_file}: variant {variant!r} is not in {variants_file}")
            paths.append(str(folder / spec.image_dir / f"{image_id}.jpg"))
            labels.append(label_of[variant])
            splits.append(value)
    classnames = [clean_classname(v, spec.renames) for v in variants]
    return Records(paths, labels, splits, [0] * len(paths), classnames, [spec.name])


DG_SPLITS = ("train", "crossval", "val", "test")  # the split names of Dassl's DG folders and lists


def dg_split(name: str, test_all: bool) -> int | None:
    """The ``split`` of a DG image in on-disk split ``name``: ``train`` is drawn from (and scored too
    where a target is scored whole, ``test_all``), ``test`` is scored, ``crossval``/``val`` are scored
    only where the target is scored whole and are left out otherwise (None); ``full``/``all`` is both."""
    name = name.lower()
    if name == "train":
        return BOTH if test_all else TRAIN
    if name == "test":
        return TEST
    if name in ("full", "all"):
        return BOTH
    return TEST if test_all else None


def _split_lists(folder: Path, domain: str) -> dict[str, str]:
    """{image path: split name} from a DG tree's split lists for one domain, {} where it has none:
    ``splits/<domain>_<split>.txt`` in the dataset folder (DomainNet; paths relative to it) or
    ``splits/<domain>_<split>_kfold.txt`` beside it (PACS's ``images/``; paths relative to it)."""
    listed = {}
    for splits_dir in (folder / "splits", folder.parent / "splits"):
        for split in DG_SPLITS:
            for file in (splits_dir / f"{domain}_{split}.txt", splits_dir / f"{domain}_{split}_kfold.txt"):
                if file.is_file():
                    for line in file.read_text().splitlines():
                        if line.strip():
                            listed[str(folder / line.split()[0])] = split
    return listed


def _domain_images(domain_dir: Path, folder: Path, test_all: bool) -> list[tuple[Path, str, int]]:
    """(image, class folder name, split) of one DG domain: from its split lists, else from its split
    folders (train/test preferred over a complete ``full``/``all`` one), else every image is both."""
    listed = _split_lists(folder, domain_dir.name)
    children = _visible_dirs(domain_dir)
    if children and all(c.name.lower() in SPLIT_FOLDER_NAMES for c in children):
        split_dirs = [c for c in children if c.name.lower() in DG_SPLITS] or children
        pairs = [(class_dir, dg_split(split_dir.name, test_all)) for split_dir in split_dirs
                 for class_dir in _visible_dirs(split_dir)]
    else:
        pairs = [(class_dir, BOTH) for class_dir in children]
    images = []
    for class_dir, split in pairs:
        for file in _image_files(class_dir):
            if listed:
                split = dg_split(listed[str(file)], test_all) if str(file) in listed else None
            if split is not None:
                images.append((file, class_dir.name, split))
    return images


def read_domainbed(spec: DatasetSpec, folder: Path) -> Records:
    """``<domain>/<class>/<image>``, each image with its DG split (:func:`_domain_images`; the spec's
    ``dg_test`` says whether a target is scored on its test split or on all its images)."""
    domain_dirs = [d for d in _visible_dirs(folder) if d.name.lower() not in ("splits", "split_fewshot")]
    if len(domain_dirs) < 2:
        raise FileNotFoundError(f"{spec.name}: found {len(domain_dirs)} domain folders in {folder}; "
                                f"domain generalisation needs at least 2. Expected layout under DATA:\n{spec.layout}")
    per_domain = {d.name: _domain_images(d, folder, spec.dg_test == "all") for d in domain_dirs}
    empty = [name for name, images in per_domain.items() if not images]
    if empty:
        raise FileNotFoundError(f"{spec.name}: domains {empty} have no class folders. Expected layout:\n{spec.layout}")
    raw_classes = sorted({c for images in per_domain.values() for _, c, _ in images})
    label_of = {c: i for i, c in enumerate(raw_classes)}
    paths, labels, splits, domains = [], [], [], []
    for d, images in enumerate(per_domain.values()):
        for file, class_name, split in images:
            paths.append(str(file))
            labels.append(label_of[class_name])
            splits.append(split)
            domains.append(d)
    classnames = [clean_classname(c, spec.renames) for c in raw_classes]
    return Records(paths, labels, splits, domains, classnames, list(per_domain))


READERS = {"split_json": read_split_json, "imagenet": read_imagenet, "aircraft": read_aircraft,
           "domainbed": read_domainbed}


def dataset_folder(spec: DatasetSpec, root: str | os.PathLike) -> Path:
    """The first of ``spec.dirs`` that exists under ``root``, or a FileNotFoundError that names the
    expected layout and where to get the data."""
    root = Path(root).expanduser()
    for name in spec.dirs:
        if (root / name).is_dir():
            return root / name
    tried = ", ".join(str(root / d) for d in spec.dirs)
    raise FileNotFoundError(
        f"research dataset {spec.name!r} not found: no folder {tried}.\n"
        f"Expected layout under the data root ({root}):\n{spec.layout}\n"
        f"Get the data: {spec.source}.\n"
        "See docs/research_tier.md ('Data preparation'). Offline, use the embedded tier instead "
        "(its datasets need no download)."
    )
