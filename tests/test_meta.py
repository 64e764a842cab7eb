"""Meta-learning: episodes, and higher's meta-gradients against manual autograd references."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.func import functional_call

from metaprompt_lite.losses import clip_logits, cross_entropy
from metaprompt_lite.meta import (
    META_STEP,
    cross_class_episodes,
    cross_domain_episodes,
    double_backward_attention,
    episodic_meta_update,
    meta_gradients,
    official_quirks_meta_update,
)
from metaprompt_lite.prompts import PromptConfig, PromptedCLIP
from metaprompt_lite.splits import relabel

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
        torch.testing.assert_close(grads[name], reference[name], rtol=0, atol=1e-6)


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
            torch.testing.assert_close(grads[name], g, rtol=0, atol=1e-6)
    # first and second order really differ (the test above is not vacuous)
    second, _ = meta_gradients(model.prompts, lambda m: loss(m, S, SC), lambda m: loss(m, Q, QC),
                               inner_lr=INNER_LR, first_order=False)
    assert not torch.allclose(second["ctx"], grads["ctx"])


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
    torch.testing.assert_close(grads["ctx"], g_ctx, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="unknown parameter names"):
        meta_gradients(model.prompts, lambda m: loss(m, S, SC), lambda m: loss(m, Q, QC),
                       inner_lr=INNER_LR, adapt=["nope"])


def _transcription(model, episodes, loss, lr, second_order):
    """METHODS.md, written out: for each group, one inner SGD step on the support, the query
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
    episodic_meta_update(model.prompts, episodes,
                         lambda m, e: loss(m, e.support, e.support_classes),
                         lambda m, e: loss(m, e.query, e.query_classes),
                         lr=INNER_LR, first_order=not second_order)
    for n, p in model.prompts.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n], rtol=0, atol=1e-6)


def test_official_quirks_transcription(setup):
    """The official code: inner step = the real optimizer (momentum, weight decay), no restore."""
    model, labels, loss = setup
    episodes = cross_class_episodes(labels, len(NAMES), torch.Generator().manual_seed(3))
    twin = copy.deepcopy(model.prompts)
    optimizer = torch.optim.SGD(model.prompts.parameters(), lr=INNER_LR, momentum=0.9, weight_decay=5e-4)
    official_quirks_meta_update(model.prompts, optimizer, episodes,
                                lambda m, e: loss(m, e.support, e.support_classes),
                                lambda m, e: loss(m, e.query, e.query_classes), lr=INNER_LR)
    # transcription with plain tensors: SGD with momentum/wd by hand
    params = {n: p.detach().clone() for n, p in twin.named_parameters()}
    momentum = {n: None for n in params}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for e in episodes:
        leaf = {n: p.clone().requires_grad_() for n, p in params.items()}
        grads = torch.autograd.grad(loss(_as_module(model, leaf), e.support, e.support_classes),
                                    list(leaf.values()), allow_unused=True)
        for (n, p), g in zip(params.items(), grads):
            if g is None:
                continue
            d = g + 5e-4 * p
            momentum[n] = d if momentum[n] is None else 0.9 * momentum[n] + d
            params[n] = p - INNER_LR * momentum[n]  # no restore: the aliasing bug
        leaf = {n: p.clone().requires_grad_() for n, p in params.items()}
        grads = torch.autograd.grad(loss(_as_module(model, leaf), e.query, e.query_classes),
                                    list(leaf.values()), allow_unused=True)
        for n, g in zip(leaf, grads):
            if g is not None:
                total[n] += g
    for n, p in model.prompts.named_parameters():
        torch.testing.assert_close(p.detach(), params[n] - INNER_LR * META_STEP * total[n], rtol=0, atol=1e-6)


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
