"""GRAM (Li et al., ICCV 2023): gradient-regulated meta-prompt learning.

Explained in ``notebooks/07_prometar_and_gram``. Before any downstream tuning GRAM meta-learns, on
*unlabeled image–text pairs* (here the pocket-CLIP corpus, which holds no benchmark image), an
initialisation θ₀ of the prompts and a gradient regulator r (:class:`GradientRegulator`). A
meta-task matches images to captions, the support from one visual style, the query from another;
with L(θ; pairs) = CE(s · f̃_I(x) · f̃_T(captions)ᵀ, diag):

    θ' = θ − α · r(∇_θ L(θ; support));   (θ₀, r) ← Adam step on ∇ L(θ'; query)   (second order)

Downstream the learner starts from θ₀ and every step uses r(∇L). *Unverified against code* (none is
public): r(g) = g ⊙ 2σ(a ⊙ g/rms(g) + b), a = b = 0 at the start, is the project's choice
(``docs/methods.md``); so are the step sizes and the task sampler.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from metaprompt_lite.core.clip import Encoder
from metaprompt_lite.core.loop import make_generator
from metaprompt_lite.core.losses import clip_logits
from metaprompt_lite.core.meta import double_backward_attention, functional_learner, inner_step
from metaprompt_lite.core.prompts import PromptedCLIP, PromptLearner

MAX_CAPTION_WORDS = 12  # captions become "class names" after the context: keep them short


@dataclass(frozen=True)
class GramConfig:
    meta_steps: int = 200
    pairs: int = 24  # image–text pairs per support / query set
    inner_lr: float = 0.05
    outer_lr: float = 2e-3
    first_order: bool = False
    seed: int = 0


class GradientRegulator(nn.Module):
    """r(g) = g ⊙ 2σ(a ⊙ ĝ + b), ĝ = g / rms(g), with a, b shaped like each prompt parameter."""

    def __init__(self, learner: PromptLearner) -> None:
        super().__init__()
        self.names = [n for n, _ in learner.named_parameters()]
        self.scale = nn.ParameterDict({n.replace(".", "_"): nn.Parameter(torch.zeros_like(p))
                                       for n, p in learner.named_parameters()})
        self.shift = nn.ParameterDict({n.replace(".", "_"): nn.Parameter(torch.zeros_like(p))
                                       for n, p in learner.named_parameters()})

    def regulate(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        key = name.replace(".", "_")
        normalised = grad / (grad.pow(2).mean().sqrt() + 1e-12)
        return grad * 2 * torch.sigmoid(self.scale[key] * normalised + self.shift[key])

    def forward(self, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: self.regulate(n, g) for n, g in grads.items()}


def _short(caption: str) -> str:
    return " ".join(caption.split()[:MAX_CAPTION_WORDS])


def sample_task(concepts: torch.Tensor, styles: torch.Tensor, pairs: int, generator: torch.Generator):
    """Two index sets of images with distinct concepts each: support from one style, query from
    another (cross-domain meta-tasks). Each holds ``pairs`` images, or fewer when its style has fewer
    concepts (the pocket corpus has one style with 10 concepts; its tasks are smaller)."""
    style_ids = styles.unique()
    if len(style_ids) < 2:
        raise ValueError("GRAM's meta-tasks need image–text pairs from at least two styles")
    picked = style_ids[torch.randperm(len(style_ids), generator=generator)[:2]]
    sets = []
    for style in picked.tolist():
        members = (styles == style).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        seen, chosen = set(), []
        for i in members.tolist():
            if int(concepts[i]) not in seen:
                seen.add(int(concepts[i]))
                chosen.append(i)
            if len(chosen) == pairs:
                break
        sets.append(torch.tensor(chosen))
    return sets[0], sets[1]


def matching_loss(model: PromptedCLIP, module, images: torch.Tensor, captions: list[str], params=None,
                  encoder: Encoder | None = None) -> torch.Tensor:
    """Contrastive image→text matching with prompted encoders on a set of pairs."""
    model.set_classes(captions)
    prompts = module(params=params) if params is not None else module()
    logits = clip_logits(model.image_features(images, prompts, encoder=encoder),
                         model.text_features(prompts, encoder=encoder), model.logit_scale)
    return F.cross_entropy(logits, torch.arange(len(captions), device=logits.device))


def meta_train(model: PromptedCLIP, images: torch.Tensor, captions: list[str], concepts: torch.Tensor,
               styles: torch.Tensor, config: GramConfig, progress: bool = True) -> tuple[dict, dict, list[float]]:
    """Meta-learn (θ₀, r) on image–caption pairs. Returns (θ₀ state, regulator state, query losses)."""
    learner = model.prompts
    regulator = GradientRegulator(learner)
    optimizer = torch.optim.Adam(list(learner.parameters()) + list(regulator.parameters()), lr=config.outer_lr)
    generator = make_generator(config.seed)
    names = [n for n, _ in learner.named_parameters()]
    captions = [_short(c) for c in captions]
    encoder = model.encoder if config.first_order else model.encoder.second_order()
    losses = []
    for _ in tqdm(range(config.meta_steps), desc="GRAM meta-train", disable=not progress):
        support, query = sample_task(concepts, styles, config.pairs, generator)
        with double_backward_attention(not config.first_order):
            fmodel = functional_learner(learner)
            theta = list(learner.parameters())
            loss_s = matching_loss(model, fmodel, images[support], [captions[i] for i in support], theta, encoder)
            grads = torch.autograd.grad(loss_s, theta, create_graph=not config.first_order, allow_unused=True)
            grads = {n: g if g is not None else torch.zeros_like(p) for n, g, p in zip(names, grads, theta)}
            regulated = regulator(grads)
            fast = inner_step(theta, [regulated[n] for n in names], config.inner_lr)  # θ' = θ − α r(g)
            loss_q = matching_loss(model, fmodel, images[query], [captions[i] for i in query], fast, encoder)
            optimizer.zero_grad(set_to_none=True)
            loss_q.backward()
        optimizer.step()
        losses.append(loss_q.item())
    return ({k: v.detach().clone() for k, v in learner.state_dict().items()},
            {k: v.detach().clone() for k, v in regulator.state_dict().items()}, losses)
