"""ProMetaR (Park, Ko, Kim, CVPR 2024): meta-regularisation of prompt learning.

Explained in ``notebooks/07_prometar_and_gram``. The base learner is IVLP with PromptSRC's
regulariser, an L1 pull of the prompted features towards the frozen ones:

    R_text = 50 · mean |f̃_T(c) − f_T(c)|,   R_image = 20 · mean |f̃_I(x) − f_I(x)|

Instead of adding R to the loss, ProMetaR *modulates* its gradient, per prompt layer l:

    γ_l = σ(W₂ W₁ [g_ce,l ; g_reg,l])   (two bias-free linears, hidden n·d/8, γ repeated ×8)
    g_l = g_ce,l + γ_l ⊙ g_reg,l

and meta-learns the modulation net with a MAML episode per batch: one class is the query, the rest
the support; an inner step with the modulated gradient (lr 5e-4) adapts the prompts on the support;
the query loss, "virtual" by manifold mixup of query and support image features (λ ~ Beta(0.5, 0.5)),
is back-propagated (second order by default) into the prompts and the net. The official code uses
learn2learn; here ``higher`` and :func:`~metaprompt_lite.core.meta.inner_step`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from metaprompt_lite.core.clip import Encoder
from metaprompt_lite.core.loop import Batch, TrainState
from metaprompt_lite.core.losses import clip_logits, feature_consistency_l1
from metaprompt_lite.core.meta import double_backward_attention, functional_learner, inner_step
from metaprompt_lite.core.prompts import PromptedCLIP, PromptLearner

TEXT_REG_WEIGHT = 50.0
IMAGE_REG_WEIGHT = 20.0
DIM_RATE = 8  # hidden width and γ resolution: one γ per 8 consecutive prompt entries


@dataclass(frozen=True)
class ProMetaRConfig:
    adapt_lr: float = 5e-4  # inner (task-adaptation) step size
    # SGD of the modulation net. Official: a constant 1e-6. The yaml's OPTIM_VNET asks for lr 2.5e-4 on a
    # cosine after a warm-up epoch at 1e-6, but trainers/prometar.py builds that scheduler without
    # registering or stepping it, so the warm-up lr 1e-6 stays for the whole run (the ablation
    # ``prometar-netlr`` runs the yaml's: modulator_lr=2.5e-4, modulator_schedule="prompts").
    modulator_lr: float = 1e-6
    modulator_schedule: str = "constant"  # "constant" | "prompts" (the prompts' schedule, own lr)
    modulator_warmup_lr: float = 1e-6  # OPTIM_VNET.WARMUP_CONS_LR, used by the "prompts" schedule
    lr_ratio: float = 5e-4  # scale of the query loss: the official code's LR_RATIO (train.py default)
    first_order: bool = False  # official default: second order
    mixup_alpha: float = 0.5
    mixup_beta: float = 0.5
    text_weight: float = TEXT_REG_WEIGHT
    image_weight: float = IMAGE_REG_WEIGHT

    def __post_init__(self) -> None:
        if self.modulator_schedule not in ("constant", "prompts"):
            raise ValueError(f"modulator_schedule must be 'constant' or 'prompts', got {self.modulator_schedule!r}")


def prompt_layers(learner: PromptLearner) -> list[tuple[str, int | None, str]]:
    """(parameter name, layer index within it or None, modality) for every prompt layer."""
    layers: list[tuple[str, int | None, str]] = [("ctx", None, "text")]
    if hasattr(learner, "deep_ctx"):
        layers += [("deep_ctx", i, "text") for i in range(learner.deep_ctx.shape[0])]
    if hasattr(learner, "vision_ctx"):
        layers += [("vision_ctx", i, "vision") for i in range(learner.vision_ctx.shape[0])]
    return layers


class GradientModulator(nn.Module):
    """ProMetaR's per-layer gradient modulation net ("VNet")."""

    def __init__(self, learner: PromptLearner, dim_rate: int = DIM_RATE) -> None:
        super().__init__()
        self.dim_rate = dim_rate
        self.layers = prompt_layers(learner)
        nets = []
        for name, index, _ in self.layers:
            shape = getattr(learner, name).shape[-2:]
            size = shape[0] * shape[1]
            if size % dim_rate:
                raise ValueError(f"prompt layer {name}[{index}] has {size} entries, not a multiple of {dim_rate}")
            nets.append(nn.Sequential(nn.Linear(2 * size, size // dim_rate, bias=False),
                                      nn.Linear(size // dim_rate, size // dim_rate, bias=False)))
        self.nets = nn.ModuleList(nets)

    def gamma(self, layer: int, g_ce: torch.Tensor, g_reg: torch.Tensor) -> torch.Tensor:
        """γ_l = σ(W₂ W₁ [g_ce ; g_reg]) repeated to the prompt's shape."""
        flat = torch.cat([g_ce.reshape(-1), g_reg.reshape(-1)])
        return torch.sigmoid(self.nets[layer](flat)).repeat_interleave(self.dim_rate).reshape(g_ce.shape)

    def forward(self, grads_ce: dict[str, torch.Tensor], grads_reg: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """g = g_ce + γ ⊙ g_reg, layer by layer, for every prompt parameter."""
        out: dict[str, list[torch.Tensor]] = {}
        for k, (name, index, _) in enumerate(self.layers):
            ce = grads_ce[name] if index is None else grads_ce[name][index]
            reg = grads_reg[name] if index is None else grads_reg[name][index]
            out.setdefault(name, []).append(ce + self.gamma(k, ce, reg) * reg)
        return {name: parts[0] if name == "ctx" else torch.stack(parts) for name, parts in out.items()}


def _losses(model: PromptedCLIP, prompts, images: torch.Tensor, frozen_image: torch.Tensor, config: ProMetaRConfig,
            stem: torch.Tensor | None = None, encoder: Encoder | None = None):
    """Prompted image features, text features, and the two regularisers."""
    image = model.image_features(images, prompts, stem=stem, encoder=encoder)
    text = model.text_features(prompts, encoder=encoder)
    reg_text = feature_consistency_l1(text, model.frozen_text_features(), config.text_weight)
    reg_image = feature_consistency_l1(image, frozen_image, config.image_weight)
    return image, text, reg_text, reg_image


def _split_grads(loss_ce, reg_text, reg_image, params: dict[str, torch.Tensor], create_graph: bool):
    """∇CE, and ∇R where R is R_text for text prompts and R_image for vision prompts."""
    names, tensors = list(params), list(params.values())
    g_ce = torch.autograd.grad(loss_ce, tensors, create_graph=create_graph, retain_graph=True, allow_unused=True)
    g_rt = torch.autograd.grad(reg_text, tensors, create_graph=create_graph, retain_graph=True, allow_unused=True)
    g_ri = torch.autograd.grad(reg_image, tensors, create_graph=create_graph, retain_graph=True, allow_unused=True)
    zero = [torch.zeros_like(t) for t in tensors]
    ce = {n: g if g is not None else z for n, g, z in zip(names, g_ce, zero)}
    reg = {n: (gi if n == "vision_ctx" else gt) for n, gt, gi in zip(names, g_rt, g_ri)}
    reg = {n: g if g is not None else torch.zeros_like(params[n]) for n, g in reg.items()}
    return ce, reg


def prometar_step(state: TrainState, batch: Batch, modulator: GradientModulator,
                  modulator_optimizer: torch.optim.Optimizer, config: ProMetaRConfig) -> dict[str, float]:
    """One ProMetaR iteration: a modulated update on the batch, then a meta-update of prompts and
    modulation net on a (support, virtual query) episode."""
    model, learner = state.model, state.model.prompts
    frozen_image, stem = batch.frozen_image(model), batch.image_stem(model)
    params = dict(learner.named_parameters())

    # 1. regular update with the modulated gradient g = g_ce + γ ⊙ g_reg
    image, text, reg_text, reg_image = _losses(model, learner(), batch.images, frozen_image, config, stem)
    loss_ce = F.cross_entropy(clip_logits(image, text, model.logit_scale), batch.labels)
    g_ce, g_reg = _split_grads(loss_ce, reg_text, reg_image, params, create_graph=False)
    with torch.no_grad():
        grads = modulator(g_ce, g_reg)
    state.optimizer.zero_grad(set_to_none=True)
    for name, p in params.items():
        p.grad = grads[name].detach()
    state.optimizer.step()
    out = {"loss": loss_ce.item(), "reg": (reg_text + reg_image).item()}

    # 2. meta-update: one class is the query, the rest the support
    classes = batch.labels.unique()
    if len(classes) < 2:
        return out
    query_class = classes[torch.randint(len(classes), (1,), generator=state.generator)]
    query = (batch.labels == query_class).nonzero().flatten()
    support = (batch.labels != query_class).nonzero().flatten()
    lam = torch.distributions.Beta(config.mixup_alpha, config.mixup_beta).sample((len(query),))
    mix = support[torch.randint(len(support), (len(query),), generator=state.generator)]
    with double_backward_attention(not config.first_order):
        query_loss = _virtual_query_loss(model, batch, modulator, config, support, query, mix, lam)
        state.optimizer.zero_grad(set_to_none=True)
        modulator_optimizer.zero_grad(set_to_none=True)
        query_loss.backward()
    state.optimizer.step()
    modulator_optimizer.step()
    out["query_loss"] = query_loss.item()
    return out


def _virtual_query_loss(model: PromptedCLIP, batch: Batch, modulator: GradientModulator, config: ProMetaRConfig,
                        support: torch.Tensor, query: torch.Tensor, mix: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """The meta-objective of one episode: adapt θ on the support with the modulated gradient,
    θ' = θ − α (g_ce + γ ⊙ g_reg), then the mixup ("virtual") query loss at θ', scaled by ``lr_ratio``.
    Its graph reaches θ and the modulation net (second order unless ``config.first_order``)."""
    learner, scale = model.prompts, model.logit_scale
    encoder = model.encoder if config.first_order else model.encoder.second_order()
    frozen_image, stem = batch.frozen_image(model), batch.image_stem(model)
    fmodel = functional_learner(learner)
    theta = list(learner.parameters())
    names = [n for n, _ in learner.named_parameters()]
    image, text, reg_text, reg_image = _losses(model, fmodel(params=theta), batch.images[support],
                                               frozen_image[support], config, stem[support], encoder)
    support_ce = F.cross_entropy(clip_logits(image, text, scale), batch.labels[support])
    g_ce, g_reg = _split_grads(support_ce, reg_text, reg_image, dict(zip(names, theta)),
                               create_graph=not config.first_order)
    if config.first_order:
        g_ce = {n: g.detach() for n, g in g_ce.items()}
        g_reg = {n: g.detach() for n, g in g_reg.items()}
    grads = modulator(g_ce, g_reg)  # keeps the graph into the modulation net
    prompts = fmodel(params=inner_step(theta, [grads[n] for n in names], config.adapt_lr))  # θ' = θ − α g
    # as the official code: mix the image encoder's raw outputs, then normalise
    features = model.image_features(batch.images, prompts, normalize=False, stem=stem, encoder=encoder)
    mixed = lam[:, None] * features[query] + (1 - lam[:, None]) * features[mix]
    logits = clip_logits(F.normalize(mixed, dim=-1), model.text_features(prompts, encoder=encoder), scale)
    query_loss = (lam * F.cross_entropy(logits, batch.labels[query], reduction="none")
                  + (1 - lam) * F.cross_entropy(logits, batch.labels[mix], reduction="none")).mean()
    return config.lr_ratio * query_loss
