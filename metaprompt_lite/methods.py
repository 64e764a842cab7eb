"""Method recipes: which prompts, which loss, which episodic update — on the one shared engine.

Explained in ``notebooks/06_metaprompt`` and ``notebooks/07_prometar_and_gram``.

A method is a :class:`MethodConfig` (plain dataclass instance) and one step function chosen by
:func:`step_function`; there is no trainer per method. ``PRESETS[name]["pocket" | "paper"]`` are
the embedded-tier and paper hyper-parameters, all in this one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from metaprompt_lite.engine import Batch, OptimConfig, TrainState, build_optimizer, build_scheduler, make_generator
from metaprompt_lite.losses import asymmetric_contrastive_loss, asymmetric_logits, clip_logits, cross_entropy
from metaprompt_lite.meta import (
    META_STEP,
    N_GROUPS,
    Episode,
    cross_class_episodes,
    cross_domain_episodes,
    episodic_meta_update,
    official_quirks_meta_update,
    relabel,
)
from metaprompt_lite.prometar import ProMetaRConfig
from metaprompt_lite.prompts import PromptConfig, PromptedCLIP, Prompts

TEXT_PARAMS = ("ctx", "deep_ctx")
VISION_PARAMS = ("vision_ctx",)


@dataclass(frozen=True)
class MethodConfig:
    """Everything that distinguishes one prompt-learning method from another."""

    name: str
    prompt: PromptConfig = field(default_factory=PromptConfig)
    loss: str = "ce"  # "ce": CE on prompted logits | "asymmetric": MetaPrompt's loss
    loss_terms: tuple[str, ...] = ("fused", "image", "text")  # asymmetric loss terms (ablations)
    episodic: bool = False  # MetaPrompt's alternate episodic (domain-split) update every batch
    meta_order: int = 1  # 1: first order (official) | 2: second order through the inner step
    official_quirks: bool = False  # reproduce the official code's optimizer/aliasing side effects
    meta_step: float = META_STEP
    n_groups: int = N_GROUPS
    trainable: bool = True  # False: zero-shot CLIP
    templates: str = "single"  # frozen text f_T from the dataset's "single" hand template or "ensemble"
    prometar: ProMetaRConfig | None = None  # ProMetaR meta-regularisation (on its IVLP learner)
    gram: bool = False  # GRAM: meta-learned init + gradient regulator (from data/gram/)

    def __post_init__(self) -> None:
        if self.loss not in ("ce", "asymmetric"):
            raise ValueError(f"unknown loss {self.loss!r}: use 'ce' or 'asymmetric'")
        if self.meta_order not in (1, 2):
            raise ValueError(f"meta_order must be 1 or 2, got {self.meta_order}")
        if self.templates not in ("single", "ensemble"):
            raise ValueError(f"templates must be 'single' or 'ensemble', got {self.templates!r}")
        if self.official_quirks and self.meta_order != 1:
            raise ValueError("official_quirks reproduces the first-order official code: meta_order=1")


# --------------------------------------------------------------------------- logits
@dataclass
class Outputs:
    logits: torch.Tensor  # what prediction uses
    logits_i: torch.Tensor | None = None  # asymmetric: prompted image vs frozen text
    logits_t: torch.Tensor | None = None  # asymmetric: frozen image vs prompted text


def compute_logits(
    model: PromptedCLIP, method: MethodConfig, images: torch.Tensor,
    frozen_image: torch.Tensor | None = None, prompts: Prompts | None = None,
    stem: torch.Tensor | None = None,
) -> Outputs:
    """The method's logits over the model's current classes. ``frozen_image`` (f_I) and ``stem`` (the
    vision stem, :meth:`PromptedCLIP.image_stem`): the images' own, when computed already.

    ce:          s · f̃_I(x) · f̃_T(c)ᵀ
    asymmetric:  logits_i = s · f̃_I(x) · f_T(c)ᵀ,  logits_t = s · f_I(x) · f̃_T(c)ᵀ,  ½(sum) to predict
    """
    scale = model.logit_scale
    if not method.trainable:
        frozen_image = model.frozen_image_features(images) if frozen_image is None else frozen_image
        return Outputs(clip_logits(frozen_image, model.frozen_text_features(), scale))
    needs_frozen = method.loss == "asymmetric" or method.prompt.conditional
    if needs_frozen and frozen_image is None:
        frozen_image = model.frozen_image_features(images)
    if prompts is None:
        prompts = model.learner(frozen_image if method.prompt.conditional else None)
    if method.loss == "ce":
        # without vision prompts the prompted image encoder *is* the frozen one: reuse its features
        image = (frozen_image if (frozen_image is not None and not prompts.vision)
                 else model.image_features(images, prompts, stem=stem))
        return Outputs(clip_logits(image, model.text_features(prompts), scale))
    logits_i = clip_logits(model.image_features(images, prompts, stem=stem), model.frozen_text_features(), scale)
    logits_t = clip_logits(frozen_image, model.text_features(prompts), scale)
    return Outputs(asymmetric_logits(logits_i, logits_t), logits_i, logits_t)


# --------------------------------------------------------------------------- step functions
def uses_frozen_image(method: MethodConfig) -> bool:
    """Whether the method's logits need the frozen f_I of the batch: the asymmetric loss, CoCoOp's
    meta-net, and every method without vision prompts (its image encoder *is* the frozen one)."""
    return method.loss == "asymmetric" or method.prompt.conditional or method.prompt.n_vision == 0


def _batch_logits(state: TrainState, batch: Batch, method: MethodConfig) -> Outputs:
    frozen = batch.frozen_image(state.model) if uses_frozen_image(method) else None
    stem = batch.image_stem(state.model) if method.prompt.n_vision > 0 else None
    return compute_logits(state.model, method, batch.images, frozen_image=frozen, stem=stem)


def supervised_step(state: TrainState, batch: Batch, method: MethodConfig) -> dict[str, float]:
    """One optimizer step on CE (CoOp, CoCoOp, IVLP, MaPLe) or the asymmetric loss."""
    out = _batch_logits(state, batch, method)
    if method.loss == "asymmetric":
        loss = asymmetric_contrastive_loss(out.logits_i, out.logits_t, batch.labels, method.loss_terms)
    else:
        loss = cross_entropy(out.logits, batch.labels)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    return {"loss": loss.item()}


def metaprompt_step(
    state: TrainState, batch: Batch, method: MethodConfig, cross_domain: bool
) -> dict[str, float]:
    """MetaPrompt's alternate episodic training on one batch.

    1. In-domain update: one optimizer step on the asymmetric loss.
    2. Domain-split update (``cross_domain`` False → cross-class, for base-to-new):
       cross-class:  text prompts adapt; support/query losses CE(logits_t) on their own classes
       cross-domain: vision prompts adapt; support/query losses CE(logits_i) on all classes
       g_i = meta-gradient of episode i;   θ ← θ − lr · META_STEP · Σ_i g_i
    """
    model = state.model
    frozen_image = batch.frozen_image(model)
    losses = {"loss": _asymmetric_update(state, batch, method, frozen_image)}
    n_classes = model.n_classes
    scale = model.logit_scale
    if cross_domain:
        episodes = cross_domain_episodes(batch.domains, n_classes)
        adapt = VISION_PARAMS
        frozen_text = model.frozen_text_features()

        def episode_loss(module, index: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
            prompts = module()
            logits_i = clip_logits(model.image_features(batch.images[index], prompts, stem=batch.image_stem(model)[index]),
                                   frozen_text, scale)
            return cross_entropy(logits_i, batch.labels[index])
    else:
        episodes = cross_class_episodes(batch.labels, n_classes, state.generator, method.n_groups)
        adapt = TEXT_PARAMS

        def episode_loss(module, index: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
            prompts = module()
            logits_t = clip_logits(frozen_image[index], model.text_features(prompts, classes), scale)
            return cross_entropy(logits_t, relabel(batch.labels[index], classes))

    adapt = tuple(n for n, _ in model.prompts.named_parameters() if n in adapt)

    def support_loss(module, e: Episode) -> torch.Tensor:
        return episode_loss(module, e.support, e.support_classes)

    def query_loss(module, e: Episode) -> torch.Tensor:
        return episode_loss(module, e.query, e.query_classes)

    if not episodes or not adapt:
        return losses
    if method.official_quirks:
        query = official_quirks_meta_update(
            model.prompts, state.optimizer, episodes, support_loss, query_loss, state.lr, method.meta_step
        )
    else:
        query = episodic_meta_update(
            model.prompts, episodes, support_loss, query_loss, state.lr, method.meta_step,
            first_order=method.meta_order == 1, adapt=adapt,
        )
    losses["query_loss"] = query.item()
    return losses


def _asymmetric_update(state: TrainState, batch: Batch, method: MethodConfig,
                       frozen_image: torch.Tensor) -> float:
    out = compute_logits(state.model, method, batch.images, frozen_image=frozen_image,
                         stem=batch.image_stem(state.model))
    loss = asymmetric_contrastive_loss(out.logits_i, out.logits_t, batch.labels, method.loss_terms)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    return loss.item()


def regulated_step(state: TrainState, batch: Batch, method: MethodConfig) -> dict[str, float]:
    """GRAM downstream: the supervised step with every gradient passed through the meta-learned
    regulator r before the optimizer sees it."""
    regulator = state.extras["regulator"]
    out = _batch_logits(state, batch, method)
    loss = cross_entropy(out.logits, batch.labels)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        for name, p in state.model.prompts.named_parameters():
            if p.grad is not None:
                p.grad = regulator.regulate(name, p.grad)
    state.optimizer.step()
    return {"loss": loss.item()}


def make_step(method: MethodConfig, state: TrainState, cross_domain: bool, total_steps: int,
              ) -> Callable[[TrainState, Batch], dict[str, float]]:
    """The engine's step for this method. Method-specific state (ProMetaR's modulation net, GRAM's
    regulator) goes into ``state.extras`` so checkpoints carry it."""
    if method.prometar is not None:
        from metaprompt_lite.prometar import GradientModulator, prometar_step

        modulator = GradientModulator(state.model.prompts).to(state.model.backbone.device)
        optim = OptimConfig(lr=method.prometar.modulator_lr, momentum=0.9, weight_decay=5e-4,
                            warmup_epochs=0, warmup_lr=method.prometar.modulator_lr)
        optimizer = build_optimizer(modulator.parameters(), optim)
        scheduler = build_scheduler(optimizer, total_steps, 0, optim)
        state.extras.update(modulator=modulator, modulator_optimizer=optimizer, modulator_scheduler=scheduler)

        def step(state: TrainState, batch: Batch) -> dict[str, float]:
            out = prometar_step(state, batch, modulator, optimizer, method.prometar)
            scheduler.step()
            return out
        return step
    if method.gram:
        if "regulator" not in state.extras:
            raise ValueError("a GRAM method needs its meta-learned regulator in state.extras['regulator']")
        return lambda state, batch: regulated_step(state, batch, method)
    if method.episodic:
        return lambda state, batch: metaprompt_step(state, batch, method, cross_domain)
    return lambda state, batch: supervised_step(state, batch, method)


def start_training(model: PromptedCLIP, method: MethodConfig, optim: OptimConfig, total_steps: int,
                   warmup_steps: int = 0, seed: int = 0, cross_domain: bool = False,
                   extras: dict | None = None) -> tuple[TrainState, Callable[[TrainState, Batch], dict[str, float]]]:
    """What every training loop starts from, built one way for all of them (runs, analysis,
    benchmarks): the optimiser over the prompts, its schedule over ``total_steps``, the run's seeded
    generator, and the method's step function (which may add its own state to ``state.extras``)."""
    optimizer = build_optimizer(model.prompts.parameters(), optim)
    state = TrainState(model, optimizer, build_scheduler(optimizer, total_steps, warmup_steps, optim),
                       make_generator(seed), seed=seed, extras=dict(extras or {}))
    return state, make_step(method, state, cross_domain, total_steps)


