"""The three meta-learning training steps against hand-written references (tiny CLIP, CPU).

Each test runs the real step (``make_step`` / ``meta_train``) on a deep copy of a model and compares
the resulting parameters with a transcription of its equation in ``docs/methods.md`` (and the
module docstrings where methods.md leaves a choice open), computed here with ``torch.autograd.grad``
(``create_graph=True`` for the second-order parts) and plain tensor arithmetic for the optimisers.
The references only borrow the model's *encoders* (``text_features`` / ``image_features`` with
explicitly assembled :class:`Prompts`), never the step, episode, loss or optimiser code under test.

- MetaPrompt: "Alternate episodic training, every batch" (in-domain asymmetric step, then the
  domain-split update at the scheduled lr), cross-class and cross-domain, first and second order,
  and the ``official_quirks`` reproduction.
- ProMetaR: "Meta-regularization" (g = g_ce + γ ⊙ g_reg per layer, text prompts with R_text, vision
  prompts with R_image) and "Task augmentation" (mixup query), first and second order.
- GRAM: the regulated downstream step, one meta-training step (second and first order), the task
  sampler.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from metaprompt_lite.core.loop import Batch
from metaprompt_lite.optim import OptimConfig
from metaprompt_lite.methods import get_method
from metaprompt_lite.core.prompts import PromptedCLIP, Prompts
from metaprompt_lite.methods import start_training
from tolerances import EPS32, assert_reorder_close, assert_step_close, config_terms, reorder_atol, scale_of, step_atol

# The references and the steps compute the same quantities with other op orders (autograd graphs of
# another shape, SDPA's math kernel, sums over episodes): equal up to the reordering of the additions
# chained through the tiny CLIP's towers (tests/tolerances.py) over the passes of a meta step (the
# inner forward and backward, the query's forward, backward and second-order backward, and the
# outer step's own forward and backward: 7 passes at most).
STEP_TERMS = config_terms("tiny-clip", passes=7)
META_STEP = 0.2  # docs/methods.md, MetaPrompt: ctx_t -= lr_now · META_STEP · Σ_i g_i
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4  # docs/methods.md, MetaPrompt's optimiser (SGD)


# --------------------------------------------------------------------------- reference helpers
def _prompts(params: dict[str, torch.Tensor]) -> Prompts:
    """Per-layer prompts assembled by hand: text = [ctx, deep_ctx[0], ...], vision = vision_ctx[...]."""
    text = [params["ctx"]] + (list(params["deep_ctx"].unbind(0)) if "deep_ctx" in params else [])
    vision = list(params["vision_ctx"].unbind(0)) if "vision_ctx" in params else []
    return Prompts(text=text, vision=vision)


def _leaves(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone().requires_grad_() for n, p in params.items()}


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _sgd_step(params, grads, buffers, lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY):
    """torch's SGD (dampening 0, no Nesterov), written out: d = g + wd·θ; b = d (first step) or
    μ·b + d; θ ← θ − lr·b. Parameters without a gradient are left alone (their buffer too)."""
    new, new_buffers = dict(params), dict(buffers)
    for n, g in grads.items():
        d = g + weight_decay * params[n]
        new_buffers[n] = d if buffers.get(n) is None else momentum * buffers[n] + d
        new[n] = params[n] - lr * new_buffers[n]
    return new, new_buffers


def _grad(loss, params: dict[str, torch.Tensor], names, create_graph=False) -> dict[str, torch.Tensor]:
    names = list(names)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph, retain_graph=True)
    return dict(zip(names, grads))


def _assert_params(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str,
                   start: dict[str, torch.Tensor] | None = None) -> None:
    """``actual`` equals ``expected`` up to rounding (tests/tolerances.py): gradients (no ``start``)
    at their own size, parameters stepped from ``start`` at the update's size."""
    assert set(actual) == set(expected), what
    for n in expected:
        if start is None:
            assert_reorder_close(actual[n], expected[n], STEP_TERMS, msg=f"{what}, {n}")
        else:
            assert_step_close(actual[n], expected[n], start[n], STEP_TERMS, msg=f"{what}, {n}")


def _tolerance(expected: dict[str, torch.Tensor], start: dict[str, torch.Tensor] | None = None) -> float:
    """The largest tolerance :func:`_assert_params` allows over ``expected``'s tensors: a difference
    the comparison can see must be larger than this."""
    if start is None:
        return max(reorder_atol(STEP_TERMS, scale_of(e)) for e in expected.values())
    return max(step_atol(e.detach(), start[n], STEP_TERMS) for n, e in expected.items())


def _assert_grads_relative(actual, expected, what: str) -> None:
    """Gradients that are small in absolute terms (the regulator's and the modulation net's, on the
    random tiny CLIP): the reordering bound at each tensor's own size, and not all zero."""
    assert set(actual) == set(expected), what
    for n, e in expected.items():
        assert scale_of(e) > 1e-7, f"{what}, {n}: no gradient reaches it"
        assert_reorder_close(actual[n], e, STEP_TERMS, msg=f"{what}, {n}")


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[n].detach() - b[n].detach()).abs().max().item() for n in a)


# =========================================================================== 1. MetaPrompt
B2N_LABELS = torch.tensor([0, 1, 2, 3, 4, 0, 2, 4])  # 5 classes → groups of 3 and 2 classes
DG_LABELS = torch.tensor([0, 1, 2, 3, 0, 5, 1, 4])
DG_DOMAINS = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
LR, WARMUP_LR, SEED = 0.5, 0.2, 11  # the step runs in the warm-up: state.lr = 0.2 ≠ optim.lr


