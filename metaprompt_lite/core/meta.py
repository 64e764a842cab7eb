"""Episodes and meta-gradients (first and second order) built on ``higher``, and MetaPrompt's update.

Explained in ``notebooks/05_meta_learning_with_higher`` and ``notebooks/06_metaprompt_end_to_end``.

An episode inside one batch: adapt the prompts on a *support* set, then measure the loss on a
*query* set the support did not contain (other classes for base-to-new, another domain for DG):

    θ'  = θ − α ∇_θ L_s(θ)              (inner step, ``inner_steps`` times)
    g   = ∇_θ L_q(θ')                   second order (MAML): differentiates through θ'
    g₁  = ∇_θ' L_q(θ')                  first order (FOMAML, MetaPrompt's official code)

:func:`meta_gradients` computes either with :func:`functional_learner` (``higher``'s monkeypatch)
and :func:`inner_step` (θ − α g written out, the inner step ProMetaR and GRAM share).
:func:`episodic_meta_update` is MetaPrompt's rule θ ← θ − lr · META_STEP · Σ_i g_i as written
(``metaprompt-clean``); :func:`official_quirks_meta_update` runs it as the official code does (the
benchmark's ``metaprompt``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import higher
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

META_STEP = 0.2  # MetaPrompt: scale of the summed query gradients in the domain-split update
N_GROUPS = 2  # MetaPrompt B2N: classes of a batch split into N = 2 groups


# --------------------------------------------------------------------------- episodes
@dataclass(frozen=True)
class Episode:
    """Indices into a batch and the global class ids each side may see (sorted)."""

    support: torch.Tensor
    query: torch.Tensor
    support_classes: torch.Tensor
    query_classes: torch.Tensor


def cross_class_episodes(
    labels: torch.Tensor, n_classes: int, generator: torch.Generator, n_groups: int = N_GROUPS
) -> list[Episode]:
    """MetaPrompt's cross-class split: shuffle the class ids, cut them into ``n_groups`` groups;
    episode i queries group i's images and classes, its support is the other groups' images with
    the other groups' classes. Groups without images in the batch give no episode."""
    if n_groups < 2:
        raise ValueError("a cross-class split needs at least 2 groups")
    order = torch.randperm(n_classes, generator=generator)
    groups = [g.sort().values for g in order.chunk(n_groups)]
    episodes = []
    for i, query_classes in enumerate(groups):
        support_classes = torch.cat([g for j, g in enumerate(groups) if j != i]).sort().values
        in_query = torch.isin(labels.cpu(), query_classes)
        query, support = in_query.nonzero().flatten(), (~in_query).nonzero().flatten()
        if len(query) and len(support):
            episodes.append(Episode(support, query, support_classes, query_classes))
    return episodes


def cross_domain_episodes(domains: torch.Tensor, n_classes: int) -> list[Episode]:
    """MetaPrompt's cross-domain split: for each domain in the batch, query = its images, support =
    the images of the other domains; every episode sees all classes."""
    all_classes = torch.arange(n_classes)
    domains = domains.cpu()
    episodes = []
    for d in domains.unique().tolist():
        in_query = domains == d
        query, support = in_query.nonzero().flatten(), (~in_query).nonzero().flatten()
        if len(support):
            episodes.append(Episode(support, query, all_classes, all_classes))
    return episodes