def prompt_templates(method: MethodConfig, templates) -> list[str]:
    """The dataset templates a method prompts with: all of them for an ensemble, else the first."""
    return list(templates) if method.templates == "ensemble" else list(templates[:1])


# --------------------------------------------------------------------------- presets
_COOP = PromptConfig(n_ctx=4, ctx_init="a photo of a", text_depth=1)
_IVLP = PromptConfig(n_ctx=4, ctx_init="a photo of a", text_depth=9, n_vision=4, vision_depth=9)
_METAPROMPT_B2N = PromptConfig(n_ctx=2, ctx_init=None, text_depth=-1, n_vision=2, vision_depth=-1)

METHODS: dict[str, MethodConfig] = {
    "zsclip": MethodConfig("zsclip", trainable=False),
    "zsclip-ens": MethodConfig("zsclip-ens", trainable=False, templates="ensemble"),
    "coop": MethodConfig("coop", _COOP),
    "cocoop": MethodConfig("cocoop", replace(_COOP, conditional=True)),
    "ivlp": MethodConfig("ivlp", _IVLP),
    "maple": MethodConfig("maple", replace(_IVLP, coupled=True, ctx_init="a photo of a")),
    "metaprompt": MethodConfig("metaprompt", _METAPROMPT_B2N, loss="asymmetric", episodic=True),
    "prometar": MethodConfig("prometar", _IVLP, prometar=ProMetaRConfig(), templates="ensemble"),
    "gram-coop": MethodConfig("gram-coop", _COOP, gram=True),
    "gram-ivlp": MethodConfig("gram-ivlp", _IVLP, gram=True),
}