def _metaprompt_reference(model, batch, theta0, lr, cross_domain, meta_order=1, official=False, seed=SEED):
    """docs/methods.md, MetaPrompt's alternate episodic training (every batch), transcribed.

    1. In-domain update: one SGD step (momentum, weight decay) on the asymmetric contrastive loss
       CE(½(logits_i + logits_t)) + CE(logits_i) + CE(logits_t), logits_i = s·f̃_I(x)·f_T(c)ᵀ,
       logits_t = s·f_I(x)·f̃_T(c)ᵀ.
    2. Domain-split update at the same scheduled lr:
       cross-class: shuffle the class ids (``randperm`` of the run's generator), cut them into 2
       groups; episode i: support = images of the other group(s), relabelled within the support
       classes, text encoder on the support classes only; one inner SGD step of the text prompts
       on CE(logits_t); query = group i's images and classes, CE(logits_t); g_i w.r.t. the adapted
       text prompts (first order) or through the inner step (second order); vision prompts frozen.
       cross-domain: one episode per domain of the batch, support = the other domains, all classes,
       CE(logits_i), vision prompts adapt, text prompts frozen.
       Then θ_adapt ← θ_adapt − lr · META_STEP · Σ_i g_i.
       ``official`` (the official loop, docs/methods.md): the inner step is a step of the training
       optimizer (its momentum continues from step 1, weight decay applies, and the frozen modality's
       zeroed gradient still gets momentum and weight decay); the adapted prompts are restored after
       the first episode only (later episodes' inner steps are kept: the saved copy is aliased).
    Returns (θ after step 1, θ after the whole step)."""
    x, y = batch.images, batch.labels
    s = model.clip.logit_scale.exp()
    frozen_image = model.frozen_image_features(x)
    frozen_text = model.frozen_text_features()

    # 1. in-domain asymmetric update
    theta = _leaves(theta0)
    prompts = _prompts(theta)
    logits_i = s * model.image_features(x, prompts) @ frozen_text.t()
    logits_t = s * frozen_image @ model.text_features(prompts).t()
    loss = (F.cross_entropy(0.5 * (logits_i + logits_t), y) + F.cross_entropy(logits_i, y)
            + F.cross_entropy(logits_t, y))
    theta1, buffers = _sgd_step({n: p.detach() for n, p in theta.items()}, _grad(loss, theta, theta), {}, lr)

    # 2. domain-split episodes
    if cross_domain:
        adapt = ["vision_ctx"]
        episodes = []
        for d in batch.domains.unique().tolist():
            query = (batch.domains == d).nonzero().flatten()
            support = (batch.domains != d).nonzero().flatten()
            episodes.append((support, None, query, None))

        def episode_loss(params, index, classes):
            logits = s * model.image_features(x[index], _prompts(params)) @ frozen_text.t()
            return F.cross_entropy(logits, y[index])
    else:
        adapt = ["ctx", "deep_ctx"]
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(model.n_classes, generator=generator)
        groups = [g.sort().values for g in order.chunk(2)]
        episodes = []
        for i, query_classes in enumerate(groups):
            support_classes = torch.cat([g for j, g in enumerate(groups) if j != i]).sort().values
            query = torch.tensor([k for k in range(len(y)) if int(y[k]) in query_classes.tolist()])
            support = torch.tensor([k for k in range(len(y)) if int(y[k]) not in query_classes.tolist()])
            episodes.append((support, support_classes, query, query_classes))

        def episode_loss(params, index, classes):
            local = torch.tensor([classes.tolist().index(int(c)) for c in y[index]])  # relabel
            logits = s * frozen_image[index] @ model.text_features(_prompts(params), classes).t()
            return F.cross_entropy(logits, local)

    second = meta_order == 2
    total = {n: torch.zeros_like(theta1[n]) for n in adapt}
    current = dict(theta1)  # official: θ as the loop leaves it
    for k, (support, support_classes, query, query_classes) in enumerate(episodes):
        start = _leaves(current if official else theta1)
        with sdpa_kernel(SDPBackend.MATH):
            g_s = _grad(episode_loss(start, support, support_classes), start, adapt, create_graph=second)
            if official:
                zeroed = {n: torch.zeros_like(theta1[n]) for n in theta1 if n not in adapt}  # frozen modality
                stepped, buffers = _sgd_step({n: start[n].detach() for n in start}, {**g_s, **zeroed}, buffers, lr)
                fast = _leaves(stepped)
                wrt = fast
                # the restore: the first episode's adapted prompts go back to θ1, later ones stay
                current = {n: theta1[n] if (k == 0 and n in adapt) else stepped[n] for n in stepped}
            elif second:
                fast = {n: start[n] - lr * g_s[n] if n in adapt else start[n] for n in start}
                wrt = start
            else:
                fast = _leaves({n: start[n] - lr * g_s[n] if n in adapt else start[n] for n in start})
                wrt = fast
            g_q = _grad(episode_loss(fast, query, query_classes), wrt, adapt)
        for n in adapt:
            total[n] = total[n] + g_q[n]
    base = current if official else theta1
    theta2 = {n: base[n] - lr * META_STEP * total[n] if n in adapt else base[n] for n in base}
    return theta1, {n: p.detach() for n, p in theta2.items()}


def _metaprompt_model(backbone, classnames):
    method = get_method("metaprompt")
    torch.manual_seed(0)
    return PromptedCLIP(backbone, method.prompt, classnames)


def _run_metaprompt(model, batch, cross_domain, name="metaprompt", **overrides):
    """The real step, through ``start_training`` → ``make_step``, on a deep copy of ``model``, at the
    first (warm-up) step of a schedule whose warm-up lr differs from the base lr."""
    method = get_method(name, **overrides)
    twin = copy.deepcopy(model)
    optim = OptimConfig(lr=LR, warmup_lr=WARMUP_LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, schedule="step")
    state, step = start_training(twin, method, optim, total_steps=10, warmup_steps=2, seed=SEED,
                                 cross_domain=cross_domain)
    assert state.lr == pytest.approx(WARMUP_LR)  # the scheduled lr of this step (constant warm-up)
    losses = step(state, batch)
    return state, losses, _snapshot(twin.prompts)


