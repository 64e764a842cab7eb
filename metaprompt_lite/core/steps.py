"""Each method as a recipe (:class:`MethodConfig`) and its training step on the shared loop.

Explained in ``notebooks/06_metaprompt_end_to_end`` (MetaPrompt's steps) and
``notebooks/07_prometar_and_gram``. ``metaprompt_lite.methods.make_step`` picks the step of a recipe;
there is no trainer per method:

- :func:`supervised_step`  CE (CoOp, CoCoOp, IVLP, MaPLe) or MetaPrompt's asymmetric loss
- :func:`metaprompt_step`  MetaPrompt's alternate episodic training (in-domain step, domain-split meta step)
- :func:`regulated_step`   GRAM: the supervised step through the meta-learned gradient regulator
- ``prometar_step``        ProMetaR's meta-regularised step (:mod:`metaprompt_lite.core.prometar`)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from metaprompt_lite.core.losses import asymmetric_contrastive_loss, asymmetric_logits, clip_logits, cross_entropy
from metaprompt_lite.core.loop import Batch, TrainState
from metaprompt_lite.core.meta import (
    META_STEP,
    N_GROUPS,
    Episode,
    cross_class_episodes,
    cross_domain_episodes,
    episodic_meta_update,
    official_quirks_meta_update,
    relabel,
)
from metaprompt_lite.core.prometar import ProMetaRConfig
from metaprompt_lite.core.prompts import PromptConfig, PromptedCLIP, Prompts

TEXT_PARAMS = ("ctx", "deep_ctx")  # the prompts cross-class episodes adapt
VISION_PARAMS = ("vision_ctx",)  # the prompts cross-domain episodes adapt
TEMPLATE_CHOICES = ("bare", "single", "ensemble", "metaprompt", "imagenet60")


@dataclass(frozen=True)
class MethodConfig:
    """Everything that distinguishes one prompt-learning method from another (the recipes and their
    citations: ``metaprompt_lite.methods``)."""

    name: str
    prompt: PromptConfig = field(default_factory=PromptConfig)
    loss: str = "ce"  # "ce": CE on prompted logits | "asymmetric": MetaPrompt's loss
    loss_terms: tuple[str, ...] = ("fused", "image", "text")  # asymmetric loss terms (ablations)
    episodic: bool = False  # MetaPrompt's alternate episodic (domain-split) update every batch
    meta_order: int = 1  # 1: first order (official) | 2: second order through the inner step
    meta_update: str = "clean"  # "official": official_quirks_meta_update | "clean": episodic_meta_update
    meta_step: float = META_STEP
    n_groups: int = N_GROUPS
    trainable: bool = True  # False: zero-shot CLIP
    templates: str = "single"  # frozen text f_T's templates (metaprompt_lite.methods.prompt_templates)
    frozen_mean: str = "normalized"  # f_T averages "normalized" features (CLIP) or "raw" ones (ProMetaR)
    prometar: ProMetaRConfig | None = None  # ProMetaR meta-regularisation (on its IVLP learner)
    gram: bool = False  # GRAM: meta-learned init + gradient regulator (from data/gram/)

    def __post_init__(self) -> None:
        if self.loss not in ("ce", "asymmetric"):
            raise ValueError(f"unknown loss {self.loss!r}: use 'ce' or 'asymmetric'")
        if self.meta_order not in (1, 2):
            raise ValueError(f"meta_order must be 1 or 2, got {self.meta_order}")
        if self.meta_update not in ("official", "clean"):
            raise ValueError(f"meta_update must be 'official' or 'clean', got {self.meta_update!r}")
        if self.templates not in TEMPLATE_CHOICES:
            raise ValueError(f"templates must be one of {TEMPLATE_CHOICES}, got {self.templates!r}")
        if self.frozen_mean not in ("normalized", "raw"):
            raise ValueError(f"frozen_mean must be 'normalized' or 'raw', got {self.frozen_mean!r}")
        if self.meta_update == "official" and self.meta_order != 1:
            raise ValueError("the official update is first order: use meta_order=1, or metaprompt-clean "
                             "(meta_update='clean') for the second-order variant")


# --------------------------------------------------------------------------- logits
@dataclass
class Outputs:
    logits: torch.Tensor  # what prediction uses
    logits_i: torch.Tensor | None = None  # asymmetric: prompted image vs frozen text
    logits_t: torch.Tensor | None = None  # asymmetric: frozen image vs prompted text


def compute_logits(model: PromptedCLIP, method: MethodConfig, images: torch.Tensor,
                   frozen_image: torch.Tensor | None = None, prompts: Prompts | None = None,
                   stem: torch.Tensor | None = None) -> Outputs:
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


def uses_frozen_image(method: MethodConfig) -> bool:
    """Whether the method's logits need the frozen f_I of the batch: the asymmetric loss, CoCoOp's
    meta-net, and every method without vision prompts (its image encoder *is* the frozen one)."""
    return method.loss == "asymmetric" or method.prompt.conditional or method.prompt.n_vision == 0


def _batch_logits(state: TrainState, batch: Batch, method: MethodConfig) -> Outputs:
    frozen = batch.frozen_image(state.model) if uses_frozen_image(method) else None
    stem = batch.image_stem(state.model) if method.prompt.n_vision > 0 else None
    return compute_logits(state.model, method, batch.images, frozen_image=frozen, stem=stem)


# --------------------------------------------------------------------------- step functions
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


def metaprompt_step(state: TrainState, batch: Batch, method: MethodConfig, cross_domain: bool) -> dict[str, float]:
    """MetaPrompt's alternate episodic training on one batch (the paper's algorithm):

    1. in-domain update: one optimizer step on the asymmetric loss;
    2. domain-split update: split the batch into episodes (cross-class for base-to-new, cross-domain
       for DG); per episode i, adapt the prompts on its support and take the query loss's gradient g_i
       at the adapted prompts; then  θ ← θ − lr · META_STEP · Σ_i g_i.

    ``meta_update="clean"`` runs step 2 as written (:func:`~metaprompt_lite.core.meta.episodic_meta_update`);
    ``"official"`` as the official code runs it, side effects included
    (:func:`~metaprompt_lite.core.meta.official_quirks_meta_update`, the benchmark's default)."""
    losses = supervised_step(state, batch, method)  # 1. in-domain
    episodes, adapt, support_loss, query_loss = domain_split(state, batch, method, cross_domain)  # 2.
    if method.meta_update == "official" and not cross_domain:
        # the official cross-class loop skips a query group of fewer than 2 classes
        episodes = [e for e in episodes if len(e.query_classes) >= 2]
    if not episodes or not adapt:
        return losses
    learner = state.model.prompts
    if method.meta_update == "official":
        query = official_quirks_meta_update(learner, state.optimizer, episodes, support_loss, query_loss, state.lr,
                                            method.meta_step, adapt=adapt)
    else:
        query = episodic_meta_update(learner, episodes, support_loss, query_loss, state.lr, method.meta_step,
                                     first_order=method.meta_order == 1, adapt=adapt)
    losses["query_loss"] = query.item()
    return losses


def domain_split(state: TrainState, batch: Batch, method: MethodConfig, cross_domain: bool):
    """MetaPrompt's episodes of a batch, the prompts they adapt, and their support and query losses:

    cross-class:  text prompts adapt; CE(logits_t) = CE(s · f_I(x) · f̃_T(c)ᵀ) on the group's own classes
    cross-domain: vision prompts adapt; CE(logits_i) = CE(s · f̃_I(x) · f_T(c)ᵀ) on all classes

    The losses' passes use the model's encoder, or its second-order twin when the meta-gradient
    differentiates through the inner step (``meta_order=2``)."""
    model, scale = state.model, state.model.logit_scale
    encoder = model.encoder if method.meta_order == 1 else model.encoder.second_order()
    if cross_domain:
        episodes = cross_domain_episodes(batch.domains, model.n_classes)
        adapt, frozen_text, stem = VISION_PARAMS, model.frozen_text_features(), batch.image_stem(model)

        def episode_loss(module, index: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
            image = model.image_features(batch.images[index], module(), stem=stem[index], encoder=encoder)
            return cross_entropy(clip_logits(image, frozen_text, scale), batch.labels[index])
    else:
        episodes = cross_class_episodes(batch.labels, model.n_classes, state.generator, method.n_groups)
        adapt, frozen_image = TEXT_PARAMS, batch.frozen_image(model)

        def episode_loss(module, index: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
            text = model.text_features(module(), classes, encoder=encoder)
            return cross_entropy(clip_logits(frozen_image[index], text, scale), relabel(batch.labels[index], classes))

    adapt = tuple(n for n, _ in model.prompts.named_parameters() if n in adapt)
    return (episodes, adapt, lambda module, e: episode_loss(module, e.support, e.support_classes),
            lambda module, e: episode_loss(module, e.query, e.query_classes))


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
