"""GRAM (Li et al., ICCV 2023): gradient-regulated meta-prompt learning.

Explained in ``notebooks/07_prometar_and_gram``.

GRAM wraps any prompt learner. Before any downstream tuning it meta-learns, on *unlabeled
image–text pairs* (here: the pocket-CLIP pretraining corpus, which holds no benchmark image),

1. an initialisation θ₀ of the soft prompts, and
2. a lightweight gradient-regulating function r (:class:`GradientRegulator`),

so that few-shot tuning with regulated gradients generalises across domains. A meta-task is
contrastive image–text matching: the support is a batch of pairs from one visual style, the
query a batch from another style; with L(θ; pairs) = CE(s · f̃_I(x) · f̃_T(captions)ᵀ, diag):

    θ' = θ − α · r(∇_θ L(θ; support))                 (inner step, differentiable)
    (θ₀, r) ← Adam step on ∇ L(θ'; query)             (outer step, second order)

Downstream, the learner starts from θ₀ and every optimizer step uses r(∇L) in place of ∇L.
*Unverified against code* (none is public): the regulator's form, step sizes and task sampler;
r(g) = g ⊙ 2σ(a ⊙ g/rms(g) + b) with a = b = 0 at the start (identity) is a per-dimension
sigmoid gate, the choice ``docs/methods.md`` calls faithful.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from metaprompt_lite.engine import load_checkpoint, make_generator, save_checkpoint
from metaprompt_lite.losses import clip_logits
from metaprompt_lite.meta import double_backward_attention, functional_learner, inner_step
from metaprompt_lite.paths import data_dir
from metaprompt_lite.prompts import PromptedCLIP, PromptLearner

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


def matching_loss(model: PromptedCLIP, module, images: torch.Tensor, captions: list[str], params=None) -> torch.Tensor:
    """Contrastive image→text matching with prompted encoders on a set of pairs."""
    model.set_classes(captions)
    prompts = module(params=params) if params is not None else module()
    logits = clip_logits(model.image_features(images, prompts), model.text_features(prompts), model.logit_scale)
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
    losses = []
    for _ in tqdm(range(config.meta_steps), desc="GRAM meta-train", disable=not progress):
        support, query = sample_task(concepts, styles, config.pairs, generator)
        with double_backward_attention(not config.first_order):
            fmodel = functional_learner(learner)
            theta = list(learner.parameters())
            loss_s = matching_loss(model, fmodel, images[support], [captions[i] for i in support], theta)
            grads = torch.autograd.grad(loss_s, theta, create_graph=not config.first_order, allow_unused=True)
            grads = {n: g if g is not None else torch.zeros_like(p) for n, g, p in zip(names, grads, theta)}
            regulated = regulator(grads)
            fast = inner_step(theta, [regulated[n] for n in names], config.inner_lr)  # θ' = θ − α r(g)
            loss_q = matching_loss(model, fmodel, images[query], [captions[i] for i in query], fast)
            optimizer.zero_grad(set_to_none=True)
            loss_q.backward()
        optimizer.step()
        losses.append(loss_q.item())
    return ({k: v.detach().clone() for k, v in learner.state_dict().items()},
            {k: v.detach().clone() for k, v in regulator.state_dict().items()}, losses)


def save_artifact(path: Path, init: dict, regulator: dict, meta: dict) -> None:
    save_checkpoint(path, {"init": init, "regulator": regulator, "meta": meta})


def artifact_path(backbone_name: str, method_name: str) -> Path:
    """Where the meta-learned (θ₀, r) of a GRAM method for a backbone is kept."""
    return data_dir() / "gram" / f"{backbone_name}-{method_name}.pt"


def load_gram(model: PromptedCLIP, path: str | Path) -> GradientRegulator:
    """Start ``model``'s prompts from the meta-learned θ₀ and return the regulator r."""
    path = Path(path)
    fix = ("`git checkout data/gram` restores the committed ones, `metaprompt-lite gram` meta-trains them "
           "again (it needs the corpus: `metaprompt-lite data build --corpus`)")
    if not path.is_file():
        raise FileNotFoundError(f"no GRAM meta-learned prompts at {path} — {fix}")
    artifact = load_checkpoint(path, fix=fix)
    artifact.require(("init", "regulator"), "a GRAM artifact")
    model.prompts.load_state_dict(artifact["init"])
    regulator = GradientRegulator(model.prompts)
    regulator.load_state_dict(artifact["regulator"])
    return regulator.to(model.backbone.device)