@pytest.mark.parametrize("variant", ["clean_first_order", "clean_second_order", "official"])
def test_metaprompt_cross_class_step_equals_transcription(backbone, dataset, variant):
    """MetaPrompt, "Alternate episodic training, every batch", B2N (cross-class) — one step of
    ``metaprompt_step`` through ``make_step`` equals the transcription (to 1e-6): the in-domain SGD
    step on the "Asymmetric contrastive loss (as coded)", then, for each of the N = 2 class groups of
    the seeded shuffle, an inner step of the *text* prompts only on CE(logits_t) of the support
    (relabelled within the support classes, text encoder on those classes), the query CE(logits_t)
    on the group's own classes, and ctx_t -= lr_now · META_STEP · Σ_i g_i at the scheduled lr_now
    (the warm-up lr here, not the base lr). Vision prompts move only in the in-domain step.
    ``clean_second_order``: g_i differentiates through the inner step ("second-order variant");
    ``official`` (``metaprompt``, the default): the inner step is the training optimizer's step,
    the first episode is restored and the second's inner step kept."""
    model = _metaprompt_model(backbone, dataset.classnames[:5])
    index = torch.cat([(dataset.labels == c).nonzero().flatten()[:2] for c in range(5)])
    images = dataset.images[index][torch.tensor([0, 2, 4, 6, 8, 1, 5, 9])]
    assert torch.equal(dataset.labels[index][torch.tensor([0, 2, 4, 6, 8, 1, 5, 9])], B2N_LABELS)
    batch = Batch(images, B2N_LABELS, torch.zeros(8, dtype=torch.long))
    overrides = {"clean_first_order": {}, "clean_second_order": {"meta_order": 2}, "official": {}}[variant]
    name = "metaprompt" if variant == "official" else "metaprompt-clean"
    theta0 = _snapshot(model.prompts)
    state, losses, after = _run_metaprompt(model, batch, cross_domain=False, name=name, **overrides)

    theta1, expected = _metaprompt_reference(model, batch, theta0, WARMUP_LR, cross_domain=False,
                                             meta_order=2 if variant == "clean_second_order" else 1,
                                             official=variant == "official")
    assert "query_loss" in losses
    # the split consumed the run's generator exactly as the transcription's single randperm did
    reference_generator = torch.Generator().manual_seed(SEED)
    torch.randperm(5, generator=reference_generator)
    assert torch.equal(state.generator.get_state(), reference_generator.get_state())
    _assert_params(after, expected, f"MetaPrompt cross-class ({variant})", theta0)
    if variant != "official":
        # vision prompts: in-domain step only (float rounding of the two SGD transcriptions aside)
        _assert_params({"vision_ctx": after["vision_ctx"]}, {"vision_ctx": theta1["vision_ctx"]},
                       "vision prompts, in-domain step", theta0)
    # not vacuous: the episodic part moves the text prompts far beyond the tolerance
    assert (after["ctx"] - theta1["ctx"]).abs().max() > 1e-3
    if variant == "clean_second_order":  # and the second-order terms are visible too
        _, first = _metaprompt_reference(model, batch, theta0, WARMUP_LR, cross_domain=False)
        assert _max_diff(first, expected) > _tolerance(expected, theta0)


@pytest.mark.parametrize("meta_order", [1, 2, "official"])
def test_metaprompt_cross_domain_step_equals_transcription(backbone, dg_dataset, meta_order):
    """MetaPrompt, "Alternate episodic training, every batch", DG (cross-domain) — one step of
    ``metaprompt_step(cross_domain=True)`` equals the transcription (to 1e-6): the in-domain SGD step
    on the asymmetric loss, then one episode per domain of the batch (support = the other domains,
    query = the domain, all classes, global labels) in which the *vision* prompts take an inner step
    on CE(logits_i) with logits_i = s·f̃_I(x)·f_T(c)ᵀ, and θ_v -= lr_now · META_STEP · Σ_i g_i.
    Text prompts move only in the in-domain step (``metaprompt-clean``, orders 1 and 2); ``official``
    (``metaprompt``): the official loop, in which the frozen text prompts also drift by momentum and
    weight decay during the inner steps."""
    model = _metaprompt_model(backbone, dg_dataset.classnames)
    cell = dg_dataset.labels * 10 + dg_dataset.domain  # the first image of each (class, domain) cell
    index = torch.stack([(cell == c * 10 + d).nonzero().flatten()[0] for c, d in zip(DG_LABELS, DG_DOMAINS)])
    batch = Batch(dg_dataset.images[index], DG_LABELS, DG_DOMAINS)
    theta0 = _snapshot(model.prompts)
    official = meta_order == "official"
    order = 1 if official else meta_order
    _, losses, after = _run_metaprompt(model, batch, cross_domain=True,
                                       name="metaprompt" if official else "metaprompt-clean", meta_order=order)

    theta1, expected = _metaprompt_reference(model, batch, theta0, WARMUP_LR, cross_domain=True,
                                             meta_order=order, official=official)
    assert "query_loss" in losses
    _assert_params(after, expected, f"MetaPrompt cross-domain (order {meta_order})", theta0)
    for n in ("ctx", "deep_ctx"):
        if official:  # the zeroed gradient's momentum and weight decay move them
            assert (after[n] - theta1[n]).abs().max() > 1e-5
        else:
            _assert_params({n: after[n]}, {n: theta1[n]}, "in-domain step only", theta0)
    assert (after["vision_ctx"] - theta1["vision_ctx"]).abs().max() > 1e-3
    if meta_order == 2:
        _, first = _metaprompt_reference(model, batch, theta0, WARMUP_LR, cross_domain=True)
        assert _max_diff(first, expected) > _tolerance(expected, theta0)


