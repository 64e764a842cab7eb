"""Pocket-CLIP pretraining on the tiny config: phases learn, resume exactly after an interruption,
export a checkpoint that loads through the same code path as real weights; the corpus loader and
the MiniLM teacher."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from metaprompt_lite import pretrain as P
from metaprompt_lite.backbone import load_clip
from metaprompt_lite.data import corpus as C
from metaprompt_lite.paths import TINY_MODEL

SENTENCES = [f"a photo of a {c} {o}." for c in ("red", "green", "blue", "small", "big") for o in ("cat", "car", "cup", "hat")]
CAPTIONS = [["a red square.", "red"], ["a green circle."], ["a blue triangle.", "blue shape"], ["a yellow star."]]


def _corpus(n_per_concept: int = 4) -> C.ImageTextCorpus:
    g = torch.Generator().manual_seed(0)
    palette = torch.tensor([[220, 20, 20], [20, 200, 40], [30, 40, 220], [230, 220, 20]], dtype=torch.float)
    images, captions, concepts = [], [], []
    for c in range(4):
        for _ in range(n_per_concept):
            noise = torch.rand(3, 32, 32, generator=g) * 40
            images.append((palette[c].view(3, 1, 1) + noise).clamp(0, 255).to(torch.uint8))
            captions.append(CAPTIONS[c])
            concepts.append(c)
    return C.ImageTextCorpus(torch.stack(images), captions, torch.tensor(concepts),
                             ["red square", "green circle", "blue triangle", "yellow star"])


def _config(tmp_path: Path, **kw) -> P.PretrainConfig:
    base = dict(model=TINY_MODEL, out=str(tmp_path / "out" / "pocket.safetensors"), work_dir=str(tmp_path / "work"),
                text_steps=6, text_batch=8, image_steps=6, image_batch=8, warmup_steps=1, checkpoint_every=2,
                holdout_fraction=0.2, progress=False, image_bf16=False)
    base.update(kw)
    return P.PretrainConfig(**base)


def _die_after_first_save(real_save):
    """A save_checkpoint that saves, then simulates a kill (Ctrl-C) right after the first save."""
    calls = {"n": 0}

    def save_then_die(path, state):
        real_save(path, state)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    return save_then_die


def _targets(n: int, dim: int = 32) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(1)), dim=-1)


def test_text_distillation_moves_towards_the_teacher_and_resumes_exactly(tmp_path, monkeypatch):
    targets = _targets(len(SENTENCES))
    config = _config(tmp_path, text_steps=30, text_lr=5e-3, checkpoint_every=10)
    torch.manual_seed(0)
    straight = load_clip(TINY_MODEL)
    before = F.normalize(P.encode_texts(straight, SENTENCES), dim=-1)
    stats = P.distill_text(straight, SENTENCES, targets, config, tmp_path / "a.pt")
    after = P.encode_texts(straight, SENTENCES)
    assert (after * targets).sum(-1).mean() > (before * targets).sum(-1).mean() + 0.1
    # the reported held-out cosine is the mean cosine to the teacher over sentences distillation never saw
    train_index, held_out = P.holdout_split(len(SENTENCES), config.holdout_fraction, config.seed)
    assert stats["heldout_sentences"] == len(held_out) >= 1 and not set(held_out.tolist()) & set(train_index.tolist())
    expected = (F.normalize(after[held_out], dim=-1) * targets[held_out]).sum(-1).mean()
    assert stats["teacher_cosine_heldout"] == pytest.approx(float(expected), abs=1e-6)

    # interrupted after the first checkpoint (step 10), then resumed: identical weights
    torch.manual_seed(0)
    resumed = load_clip(TINY_MODEL)
    monkeypatch.setattr(P, "save_checkpoint", _die_after_first_save(P.save_checkpoint))
    with pytest.raises(KeyboardInterrupt):
        P.distill_text(resumed, SENTENCES, targets, config, tmp_path / "b.pt")
    assert torch.load(tmp_path / "b.pt", weights_only=True)["step"] == 10
    P.distill_text(resumed, SENTENCES, targets, config, tmp_path / "b.pt")
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_image_tower_learns_and_resumes_exactly(tmp_path, monkeypatch):
    corpus = _corpus()
    config = _config(tmp_path, image_steps=8, image_lr=5e-3, checkpoint_every=4)
    torch.manual_seed(0)
    straight = load_clip(TINY_MODEL)
    text_before = [p.clone() for p in P.text_parameters(straight.model)]
    P.train_image_tower(straight, corpus, config, tmp_path / "a.pt")
    assert all(torch.equal(a, b) for a, b in zip(text_before, P.text_parameters(straight.model)))  # text locked

    torch.manual_seed(0)
    resumed = load_clip(TINY_MODEL)
    monkeypatch.setattr(P, "save_checkpoint", _die_after_first_save(P.save_checkpoint))
    with pytest.raises(KeyboardInterrupt):
        P.train_image_tower(resumed, corpus, config, tmp_path / "b.pt")
    P.train_image_tower(resumed, corpus, config, tmp_path / "b.pt")
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_full_pretrain_exports_a_loadable_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "teacher_targets", lambda sentences, work, progress=True: _targets(len(sentences)))
    monkeypatch.setattr(P, "write_model_card", lambda path: Path(path))  # evaluates the real suite: not here
    trained = {}
    real_export = P.export_checkpoint

    def export(model, path):
        trained.update({k: v.clone() for k, v in model.state_dict().items()})
        return real_export(model, path)

    monkeypatch.setattr(P, "export_checkpoint", export)
    config = _config(tmp_path)
    report = P.pretrain(config, _corpus(), SENTENCES)
    out = Path(config.out)
    assert out.is_file() and json.loads(out.with_suffix(".json").read_text())["sha256"] == report["sha256"]
    loaded = load_clip(TINY_MODEL, str(out))  # the same loader as any open_clip checkpoint
    assert loaded.model.logit_scale.dtype == torch.float32
    # the file holds the trained weights, up to the fp16 cast
    state = loaded.model.state_dict()
    assert set(state) == set(trained)
    for name, value in trained.items():
        expected = value.half().float() if value.is_floating_point() else value
        assert torch.equal(state[name], expected), name
    fresh = load_clip(TINY_MODEL).model.state_dict()
    assert any(not torch.equal(fresh[k].half().float(), state[k]) for k in state if state[k].is_floating_point())


def test_corpus_loader_reads_the_build_format_and_explains_a_missing_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match="metaprompt-lite data build --corpus"):
        C.load_corpus(tmp_path)
    corpus = _corpus(1)
    np.save(tmp_path / "images.npy", corpus.images.numpy())
    (tmp_path / "corpus.json").write_text(json.dumps({"captions": corpus.captions, "concepts": corpus.concepts.tolist(),
                                                      "concept_names": corpus.concept_names,
                                                      "concept_ids": [f"id{c}" for c in range(len(corpus.concept_names))],
                                                      "styles": [i % 2 for i in range(len(corpus.images))],
                                                      "style_names": ["twemoji", "noto"]}))
    (tmp_path / "text.txt").write_text("one sentence.\nanother sentence.\n")
    loaded, text = C.load_corpus(tmp_path)
    assert torch.equal(loaded.images, corpus.images) and loaded.captions == corpus.captions
    assert loaded.concept_ids == [f"id{c}" for c in range(len(corpus.concept_names))]
    assert [loaded.style_names[s] for s in loaded.styles[:3]] == ["twemoji", "noto", "twemoji"]
    assert text == ["one sentence.", "another sentence."]
    np.save(tmp_path / "images.npy", corpus.images.numpy()[:2])
    with pytest.raises(ValueError, match="Rebuild the corpus"):
        C.load_corpus(tmp_path)


def test_minilm_teacher_is_a_real_sentence_encoder():
    pytest.importorskip("transformers")
    from metaprompt_lite.teacher import MiniLMTeacher

    emb = MiniLMTeacher().encode(["a photo of a dog.", "a picture of a puppy.", "the stock market fell today."])
    assert emb.shape == (3, 384) and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


def test_pretrain_cli_builds_its_config_from_the_flags(tmp_path, monkeypatch):
    """The image phase runs in float32 unless `--image-bf16` (autocast is faster only on CPUs with native
    bf16); `--no-image-bf16` still means float32; the numeric flags reach PretrainConfig; the rest keeps
    the dataclass defaults."""
    from metaprompt_lite import pretrain as pretrain_module
    from metaprompt_lite.cli import main
    from metaprompt_lite.data import corpus as corpus_module

    seen = []  # patched in their modules: the command imports them when it runs
    monkeypatch.setattr(corpus_module, "load_corpus", lambda folder: (_corpus(), SENTENCES))
    monkeypatch.setattr(pretrain_module, "pretrain", lambda config, corpus, text: seen.append(config) or {})
    manifests = []
    monkeypatch.setattr(corpus_module, "write_corpus_manifest",
                        lambda folder, out: manifests.append((folder, out)) or out)
    assert main(["pretrain", "--corpus", str(tmp_path), "--image-steps", "7"]) == 0
    assert main(["pretrain", "--corpus", str(tmp_path), "--image-bf16", "--concept-weight", "0"]) == 0
    assert main(["pretrain", "--corpus", str(tmp_path), "--no-image-bf16"]) == 0
    assert main(["pretrain", "--corpus", str(tmp_path), "--soft-label-tau", "0.05", "--regress-weight", "2"]) == 0
    assert P.PretrainConfig().image_bf16 is False
    assert seen[0].image_bf16 is False and seen[0].image_steps == 7 and seen[0].concept_weight == 1.0
    assert seen[1].image_bf16 is True and seen[1].concept_weight == 0.0
    assert seen[1].image_steps == P.PretrainConfig().image_steps
    assert seen[2].image_bf16 is False
    assert seen[2].soft_label_tau == 0.0 and seen[2].regress_weight == 0.0  # the committed recipe: both off
    assert seen[3].soft_label_tau == 0.05 and seen[3].regress_weight == 2.0
    # each run writes its corpus's manifest beside the checkpoint
    assert manifests[0] == (str(tmp_path), Path(P.PretrainConfig().out).with_suffix(".corpus.json.gz"))


def test_text_from_a_checkpoint_takes_its_text_tower_and_skips_distillation(tmp_path):
    """`--text-from`: the text tower is the checkpoint's (as saved, fp16), the image tower the run's own
    random init; distillation then has nothing left to do."""
    torch.manual_seed(0)
    checkpoint = tmp_path / "other.safetensors"
    P.export_checkpoint(load_clip(TINY_MODEL).model, checkpoint)
    saved = load_clip(TINY_MODEL, str(checkpoint)).model
    torch.manual_seed(1)
    backbone = load_clip(TINY_MODEL)
    visual_before = {k: v.clone() for k, v in backbone.model.visual.state_dict().items()}
    assert any(not torch.equal(a, b) for a, b in zip(P.text_parameters(backbone.model), P.text_parameters(saved)))
    config = _config(tmp_path)
    P.text_state_from_checkpoint(backbone, checkpoint, config, tmp_path / "text.pt")
    P.distill_text(backbone, SENTENCES, _targets(len(SENTENCES)), config, tmp_path / "text.pt")
    for a, b in zip(P.text_parameters(backbone.model), P.text_parameters(saved)):
        assert torch.equal(a, b)
    visual_after = backbone.model.visual.state_dict()
    assert all(torch.equal(v, visual_after[k]) for k, v in visual_before.items())
    assert any(not torch.equal(v, saved.visual.state_dict()[k]) for k, v in visual_after.items())


def test_a_missing_text_from_checkpoint_fails_before_the_teacher_targets(tmp_path, monkeypatch):
    """A wrong `--text-from` path is reported at once, not after minutes of MiniLM embeddings."""
    monkeypatch.setattr(P, "teacher_targets", lambda *a, **k: pytest.fail("teacher targets computed first"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        P.pretrain(_config(tmp_path, text_from=str(tmp_path / "missing.safetensors")), _corpus(), SENTENCES)


def _reference_image_loss(f, scale, captions, concepts, concept_features, weight, targets=None, regress=0.0):
    """The image-phase loss written out image by image from its equation (independent of the vectorised code)."""
    total = 0.0
    for i in range(len(f)):
        logits = [float(scale * f[i] @ captions[j]) for j in range(len(f))]
        log_z = np.log(np.sum(np.exp(logits)))
        positives = [j for j in range(len(f)) if concepts[j] == concepts[i]]
        pairs = -sum(logits[j] - log_z for j in positives) / len(positives)
        concept_logits = np.array([float(scale * f[i] @ k) for k in concept_features])
        log_p = concept_logits - np.log(np.exp(concept_logits).sum())
        q = np.eye(len(concept_features))[concepts[i]] if targets is None else targets[concepts[i]].numpy()
        total += pairs + weight * -(q * log_p).sum() + regress * (1 - float(f[i] @ captions[i]))
    return total / len(f)


def test_image_phase_loss_matches_its_equation_and_the_options_do_what_they_say():
    g = torch.Generator().manual_seed(3)
    f = F.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64), dim=-1)
    captions = F.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64), dim=-1)
    concept_features = F.normalize(torch.randn(4, 8, generator=g, dtype=torch.float64), dim=-1)
    concepts = torch.tensor([0, 1, 1, 2, 3, 0])
    scale = torch.tensor(7.0, dtype=torch.float64)
    committed = P.PretrainConfig()
    got = P.image_phase_loss(f, scale, captions, concepts, concept_features, committed)
    assert got.item() == pytest.approx(_reference_image_loss(f, scale, captions, concepts, concept_features, 1.0))

    soft = P.semantic_soft_labels(concept_features, 0.2)
    assert P.semantic_soft_labels(concept_features, 0.0) is None
    c = concept_features.numpy()
    for y in range(4):  # q[y, k] = exp(c_y · c_k / tau) / sum_j exp(c_y · c_j / tau), written out
        weights = np.array([np.exp(float(c[y] @ c[k]) / 0.2) for k in range(4)])
        assert np.allclose(soft[y].numpy(), weights / weights.sum())
    with pytest.raises(ValueError, match="soft_label_tau"):
        P.semantic_soft_labels(concept_features, -0.1)
    config = P.PretrainConfig(soft_label_tau=0.2, regress_weight=2.0, concept_weight=0.5)
    got = P.image_phase_loss(f, scale, captions, concepts, concept_features, config, soft)
    want = _reference_image_loss(f, scale, captions, concepts, concept_features, 0.5, soft, regress=2.0)
    assert got.item() == pytest.approx(want)
    # all else equal, soft targets change the loss, and a tiny temperature gives back the one-hot
    one_hot = P.image_phase_loss(f, scale, captions, concepts, concept_features, committed).item()
    assert P.image_phase_loss(f, scale, captions, concepts, concept_features, committed, soft).item() != \
        pytest.approx(one_hot)
    sharp = P.semantic_soft_labels(concept_features, 1e-4)
    assert P.image_phase_loss(f, scale, captions, concepts, concept_features, committed, sharp).item() == \
        pytest.approx(one_hot)


def test_image_phase_stops_on_a_non_finite_loss(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "image_phase_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    torch.manual_seed(0)
    with pytest.raises(FloatingPointError, match="image-lr"):
        P.train_image_tower(load_clip(TINY_MODEL), _corpus(), _config(tmp_path), tmp_path / "a.pt")


def test_image_phase_refuses_a_negative_regression_weight(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="regress_weight"):
        P.train_image_tower(load_clip(TINY_MODEL), _corpus(), _config(tmp_path, regress_weight=-1.0), tmp_path / "a.pt")
