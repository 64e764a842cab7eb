"""Gradient alignment: do the prompt gradients of different class groups agree?

Explained in ``notebooks/08_gradient_alignment``. MetaPrompt's motivation (and ProMetaR's): a
prompt that fits the base classes by gradient directions that *disagree* between groups of classes
memorises those classes; meta-learning rewards updates on one group (support) that also lower the
loss on another (query), which pushes towards agreement. We measure it directly:

    split the classes of a batch into groups S and Q (disjoint, as MetaPrompt's cross-class episode)
    g_S = ∇_θ CE(logits on S's images, S's classes),   g_Q likewise,
    alignment = cos(g_S, g_Q),  agreement = ⟨g_S, g_Q⟩,  θ flattened.

Two gradients: :func:`prompt_gradient` (the method's own logits, every trainable prompt) and
:func:`episode_gradient` (the loss of MetaPrompt's cross-class episode, the text prompts only).
A first-order meta-gradient rewards the inner product ⟨g_Q, g_S⟩; the cosine is its sign and
direction without the gradients' scale, which shrinks as training fits the base classes.

:func:`alignment_curve` trains a method (through the shared engine, in chunks of ``every`` steps)
and records both on fixed base-class batches, and the base/new accuracy, after each chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from metaprompt_lite.core.clip import Backbone
from metaprompt_lite.core.loop import make_generator
from metaprompt_lite.optim import steps_for
from metaprompt_lite.engine import seed_everything, train
from metaprompt_lite.methods import MethodConfig, prompted_clip
from metaprompt_lite.core.prompts import PromptedCLIP
from metaprompt_lite.run import evaluate_base_new
from metaprompt_lite.splits import base_class_shots, base_new_split, relabel
from metaprompt_lite.core.losses import clip_logits, cross_entropy
from metaprompt_lite.core.steps import TEXT_PARAMS, compute_logits
from metaprompt_lite.methods import start_training


def prompt_gradient(model: PromptedCLIP, method: MethodConfig, images: torch.Tensor, labels: torch.Tensor,
                    classes: torch.Tensor) -> torch.Tensor:
    """Flattened ∇_θ of the method's CE on ``images`` over the class subset ``classes``.
    ``labels`` index the model's full class list; the loss uses only the ``classes`` columns."""
    params = [p for p in model.prompts.parameters() if p.requires_grad]
    out = compute_logits(model, method, images)
    logits = out.logits[:, classes]
    loss = F.cross_entropy(logits, relabel(labels, classes))
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def episode_gradient(model: PromptedCLIP, method: MethodConfig, images: torch.Tensor, labels: torch.Tensor,
                     classes: torch.Tensor) -> torch.Tensor:
    """Flattened ∇ of the loss of MetaPrompt's cross-class episode on ``classes`` with respect to the
    text prompts such an episode adapts (``core.steps.TEXT_PARAMS``, those the model has):

        CE(s · f_I(x) · f̃_T(c)ᵀ),  c ∈ ``classes``    (frozen image, prompted text: ``core.steps.domain_split``)

    For CoOp, whose logits are exactly these, it equals :func:`prompt_gradient`; for MetaPrompt it is
    the term its episodes contain. ``method`` is unused (the episode's loss is the same for every
    learner); it keeps the signature of :func:`prompt_gradient`."""
    if model.prompts.config.conditional:
        raise ValueError("episode_gradient needs unconditional text prompts (CoCoOp's depend on the image): "
                         "use prompt_gradient")
    named = dict(model.prompts.named_parameters())
    params = [named[n] for n in TEXT_PARAMS if n in named and named[n].requires_grad]
    text = model.text_features(model.prompts(), classes)
    logits = clip_logits(model.frozen_image_features(images), text, model.logit_scale)
    grads = torch.autograd.grad(cross_entropy(logits, relabel(labels, classes)), params)
    return torch.cat([g.flatten() for g in grads])


def group_gradients(model: PromptedCLIP, method: MethodConfig, images: torch.Tensor, labels: torch.Tensor,
                    groups: int = 2, seed: int = 0, gradient=prompt_gradient) -> list[torch.Tensor]:
    """``gradient`` of each of ``groups`` disjoint class groups, from a random split (``seed``) of the
    classes present. Each group needs at least 2 classes: the CE over a single class is constant, its
    gradient zero."""
    present = labels.unique()
    if len(present) < 2 * groups:
        raise ValueError(f"{len(present)} classes present cannot make {groups} groups of at least 2 classes "
                         f"(a one-class group has a zero gradient): use more classes or fewer groups")
    order = present[torch.randperm(len(present), generator=make_generator(seed))]
    parts = [order[i::groups].sort().values for i in range(groups)]
    grads = []
    for classes in parts:
        mask = torch.isin(labels, classes)
        grads.append(gradient(model, method, images[mask], labels[mask], classes))
    return grads


def _pairs(grads: list[torch.Tensor], measure) -> float:
    return float(torch.stack([measure(grads[i], grads[j]) for i in range(len(grads))
                              for j in range(i + 1, len(grads))]).mean())


def _cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(u, v, dim=0)


def _inner(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u @ v


def gradient_alignment(model: PromptedCLIP, method: MethodConfig, images: torch.Tensor, labels: torch.Tensor,
                       groups: int = 2, seed: int = 0, gradient=prompt_gradient) -> float:
    """cos(g_S, g_Q) for a random split of the classes present into ``groups`` (mean over pairs)."""
    return _pairs(group_gradients(model, method, images, labels, groups, seed, gradient), _cosine)


@dataclass
class AlignmentPoint:
    step: int
    alignment: float  # mean cos(g_S, g_Q)
    agreement: float  # mean ⟨g_S, g_Q⟩, what a first-order meta-gradient rewards
    base: float
    new: float


def alignment_curve(backbone: Backbone, dataset, method: MethodConfig, optim, every: int, shots: int = 16,
                    seed: int = 1, probes: int = 4, gradient=prompt_gradient) -> list[AlignmentPoint]:
    """Train ``method`` on the base classes of ``dataset`` and, every ``every`` steps (and at step
    0), record the mean alignment and agreement of ``gradient`` over ``probes`` fixed class splits of
    the training set, and base/new test accuracy."""
    seed_everything(seed)
    base, _ = base_new_split(len(dataset.classnames))
    names = list(dataset.classnames)
    train_index, labels = base_class_shots(dataset, shots, seed)
    images = dataset.images[train_index]
    model = prompted_clip(backbone, method, [names[i] for i in base], dataset.templates, dataset.name)
    templates = model.templates
    total, warmup = steps_for(len(images), optim)
    state, step = start_training(model, method, optim, total, warmup, seed)

    def measure() -> AlignmentPoint:
        model.set_classes([names[i] for i in base], templates)
        model.eval()
        splits = [group_gradients(model, method, images, labels, seed=k, gradient=gradient) for k in range(probes)]
        alignment = sum(_pairs(grads, _cosine) for grads in splits) / probes
        agreement = sum(_pairs(grads, _inner) for grads in splits) / probes
        result = evaluate_base_new(model, method, dataset)
        return AlignmentPoint(state.step, alignment, agreement, result["base"], result["new"])

    points = [measure()]
    while state.step < total:
        train(state, step, images, labels, None, optim, total, stop_after=every, progress=False)
        points.append(measure())
    return points
