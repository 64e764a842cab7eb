"""Every method trains on the tiny model, touching only its own parameters; ProMetaR and GRAM pieces
against their equations."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from conftest import is_share_of, state_hash
from metaprompt_lite.optim import OptimConfig
from metaprompt_lite.core.gram import GradientRegulator, GramConfig, meta_train
from metaprompt_lite.gram_artifacts import load_gram, save_artifact
from metaprompt_lite.methods import METHODS, get_method, preset
from metaprompt_lite.core.prometar import GradientModulator
from metaprompt_lite.core.prompts import PromptedCLIP
from metaprompt_lite.run import RunConfig, run_base_to_new
from metaprompt_lite.methods import start_training
from tolerances import EPS32, clip_terms, reorder_atol, scale_of


@pytest.fixture(scope="module")
def gram_artifacts(tmp_path_factory, backbone):
    """(θ₀, r) meta-trained for 2 steps on synthetic image–caption pairs from two 'styles'."""
    from conftest import synthetic_dataset

    pairs = synthetic_dataset(n_classes=6, per_class=2, n_domains=2)
    paths = {}
    for name in ("gram-coop", "gram-ivlp"):
        torch.manual_seed(0)
        model = PromptedCLIP(backbone, METHODS[name].prompt, ["x"])
        init, regulator, losses = meta_train(
            model, pairs.images, [f"a {pairs.classnames[c]}" for c in pairs.labels.tolist()],
            pairs.labels, pairs.domain, GramConfig(meta_steps=2, pairs=4), progress=False)
        assert len(losses) == 2
        assert any(v.abs().sum() > 0 for v in regulator.values())  # the outer step reached r
        path = tmp_path_factory.mktemp("gram") / f"{name}.pt"
        save_artifact(path, init, regulator, {})
        paths[name] = str(path)
    return paths


@pytest.mark.parametrize("name", sorted(n for n in METHODS if METHODS[n].trainable))
def test_each_method_trains_two_steps_and_changes_only_its_prompts(backbone, dataset, name, gram_artifacts, monkeypatch):
    import metaprompt_lite.run as run_module

    seen = {}
    original = run_module._fit

    def spy(config, model, method, *args, **kwargs):
        seen["before"] = copy.deepcopy(model.prompts.state_dict())
        state = original(config, model, method, *args, **kwargs)
        seen["state"] = state
        return state

    monkeypatch.setattr(run_module, "_fit", spy)
    backbone_hash = state_hash(backbone.model)
    config = RunConfig(method=name, shots=2, progress=False, gram_artifact=gram_artifacts.get(name),
                       optim=OptimConfig(lr=0.01, batch_size=4, max_steps=2, warmup_epochs=0))
    result = run_base_to_new(config, dataset, backbone)
    state = seen["state"]
    assert state.step == 2 and len(result["history"]) == 2
    # accuracies are shares of the 12 base / 12 new test images (3 classes x 4 test images each)
    assert is_share_of(result["base"], 12) and is_share_of(result["new"], 12)
    after = state.model.prompts.state_dict()
    changed = {k for k in after if not torch.equal(after[k], seen["before"][k])}
    assert changed == set(after), f"{name}: prompts that did not move: {set(after) - changed}"
    assert state_hash(backbone.model) == backbone_hash
    if name == "prometar":
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in state.extras["modulator"].parameters())


def test_zero_shot_method_has_nothing_to_train(backbone, dataset):
    result = run_base_to_new(RunConfig(method="zsclip", progress=False), dataset, backbone)
    assert result["history"] == [] and result["train_s"] < 1


def test_unknown_method_and_bad_overrides():
    with pytest.raises(ValueError, match="unknown method 'nope' — use one of "):
        get_method("nope")
    with pytest.raises(ValueError, match="meta_order must be 1 or 2"):
        get_method("metaprompt", meta_order=3)
    with pytest.raises(ValueError, match="the official update is first order"):
        get_method("metaprompt", meta_order=2)  # metaprompt runs the official update
    assert get_method("metaprompt-clean", meta_order=2).meta_update == "clean"


def test_prometar_modulated_gradient_equals_its_equation(backbone):
    model = PromptedCLIP(backbone, METHODS["prometar"].prompt, ["a", "b"])
    modulator = GradientModulator(model.prompts)
    g = torch.Generator().manual_seed(0)
    g_ce = {n: torch.randn(p.shape, generator=g) for n, p in model.prompts.named_parameters()}
    g_reg = {n: torch.randn(p.shape, generator=g) for n, p in model.prompts.named_parameters()}
    out = modulator(g_ce, g_reg)
    # layer 1 of the deep text prompts, by hand: γ = σ(W₂ W₁ [g_ce; g_reg]) repeated ×8
    k = [i for i, (n, idx, _) in enumerate(modulator.layers) if n == "deep_ctx" and idx == 1][0]
    w1, w2 = modulator.nets[k][0].weight, modulator.nets[k][1].weight
    x = torch.cat([g_ce["deep_ctx"][1].flatten(), g_reg["deep_ctx"][1].flatten()])
    gamma = torch.sigmoid(w2 @ (w1 @ x)).repeat_interleave(8).reshape(g_ce["deep_ctx"][1].shape)
    torch.testing.assert_close(out["deep_ctx"][1], g_ce["deep_ctx"][1] + gamma * g_reg["deep_ctx"][1])
    assert out["ctx"].shape == g_ce["ctx"].shape and out["vision_ctx"].shape == g_ce["vision_ctx"].shape


def test_gram_regulator_starts_as_identity_and_loads(backbone, tmp_path):
    model = PromptedCLIP(backbone, METHODS["gram-coop"].prompt, ["a", "b"])
    regulator = GradientRegulator(model.prompts)
    grad = torch.randn_like(model.prompts.ctx)
    torch.testing.assert_close(regulator.regulate("ctx", grad), grad)
    with torch.no_grad():
        regulator.shift["ctx"].fill_(-50.0)
    assert regulator.regulate("ctx", grad).abs().max() < 1e-6  # a closed gate stops the gradient
    init = {k: v + 1 for k, v in model.prompts.state_dict().items()}
    save_artifact(tmp_path / "g.pt", init, regulator.state_dict(), {})
    loaded = load_gram(model, tmp_path / "g.pt")
    torch.testing.assert_close(model.prompts.ctx.detach(), init["ctx"])
    torch.testing.assert_close(loaded.shift["ctx"], regulator.shift["ctx"])
    with pytest.raises(FileNotFoundError, match="metaprompt-lite gram"):
        load_gram(model, tmp_path / "missing.pt")


def test_gram_meta_training_reads_only_the_pretraining_corpus(tmp_path, monkeypatch):
    """`metaprompt-lite gram` meta-trains on the corpus folder (which holds no suite image, see
    test_data) and never opens the benchmark store."""
    import json

    import numpy as np

    import metaprompt_lite.data.store as store
    from metaprompt_lite.core import gram
    from metaprompt_lite.core.gram import GramConfig
    from metaprompt_lite.gram_build import build_artifact

    def forbidden(*args, **kwargs):
        raise AssertionError("GRAM meta-training opened the benchmark store")

    monkeypatch.setattr(store, "_load", forbidden)
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(12, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    np.save(tmp_path / "images.npy", images.numpy())
    (tmp_path / "corpus.json").write_text(json.dumps({
        "captions": [[f"a drawing of thing {i % 6}."] for i in range(12)], "concepts": [i % 6 for i in range(12)],
        "concept_names": [f"thing {i}" for i in range(6)], "styles": [i // 6 for i in range(12)]}))
    (tmp_path / "text.txt").write_text("a sentence.\n")
    seen = {}
    real = gram.meta_train

    def spy(model, images_in, captions, concepts, styles, config, progress=True):
        seen["images"] = images_in
        return real(model, images_in, captions, concepts, styles, config, progress)

    monkeypatch.setattr(gram, "meta_train", spy)
    path = build_artifact("gram-coop", tmp_path, "tiny-clip", None, GramConfig(meta_steps=2, pairs=3),
                          out=tmp_path / "gram.pt", progress=False)
    assert torch.equal(seen["images"], images)
    artifact = torch.load(path, weights_only=True)
    assert artifact["meta"]["corpus_images"] == 12 and "ctx" in artifact["init"]
    with pytest.raises(ValueError, match="not a GRAM method"):
        build_artifact("coop", tmp_path, "tiny-clip", None, GramConfig(meta_steps=1), out=tmp_path / "x.pt")
    layout = json.loads((tmp_path / "corpus.json").read_text())
    del layout["styles"]  # a corpus without per-image styles has no meta-training domains
    (tmp_path / "corpus.json").write_text(json.dumps(layout))
    with pytest.raises(ValueError, match="has 0 per-image styles.*for 12 images.*data build --corpus"):
        build_artifact("gram-coop", tmp_path, "tiny-clip", None, GramConfig(meta_steps=1), out=tmp_path / "y.pt")


def test_prometar_meta_update_scales_with_lr_ratio(backbone, dataset):
    """The query loss of ProMetaR's meta-update enters the prompt update multiplied by ``lr_ratio``
    (the official code's LR_RATIO = 5e-4; at 1.0 the meta-update swamped the ordinary one). SGD with
    momentum and weight decay is linear in the gradient, so the prompts' displacement relative to
    ``lr_ratio = 0`` must double when ``lr_ratio`` doubles."""
    from dataclasses import replace

    from metaprompt_lite.core.loop import Batch
    from metaprompt_lite.methods import start_training
    from metaprompt_lite.core.prometar import ProMetaRConfig

    assert ProMetaRConfig().lr_ratio == 5e-4
    images, labels = dataset.images[:6], torch.tensor([0, 0, 1, 1, 2, 2])
    batch = Batch(images, labels, torch.zeros(6, dtype=torch.long))
    torch.manual_seed(0)
    start = PromptedCLIP(backbone, METHODS["prometar"].prompt, dataset.classnames[:3])

    def prompts_after_one_step(lr_ratio: float) -> torch.Tensor:
        method = get_method("prometar")
        method = replace(method, prometar=replace(method.prometar, first_order=True, lr_ratio=lr_ratio))
        model = copy.deepcopy(start)
        optim = OptimConfig(lr=0.01, batch_size=6, warmup_epochs=0)
        torch.manual_seed(1)  # the modulation net's init and the mixup λ
        state, step = start_training(model, method, optim, 4)
        step(state, batch)
        return torch.cat([p.detach().flatten() for p in model.prompts.parameters()])

    base = prompts_after_one_step(0.0)
    small, double = prompts_after_one_step(0.05) - base, prompts_after_one_step(0.1) - base
    assert small.abs().max() > 0  # the meta-update moves the prompts
    # exactly linear; in float32 each displacement is a difference of prompts of size |θ| (an ulp of θ
    # each, 4 in all), and each step's update carries its own reordering (tests/tolerances.py)
    atol = 4 * EPS32 * scale_of(base) + reorder_atol(clip_terms(backbone, 3), scale_of(double))
    torch.testing.assert_close(double, 2 * small, rtol=0, atol=atol)
    assert (double - small).abs().max() > atol  # the comparison tells 2× from 1×


def test_metaprompt_asymmetric_logits_pair_each_prompted_encoder_with_the_other_frozen_one(backbone):
    """MetaPrompt's two logits: logits_i = s · f̃_I(x) · f_T(c)ᵀ (prompted image, frozen hand-template
    text) and logits_t = s · f_I(x) · f̃_T(c)ᵀ (frozen image, prompted text); prediction ½(sum).
    Each computed by hand from the model's four encoders; the vision prompts then get gradient only
    through logits_i, the text prompts only through logits_t."""
    from metaprompt_lite.core.steps import compute_logits

    torch.manual_seed(0)
    method = get_method("metaprompt")
    model = PromptedCLIP(backbone, method.prompt, ["cat", "dog", "red apple"], ["a photo of a {}."])
    with torch.no_grad():
        for p in model.prompts.parameters():
            p.add_(torch.randn_like(p) * 0.5)  # prompts far enough from init that frozen ≠ prompted
    images = torch.randint(0, 256, (4, 3, 48, 48), dtype=torch.uint8)
    out = compute_logits(model, method, images)
    s = model.clip.logit_scale.exp()
    prompts = model.learner()
    prompted_image, frozen_image = model.image_features(images, prompts), model.frozen_image_features(images)
    prompted_text, frozen_text = model.text_features(prompts), model.frozen_text_features()
    torch.testing.assert_close(out.logits_i, s * prompted_image @ frozen_text.T)
    torch.testing.assert_close(out.logits_t, s * frozen_image @ prompted_text.T)
    torch.testing.assert_close(out.logits, 0.5 * (out.logits_i + out.logits_t))
    # the check has teeth: swapping either frozen encoder for its prompted twin changes the logits
    assert not torch.allclose(out.logits_i, s * prompted_image @ prompted_text.T, atol=1e-3)
    assert not torch.allclose(out.logits_t, s * prompted_image @ prompted_text.T, atol=1e-3)
    text_params = [model.prompts.ctx, model.prompts.deep_ctx]
    grads = torch.autograd.grad(out.logits_i.sum(), [*text_params, model.prompts.vision_ctx], allow_unused=True)
    assert all(g is None or not g.any() for g in grads[:2]) and grads[2].abs().sum() > 0
    grads = torch.autograd.grad(out.logits_t.sum(), [*text_params, model.prompts.vision_ctx], allow_unused=True)
    assert all(g.abs().sum() > 0 for g in grads[:2]) and (grads[2] is None or not grads[2].any())


DOCS = Path(__file__).resolve().parents[1] / "docs" / "methods.md"


def _official_table() -> list[dict[str, str]]:
    """The rows of docs/methods.md's official-budget table (the one after its marker comment)."""
    lines = DOCS.read_text().split("<!-- official-budgets")[1].splitlines()[1:]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def test_official_presets_match_the_table_in_docs():
    """Every official budget, B2N and DG, on both tiers, equals docs/methods.md's table of the
    official configs (file and line of each value): a wrong preset, or a wrong table, fails here."""
    rows = _official_table()
    assert {r["method"] for r in rows} == {"coop", "cocoop", "ivlp", "maple", "metaprompt", "prometar"}
    for row in rows:
        suite, _, dataset = row["suite"].partition(", ")
        for tier in ("pocket", "paper"):
            method, optim, shots = preset(row["method"], tier, suite, "official", dataset)
            prompt = method.prompt
            assert (optim.epochs, optim.batch_size, optim.lr) == (
                int(row["epochs"]), int(row["batch"]), float(row["lr"])), row
            assert (prompt.n_ctx, prompt.n_vision) == (int(row["text ctx"]), int(row["vision ctx"])), row
            depth = -1 if row["depth"] == "all" else int(row["depth"])
            assert prompt.text_depth == depth and (prompt.n_vision == 0 or prompt.vision_depth == depth), row
            assert (optim.schedule, optim.warmup_epochs, optim.warmup_lr) == ("epoch", 1, 1e-5)
            assert (optim.momentum, optim.weight_decay) == (0.9, 5e-4)
            assert shots == (16 if suite == "b2n" else 5)
            assert "@" in row["official config (repository @ commit, file: lines)"]


