"""Meta-train GRAM's (θ₀, r) for a method on the pretraining corpus: ``metaprompt-lite gram``.

Explained in ``notebooks/07_prometar_and_gram``. The meta-training itself is :func:`metaprompt_lite.core.gram.meta_train`;
this module is the job around it (load the corpus and the backbone, run it, save the artifact where
:func:`metaprompt_lite.gram_artifacts.artifact_path` looks, with a key of what made it). It sits above the
method recipes, which load the artifact (``metaprompt_lite.methods``).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from metaprompt_lite.core import gram
from metaprompt_lite.fastpath import FastEncoder
from metaprompt_lite.gram_artifacts import artifact_path, save_artifact
from metaprompt_lite.backbone import load_clip
from metaprompt_lite.data.corpus import load_corpus
from metaprompt_lite.methods import get_method
from metaprompt_lite.core.prompts import PromptedCLIP


def artifact_key(backbone_name: str, checkpoint_sha: str, prompt_config, config: gram.GramConfig) -> str:
    payload = json.dumps([backbone_name, checkpoint_sha, asdict(prompt_config), asdict(config)], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def build_artifact(method_name: str, corpus_dir: str | Path, model_name: str, pretrained: str | None,
                   config: gram.GramConfig = gram.GramConfig(), out: str | Path | None = None,
                   progress: bool = True) -> Path:
    """Meta-train GRAM's (θ₀, r) for ``method_name`` (``gram-coop`` / ``gram-ivlp``) on the
    pretraining corpus (never on benchmark images: the corpus holds none, see data/README.md) and
    save them where :func:`metaprompt_lite.gram_artifacts.artifact_path` looks. Returns the path."""
    method = get_method(method_name)
    if not method.gram:
        raise ValueError(f"{method_name!r} is not a GRAM method; use gram-coop or gram-ivlp")
    corpus, _ = load_corpus(corpus_dir)
    if len(corpus.styles) != len(corpus.images):
        raise ValueError(f"{corpus_dir}/corpus.json has {len(corpus.styles)} per-image styles (GRAM's meta-training "
                         f"domains) for {len(corpus.images)} images; rebuild the corpus with: "
                         f"metaprompt-lite data build --corpus {corpus_dir}")
    styles = torch.tensor(corpus.styles)
    captions = [caps[0] for caps in corpus.captions]
    torch.manual_seed(config.seed)
    backbone = load_clip(model_name, pretrained)
    model = PromptedCLIP(backbone, method.prompt, ["placeholder"], ["a photo of a {}."], encoder=FastEncoder())
    t0 = time.perf_counter()
    init, regulator, losses = gram.meta_train(model, corpus.images, captions, corpus.concepts, styles, config,
                                              progress)
    sha = hashlib.sha256(Path(pretrained).read_bytes()).hexdigest() if pretrained and Path(pretrained).is_file() else ""
    path = Path(out) if out else artifact_path(model_name, method_name)
    save_artifact(path, init, regulator, {
        "method": method_name, "model": model_name, "checkpoint_sha256": sha, "config": asdict(config),
        "key": artifact_key(model_name, sha, method.prompt, config), "query_loss_first": losses[:10],
        "query_loss_last": losses[-10:], "seconds": time.perf_counter() - t0,
        "corpus_images": len(corpus.images)})
    return path