# =========================================================================== 2. ProMetaR
DIM_RATE = 8


def _layer_order(params: dict[str, torch.Tensor]) -> list[tuple[str, int | None]]:
    """One modulation net per prompt layer: ctx, deep_ctx[0..], vision_ctx[0..]."""
    return ([("ctx", None)] + [("deep_ctx", i) for i in range(params["deep_ctx"].shape[0])]
            + [("vision_ctx", i) for i in range(params["vision_ctx"].shape[0])])


def _modulate(weights: list[tuple[torch.Tensor, torch.Tensor]], layers, g_ce, g_reg):
    """docs/methods.md, ProMetaR's meta-regularization: per prompt layer l,
    γ_l = σ(W₂ W₁ [g_ce,l ; g_reg,l]) (two bias-free linears, γ repeated ×8 over consecutive
    entries), g_l = g_ce,l + γ_l ⊙ g_reg,l."""
    parts: dict[str, list[torch.Tensor]] = {}
    for (w1, w2), (name, index) in zip(weights, layers):
        ce = g_ce[name] if index is None else g_ce[name][index]
        reg = g_reg[name] if index is None else g_reg[name][index]
        gamma = torch.sigmoid(w2 @ (w1 @ torch.cat([ce.flatten(), reg.flatten()])))
        gamma = gamma.repeat_interleave(DIM_RATE).reshape(ce.shape)
        parts.setdefault(name, []).append(ce + gamma * reg)
    return {n: v[0] if n == "ctx" else torch.stack(v) for n, v in parts.items()}


def _regularised_grads(model, params, images, frozen_image, labels, config, create_graph):
    """∇CE for every prompt, and ∇R with R = R_text = 50·mean|f̃_T − f_T| for the text prompts and
    R = R_image = 20·mean|f̃_I − f_I| for the vision prompts (docs/methods.md, ProMetaR's regularizer)."""
    s = model.clip.logit_scale.exp()
    prompts = _prompts(params)
    image, text = model.image_features(images, prompts), model.text_features(prompts)
    ce = F.cross_entropy(s * image @ text.t(), labels)
    reg_text = config.text_weight * (text - model.frozen_text_features()).abs().mean()
    reg_image = config.image_weight * (image - frozen_image).abs().mean()
    g_ce = _grad(ce, params, params, create_graph)
    g_reg = {**_grad(reg_text, params, ["ctx", "deep_ctx"], create_graph),
             **_grad(reg_image, params, ["vision_ctx"], create_graph)}
    return g_ce, g_reg


def _prometar_reference(model, batch, theta0, weights0, config, lr, modulator_lr, seed, beta_seed):
    """docs/methods.md, ProMetaR, transcribed for one batch:
    1. modulated update: g = g_ce + γ ⊙ g_reg (γ from the modulation net), one SGD step of the prompts;
    2. meta-update: one class of the batch (drawn with the run's generator) is the query, the other
       images the support; inner adapted step θ' = θ − α·(g_ce + γ ⊙ g_reg) on the support (α =
       adapt_lr; differentiated through when second order); the virtual query = manifold mixup of
       the query's prompted image features with those of random support images, λ ~ Beta(0.5, 0.5),
       mixed as the encoder's raw outputs and normalised after (the official code), against the mixed labels λ·CE(y_q) + (1 − λ)·CE(y_mix), times lr_ratio;
       its gradient goes into the prompts (training optimizer, second SGD step of the batch) and the
       modulation net (its own SGD)."""
    x, y = batch.images, batch.labels
    s = model.clip.logit_scale.exp()
    frozen_image = model.frozen_image_features(x)
    layers = _layer_order(theta0)
    second = not config.first_order

    # 1. modulated regular update
    theta = _leaves(theta0)
    g_ce, g_reg = _regularised_grads(model, theta, x, frozen_image, y, config, create_graph=False)
    with torch.no_grad():
        g = _modulate(weights0, layers, g_ce, g_reg)
    theta1, buffers = _sgd_step(theta0, g, {}, lr)

    # 2. meta-update on (support, virtual query)
    generator = torch.Generator().manual_seed(seed)
    classes = y.unique()
    query_class = classes[torch.randint(len(classes), (1,), generator=generator)]
    query = (y == query_class).nonzero().flatten()
    support = (y != query_class).nonzero().flatten()
    torch.manual_seed(beta_seed)
    lam = torch.distributions.Beta(config.mixup_alpha, config.mixup_beta).sample((len(query),))
    mix = support[torch.randint(len(support), (len(query),), generator=generator)]

    theta = _leaves(theta1)
    weights = [(w1.detach().clone().requires_grad_(), w2.detach().clone().requires_grad_()) for w1, w2 in weights0]
    with sdpa_kernel(SDPBackend.MATH):
        g_ce, g_reg = _regularised_grads(model, theta, x[support], frozen_image[support], y[support], config,
                                         create_graph=second)
        if not second:
            g_ce = {n: v.detach() for n, v in g_ce.items()}
            g_reg = {n: v.detach() for n, v in g_reg.items()}
        g = _modulate(weights, layers, g_ce, g_reg)
        fast = {n: theta[n] - config.adapt_lr * g[n] for n in theta}
        prompts = _prompts(fast)
        raw = model.image_features(x, prompts, normalize=False)  # the encoder's raw outputs
        mixed = F.normalize(lam[:, None] * raw[query] + (1 - lam[:, None]) * raw[mix], dim=-1)
        logits = s * mixed @ model.text_features(prompts).t()
        per_image = (lam * F.cross_entropy(logits, y[query], reduction="none")
                     + (1 - lam) * F.cross_entropy(logits, y[mix], reduction="none"))
        query_loss = config.lr_ratio * per_image.mean()
        flat_w = [w for pair in weights for w in pair]
        grads = torch.autograd.grad(query_loss, list(theta.values()) + flat_w)
    g_theta = dict(zip(theta, grads[: len(theta)]))
    g_w = grads[len(theta):]
    theta2, _ = _sgd_step(theta1, g_theta, buffers, lr)
    weights2 = [w.detach() - modulator_lr * (gw + WEIGHT_DECAY * w.detach()) for w, gw in zip(flat_w, g_w)]
    return dict(theta=theta2, weights=weights2, query_loss=query_loss.detach(), g_theta=g_theta, g_w=list(g_w))