def test_official_presets_of_the_rows_without_their_own_config():
    """GRAM rows train on their learner's official budget, ablations on their method's, and a method
    without a DG config on its B2N budget; CoOp's 200 epochs become 50 on ImageNet only."""
    for gram, learner in (("gram-coop", "coop"), ("gram-ivlp", "prometar")):
        assert preset(gram, "paper")[1] == preset(learner, "paper")[1]
    for ablation, method in (("metaprompt-clean", "metaprompt"), ("prometar-base", "prometar"),
                             ("prometar-netlr", "prometar")):
        assert preset(ablation, "paper")[1] == preset(method, "paper")[1]
        assert preset(ablation, "pocket", protocol="tuned")[1] == preset(method, "pocket", protocol="tuned")[1]
    for name in ("coop", "cocoop"):
        assert preset(name, "paper", "dg")[1] == preset(name, "paper", "b2n")[1]
    assert preset("coop", "paper", dataset="ImageNet")[1].epochs == 50
    assert preset("coop", "paper", dataset="Caltech101")[1].epochs == 200
    assert not preset("zsclip", "paper")[0].trainable  # no budget: its rows record zeros (run.row_settings)


def test_tuned_presets_are_the_validated_budgets_on_the_pocket_tier_only():
    """Tuned: the named pocket choices (per-step schedule, batch 16, no warm-up), MetaPrompt's DG run
    with Meta_DG's prompts and batch, epochs capped at 2; no tuned budget on the paper tier."""
    from metaprompt_lite.run import preset_run

    _, optim, shots = preset("coop", "pocket", "dg", "tuned")
    assert (optim.schedule, optim.batch_size, optim.epochs, optim.lr, shots) == ("step", 16, 2, 0.002, 5)
    method, optim, _ = preset("metaprompt", "pocket", "dg", "tuned")
    assert (method.prompt.n_ctx, optim.batch_size, optim.epochs, optim.schedule) == (4, 32, 2, "step")
    assert preset("maple", "pocket", "dg", "tuned")[0].prompt.text_depth == 9  # tuned keeps the B2N prompts
    assert preset("maple", "pocket", "dg", "official")[0].prompt.text_depth == 3  # official: cross-dataset
    assert preset("cocoop", "pocket", "b2n", "tuned")[1].lr == 0.008
    with pytest.raises(ValueError, match="tuned protocol exists on the pocket tier only"):
        preset("coop", "paper", "b2n", "tuned")
    with pytest.raises(ValueError, match="unknown protocol"):
        preset("coop", "pocket", "b2n", "papers")
    paper = preset_run("metaprompt", "paper", "dg", dataset="PACS", target="sketch")
    assert paper.flip and paper.min_scale == 0.08 and paper.interpolation == "bicubic" and paper.shots == 5
    assert paper.recipe.prompt.n_ctx == 4  # the DG prompts reach the run
    pocket = preset_run("metaprompt", "pocket", "b2n", "tuned")
    assert not pocket.flip and pocket.min_scale == 0.5 and pocket.recipe == get_method("metaprompt")
    assert pocket.protocol == "tuned" and pocket.interpolation == "bilinear"
    with pytest.raises(ValueError, match="unknown suite"):
        preset("coop", "paper", "fewshot")


