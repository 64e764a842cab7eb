"""Build the offline benchmark suite (committed) and the pretraining corpus (not committed).

``metaprompt-lite data build`` runs :func:`build`: it takes the plan of :mod:`metaprompt_lite.data.plan`
(which drawing goes into which dataset, class, split and domain, and which into the corpus), renders
every planned image (:mod:`metaprompt_lite.data.render`) and writes the store (one PNG atlas and one JSON
per dataset, ``manifest.csv``, ``MANIFEST.json``) and the corpus (``images.npy``, ``corpus.json``,
``text.txt``). Rendering is seeded by each image's drawing and variant, so the build is byte-identical
on every run.

Every image records its *drawing* (package:file#element); a drawing used by the suite is never in
the corpus (checked at the end of the build and by the tests). Each corpus drawing is rendered plain
and, by default (``corpus_variants=3``, ``--corpus-variants``), as 2 seeded variants the way the suite
renders its own (background, rotation, scale, shift; photos: a crop), with the same captions;
``--corpus-variants 1`` gives the plain-only corpus of the previous checkpoint (the comparison is in
``experiments/corpus-variants/``).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from metaprompt_lite.data import render
from metaprompt_lite.data.catalog import Drawing
from metaprompt_lite.data.plan import SUITES, TEMPLATES, Item, Plan, make_plan, text_corpus_extras
from metaprompt_lite.data.sources import LICENCES, Sources

STORE_VERSION = 3  # 2: per-class style split of pool/test; 3: suite v3 (novel categories, the pixel look)
# renderings per corpus drawing: plain + 2 seeded variants (the committed checkpoint's corpus). The
# suite shows most of its images on a coloured background, rotated and scaled, which plain drawings
# never teach: on a plain-only corpus (`--corpus-variants 1`, the previous checkpoint's) zero-shot on
# those was a third of that on plain ones (experiments/corpus-variants/)
CORPUS_VARIANTS = 3


# --------------------------------------------------------------------------- producing images
def produce(items: list[Item], progress: bool = True, desc: str = "render") -> tuple[np.ndarray, list[str]]:
    """Render every item (each drawing once), uint8 [N, 3, SIZE, SIZE], in item order, and the ids of the
    drawings that came out empty: a render error (the item is left white) or nothing visible (a
    transparent image: the item shows only its variant's background)."""
    unique = list(dict.fromkeys(item.drawing for item in items))
    with ThreadPoolExecutor(max_workers=2) as pool:  # rsvg-convert runs as a subprocess
        rendered = dict(zip(unique, tqdm(pool.map(_safe_load, unique), total=len(unique), desc=desc,
                                         disable=not progress, leave=False)))
    out = np.zeros((len(items), 3, render.SIZE, render.SIZE), dtype=np.uint8)
    for i, item in enumerate(items):
        image = rendered[item.drawing]
        seed = render.seed_of(item.drawing.id, item.variant)
        maker = render.photo_variant if item.drawing.photo else render.variant
        out[i] = maker(image, seed, plain=item.variant == 0) if image is not None else 255
        if item.look == "pixel":
            out[i] = render.pixelate(out[i])
    empty = sorted(d.id for d, image in rendered.items()
                   if image is None or ("A" in image.getbands() and image.getchannel("A").getbbox() is None))
    return out, empty


def _safe_load(drawing: Drawing) -> Image.Image | None:
    try:
        return drawing.load()
    except Exception as error:  # a broken file must not stop the build; it is reported
        print(f"warning: cannot render {drawing.id}: {error}", file=sys.stderr)
        return None


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


MANIFEST_COLUMNS = ("dataset", "index", "split", "label", "classname", "concept", "domain", "package",
                    "version", "file", "drawing", "variant", "licence")


def write_dataset(out: Path, name: str, plan: Plan, sources: Sources, progress: bool) -> tuple[dict, list[dict]]:
    """Render one dataset into ``<name>.png`` (atlas) + ``<name>.json``; returns (checksums, manifest rows)."""
    items = plan.datasets[name]
    images, empty = produce(items, progress, desc=name)
    if empty:
        raise RuntimeError(f"{name}: {len(empty)} evaluation drawings rendered empty: {empty[:5]}; an evaluation "
                           "image must show its drawing (check the source package and cairosvg/librsvg versions)")
    classnames = plan.classnames[name]
    domains = plan.domains[name]
    png = _png_bytes(render.atlas(images))
    meta = {
        "name": name, "suite": SUITES[name], "version": STORE_VERSION, "size": render.SIZE, "count": len(items),
        "classnames": classnames, "templates": list(TEMPLATES[name]), "domains": domains,
        "labels": [classnames.index(i.classname) for i in items],
        "domain": [domains.index(i.domain) for i in items],
        "split": [0 if i.split == "pool" else 1 for i in items],
        "drawing": [i.drawing.id for i in items],
    }
    meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    (out / f"{name}.png").write_bytes(png)
    (out / f"{name}.json").write_bytes(meta_bytes)
    rows = [{"dataset": name, "index": k, "split": i.split, "label": meta["labels"][k], "classname": i.classname,
             "concept": i.concept, "domain": i.domain, "package": i.drawing.package,
             "version": sources.version(i.drawing.package).split("@")[-1], "file": i.drawing.file,
             "drawing": i.drawing.id, "variant": i.variant, "licence": LICENCES.get(i.drawing.package, "")}
            for k, i in enumerate(items)]
    return {f"{name}.png": _sha256(png), f"{name}.json": _sha256(meta_bytes)}, rows


def expand_variants(items: list[Item], variants: int = CORPUS_VARIANTS) -> list[Item]:
    """Each corpus item as ``variants`` images of its drawing: variant 0 plain, the others on a random
    background, rotated, scaled and shifted (:func:`render.variant`, seeded by drawing and variant, as
    for the suite's images); captions and concept are the item's."""
    if variants < 1:
        raise ValueError(f"variants must be at least 1, got {variants}")
    return [dataclasses.replace(item, variant=v) for item in items for v in range(variants)]


def write_corpus(out: Path, plan: Plan, suite_drawings: set[str], extra_text: list[str], progress: bool,
                 variants: int = CORPUS_VARIANTS) -> dict:
    """The pretraining corpus (git-ignored): images.npy, corpus.json, text.txt. Each drawing gives
    ``variants`` images (:func:`expand_variants`)."""
    leaked = {i.drawing.id for i in plan.corpus} & suite_drawings
    if leaked:
        raise AssertionError(f"evaluation drawings in the pretraining corpus: {sorted(leaked)[:5]}")
    out.mkdir(parents=True, exist_ok=True)
    items = expand_variants(plan.corpus, variants)
    images, empty = produce(items, progress, desc="corpus")
    np.save(out / "images.npy", images)
    concepts = sorted({i.concept for i in items})
    concept_index = {c: k for k, c in enumerate(concepts)}
    names = {}
    for i in items:
        names.setdefault(i.concept, i.classname)
    styles = sorted({i.domain for i in items})
    meta = {"b2n_concept_images": plan.b2n_concept_images, "variants": variants,
            "captions": [list(i.captions) for i in items],
            "concepts": [concept_index[i.concept] for i in items],
            "concept_names": [names[c] for c in concepts], "concept_ids": concepts,
            "styles": [styles.index(i.domain) for i in items], "style_names": styles,
            "drawings": [i.drawing.id for i in items], "variant": [i.variant for i in items]}
    (out / "corpus.json").write_text(json.dumps(meta))
    sentences = sorted({c for i in plan.corpus for c in i.captions} | set(extra_text))
    (out / "text.txt").write_text("\n".join(sentences) + "\n")
    # the empty drawings' images stay in the corpus, as in the committed checkpoint's (data/README.md)
    return {"images": len(images), "concepts": len(concepts), "sentences": len(sentences), "empty_drawings": empty}


def listed_datasets(store: Path) -> list[str]:
    """The datasets the store's ``MANIFEST.json`` lists (none when it has no readable manifest)."""
    try:
        listed = json.loads((store / "MANIFEST.json").read_text()).get("datasets", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [str(name) for name in listed] if isinstance(listed, list) else []


def check_no_fewer(store: Path, wanted: list[str], missing: dict) -> None:
    """Refuse a build of ``wanted`` that would drop datasets the store's manifest lists."""
    dropped = [name for name in listed_datasets(store) if name not in wanted]
    if dropped:
        why = f" (sources missing: {', '.join(sorted(missing)[:3])})" if missing else ""
        raise ValueError(f"this build would write {len(wanted)} datasets into {store} and drop {len(dropped)} that its "
                         f"MANIFEST.json lists ({', '.join(dropped[:4])}{', ...' if len(dropped) > 4 else ''}){why}, "
                         "leaving them unreadable — provide their sources (without --no-install, or --sources DIR), "
                         "build into another --store, or pass --allow-fewer to replace the manifest anyway")


def build(store: Path, corpus_dir: Path | None, sources: Sources, datasets: list[str] | None = None,
          progress: bool = True, b2n_concept_images: bool = True, corpus_variants: int = CORPUS_VARIANTS,
          clipart: bool = False, allow_fewer: bool = False) -> dict:
    """Plan, render and write the suite (and the corpus if ``corpus_dir``). Returns a report;
    ``report["missing"]`` lists datasets that could not be built and why (with install lines).
    ``b2n_concept_images=False`` keeps every image of the object-category emoji B2N concepts out of the corpus
    (their captions stay, as text only); ``corpus_variants`` renderings per corpus drawing
    (:func:`expand_variants`); ``clipart=True`` adds the Tux Paint / Openclipart images
    (:func:`~metaprompt_lite.data.plan.plan_clipart`, an experiment: ``experiments/clipart/``). The suite is
    the same either way. A build that would write fewer datasets than the store's ``MANIFEST.json`` lists
    (sources missing, or ``datasets`` a subset) is refused before anything is written, unless
    ``allow_fewer``: the new manifest would make the others unreadable, and offline they cannot be rebuilt."""
    t0 = time.perf_counter()
    plan, glosses = make_plan(sources, b2n_concept_images, clipart=clipart and corpus_dir is not None)
    wanted = [n for n in SUITES if n in plan.datasets and (datasets is None or n in datasets)]
    if not allow_fewer:
        check_no_fewer(store, wanted, plan.missing)
    store.mkdir(parents=True, exist_ok=True)
    checksums, rows = {}, []
    for name in wanted:
        sums, dataset_rows = write_dataset(store, name, plan, sources, progress)
        checksums.update(sums)
        rows += dataset_rows
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    manifest_csv = buffer.getvalue().encode()
    (store / "manifest.csv").write_bytes(manifest_csv)
    checksums["manifest.csv"] = _sha256(manifest_csv)
    summary = {"version": STORE_VERSION, "size": render.SIZE, "datasets": wanted, "files": checksums,
               "sources": {p: sources.version(p) for p in sorted({r["package"] for r in rows})},
               "incomplete": sorted(k for k in plan.missing if not k.startswith("clipart"))}  # corpus only
    (store / "MANIFEST.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    report = {"datasets": wanted, "missing": plan.missing, "store_seconds": time.perf_counter() - t0}
    if corpus_dir is not None:
        suite_drawings = {r["drawing"] for r in rows}
        for name, items in plan.datasets.items():  # also datasets not written this time
            suite_drawings |= {i.drawing.id for i in items}
        report["corpus"] = write_corpus(corpus_dir, plan, suite_drawings, text_corpus_extras(plan, glosses), progress,
                                         corpus_variants)
    report["seconds"] = time.perf_counter() - t0
    return report