def relabel(labels: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Map global class ids to their position in ``classes`` (so CE sees 0..len(classes)-1)."""
    lookup = torch.full((int(max(int(labels.max()), int(classes.max())) + 1),), -1, dtype=torch.long)
    lookup[classes.cpu()] = torch.arange(len(classes))
    new = lookup[labels.cpu()]
    if (new < 0).any():
        missing = sorted(set(labels[new.to(labels.device) < 0].tolist()))
        raise ValueError(f"labels {missing} are not among the episode's classes {classes.tolist()}")
    return new.to(labels.device)


# --------------------------------------------------------------------------- meta-gradients
LossFn = Callable[[nn.Module], torch.Tensor]


@contextlib.contextmanager
def double_backward_attention(enabled: bool = True) -> Iterator[None]:
    """Route attention through torch's math SDPA kernel: the fused CPU kernels have no double
    backward, which second-order meta-gradients need. (The encoders of such passes are the model
    encoder's :meth:`~metaprompt_lite.core.clip.Encoder.second_order` twin, asked for by the step.)"""
    if not enabled:
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield


def functional_learner(learner: nn.Module) -> nn.Module:
    """``learner`` as a functional module (``higher.patch.monkeypatch``): ``fmodel(params=θ)`` runs it
    with the parameter list θ (in ``learner.parameters()`` order) and keeps θ as its current weights;
    ``fmodel.update_params(θ)`` only sets them, for a loss function that calls ``fmodel()``. Start from
    θ₀ = ``list(learner.parameters())``: gradients then reach the learner through every inner step."""
    return higher.patch.monkeypatch(learner, copy_initial_weights=False, track_higher_grads=True)


def inner_step(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None],
               lr: float) -> list[torch.Tensor]:
    """θ' = θ − α g for each parameter; one without a gradient (None) stays θ. Differentiable: with
    gradients from ``create_graph=True``, θ' keeps the graph back to θ (second order)."""
    return [p if g is None else p - lr * g for p, g in zip(params, grads)]


def meta_gradients(learner: nn.Module, support_loss: LossFn, query_loss: LossFn, inner_lr: float,
                   inner_steps: int = 1, first_order: bool = True, adapt: Sequence[str] | None = None
                   ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Meta-gradient of ``query_loss`` after ``inner_steps`` SGD steps on ``support_loss``.

    ``support_loss(module)`` and ``query_loss(module)`` take the (functional) prompt module and
    return a scalar. ``adapt`` names the parameters the inner loop updates (default: all).
    Returns ``({name: g}, query_loss)``; parameters the query loss does not reach get no entry.

        θ_{k+1} = θ_k − α ∇ L_s(θ_k),   k < inner_steps
        first_order:  g = ∇_{θ_K} L_q(θ_K)        second order: g = ∇_{θ_0} L_q(θ_K(θ_0))

    First order detaches each adapted θ_{k+1} (a fresh leaf). The parameters outside ``adapt`` are
    never stepped (the learner's own tensors throughout), though the support gradient is taken for
    every parameter, as ``higher``'s differentiable SGD did (this keeps its results bit for bit).
    """
    if inner_steps < 1:
        raise ValueError("inner_steps must be >= 1")
    if inner_lr < 0:
        raise ValueError(f"inner_lr must be >= 0, got {inner_lr}")
    names = [n for n, _ in learner.named_parameters()]
    adapted = [adapt is None or n in adapt for n in names]
    if adapt is not None and sum(adapted) != len(set(adapt)):
        raise ValueError(f"unknown parameter names in adapt={list(adapt)}; the learner has {names}")
    if not any(adapted):
        raise ValueError("adapt names no parameter: there is nothing for the inner loop to update")
    theta = list(learner.parameters())
    params = theta
    with double_backward_attention(not first_order):
        fmodel = functional_learner(learner)
        for _ in range(inner_steps):
            fmodel.update_params(params)  # support_loss calls fmodel() on θ_k
            grads = _gradients(support_loss(fmodel), params, create_graph=not first_order)
            params = inner_step(params, [g if a else None for g, a in zip(grads, adapted)], inner_lr)
            if first_order:
                params = [p.detach().requires_grad_() if a else p for p, a in zip(params, adapted)]
        fmodel.update_params(params)
        loss = query_loss(fmodel)
        grads = torch.autograd.grad(loss, params if first_order else theta, allow_unused=True)
    return {n: g.detach() for n, g in zip(names, grads) if g is not None}, loss.detach()


def _gradients(loss: torch.Tensor, params: Sequence[torch.Tensor], create_graph: bool) -> list[torch.Tensor | None]:
    """∇ loss for each of ``params``; None where the loss does not reach it or it needs no gradient."""
    wanted = [p for p in params if p.requires_grad]
    found = iter(torch.autograd.grad(loss, wanted, create_graph=create_graph, allow_unused=True) if wanted else ())
    return [next(found) if p.requires_grad else None for p in params]


@torch.no_grad()
def apply_update(learner: nn.Module, grads: dict[str, torch.Tensor], step_size: float) -> None:
    """θ ← θ − step_size · g for every named gradient."""
    for name, parameter in learner.named_parameters():
        if name in grads:
            parameter.sub_(step_size * grads[name])


def episodic_meta_update(learner: nn.Module, episodes: Sequence[Episode],
                         support_loss: Callable[[nn.Module, Episode], torch.Tensor],
                         query_loss: Callable[[nn.Module, Episode], torch.Tensor], lr: float,
                         meta_step: float = META_STEP, first_order: bool = True,
                         adapt: Sequence[str] | None = None, inner_steps: int = 1) -> torch.Tensor:
    """MetaPrompt's domain-split update, without the official code's side effects (``metaprompt-clean``).

    For each episode i (from the same starting θ):  g_i = meta-gradient (one inner SGD step at the
    current scheduled ``lr``); then  θ ← θ − lr · meta_step · Σ_i g_i.  Returns the mean query loss.
    """
    total: dict[str, torch.Tensor] = {}
    losses = []
    for episode in episodes:
        grads, loss = meta_gradients(learner, lambda m, e=episode: support_loss(m, e),
                                     lambda m, e=episode: query_loss(m, e), inner_lr=lr, inner_steps=inner_steps,
                                     first_order=first_order, adapt=adapt)
        for name, g in grads.items():
            total[name] = total[name] + g if name in total else g
        losses.append(loss)
    apply_update(learner, total, lr * meta_step)
    return torch.stack(losses).mean() if losses else torch.zeros(())


def official_quirks_meta_update(learner: nn.Module, optimizer: torch.optim.Optimizer,
                                episodes: Sequence[Episode],
                                support_loss: Callable[[nn.Module, Episode], torch.Tensor],
                                query_loss: Callable[[nn.Module, Episode], torch.Tensor], lr: float,
                                meta_step: float = META_STEP, adapt: Sequence[str] | None = None) -> torch.Tensor:
    """MetaPrompt's domain-split update exactly as its official code runs it (the benchmark's
    ``metaprompt``; Vill-Lab/2024-TIP-MetaPrompt, ``trainers/meta.py``, ``Meta_B2N.forward_backward``
    and ``Meta_DG.forward_backward``, on torch 1.10 and Dassl).

    The adapted prompts θ (``adapt``: text for cross-class, vision for cross-domain) are saved once
    (``deepcopy``) before the episodes; the other modality is frozen (``requires_grad_(False)``). Per
    episode i:

    1. inner step = one step of the *training optimizer* on the support loss: zero the gradients
       (to zero tensors, not None, as torch 1.10's ``zero_grad`` did), back-propagate, SGD step
       with momentum μ and weight decay λ on every prompt that has a gradient tensor:
       b ← μ·b + (g + λ·θ),  θ ← θ − lr·b. The support gradient stays in the momentum buffer b
       and keeps moving θ over the following steps (about lr·g/(1−μ) = 10·lr·g in all, against the
       meta term's 0.2·lr·g). The frozen modality's gradient is a zero tensor, so it still moves by
       its momentum and weight decay.
    2. query loss at the adapted θ; g_i = ∇_θ L_q (first order).
    3. "restore" ``p.data = saved``: after the *first* episode this does restore θ, and from then on
       p shares its storage with the saved copy, so the later episodes' inner steps are kept (their
       restore is a no-op).

    Finally θ ← θ − lr · meta_step · Σ_i g_i (in place, not through the optimizer). Returns the mean
    query loss. ``adapt`` None: every parameter adapts (nothing frozen).
    """
    params = dict(learner.named_parameters())
    adapted = list(params) if adapt is None else [n for n in params if n in adapt]
    if adapt is not None and len(adapted) != len(set(adapt)):
        raise ValueError(f"unknown parameter names in adapt={list(adapt)}; the learner has {list(params)}")
    frozen = [p for n, p in params.items() if n not in adapted and p.requires_grad]
    saved = {n: params[n].detach().clone() for n in adapted}
    total: dict[str, torch.Tensor] = {}
    losses = []
    restored = False
    for p in frozen:
        p.requires_grad_(False)
    try:
        for episode in episodes:
            optimizer.zero_grad(set_to_none=False)
            support_loss(learner, episode).backward()
            optimizer.step()
            loss = query_loss(learner, episode)
            grads = torch.autograd.grad(loss, [params[n] for n in adapted], allow_unused=True)
            for name, g in zip(adapted, grads):
                if g is not None:
                    total[name] = total[name] + g if name in total else g
            losses.append(loss.detach())
            if not restored:  # the first restore copies the saved θ back; then p aliases the copy
                with torch.no_grad():
                    for name in adapted:
                        params[name].copy_(saved[name])
                restored = True
    finally:
        for p in frozen:
            p.requires_grad_(True)
    apply_update(learner, total, lr * meta_step)
    return torch.stack(losses).mean() if losses else torch.zeros(())
