"""Meta-learning: episodes, and higher's meta-gradients against manual autograd references."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.func import functional_call

from metaprompt_lite.core.losses import clip_logits, cross_entropy
from metaprompt_lite.core.meta import (
    META_STEP,
    Episode,
    cross_class_episodes,
    cross_domain_episodes,
    double_backward_attention,
    episodic_meta_update,
    meta_gradients,
    official_quirks_meta_update,
)
from metaprompt_lite.core.prompts import PromptConfig, PromptedCLIP
from metaprompt_lite.splits import relabel
from tolerances import assert_reorder_close, assert_step_close, config_terms, reorder_atol, scale_of

# The references below take the same gradients through other autograd graphs: equal up to the
# reordering of the tiny CLIP text tower's additions (the image features are frozen inputs here;
# tests/tolerances.py), over a second-order pass (3 passes) and at most two inner steps (×2).
META_TERMS = 2 * config_terms("tiny-clip", passes=3, towers=("text",))
# The toy: 2-term logits, CE over 3 classes averaged over ≤ 6 rows, forward and backward, 3 steps a
# batch (in-domain, two episodes), 3 batches carried by momentum.
TOY_TERMS = 3 * 3 * 2 * (2 + 3 + 6)

NAMES = ["cat", "dog", "red apple", "car", "tram"]
INNER_LR = 0.3


@pytest.fixture
def setup(backbone):
    torch.manual_seed(0)
    model = PromptedCLIP(backbone, PromptConfig(n_ctx=2, ctx_init=None, text_depth=-1, n_vision=2,
                                                vision_depth=-1), NAMES)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    frozen = model.frozen_image_features(images)

    def loss(module, index, classes):
        prompts = module()
        logits = clip_logits(frozen[index], model.text_features(prompts, classes), model.logit_scale)
        return cross_entropy(logits, relabel(labels[index], classes))

    return model, labels, loss


def _as_module(model, params):
    return lambda **kw: functional_call(model.prompts, params, (), kw)


S, SC = torch.tensor([0, 1, 5, 6]), torch.tensor([0, 1])
Q, QC = torch.tensor([2, 3, 4, 7]), torch.tensor([2, 3, 4])


def test_second_order_equals_manual_create_graph(setup):
    model, _, loss = setup
    grads, _ = meta_gradients(model.prompts, lambda m: loss(m, S, SC), lambda m: loss(m, Q, QC),
                              inner_lr=INNER_LR, first_order=False)
    params = dict(model.prompts.named_parameters())
    with double_backward_attention():
        inner = torch.autograd.grad(loss(_as_module(model, params), S, SC), list(params.values()),
                                    create_graph=True, allow_unused=True)
        fast = {n: p - INNER_LR * g if g is not None else p for (n, p), g in zip(params.items(), inner)}
        outer = torch.autograd.grad(loss(_as_module(model, fast), Q, QC), list(params.values()),
                                    allow_unused=True)
    reference = {n: g for n, g in zip(params, outer) if g is not None}
    assert set(grads) == set(reference) == {"ctx", "deep_ctx"}
    for name in reference:
        assert_reorder_close(grads[name], reference[name], META_TERMS, msg=name)


def test_first_order_equals_manual_first_order(setup):
    model, _, loss = setup
    grads, _ = meta_gradients(model.prompts, lambda m: loss(m, S, SC), lambda m: loss(m, Q, QC),
                              inner_lr=INNER_LR, first_order=True)
    params = {n: p.detach().clone().requires_grad_() for n, p in model.prompts.named_parameters()}
    inner = torch.autograd.grad(loss(_as_module(model, params), S, SC), list(params.values()), allow_unused=True)
    fast = {n: (p - INNER_LR * g if g is not None else p).detach().requires_grad_()
            for (n, p), g in zip(params.items(), inner)}
    outer = torch.autograd.grad(loss(_as_module(model, fast), Q, QC), list(fast.values()), allow_unused=True)
    for name, g in zip(fast, outer):
        if g is not None:
            assert_reorder_close(grads[name], g, META_TERMS, msg=name)
    # first and second order really differ (the test above is not vacuous)
    second, _ = meta_gradients(model.prompts, lambda m: loss(m, S, SC), lambda m: loss(m, Q, QC),
                               inner_lr=INNER_LR, first_order=False)
    # ... by more than the tolerance, so that the comparison above tells the orders apart
    assert (second["ctx"] - grads["ctx"]).abs().max() > reorder_atol(META_TERMS, scale_of(grads["ctx"]))


def test_multiple_inner_steps_and_adapt_subset(setup):
    model, _, loss = setup
    grads, _ = meta_gradients(model.prompts, lambda m: loss(m, S, SC), lambda m: loss(m, Q, QC),
                              inner_lr=INNER_LR, inner_steps=2, first_order=True, adapt=["ctx"])
    # manual: two SGD steps on ctx only, deep_ctx fixed
    params = {n: p.detach().clone() for n, p in model.prompts.named_parameters()}
    ctx = params["ctx"].requires_grad_()
    for _ in range(2):
        g = torch.autograd.grad(loss(_as_module(model, {**params, "ctx": ctx}), S, SC), ctx)[0]
        ctx = (ctx - INNER_LR * g).detach().requires_grad_()
    g_ctx = torch.autograd.grad(loss(_as_module(model, {**params, "ctx": ctx}), Q, QC), ctx)[0]
    assert_reorder_close(grads["ctx"], g_ctx, META_TERMS)
    support, query = (lambda m: loss(m, S, SC)), (lambda m: loss(m, Q, QC))
    for kwargs, message in (({"adapt": ["nope"]}, "unknown parameter names"),
                            ({"adapt": []}, "adapt names no parameter"),
                            ({"inner_lr": -0.1}, "inner_lr must be >= 0"),
                            ({"inner_steps": 0}, "inner_steps must be >= 1")):
        with pytest.raises(ValueError, match=message):
            meta_gradients(model.prompts, support, query, **{"inner_lr": INNER_LR, **kwargs})


def _transcription(model, episodes, loss, lr, second_order):
    """docs/methods.md, written out: for each group, one inner SGD step on the support, the query
    gradient, restore; then ctx -= lr · META_STEP · Σ g_i."""
    start = {n: p.detach().clone() for n, p in model.prompts.named_parameters()}
    total = {n: torch.zeros_like(p) for n, p in start.items()}
    for e in episodes:
        params = {n: p.clone().requires_grad_() for n, p in start.items()}
        with double_backward_attention(second_order):
            g_s = torch.autograd.grad(loss(_as_module(model, params), e.support, e.support_classes),
                                      list(params.values()), create_graph=second_order, allow_unused=True)
            fast = {n: p - lr * g if g is not None else p for (n, p), g in zip(params.items(), g_s)}
            if not second_order:
                fast = {n: p.detach().requires_grad_() for n, p in fast.items()}
            wrt = params if second_order else fast
            g_q = torch.autograd.grad(loss(_as_module(model, fast), e.query, e.query_classes),
                                      list(wrt.values()), allow_unused=True)
        for n, g in zip(wrt, g_q):
            if g is not None:
                total[n] += g
    return {n: start[n] - lr * META_STEP * total[n] for n in start}


@pytest.mark.parametrize("second_order", [False, True])
def test_episodic_update_equals_transcription(setup, second_order):
    model, labels, loss = setup
    episodes = cross_class_episodes(labels, len(NAMES), torch.Generator().manual_seed(3))
    assert len(episodes) == 2
    expected = _transcription(model, episodes, loss, lr=INNER_LR, second_order=second_order)
    start = {n: p.detach().clone() for n, p in model.prompts.named_parameters()}
    episodic_meta_update(model.prompts, episodes,
                         lambda m, e: loss(m, e.support, e.support_classes),
                         lambda m, e: loss(m, e.query, e.query_classes),
                         lr=INNER_LR, first_order=not second_order)
    for n, p in model.prompts.named_parameters():
        assert_step_close(p, expected[n], start[n], META_TERMS, msg=n)


class _OfficialToy(torch.nn.Module):
    """A toy prompt module with the two modalities of MetaPrompt: ``ctx`` (adapted by the episodes,
    like the text prompts in B2N) and ``vision_ctx`` (frozen during the episodes)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.ctx = torch.nn.Parameter(torch.randn(2, 3))
        self.vision_ctx = torch.nn.Parameter(torch.randn(2, 3))


