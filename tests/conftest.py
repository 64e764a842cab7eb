"""Shared fixtures: the tiny random CLIP and a small synthetic dataset (CPU, seconds)."""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from metaprompt_lite.backbone import load_clip
from metaprompt_lite.data.corpus import corpus_manifest_path, load_corpus_manifest
from metaprompt_lite.paths import POCKET_CHECKPOINT, TINY_MODEL, data_dir

ROOT = Path(__file__).resolve().parents[1]
CLASSNAMES = ["red square", "green circle", "blue triangle", "yellow star", "black cross", "white moon"]


def synthetic_dataset(n_classes: int = 6, per_class: int = 8, size: int = 32, n_domains: int = 1,
                      seed: int = 0) -> SimpleNamespace:
    """Images whose mean colour depends on the class and whose texture on the domain; half of each
    class/domain cell is the train pool (split 0), half the test pool (split 1)."""
    g = torch.Generator().manual_seed(seed)
    palette = torch.rand(n_classes, 3, 1, 1, generator=g) * 200
    images, labels, domain, split = [], [], [], []
    for d in range(n_domains):
        for c in range(n_classes):
            for k in range(per_class):
                noise = torch.rand(3, size, size, generator=g) * (30 + 20 * d)
                images.append((palette[c] + noise).clamp(0, 255).to(torch.uint8))
                labels.append(c)
                domain.append(d)
                split.append(k % 2)
    n = len(labels)
    return SimpleNamespace(
        name="synthetic", suite="dg" if n_domains > 1 else "b2n",
        classnames=CLASSNAMES[:n_classes] if n_classes <= len(CLASSNAMES) else [f"class {i}" for i in range(n_classes)],
        templates=["a photo of a {}.", "a drawing of a {}."],
        domains=[f"domain{d}" for d in range(n_domains)],
        images=torch.stack(images), labels=torch.tensor(labels), domain=torch.tensor(domain),
        split=torch.tensor(split), source=torch.arange(n),
    )


def import_script(path: str):
    """A script of the repository (``path`` relative to its root, e.g.
    ``experiments/image-recipes/image_recipes.py``) as a module named after the file, imported as
    ``python <path>`` would run it: its folder is on sys.path while it loads, so the bare-name imports
    at its top resolve. Imported once per session, so a script and the scripts importing it share
    one module."""
    script = ROOT / path
    if not script.is_file():
        raise FileNotFoundError(f"no script {path} in {ROOT}")
    sys.path.insert(0, str(script.parent))
    try:
        return importlib.import_module(script.stem)
    finally:
        sys.path.remove(str(script.parent))


def state_hash(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict (names and values): equal hashes = untouched weights and buffers."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def is_share_of(accuracy: float, n: int) -> bool:
    """``accuracy`` (%) is a whole number of correct images out of ``n``: a real accuracy over n images."""
    return n > 0 and abs(accuracy * n / 100 - round(accuracy * n / 100)) < 1e-6


def pretraining_corpus(which: str) -> tuple[dict, set[str]]:
    """(``corpus.json`` content, text sentences) of the committed pocket CLIP's pretraining corpus, from
    its committed corpus manifest (checked wherever the tests run, CI included), or of a corpus built
    in ``data/corpus`` (not committed: skipped when absent)."""
    if which == "pocket-clip":
        meta, text = load_corpus_manifest(corpus_manifest_path(data_dir() / POCKET_CHECKPOINT))
        return meta, set(text)
    corpus = data_dir() / "corpus" / "corpus.json"
    if not corpus.is_file():
        pytest.skip("pretraining corpus not built (metaprompt-lite data build --corpus)")
    return json.loads(corpus.read_text()), set((corpus.parent / "text.txt").read_text().splitlines())


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """Each test starts with the session's intra-op thread count: code run in-process (a benchmark worker's
    set-up, a script's) may set one thread, and a test's arithmetic (which GEMM kernel, which summation
    order) should not depend on the tests that ran before it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def backbone():
    torch.manual_seed(0)
    return load_clip(TINY_MODEL)


@pytest.fixture(scope="session")
def pocket():
    """The committed pocket CLIP (conv stem with BatchNorm): the backbone of every reported number."""
    from metaprompt_lite.paths import POCKET_CHECKPOINT, data_dir

    return load_clip("pocket-clip", data_dir() / POCKET_CHECKPOINT)


@pytest.fixture
def dataset():
    return synthetic_dataset()


@pytest.fixture
def dg_dataset():
    return synthetic_dataset(n_domains=3, per_class=4)