def get_method(name: str, **overrides) -> MethodConfig:
    """A method recipe by name, with field overrides (e.g. ``meta_order=2``)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r} — use one of {', '.join(sorted(METHODS))}")
    return replace(METHODS[name], **overrides)


# --------------------------------------------------------------------------- presets
# (method, tier) -> the OptimConfig and shots of a run. "paper": the papers' settings for ViT-B/16
# on a GPU (docs/methods.md). "pocket": the embedded tier, tuned on a validation split of the
# *base* classes only (see ``benchmarks/tune_pocket.py`` and results/README.md for how).
PAPER_SHOTS = 16
_PAPER = {
    "coop": OptimConfig(lr=0.002, epochs=10, batch_size=32),
    "cocoop": OptimConfig(lr=0.002, epochs=10, batch_size=1),
    "ivlp": OptimConfig(lr=0.0025, epochs=10, batch_size=4),
    "maple": OptimConfig(lr=0.0035, epochs=5, batch_size=4),
    "metaprompt": OptimConfig(lr=0.0015, epochs=8, batch_size=16),
    "prometar": OptimConfig(lr=0.0025, epochs=10, batch_size=4),
    "gram-coop": OptimConfig(lr=0.002, epochs=10, batch_size=32),
    "gram-ivlp": OptimConfig(lr=0.0025, epochs=10, batch_size=4),
}
# Pocket presets: lr from `benchmarks/tune_pocket.py` (grid lr {0.002, 0.008} x epochs {2, 5}, scored by
# HM on pseudo-base/pseudo-new splits of the *base* classes' train pool of emoji-food, flags and cards;
# results/tuning.csv; run on suite v1 with a 1-epoch warm-up; ProMetaR re-tuned on v2 after its lr_ratio fix,
# same choice). The validation preferred 5 epochs for every method, but the 30-minute
# budget for the full 3-seed benchmark on 2 CPU cores allows 2 (CoCoOp, whose text pass runs once per
# image, 1), without the warm-up epoch: epochs are capped for cost, not chosen on accuracy.
_POCKET_LR = {"coop": 0.008, "cocoop": 0.008, "ivlp": 0.002, "maple": 0.008, "metaprompt": 0.002,
              "prometar": 0.002, "gram-coop": 0.008, "gram-ivlp": 0.008}
_POCKET = {name: OptimConfig(lr=_POCKET_LR[name], epochs=1 if name == "cocoop" else 2, warmup_epochs=0, batch_size=16)
           for name in _PAPER}
PRESETS: dict[tuple[str, str], OptimConfig] = {
    **{(name, "paper"): optim for name, optim in _PAPER.items()},
    **{(name, "pocket"): optim for name, optim in _POCKET.items()},
    **{(name, tier): OptimConfig() for name in ("zsclip", "zsclip-ens") for tier in ("paper", "pocket")},
}
TIERS = ("pocket", "paper")


def preset(name: str, tier: str = "pocket") -> tuple[MethodConfig, OptimConfig, int]:
    """(method recipe, optimisation, shots) of a method on a tier."""
    method = get_method(name)
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r} — use one of {TIERS}")
    return method, PRESETS[(name, tier)], PAPER_SHOTS