def _toy_loss(module, x, y):
    """A loss of both modalities (the in-domain step moves both), CE over 3 classes."""
    logits = x @ (module.ctx + 0.5 * module.vision_ctx.tanh())
    return torch.nn.functional.cross_entropy(logits, y)


def _official_loop(model, optimizer, data, episodes, lr, meta_step=META_STEP):
    """A literal re-enactment of Vill-Lab/2024-TIP-MetaPrompt ``trainers/meta.py``,
    ``Meta_B2N.forward_backward`` (lines 328-390), as torch 1.10 + Dassl run it: every
    ``model_backward_and_update`` is Dassl's zero_grad() (zeroes, keeps the tensors) + backward + step
    of the training optimizer; ``textual_prompt = deepcopy(ctx)``; ``ctx.data = textual_prompt``
    after each episode; ``ctx.data -= lr * grad * meta_step`` at the end."""
    x, y = data
    optimizer.zero_grad(set_to_none=False)  # model_backward_and_update(loss): the in-domain step
    _toy_loss(model, x, y).backward()
    optimizer.step()
    model.vision_ctx.requires_grad_(False)
    textual_prompt = copy.deepcopy(model.ctx)
    grad_l = []
    for support, query in episodes:
        optimizer.zero_grad(set_to_none=False)
        _toy_loss(model, x[support], y[support]).backward()
        optimizer.step()
        loss = _toy_loss(model, x[query], y[query])
        grad_l.append(torch.autograd.grad(loss, model.ctx, create_graph=False)[0])
        model.ctx.data = textual_prompt
    for grad in grad_l:
        model.ctx.data -= lr * grad * meta_step
    model.vision_ctx.requires_grad_(True)