@pytest.mark.parametrize("first_order", [True, False])
def test_prometar_step_equals_transcription(backbone, dataset, first_order):
    """ProMetaR, "Meta-regularization" + "Task augmentation" — one ``prometar_step`` through
    ``make_step`` (seeded generator for the query class and mixup partners, seeded global RNG for
    λ ~ Beta(0.5, 0.5)) equals the transcription (to 1e-6): the prompts after the modulated SGD step
    and the meta SGD step, the modulation net after its own SGD step, and the query loss; for the
    default second-order meta-update (through the inner adapted step, create_graph) and for
    first_order=True; and the meta-gradients of prompts and modulation net themselves. Step sizes
    are raised (lr_ratio 1, adapt_lr 0.5, modulation-net lr 0.5) so that the meta-update moves the
    prompts, and the second-order terms change them, by much more than the tolerance."""
    method = get_method("prometar")
    config = replace(method.prometar, first_order=first_order, lr_ratio=1.0, adapt_lr=0.5, modulator_lr=0.5)
    method = replace(method, prometar=config)
    assert method.prometar.mixup_alpha == method.prometar.mixup_beta == 0.5
    torch.manual_seed(0)
    model = PromptedCLIP(backbone, method.prompt, dataset.classnames[:3], dataset.templates)
    index = torch.cat([(dataset.labels == c).nonzero().flatten()[:2] for c in range(3)])
    batch = Batch(dataset.images[index], dataset.labels[index], torch.zeros(6, dtype=torch.long))
    assert batch.labels.tolist() == [0, 0, 1, 1, 2, 2]
    lr, seed, beta_seed = 0.5, 5, 123

    twin = copy.deepcopy(model)
    optim = OptimConfig(lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, warmup_epochs=0)
    torch.manual_seed(1)  # the modulation net's init
    state, step = start_training(twin, method, optim, total_steps=4, seed=seed)
    modulator = state.extras["modulator"]
    theta0 = _snapshot(twin.prompts)
    assert [(n, i) for n, i, _ in modulator.layers] == _layer_order(theta0)
    weights0 = [(net[0].weight.detach().clone(), net[1].weight.detach().clone()) for net in modulator.nets]
    torch.manual_seed(beta_seed)  # λ ~ Beta(0.5, 0.5) is drawn from the global RNG
    losses = step(state, batch)

    ref = _prometar_reference(model, batch, theta0, weights0, config, lr, config.modulator_lr, seed, beta_seed)
    _assert_params(_snapshot(twin.prompts), ref["theta"], f"ProMetaR prompts (first_order={first_order})", theta0)
    actual_w = [w for net in modulator.nets for w in (net[0].weight, net[1].weight)]
    start_w = [w for pair in weights0 for w in pair]
    _assert_params(dict(enumerate(actual_w)), dict(enumerate(ref["weights"])), "modulation net weights",
                   dict(enumerate(start_w)))
    assert losses["query_loss"] == pytest.approx(ref["query_loss"].item(), rel=1e-5)
    # The meta-gradients themselves (the optimizers leave .grad as the query loss's gradient). The
    # modulation net's are small on the random tiny CLIP (≤ 1e-4: its class texts are nearly alike,
    # the query loss is ≈ ln 3), so they are compared relative to their size.
    _assert_params({n: p.grad for n, p in twin.prompts.named_parameters()}, ref["g_theta"], "prompt meta-gradient")
    _assert_grads_relative({k: a.grad for k, a in enumerate(actual_w)}, dict(enumerate(ref["g_w"])),
                           "meta-gradient of the modulation net's weights")
    if not first_order:  # not vacuous: the second-order terms change the prompts' meta-gradient
        other = _prometar_reference(model, batch, theta0, weights0, replace(config, first_order=True),
                                    lr, config.modulator_lr, seed, beta_seed)
        assert _max_diff(other["g_theta"], ref["g_theta"]) > _tolerance(ref["g_theta"])
        assert _max_diff(other["theta"], ref["theta"]) > _tolerance(ref["theta"], theta0)


