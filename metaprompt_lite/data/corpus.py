"""The pretraining corpus on disk: image–caption pairs and text-only sentences.

Written by ``metaprompt-lite data build --corpus`` (:mod:`metaprompt_lite.data.build`), read by the
pocket-CLIP pretraining (:mod:`metaprompt_lite.pretrain`) and GRAM's meta-training
(:mod:`metaprompt_lite.gram_build`). Not committed (about 5 minutes to build); what a checkpoint was
pretrained on is, as its *corpus manifest* (:func:`write_corpus_manifest`): every image's drawing,
concept, style and captions and every sentence, without the pixels (a few hundred kB), so that the
held-out policy is checked against the real corpus wherever the tests run.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


@dataclass
class ImageTextCorpus:
    """Image–caption pairs: ``images`` uint8 [N, 3, H, W]; ``captions[i]`` the captions of image i;
    ``concepts[i]`` its concept index; ``concept_names[c]`` the name used for concept-level targets;
    ``concept_ids[c]`` the concept's key in the suite manifest (e.g. an emoji codepoint), when known;
    ``variant[i]`` which rendering of its drawing image i is (0 plain, others on a random background,
    rotated, scaled), when known; ``styles[i]`` the index in ``style_names`` of image i's drawing style
    (e.g. ``"twemoji"``), when known (GRAM's meta-training domains; held-out sets by style)."""

    images: torch.Tensor
    captions: list[list[str]]
    concepts: torch.Tensor
    concept_names: list[str]
    concept_ids: list[str] = field(default_factory=list)
    variant: list[int] = field(default_factory=list)
    styles: list[int] = field(default_factory=list)
    style_names: list[str] = field(default_factory=list)


def load_corpus(corpus_dir: str | Path) -> tuple[ImageTextCorpus, list[str]]:
    """The corpus written by ``metaprompt-lite data build --corpus``: (image–caption pairs, text-only
    sentences). Raises FileNotFoundError naming the build command when it is missing."""
    folder = Path(corpus_dir)
    needed = [folder / name for name in ("images.npy", "corpus.json", "text.txt")]
    missing = [str(f) for f in needed if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"pretraining corpus incomplete: {missing} missing. Build it (not committed, ~5 min) with:\n"
            f"  metaprompt-lite data build --corpus {folder}")
    meta = json.loads((folder / "corpus.json").read_text())
    images = torch.from_numpy(np.load(folder / "images.npy"))
    if images.ndim != 4 or images.shape[1] != 3 or len(images) != len(meta["captions"]):
        raise ValueError(f"{folder}/images.npy has shape {tuple(images.shape)}; expected "
                         f"[{len(meta['captions'])}, 3, H, W]. Rebuild the corpus.")
    corpus = ImageTextCorpus(images=images, captions=meta["captions"],
                             concepts=torch.tensor(meta["concepts"]), concept_names=meta["concept_names"],
                             concept_ids=meta.get("concept_ids", []), variant=meta.get("variant", []),
                             styles=meta.get("styles", []), style_names=meta.get("style_names", []))
    text = [line for line in (folder / "text.txt").read_text().splitlines() if line]
    return corpus, text


def corpus_manifest_path(checkpoint: str | Path) -> Path:
    """Where a checkpoint's corpus manifest lives: beside it, ``pocket-clip.corpus.json.gz`` beside
    ``pocket-clip.safetensors``."""
    return Path(checkpoint).with_suffix(".corpus.json.gz")


def write_corpus_manifest(corpus_dir: str | Path, out: str | Path) -> Path:
    """Write the manifest of a built corpus: its ``corpus.json`` (everything but the pixels) and the
    sentences of ``text.txt``, as gzipped JSON with a fixed timestamp (the same corpus, the same bytes)."""
    folder, out = Path(corpus_dir), Path(out)
    manifest = {"corpus": json.loads((folder / "corpus.json").read_text()),
                "text": [line for line in (folder / "text.txt").read_text().splitlines() if line]}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(json.dumps(manifest, sort_keys=True).encode())
    tmp.replace(out)
    return out


def load_corpus_manifest(path: str | Path) -> tuple[dict, list[str]]:
    """(the corpus's ``corpus.json`` content, its sentences) from a corpus manifest."""
    with gzip.open(path, "rt") as f:
        manifest = json.load(f)
    return manifest["corpus"], manifest["text"]