def test_official_update_equals_a_reenactment_of_the_official_loop():
    """``official_quirks_meta_update`` against the official loop re-enacted on a toy module, over
    three batches (so momentum carries across batches): equal to float precision after every batch.
    Checked on the way: episode 0 is restored, episode 1's inner step is kept, the frozen modality
    moves in the episodes by momentum and weight decay alone, and the clean update differs."""
    lr = 0.3
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(6, 2, generator=generator), torch.randint(0, 3, (6,), generator=generator))
               for _ in range(3)]
    episodes = [(torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])), (torch.tensor([3, 4, 5]), torch.tensor([0, 1, 2]))]
    as_episodes = [Episode(s, q, torch.arange(3), torch.arange(3)) for s, q in episodes]
    reference, ours = _OfficialToy(), _OfficialToy()
    sgd = dict(lr=lr, momentum=0.9, weight_decay=5e-4)
    ref_opt, our_opt = torch.optim.SGD(reference.parameters(), **sgd), torch.optim.SGD(ours.parameters(), **sgd)
    for x, y in batches:
        _official_loop(reference, ref_opt, (x, y), episodes, lr)
        our_opt.zero_grad(set_to_none=True)  # the project's in-domain step (methods._asymmetric_update)
        _toy_loss(ours, x, y).backward()
        our_opt.step()
        official_quirks_meta_update(ours, our_opt, as_episodes,
                                    lambda m, e: _toy_loss(m, x[e.support], y[e.support]),
                                    lambda m, e: _toy_loss(m, x[e.query], y[e.query]), lr=lr, adapt=["ctx"])
        for n, p in ours.named_parameters():
            assert_reorder_close(p, getattr(reference, n), TOY_TERMS, msg=n)
            assert p.requires_grad
        for n in ("ctx", "vision_ctx"):
            assert_reorder_close(our_opt.state[getattr(ours, n)]["momentum_buffer"],
                                 ref_opt.state[getattr(reference, n)]["momentum_buffer"], TOY_TERMS, msg=n)
    # the semantics, by hand on a fresh toy: episode 0 restored, episode 1 kept, frozen modality drifts
    toy = _OfficialToy()
    optimizer = torch.optim.SGD(toy.parameters(), **sgd)
    x, y = batches[0]
    optimizer.zero_grad(set_to_none=True)
    _toy_loss(toy, x, y).backward()
    optimizer.step()
    theta = {n: p.detach().clone() for n, p in toy.named_parameters()}
    buffers = {n: optimizer.state[p]["momentum_buffer"].clone() for n, p in toy.named_parameters()}
    # hand-written torch SGD: b <- 0.9 b + (g + wd θ); θ <- θ - lr b
    g0 = torch.autograd.grad(_toy_loss(toy, x[episodes[0][0]], y[episodes[0][0]]), toy.ctx)[0]
    b_ctx = 0.9 * buffers["ctx"] + g0 + 5e-4 * theta["ctx"]
    b_vis = 0.9 * buffers["vision_ctx"] + 5e-4 * theta["vision_ctx"]  # zero gradient: momentum + decay only
    vis_after_0 = theta["vision_ctx"] - lr * b_vis
    q0 = {"ctx": (theta["ctx"] - lr * b_ctx).requires_grad_(), "vision_ctx": vis_after_0}
    gq0 = torch.autograd.grad(_toy_loss(_Params(q0), x[episodes[0][1]], y[episodes[0][1]]), q0["ctx"])[0]
    start_1 = theta["ctx"]  # episode 0 restored
    official_quirks_meta_update(toy, optimizer, as_episodes,
                                lambda m, e: _toy_loss(m, x[e.support], y[e.support]),
                                lambda m, e: _toy_loss(m, x[e.query], y[e.query]), lr=lr, adapt=["ctx"])
    s1 = _Params({"ctx": start_1.clone().requires_grad_(), "vision_ctx": vis_after_0.clone()})
    g1 = torch.autograd.grad(_toy_loss(s1, x[episodes[1][0]], y[episodes[1][0]]), s1.ctx)[0]
    b_ctx = 0.9 * b_ctx + g1 + 5e-4 * start_1
    b_vis = 0.9 * b_vis + 5e-4 * vis_after_0
    kept = start_1 - lr * b_ctx  # episode 1's inner step is not undone
    q1 = _Params({"ctx": kept.clone().requires_grad_(), "vision_ctx": vis_after_0 - lr * b_vis})
    gq1 = torch.autograd.grad(_toy_loss(q1, x[episodes[1][1]], y[episodes[1][1]]), q1.ctx)[0]
    assert_reorder_close(toy.ctx, kept - lr * META_STEP * (gq0 + gq1), TOY_TERMS)
    assert_reorder_close(toy.vision_ctx, vis_after_0 - lr * b_vis, TOY_TERMS)
    # and the clean update (exact restore, no momentum) lands elsewhere
    clean = _OfficialToy()
    clean.load_state_dict({n: theta[n] for n in theta})
    episodic_meta_update(clean, as_episodes, lambda m, e: _toy_loss(m, x[e.support], y[e.support]),
                         lambda m, e: _toy_loss(m, x[e.query], y[e.query]), lr=lr, adapt=["ctx"])
    assert (clean.ctx - toy.ctx).abs().max() > 1e-3