def test_prometar_modulator_equation_on_every_prompt_layer(backbone):
    """ProMetaR, "Meta-regularization": ``GradientModulator`` computes g_l = g_ce,l + γ_l ⊙ g_reg,l
    with γ_l = σ(W₂ W₁ [g_ce,l ; g_reg,l]) repeated ×8, with layer l's own net, for *every* prompt
    tensor: ctx, each deep_ctx[i] and each vision_ctx[i] (values, not shapes)."""
    from metaprompt_lite.core.prometar import GradientModulator

    torch.manual_seed(0)
    model = PromptedCLIP(backbone, get_method("prometar").prompt, ["a", "b"])
    modulator = GradientModulator(model.prompts)
    g = torch.Generator().manual_seed(0)
    g_ce = {n: torch.randn(p.shape, generator=g) for n, p in model.prompts.named_parameters()}
    g_reg = {n: torch.randn(p.shape, generator=g) for n, p in model.prompts.named_parameters()}
    layers = _layer_order(g_ce)
    assert len(layers) == 1 + model.prompts.deep_ctx.shape[0] + model.prompts.vision_ctx.shape[0] == len(modulator.nets)
    weights = [(net[0].weight.detach(), net[1].weight.detach()) for net in modulator.nets]
    for w1, w2 in weights:  # two bias-free linears, hidden = entries/8, output = entries/8
        assert w1.shape[0] == w2.shape[0] == w2.shape[1] == w1.shape[1] // (2 * DIM_RATE)
    with torch.no_grad():
        out = modulator(g_ce, g_reg)
    expected = _modulate(weights, layers, g_ce, g_reg)
    for name, index in layers:
        a = out[name] if index is None else out[name][index]
        e = expected[name] if index is None else expected[name][index]
        # two linears of fan-in 2·entries and entries/8, then γ ⊙ g: additions of two matmuls in another order
        terms = 2 * a.numel() + a.numel() // DIM_RATE
        assert_reorder_close(a, e, terms, msg=f"{name}[{index}]")
    # each layer really has its own γ: swapping the nets of two layers changes the result
    other = _modulate([weights[1], weights[0]] + weights[2:], layers, g_ce, g_reg)
    assert not torch.allclose(other["ctx"], out["ctx"])


def test_prometar_split_grads_routes_the_regularisers_by_modality():
    """ProMetaR, "Meta-regularization" with the "Regularizer" terms: ``_split_grads`` returns ∇CE for
    every prompt (zeros where CE does not reach) and ∇R with R = R_image for the vision prompts and
    R = R_text for the text prompts (ctx, deep_ctx). The synthetic losses depend on *every*
    parameter, so a swapped, summed or missing routing shows; create_graph keeps the graph."""
    from metaprompt_lite.core.prometar import _split_grads

    g = torch.Generator().manual_seed(0)
    params = {n: torch.randn(shape, generator=g).requires_grad_()
              for n, shape in [("ctx", (2, 8)), ("deep_ctx", (2, 2, 8)), ("vision_ctx", (2, 2, 12)),
                               ("extra", (3,))]}
    w = {n: torch.randn(p.shape, generator=g) for n, p in params.items()}

    def losses():
        ce = sum((w[n] * p).sum() for n, p in params.items() if n != "extra")  # CE misses "extra"
        reg_text = sum(((p ** 2) * (k + 1)).sum() for k, p in enumerate(params.values()))
        reg_image = sum(((p ** 3) * (k + 2)).sum() for k, p in enumerate(params.values()))
        return ce, reg_text, reg_image

    for create_graph in (False, True):
        ce, reg_text, reg_image = losses()
        g_ce, g_reg = _split_grads(ce, reg_text, reg_image, params, create_graph=create_graph)
        assert set(g_ce) == set(g_reg) == set(params)
        for k, (n, p) in enumerate(params.items()):
            expected_ce = torch.zeros_like(p) if n == "extra" else w[n]
            # a polynomial's gradient: autograd and the closed form differ by a few roundings (4 at most)
            assert_reorder_close(g_ce[n], expected_ce, 4, msg=n)
            if n != "extra":  # (not a prompt: which regulariser it would get is not specified)
                expected_reg = 3 * (k + 2) * p ** 2 if n == "vision_ctx" else 2 * (k + 1) * p
                assert_reorder_close(g_reg[n], expected_reg, 4, msg=n)
        assert g_reg["vision_ctx"].requires_grad == create_graph
        assert g_reg["ctx"].requires_grad == create_graph


# =========================================================================== 3. GRAM
def _regulate(grad, scale, shift):
    """core/gram.py's regulator (docs/methods.md: a per-dimension sigmoid gate on the gradient):
    r(g) = g ⊙ 2σ(a ⊙ g/rms(g) + b), rms over the whole parameter tensor."""
    return grad * 2 * torch.sigmoid(scale * grad / grad.pow(2).mean().sqrt() + shift)


def _gram_ivlp_shapes(backbone) -> dict[str, torch.Size]:
    learner = PromptedCLIP(backbone, get_method("gram-ivlp").prompt, ["a"]).prompts
    return {n: p.shape for n, p in learner.named_parameters()}


def _gram_ivlp_downstream(backbone, dataset, regulator_values, weight_decay):
    """One ``regulated_step`` (via ``make_step`` of gram-ivlp) from a deep copy; returns
    (model before, batch, prompts before, prompts after)."""
    from metaprompt_lite.core.gram import GradientRegulator

    method = get_method("gram-ivlp")
    torch.manual_seed(0)
    model = PromptedCLIP(backbone, method.prompt, dataset.classnames[:3])
    index = torch.cat([(dataset.labels == c).nonzero().flatten()[:2] for c in range(3)])
    batch = Batch(dataset.images[index], dataset.labels[index], torch.zeros(6, dtype=torch.long))
    twin = copy.deepcopy(model)
    regulator = GradientRegulator(twin.prompts)
    with torch.no_grad():
        for n, (scale, shift) in regulator_values.items():
            regulator.scale[n].copy_(scale)
            regulator.shift[n].copy_(shift)
    optim = OptimConfig(lr=0.5, momentum=MOMENTUM, weight_decay=weight_decay, warmup_epochs=0)
    state, step = start_training(twin, method, optim, total_steps=4, extras={"regulator": regulator})
    before = _snapshot(twin.prompts)
    step(state, batch)
    return model, batch, before, _snapshot(twin.prompts)


