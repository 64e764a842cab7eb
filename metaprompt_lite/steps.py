"""Each method's training step on the shared engine: logits, losses and updates.

Explained in ``notebooks/06_metaprompt_end_to_end`` (MetaPrompt's four steps) and
``notebooks/07_prometar_and_gram``. :func:`start_training` builds what every training loop starts
from; :func:`make_step` picks the step function of a recipe (:class:`~metaprompt_lite.methods.MethodConfig`):

- :func:`supervised_step`  CE (CoOp, CoCoOp, IVLP, MaPLe) or MetaPrompt's asymmetric loss
- :func:`metaprompt_step`  MetaPrompt's alternate episodic training (in-domain step, domain-split meta step)
- :func:`regulated_step`   GRAM: the supervised step through the meta-learned gradient regulator
- ``prometar_step``        ProMetaR's meta-regularised step (:mod:`metaprompt_lite.prometar`)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from metaprompt_lite.engine import Batch, OptimConfig, TrainState, build_optimizer, build_scheduler, make_generator
from metaprompt_lite.gram import artifact_path, load_gram
from metaprompt_lite.losses import asymmetric_contrastive_loss, asymmetric_logits, clip_logits, cross_entropy
from metaprompt_lite.meta import (
    Episode,
    cross_class_episodes,
    cross_domain_episodes,
    episodic_meta_update,
    official_quirks_meta_update,
)
from metaprompt_lite.methods import MethodConfig
from metaprompt_lite.prometar import GradientModulator, prometar_step
from metaprompt_lite.prompts import PromptedCLIP, Prompts
from metaprompt_lite.splits import relabel

TEXT_PARAMS = ("ctx", "deep_ctx")  # the prompts cross-class episodes adapt
VISION_PARAMS = ("vision_ctx",)  # the prompts cross-domain episodes adapt


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
       ``meta_update="official"``: inner steps by the training optimizer, official restore
       (:func:`~metaprompt_lite.meta.official_quirks_meta_update`); ``"clean"``: plain SGD on a
       ``higher`` copy, exact restore (:func:`~metaprompt_lite.meta.episodic_meta_update`).
    """
    model = state.model
    frozen_image = batch.frozen_image(model)
    losses = supervised_step(state, batch, method)  # 1. the in-domain update on the asymmetric loss
    n_classes = model.n_classes
    scale = model.logit_scale
    if cross_domain:
        episodes = cross_domain_episodes(batch.domains, n_classes)
        adapt = VISION_PARAMS
        frozen_text = model.frozen_text_features()

        def episode_loss(module, index: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
            prompts = module()
            image = model.image_features(batch.images[index], prompts, stem=batch.image_stem(model)[index])
            logits_i = clip_logits(image, frozen_text, scale)
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

    if method.meta_update == "official" and not cross_domain:
        # the official cross-class loop skips a query group of fewer than 2 classes
        episodes = [e for e in episodes if len(e.query_classes) >= 2]
    if not episodes or not adapt:
        return losses
    if method.meta_update == "official":
        query = official_quirks_meta_update(
            model.prompts, state.optimizer, episodes, support_loss, query_loss, state.lr, method.meta_step,
            adapt=adapt,
        )
    else:
        query = episodic_meta_update(
            model.prompts, episodes, support_loss, query_loss, state.lr, method.meta_step,
            first_order=method.meta_order == 1, adapt=adapt,
        )
    losses["query_loss"] = query.item()
    return losses


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
              optim: OptimConfig | None = None, warmup_steps: int = 0,
              gram_artifact: str | Path | None = None) -> Callable[[TrainState, Batch], dict[str, float]]:
    """The engine's step for this method. Method-specific state (ProMetaR's modulation net, GRAM's
    regulator) goes into ``state.extras`` so checkpoints carry it. ``optim``/``warmup_steps``: the
    prompts' optimisation, whose schedule ProMetaR's modulation net follows when its config asks. A
    GRAM method without a regulator in ``state.extras`` starts its prompts from the meta-learned θ₀
    and takes r from ``gram_artifact`` (default: :func:`metaprompt_lite.gram.artifact_path` of the
    backbone and the method)."""
    if method.prometar is not None:
        modulator = GradientModulator(state.model.prompts).to(state.model.backbone.device)
        net = method.prometar
        if net.modulator_schedule == "constant":  # official: the scheduler is never stepped
            net_optim = OptimConfig(lr=net.modulator_lr, schedule="constant")
        else:  # the yaml's OPTIM_VNET: the prompts' schedule, with the net's own lr and warm-up lr
            net_optim = replace(optim or OptimConfig(), lr=net.modulator_lr, warmup_lr=net.modulator_warmup_lr)
        optimizer = build_optimizer(modulator.parameters(), net_optim)
        scheduler = build_scheduler(optimizer, total_steps, warmup_steps, net_optim)
        state.extras.update(modulator=modulator, modulator_optimizer=optimizer, modulator_scheduler=scheduler)

        def step(state: TrainState, batch: Batch) -> dict[str, float]:
            out = prometar_step(state, batch, modulator, optimizer, method.prometar)
            scheduler.step()
            return out
        return step
    if method.gram:
        if "regulator" not in state.extras:
            path = gram_artifact or artifact_path(state.model.backbone.name, method.name)
            state.extras["regulator"] = load_gram(state.model, path)
        return lambda state, batch: regulated_step(state, batch, method)
    if method.episodic:
        return lambda state, batch: metaprompt_step(state, batch, method, cross_domain)
    return lambda state, batch: supervised_step(state, batch, method)


def start_training(model: PromptedCLIP, method: MethodConfig, optim: OptimConfig, total_steps: int,
                   warmup_steps: int = 0, seed: int = 0, cross_domain: bool = False,
                   extras: dict | None = None, gram_artifact: str | Path | None = None,
                   ) -> tuple[TrainState, Callable[[TrainState, Batch], dict[str, float]]]:
    """What every training loop starts from, built one way for all of them (runs, analysis,
    benchmarks): the optimiser over the prompts, its schedule over ``total_steps``, the run's seeded
    generator, and the method's step function (which may add its own state to ``state.extras``;
    ``gram_artifact``: see :func:`make_step`)."""
    optimizer = build_optimizer(model.prompts.parameters(), optim)
    state = TrainState(model, optimizer, build_scheduler(optimizer, total_steps, warmup_steps, optim),
                       make_generator(seed), seed=seed, extras=dict(extras or {}))
    return state, make_step(method, state, cross_domain, total_steps, optim, warmup_steps, gram_artifact)