class _Params:
    """Attribute access to a dict of tensors (the toy loss reads ``.ctx`` and ``.vision_ctx``)."""

    def __init__(self, params):
        self.__dict__.update(params)


def test_cross_class_split_relabels_and_never_leaks():
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0, 3, 6])
    for seed in range(20):
        episodes = cross_class_episodes(labels, 7, torch.Generator().manual_seed(seed))
        assert len(episodes) == 2
        covered = torch.cat([e.query for e in episodes]).sort().values
        assert torch.equal(covered, torch.arange(len(labels)))  # every image is a query once
        for e in episodes:
            assert not set(e.support_classes.tolist()) & set(e.query_classes.tolist())
            assert set(labels[e.support].tolist()) <= set(e.support_classes.tolist())
            assert set(labels[e.query].tolist()) <= set(e.query_classes.tolist())
            new = relabel(labels[e.support], e.support_classes)
            assert torch.equal(e.support_classes[new], labels[e.support])
    assert (cross_class_episodes(labels, 7, torch.Generator().manual_seed(1))[0].query_classes
            != cross_class_episodes(labels, 7, torch.Generator().manual_seed(2))[0].query_classes).any()


def test_cross_domain_split_never_leaks():
    domains = torch.tensor([0, 0, 1, 2, 1, 2, 0])
    episodes = cross_domain_episodes(domains, n_classes=3)
    assert len(episodes) == 3
    for e in episodes:
        assert len(domains[e.query].unique()) == 1
        assert domains[e.query][0].item() not in domains[e.support].tolist()
        assert torch.equal(e.support_classes, torch.arange(3))
    assert cross_domain_episodes(torch.zeros(4, dtype=torch.long), 3) == []


def test_relabel_errors_on_foreign_labels():
    with pytest.raises(ValueError, match="labels \\[7\\] are not among"):
        relabel(torch.tensor([1, 7]), torch.tensor([1, 2]))