def test_gram_regulated_step_with_a_closed_gate_leaves_the_prompts(backbone, dataset):
    """GRAM downstream ("rescales the prompt gradients during downstream tuning"): with the
    regulator's gate closed (shift b = −50, so 2σ(b) ≈ 4e-22) and weight decay 0, one
    ``regulated_step`` leaves every prompt unchanged — it fails if the step skips the regulator,
    because the unregulated CE gradient is checked to move the prompts."""
    shapes = _gram_ivlp_shapes(backbone)
    closed = {n: (torch.zeros(s), torch.full(s, -50.0)) for n, s in shapes.items()}
    _, _, before, after = _gram_ivlp_downstream(backbone, dataset, closed, weight_decay=0.0)
    assert set(after) == {"ctx", "deep_ctx", "vision_ctx"}
    for n in after:
        torch.testing.assert_close(after[n], before[n], rtol=0, atol=1e-12, msg=n)
    # the same step with the identity regulator (a = b = 0) does move every prompt
    identity = {n: (torch.zeros(s), torch.zeros(s)) for n, s in shapes.items()}
    _, _, before, after = _gram_ivlp_downstream(backbone, dataset, identity, weight_decay=0.0)
    assert all((after[n] - before[n]).abs().max() > 1e-4 for n in after)


def test_gram_regulated_step_with_an_open_gate_equals_its_equation(backbone, dataset):
    """GRAM downstream: one ``regulated_step`` with a random regulator (a, b ~ N(0, 1)) equals
    θ ← θ − lr·(r(g) + wd·θ) (first SGD step), g = ∇ CE(s·f̃_I(x)·f̃_T(c)ᵀ, y),
    r(g) = g ⊙ 2σ(a ⊙ g/rms(g) + b), for every prompt tensor (ctx, deep_ctx, vision_ctx)."""
    shapes = _gram_ivlp_shapes(backbone)
    g = torch.Generator().manual_seed(3)
    values = {n: (torch.randn(s, generator=g), torch.randn(s, generator=g)) for n, s in shapes.items()}
    model, batch, before, after = _gram_ivlp_downstream(backbone, dataset, values, weight_decay=WEIGHT_DECAY)

    theta = _leaves(before)
    prompts = _prompts(theta)
    image, text = model.image_features(batch.images, prompts), model.text_features(prompts)
    logits = model.clip.logit_scale.exp() * image @ text.t()
    grads = _grad(F.cross_entropy(logits, batch.labels), theta, theta)
    regulated = {n: _regulate(grads[n], *values[n]) for n in grads}
    expected, _ = _sgd_step(before, regulated, {}, 0.5)
    _assert_params(after, expected, "GRAM regulated step", before)
    unregulated, _ = _sgd_step(before, grads, {}, 0.5)
    assert _max_diff(unregulated, expected) > 1e-3  # the regulator matters at these values


GRAM_CONCEPTS = torch.tensor([0, 1, 2, 0, 1, 2])
GRAM_STYLES = torch.tensor([0, 0, 0, 1, 1, 1])
GRAM_CAPTIONS = ["a red square drawing", "a green circle drawing", "a blue triangle drawing",
                 "a red square photo", "a green circle photo", "a blue triangle photo"]