def test_prometar_modulator_lr_is_the_official_constant_and_the_ablation_the_yamls(backbone, dataset):
    """prometar: the modulation net's SGD stays at 1e-6 (the official scheduler is never stepped);
    prometar-netlr: 2.5e-4 on the prompts' schedule after a 1e-6 warm-up."""
    lrs = {}
    for name in ("prometar", "prometar-netlr"):
        method = get_method(name)
        model = PromptedCLIP(backbone, method.prompt, dataset.classnames[:3])
        optim = OptimConfig(lr=0.01, epochs=4, warmup_epochs=1, schedule="epoch")
        state, _ = start_training(model, method, optim, total_steps=8, warmup_steps=2)
        seen = []
        for _ in range(8):
            seen.append(state.extras["modulator_optimizer"].param_groups[0]["lr"])
            state.extras["modulator_optimizer"].step()
            state.extras["modulator_scheduler"].step()
        lrs[name] = seen
    assert lrs["prometar"] == [1e-6] * 8
    assert lrs["prometar-netlr"][:2] == pytest.approx([1e-6, 1e-6])
    assert lrs["prometar-netlr"][2] == pytest.approx(2.5e-4)
    assert lrs["prometar-netlr"][-1] == pytest.approx(2.5e-4 * 0.5 * (1 + math.cos(2 * math.pi / 4)))
