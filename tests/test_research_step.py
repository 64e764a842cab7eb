"""The research-tier path with a real-shaped ViT-B/16 (open_clip ``ViT-B-16``, random weights, CPU):
one training step of every method on a miniature research dataset at 224 px, batch 2.

Random weights test shapes, wiring and gradients, not accuracy. ProMetaR's second-order step and
the GRAM meta-training are slow on a CPU (``@pytest.mark.slow``; deselect with ``-m "not slow"``).
"""

from __future__ import annotations

import math

import pytest
import torch

from metaprompt_lite.backbone import load_clip
from metaprompt_lite.core.loop import Batch, make_generator
from metaprompt_lite.optim import OptimConfig
from metaprompt_lite.engine import augment
from metaprompt_lite.methods import get_method, preset, prompt_templates
from metaprompt_lite.core.prompts import PromptedCLIP
from metaprompt_lite.research import load_research_dataset
from metaprompt_lite.research.miniature import make_miniature
from metaprompt_lite.splits import base_new_split, few_shot_indices, select_classes
from metaprompt_lite.core.steps import compute_logits
from metaprompt_lite.methods import start_training

MODEL = "ViT-B-16"
BATCH = 2


@pytest.fixture(scope="module")
def vit_b16():
    torch.manual_seed(0)
    backbone = load_clip(MODEL, None)
    assert (backbone.image_size, backbone.vision_layers, backbone.text_layers) == (224, 12, 12)
    return backbone


@pytest.fixture(scope="module")
def research_b2n(tmp_path_factory):
    root = tmp_path_factory.mktemp("DATA")
    make_miniature("OxfordPets", root, n_classes=4, splits={"train": 2, "val": 0, "test": 1})
    return load_research_dataset("OxfordPets", root)


@pytest.fixture(scope="module")
def research_dg(tmp_path_factory):
    root = tmp_path_factory.mktemp("DATA_DG")
    make_miniature("PACS", root, n_classes=2, splits={"train": 1})
    return load_research_dataset("PACS", root)


def _start(model: PromptedCLIP, method, extras: dict | None = None, cross_domain: bool = False):
    """Training state and step at the method's paper learning rate (4 scheduled steps, seed 1)."""
    _, paper, _ = preset(method.name, "paper")
    optim = OptimConfig(lr=paper.lr, batch_size=BATCH, epochs=1)
    return start_training(model, method, optim, 4, seed=1, cross_domain=cross_domain, extras=extras)


def _b2n_batch(dataset, seed: int = 1) -> tuple[Batch, list[str]]:
    """Two images of two different base classes from the few-shot draw, augmented as in training."""
    base, _ = base_new_split(len(dataset.classnames))
    pool = (dataset.split == 0).nonzero().flatten()
    index, labels = select_classes(dataset.labels[pool], base)
    shots = few_shot_indices(labels, 1, seed)[:BATCH]
    images = augment(dataset.images[pool[index[shots]]], make_generator(seed))
    assert images.shape == (BATCH, 3, 224, 224) and labels[shots].unique().numel() == BATCH
    return Batch(images, labels[shots], torch.zeros(BATCH, dtype=torch.long)), [dataset.classnames[i] for i in base]


def _step_changes_prompts(backbone, dataset, name: str, extras_fn=None, **overrides) -> dict:
    method = get_method(name, **overrides)
    batch, classnames = _b2n_batch(dataset)
    model = PromptedCLIP(backbone, method.prompt, classnames, prompt_templates(method, dataset.templates))
    before = {k: v.detach().clone() for k, v in model.prompts.state_dict().items()}
    state, step = _start(model, method, extras_fn(model) if extras_fn else None)
    losses = step(state, batch)
    assert losses and all(math.isfinite(v) for v in losses.values()), losses
    changed = [k for k, v in model.prompts.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, f"{name}: no prompt parameter moved"
    return losses


def test_zsclip_forward(vit_b16, research_b2n):
    method = get_method("zsclip")
    batch, classnames = _b2n_batch(research_b2n)
    model = PromptedCLIP(vit_b16, method.prompt, classnames, research_b2n.templates[:1])
    with torch.no_grad():
        logits = compute_logits(model, method, batch.images).logits
    assert logits.shape == (BATCH, len(classnames)) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["coop", "cocoop", "ivlp", "maple"])