@pytest.mark.parametrize("first_order", [False, True])
def test_gram_meta_step_equals_manual_create_graph(backbone, dataset, monkeypatch, first_order):
    """GRAM meta-training (docs/methods.md: the inner loop tunes the prompt with the regulated gradient,
    the outer loop updates the init and the regulator, second order; core/gram.py's equations):
    one ``meta_train`` step equals, for the task it sampled,
        θ' = θ − α · r(∇_θ L(θ; support)),  r(g) = g ⊙ 2σ(a ⊙ g/rms(g) + b),  a = b = 0 at start,
        L(θ; pairs) = CE(s · f̃_I(x) · f̃_T(captions)ᵀ, diag),
    with ∇_{θ, a, b} L(θ'; query) computed by create_graph through the inner step (first_order:
    g detached), then one Adam step (lr = outer_lr) on θ, a, b. Checked: the gradients of θ and of
    (a, b), the returned θ₀ and regulator, the query loss."""
    from metaprompt_lite.core import gram

    method = get_method("gram-ivlp")
    index = torch.cat([(dataset.labels == c).nonzero().flatten()[:2] for c in range(3)])
    images = dataset.images[index[torch.tensor([0, 2, 4, 1, 3, 5])]]  # concepts 0, 1, 2, 0, 1, 2
    torch.manual_seed(0)
    model = PromptedCLIP(backbone, method.prompt, ["placeholder"])
    reference_model = copy.deepcopy(model)
    theta0 = _snapshot(model.prompts)

    seen = {}
    real_sample_task = gram.sample_task

    def spy_sample_task(*args, **kwargs):
        seen["task"] = real_sample_task(*args, **kwargs)
        return seen["task"]

    class SpyRegulator(gram.GradientRegulator):
        def __init__(self, learner):
            super().__init__(learner)
            seen["regulator"] = self

    monkeypatch.setattr(gram, "sample_task", spy_sample_task)
    monkeypatch.setattr(gram, "GradientRegulator", SpyRegulator)
    config = gram.GramConfig(meta_steps=1, pairs=3, inner_lr=0.5, outer_lr=2e-3, first_order=first_order)
    init, regulator_state, losses = gram.meta_train(model, images, GRAM_CAPTIONS, GRAM_CONCEPTS, GRAM_STYLES,
                                                    config, progress=False)
    support, query = seen["task"]

    # the reference
    s = reference_model.clip.logit_scale.exp()

    def matching(params, idx):
        reference_model.set_classes([GRAM_CAPTIONS[i] for i in idx.tolist()])
        prompts = _prompts(params)
        logits = s * reference_model.image_features(images[idx], prompts) @ reference_model.text_features(prompts).t()
        return F.cross_entropy(logits, torch.arange(len(idx)))

    theta = _leaves(theta0)
    scale = {n: torch.zeros_like(p).requires_grad_() for n, p in theta0.items()}
    shift = {n: torch.zeros_like(p).requires_grad_() for n, p in theta0.items()}
    with sdpa_kernel(SDPBackend.MATH):
        g = _grad(matching(theta, support), theta, theta, create_graph=not first_order)
        if first_order:
            g = {n: v.detach() for n, v in g.items()}
        fast = {n: theta[n] - config.inner_lr * _regulate(g[n], scale[n], shift[n]) for n in theta}
        loss_q = matching(fast, query)
        names = list(theta)
        grads = torch.autograd.grad(loss_q, [theta[n] for n in names] + [scale[n] for n in names]
                                    + [shift[n] for n in names])
    k = len(names)
    g_theta, g_scale, g_shift = (dict(zip(names, grads[i * k:(i + 1) * k])) for i in range(3))

    assert losses == [pytest.approx(loss_q.item(), rel=1e-5)]
    _assert_params({n: p.grad for n, p in model.prompts.named_parameters()}, g_theta, "∇θ of the query loss")
    regulator = seen["regulator"]
    _assert_grads_relative({n: regulator.scale[n].grad for n in names}, g_scale, "∇a of the query loss")
    _assert_grads_relative({n: regulator.shift[n].grad for n in names}, g_shift, "∇b of the query loss")

    def check_adam_first_step(actual, start, grad, what, lr=config.outer_lr, eps=1e-8):
        """Adam's first step (betas cancel in the bias correction): θ ← θ − lr · g / (|g| + eps).
        That is ≈ lr · sign(g). The step's gradient and the reference's may differ by the gradient
        bound Δ (tests/tolerances.py), which moves the step by at most lr·eps·Δ/(|g| − Δ + eps)² per
        entry, plus 4 ulps of the result's rounding. Entries are checked where that tolerance is under
        lr/10 (so a zero or a wrong-sign step, off by lr or 2·lr, fails); elsewhere the sign is rounding
        noise and only the bound |Δθ| ≤ lr is checked."""
        for n in names:
            expected = start[n] - lr * grad[n] / (grad[n].abs() + eps)
            delta = reorder_atol(STEP_TERMS, scale_of(grad[n]))
            slope = lr * eps / ((grad[n].abs() - delta).clamp(min=0) + eps) ** 2
            tolerance = 4 * EPS32 * scale_of(expected) + slope * delta
            clear = (grad[n].abs() > delta) & (tolerance < lr / 10)
            assert clear.float().mean() > 0.5, f"{what}, {n}: too many near-zero gradients to check Adam"
            error = (actual[n] - expected).abs()
            assert (error[clear] <= tolerance[clear]).all(), \
                f"{what}, {n}: {int((error[clear] > tolerance[clear]).sum())} entries off by up to {error[clear].max():.3g}"
            assert ((actual[n] - start[n]).abs() <= lr * (1 + 1e-5)).all(), f"{what}, {n}"

    zeros = {n: torch.zeros_like(theta0[n]) for n in names}
    check_adam_first_step(init, theta0, g_theta, "θ₀ after the outer Adam step")
    check_adam_first_step({n: regulator_state[f"scale.{n}"] for n in names}, zeros, g_scale, "a after Adam")
    check_adam_first_step({n: regulator_state[f"shift.{n}"] for n in names}, zeros, g_shift, "b after Adam")
    if not first_order:  # the second-order terms are visible at these sizes
        with sdpa_kernel(SDPBackend.MATH):
            theta_fo = _leaves(theta0)
            g_fo = {n: v.detach() for n, v in _grad(matching(theta_fo, support), theta_fo, theta_fo).items()}
            fast_fo = {n: theta_fo[n] - config.inner_lr * g_fo[n] for n in theta_fo}
            first = _grad(matching(fast_fo, query), theta_fo, theta_fo)
        assert _max_diff(first, g_theta) > 1e-4


def test_gram_sample_task_draws_two_styles_with_distinct_concepts():
    """GRAM meta-tasks ("the meta-tasks are built from the image-text data", cross-domain), as
    ``sample_task``'s docstring promises: two index sets of ``pairs`` images each (fewer for a short style), the support from
    one style and the query from another, each with distinct concepts; the styles drawn vary with
    the generator."""
    from metaprompt_lite.core.gram import sample_task

    g = torch.Generator().manual_seed(0)
    styles = torch.arange(3).repeat_interleave(10)  # 3 styles × 10 images
    concepts = torch.randint(0, 6, (30,), generator=g)  # repeated concepts within a style
    for style in range(3):
        assert len(concepts[styles == style].unique()) >= 4
    pairs_seen = set()
    for seed in range(25):
        support, query = sample_task(concepts, styles, 4, torch.Generator().manual_seed(seed))
        assert len(support) == len(query) == 4
        for part in (support, query):
            assert len(styles[part].unique()) == 1
            assert len(concepts[part].unique()) == len(part)  # distinct concepts
        assert styles[support][0] != styles[query][0]
        pairs_seen.add((int(styles[support][0]), int(styles[query][0])))
    assert len(pairs_seen) > 1
    # a style with fewer distinct concepts than ``pairs`` (the committed corpus has one: 10 concepts
    # against the default 24 pairs) still gives one style per set and distinct concepts
    short = torch.cat([torch.arange(3), torch.arange(10)])  # style 0: 3 concepts, style 1: 10
    short_styles = torch.tensor([0] * 3 + [1] * 10)
    for seed in range(5):
        support, query = sample_task(short, short_styles, 4, torch.Generator().manual_seed(seed))
        assert {int(short_styles[support][0]), int(short_styles[query][0])} == {0, 1}
        for part in (support, query):
            assert len(short_styles[part].unique()) == 1 and len(short[part].unique()) == len(part)
            assert len(part) == min(4, 3 if int(short_styles[part][0]) == 0 else 10)  # fewer where the style is short
    with pytest.raises(ValueError, match="at least two styles"):
        sample_task(concepts, torch.zeros(30, dtype=torch.long), 4, torch.Generator().manual_seed(0))