def test_supervised_step(vit_b16, research_b2n, name):
    _step_changes_prompts(vit_b16, research_b2n, name)


def test_metaprompt_first_order_step(vit_b16, research_b2n):
    """The clean update: the miniature has 2 base classes, so each class group holds one class, and the
    official update (``metaprompt``) skips such query groups as the official loop does."""
    losses = _step_changes_prompts(vit_b16, research_b2n, "metaprompt-clean", meta_order=1)
    assert "query_loss" in losses  # the cross-class episodes ran


@pytest.mark.slow
def test_metaprompt_cross_domain_step(vit_b16, research_dg):
    """MetaPrompt's DG update (vision prompts adapt across the source domains in the batch)."""
    method = get_method("metaprompt")
    source = (research_dg.domain != 0).nonzero().flatten()
    pick = source[few_shot_indices(research_dg.labels[source], 1, 1, groups=research_dg.domain[source])]
    pick = pick[research_dg.labels[pick] == 0][:BATCH]  # class 0 from two source domains
    _, domains = research_dg.domain[pick].unique(return_inverse=True)
    batch = Batch(augment(research_dg.images[pick], make_generator(1)), research_dg.labels[pick], domains)
    model = PromptedCLIP(vit_b16, method.prompt, research_dg.classnames, research_dg.templates[:1])
    state, step = _start(model, method, cross_domain=True)
    losses = step(state, batch)
    assert "query_loss" in losses and all(math.isfinite(v) for v in losses.values())


@pytest.mark.slow
def test_prometar_step(vit_b16, research_b2n):
    """Second-order meta-regularisation through ViT-B/16: ~15 s alone on 2 CPU cores."""
    losses = _step_changes_prompts(vit_b16, research_b2n, "prometar")
    assert {"loss", "reg", "query_loss"} <= set(losses)


@pytest.mark.slow
def test_gram_coop_step(vit_b16, research_b2n, tmp_path):
    """GRAM needs its meta-learned (θ₀, r): meta-train one first-order step on two image–caption
    pairs per style, save the artifact, load it and take one regulated downstream step."""
    from metaprompt_lite.core.gram import GramConfig, meta_train
    from metaprompt_lite.gram_artifacts import load_gram, save_artifact

    method = get_method("gram-coop")
    images = augment(research_b2n.images[torch.arange(4)], make_generator(0))
    captions = ["a small dog on grass", "a cat on a sofa", "a dog in a park", "a white cat"]
    meta_model = PromptedCLIP(vit_b16, method.prompt, ["placeholder"])
    init, regulator, losses = meta_train(meta_model, images, captions, torch.tensor([0, 1, 0, 1]),
                                         torch.tensor([0, 0, 1, 1]),
                                         GramConfig(meta_steps=1, pairs=2, first_order=True), progress=False)
    assert len(losses) == 1 and math.isfinite(losses[0])
    path = tmp_path / "gram" / f"{MODEL}-gram-coop.pt"
    save_artifact(path, init, regulator, {"backbone": MODEL})
    _step_changes_prompts(vit_b16, research_b2n, "gram-coop",
                          extras_fn=lambda model: {"regulator": load_gram(model, path)})


def test_full_research_run_one_step(vit_b16, research_b2n):
    """loader → run_base_to_new (few-shot draw, one CoOp step, base and new evaluation) on ViT-B/16."""
    from metaprompt_lite.run import RunConfig, run_base_to_new

    config = RunConfig(method="coop", dataset=research_b2n.name, model=MODEL, shots=1, seed=1,
                       optim=OptimConfig(lr=0.002, batch_size=BATCH, epochs=1, max_steps=1), progress=False)
    result = run_base_to_new(config, research_b2n, vit_b16)
    assert len(result["history"]) == 1
    from metaprompt_lite.engine import harmonic_mean

    assert result["hm"] == pytest.approx(harmonic_mean(result["base"], result["new"]))


def test_openai_weights_offline_give_a_clear_error(monkeypatch):
    """The research tier's --pretrained openai needs a download; offline, load_clip says so and
    points at the offline models. HF_HUB_OFFLINE makes the hub fail at once instead of retrying."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError) as error:
        load_clip(MODEL, "openai")
    message = str(error.value)
    assert "openai" in message and "no internet" in message
    assert "tiny-clip" in message and "pocket" in message.lower()
