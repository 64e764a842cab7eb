"""Gradient alignment (``metaprompt_lite.analysis``) against gradients known independently.

Two kinds of reference:
  - a *linear fake*: ``compute_logits`` is replaced by logits[b, c] = ⟨a[b, c], θ⟩ with the
    "images" being the tensor ``a`` [B, C, D]. The CE gradient is then analytic,
        ∇_θ CE = 1/B · Σ_b Σ_{c∈S} (softmax_S(logits_b)_c − [c = y_b]) · a[b, c],
    and at θ = 0 with a[b, c] = w_{y_b}·[c = y_b] a group S of k classes has
        g_S = −(k − 1)/(k·n_S) · Σ_{b∈S} w_{y_b},
    so cosines of +1, −1 or any chosen value can be built by hand;
  - the real ``tiny-clip`` prompt learners: the reference gradient is ``torch.autograd.grad`` of a
    CE built *without* the analysis module — a second PromptedCLIP holding only the group's
    classes (so no column slicing), the same prompt values, labels relabelled by hand.

The split into groups is random (``seed``), so a test either uses data where every split gives
the same answer, or checks that the answer is the one of *some* split, computed for all of them.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from metaprompt_lite import analysis
from metaprompt_lite.analysis import alignment_curve, episode_gradient, gradient_alignment, prompt_gradient
from metaprompt_lite.optim import OptimConfig
from metaprompt_lite.methods import MethodConfig
from metaprompt_lite.core.prompts import PromptConfig, PromptedCLIP
from metaprompt_lite.core.steps import Outputs
from tolerances import assert_reorder_close, clip_terms


# --------------------------------------------------------------------------- the linear fake


class _Theta(nn.Module):
    def __init__(self, theta: torch.Tensor):
        super().__init__()
        self.theta = nn.Parameter(theta.clone().float())


class _FakeModel(nn.Module):
    """Only what ``prompt_gradient`` touches: ``.prompts`` (the parameters)."""

    def __init__(self, prompts: nn.Module):
        super().__init__()
        self.prompts = prompts


def _linear_logits(model, method, images, **_):
    return Outputs(torch.einsum("bcd,d->bc", images, model.prompts.theta))


@pytest.fixture
def linear(monkeypatch):
    """Route ``analysis.compute_logits`` through the linear fake."""
    monkeypatch.setattr(analysis, "compute_logits", _linear_logits)


def _analytic_gradient(a: torch.Tensor, theta: torch.Tensor, labels: list[int], classes: list[int]) -> torch.Tensor:
    """∇_θ of mean CE over the ``classes`` columns, written out with an explicit softmax."""
    a, theta = a.double(), theta.double()
    grad = torch.zeros_like(theta)
    for b, y in enumerate(labels):
        z = [float(a[b, c] @ theta) for c in classes]
        top = max(z)
        e = [math.exp(v - top) for v in z]
        for c, ec in zip(classes, e):
            grad += (ec / sum(e) - (1.0 if c == y else 0.0)) * a[b, c]
    return (grad / len(labels)).float()


def _one_hot_images(w: list[list[float]], labels: list[int], n_classes: int) -> torch.Tensor:
    """a[b, c] = w[y_b] if c == y_b else 0."""
    a = torch.zeros(len(labels), n_classes, len(w[0]))
    for b, y in enumerate(labels):
        a[b, y] = torch.tensor(w[y])
    return a


def _cos(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(u.double() @ v.double() / (u.double().norm() * v.double().norm()))


def _pairings(items: list[int], size: int):
    """All ways to cut ``items`` into unordered groups of ``size``."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for mates in itertools.combinations(rest, size - 1):
        group = [first, *mates]
        remaining = [x for x in rest if x not in mates]
        for tail in _pairings(remaining, size):
            yield [group, *tail]


# --------------------------------------------------------------------------- prompt_gradient


def test_prompt_gradient_is_the_analytic_ce_gradient_over_the_class_subset(linear):
    """At a random θ, on 7 "images" and 6 classes, ``prompt_gradient`` over classes {1, 3, 4} equals
    the analytic CE gradient restricted to those columns. Columns 0, 2, 5 hold huge features: had
    they entered the softmax, the gradient would be completely different."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 6, 3, generator=g)
    a[:, [0, 2, 5]] *= 50.0
    theta = torch.randn(3, generator=g)
    labels, classes = [1, 3, 4, 4, 1, 3, 3], [1, 3, 4]
    model = _FakeModel(_Theta(theta))
    got = prompt_gradient(model, None, a, torch.tensor(labels), torch.tensor(classes))
    # 3-term logits, a softmax over 3 classes, a mean over 7 rows, forward and back: 2·(3 + 3 + 7) additions
    assert_reorder_close(got, _analytic_gradient(a, theta, labels, classes), 26)
    # the values of the full-column (wrong) gradient really differ: the subset matters
    assert not torch.allclose(got, _analytic_gradient(a, theta, labels, list(range(6))), atol=1e-2)


def test_prompt_gradient_concatenates_trainable_parameters_in_order_and_zero_fills_unused(monkeypatch):
    """The flattened vector is [∇first, ∇second, 0 for ``unused``] in registration order; the
    frozen parameter (requires_grad False) is left out; a parameter the logits do not use gives
    zeros of its size (not an error, not a shorter vector)."""

    class Prompts(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Parameter(torch.tensor([0.3, -0.2]))
            self.frozen = nn.Parameter(torch.ones(4), requires_grad=False)
            self.second = nn.Parameter(torch.tensor([0.1, 0.5, -0.4]))
            self.unused = nn.Parameter(torch.ones(2, 2))

    def logits(model, method, images, **_):
        p = model.prompts
        return Outputs(torch.einsum("bcd,d->bc", images[..., :2], p.first)
                       + torch.einsum("bcd,d->bc", images[..., 2:], p.second) + p.frozen.sum())

    monkeypatch.setattr(analysis, "compute_logits", logits)
    a = torch.randn(5, 4, 5, generator=torch.Generator().manual_seed(1))
    labels, classes = [0, 2, 3, 2, 0], [0, 2, 3]
    model = _FakeModel(Prompts())
    got = prompt_gradient(model, None, a, torch.tensor(labels), torch.tensor(classes))
    # with θ = (first, second) the logits are ⟨a, θ⟩ + const: one analytic gradient covers both
    theta = torch.cat([model.prompts.first.detach(), model.prompts.second.detach()])
    both = _analytic_gradient(a, theta, labels, classes)
    assert got.shape == (2 + 3 + 4,)
    assert_reorder_close(got[:5], both, 26)
    assert torch.equal(got[5:], torch.zeros(4))


def test_prompt_gradient_of_a_single_class_is_zero(linear):
    """CE over one logit column is log 1 = 0 whatever θ: the gradient is exactly zero. (So
    ``gradient_alignment`` needs at least two classes per group to measure anything.)"""
    a = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(2))
    model = _FakeModel(_Theta(torch.tensor([0.7, -1.3])))
    got = prompt_gradient(model, None, a, torch.tensor([2, 2, 2]), torch.tensor([2]))
    assert torch.equal(got, torch.zeros(2))


# real prompt learners on the tiny CLIP: (name, PromptConfig, loss)
LEARNERS = [
    ("coop", PromptConfig(n_ctx=4, ctx_init="a photo of a"), "ce"),
    ("cocoop", PromptConfig(n_ctx=2, ctx_init=None, conditional=True), "ce"),
    ("deep-text-vision", PromptConfig(n_ctx=2, ctx_init=None, text_depth=2, n_vision=2, vision_depth=2), "ce"),
    ("maple", PromptConfig(n_ctx=2, ctx_init=None, text_depth=2, n_vision=2, vision_depth=2, coupled=True), "ce"),
    ("asymmetric", PromptConfig(n_ctx=2, ctx_init=None, text_depth=2, n_vision=2, vision_depth=2), "asymmetric"),
]


def _reference_gradient(backbone, config: PromptConfig, loss: str, state: dict, names: list[str],
                        images: torch.Tensor, labels: list[int], classes: list[int]) -> torch.Tensor:
    """torch.autograd.grad of CE on a PromptedCLIP built for ``classes`` only (same prompt values).
    ce: logits = s·f̃_I·f̃_Tᵀ (``PromptedCLIP.forward``); asymmetric: the fused inference logits
    ½(s·f̃_I·f_Tᵀ + s·f_I·f̃_Tᵀ), assembled here from the encoders."""
    sub = PromptedCLIP(backbone, config, [names[c] for c in classes])
    sub.prompts.load_state_dict(state)
    if loss == "ce":
        logits = sub(images)
    else:
        prompts = sub.prompts()
        s = sub.logit_scale
        logits_i = s * sub.image_features(images, prompts) @ sub.frozen_text.t()
        logits_t = s * sub.frozen_image_features(images) @ sub.text_features(prompts).t()
        logits = 0.5 * (logits_i + logits_t)
    target = torch.tensor([classes.index(y) for y in labels])
    params = [p for p in sub.prompts.parameters() if p.requires_grad]
    grads = torch.autograd.grad(F.cross_entropy(logits, target), params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


@pytest.fixture(scope="module")
def five_class_batch():
    from conftest import synthetic_dataset

    data = synthetic_dataset(n_classes=5, per_class=3, seed=3)
    return data.images, data.labels, list(data.classnames)


@pytest.mark.parametrize("name, config, loss", LEARNERS, ids=[n for n, *_ in LEARNERS])
def test_prompt_gradient_matches_autograd_on_tiny_clip(backbone, five_class_batch, name, config, loss):
    """On the tiny CLIP, for every kind of prompt learner, ``prompt_gradient`` over a 3-class subset
    of a 5-class model equals ``torch.autograd.grad`` of CE computed on a model that only knows
    those 3 classes (asymmetric methods: CE of the fused ½(logits_i + logits_t) logits)."""
    images, labels, names = five_class_batch
    classes = [0, 2, 4]
    keep = torch.isin(labels, torch.tensor(classes))
    torch.manual_seed(0)
    model = PromptedCLIP(backbone, config, names)
    if config.conditional or config.coupled:
        # give the meta-net / coupling layers some non-default values
        with torch.no_grad():
            for p in model.prompts.parameters():
                p.add_(0.05 * torch.randn_like(p))
    method = MethodConfig(name, prompt=config, loss=loss)
    got = prompt_gradient(model, method, images[keep], labels[keep], torch.tensor(classes))
    ref = _reference_gradient(backbone, config, loss, model.prompts.state_dict(), names,
                              images[keep], labels[keep].tolist(), classes)
    n_trainable = sum(p.numel() for p in model.prompts.parameters() if p.requires_grad)
    assert got.shape == (n_trainable,)
    assert ref.abs().max() > 0
    assert_reorder_close(got, ref, clip_terms(backbone, 2))  # both towers, forward and backward


def test_prompt_gradient_skips_frozen_prompt_parameters(backbone, five_class_batch):
    """Freezing ``ctx`` of a deep text+vision learner removes it from the vector: what is left equals
    the reference gradients of ``deep_ctx`` and ``vision_ctx`` only."""
    images, labels, names = five_class_batch
    config = LEARNERS[2][1]
    torch.manual_seed(1)
    model = PromptedCLIP(backbone, config, names)
    model.prompts.ctx.requires_grad_(False)
    method = MethodConfig("deep", prompt=config)
    classes = [1, 3]
    keep = torch.isin(labels, torch.tensor(classes))
    got = prompt_gradient(model, method, images[keep], labels[keep], torch.tensor(classes))
    full = _reference_gradient(backbone, config, "ce", model.prompts.state_dict(), names,
                               images[keep], labels[keep].tolist(), classes)
    assert got.shape == (full.numel() - model.prompts.ctx.numel(),)
    assert_reorder_close(got, full[model.prompts.ctx.numel():], clip_terms(backbone, 2))


# --------------------------------------------------------------------------- episode_gradient


def test_episode_gradient_is_coops_own_gradient(backbone, five_class_batch):
    """CoOp's logits are the episode's (frozen image, prompted text): the two gradients agree."""
    images, labels, names = five_class_batch
    config, classes = LEARNERS[0][1], torch.tensor([0, 2, 4])
    keep = torch.isin(labels, classes)
    torch.manual_seed(0)
    model = PromptedCLIP(backbone, config, names)
    method = MethodConfig("coop", prompt=config)
    got = episode_gradient(model, method, images[keep], labels[keep], classes)
    assert got.abs().max() > 0
    assert_reorder_close(got, prompt_gradient(model, method, images[keep], labels[keep], classes),
                         clip_terms(backbone, 2))


def test_episode_gradient_is_the_text_side_loss_over_the_text_prompts(backbone, five_class_batch):
    """A deep text+vision learner: the vector is ∇ of CE(s·f_I·f̃_Tᵀ) over ``ctx`` and ``deep_ctx`` only,
    computed here by autograd on a model that knows only the group's classes; it differs from the
    fused-logit gradient of the same prompts (so the two measures are not the same thing)."""
    images, labels, names = five_class_batch
    config, classes = LEARNERS[4][1], [1, 2, 4]
    keep = torch.isin(labels, torch.tensor(classes))
    torch.manual_seed(2)
    model = PromptedCLIP(backbone, config, names)
    method = MethodConfig("asymmetric", prompt=config, loss="asymmetric")
    got = episode_gradient(model, method, images[keep], labels[keep], torch.tensor(classes))
    sub = PromptedCLIP(backbone, config, [names[c] for c in classes])
    sub.prompts.load_state_dict(model.prompts.state_dict())
    logits = sub.logit_scale * sub.frozen_image_features(images[keep]) @ sub.text_features(sub.prompts()).t()
    target = torch.tensor([classes.index(y) for y in labels[keep].tolist()])
    params = [sub.prompts.ctx, sub.prompts.deep_ctx]
    ref = torch.cat([g.flatten() for g in torch.autograd.grad(F.cross_entropy(logits, target), params)])
    assert got.shape == ref.shape
    assert_reorder_close(got, ref, clip_terms(backbone, 2))
    fused = prompt_gradient(model, method, images[keep], labels[keep], torch.tensor(classes))[:ref.numel()]
    assert not torch.allclose(got, fused, atol=1e-4)


def test_episode_gradient_refuses_conditional_prompts(backbone, five_class_batch):
    images, labels, names = five_class_batch
    model = PromptedCLIP(backbone, LEARNERS[1][1], names)
    with pytest.raises(ValueError, match="unconditional text prompts"):
        episode_gradient(model, None, images, labels, torch.tensor([0, 1]))


# --------------------------------------------------------------------------- gradient_alignment (linear fake)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_alignment_is_one_when_every_group_pulls_the_same_way(linear, seed):
    """Every class contributes the same direction w = (1, 2, −1): g_S ∝ −w for every group, so the
    alignment is exactly +1 for every random split (2 groups of 4 classes, and 3 groups of 2 with
    the mean over the 3 pairs)."""
    labels = [0, 1, 2, 3, 4, 5, 5, 3, 1, 0]
    a = _one_hot_images([[1.0, 2.0, -1.0]] * 6, labels, 6)
    model = _FakeModel(_Theta(torch.zeros(3)))
    assert gradient_alignment(model, None, a, torch.tensor(labels), seed=seed) == pytest.approx(1.0, abs=1e-6)
    assert gradient_alignment(model, None, a, torch.tensor(labels), groups=3, seed=seed) == pytest.approx(1.0, abs=1e-6)


def test_alignment_refuses_groups_of_one_class(linear):
    """A one-class group has a constant CE and a zero gradient: its "alignment" (0) would measure
    nothing, so fewer than 2 classes per group is an error that says so."""
    labels = [0, 1, 2, 0]
    a = _one_hot_images([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], labels, 3)
    model = _FakeModel(_Theta(torch.zeros(2)))
    with pytest.raises(ValueError, match="3 classes present cannot make 2 groups of at least 2 classes"):
        gradient_alignment(model, None, a, torch.tensor(labels))


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_alignment_is_minus_one_for_opposite_groups(linear, seed):
    """Four classes, one image each, with w summing to zero: w0 + w1 + w2 + w3 = 0, and no two add
    up to zero. Whatever the 2+2 split, g_S = −¼(w_a + w_b) = +¼(w_c + w_d) = −g_Q: alignment −1."""
    w = [[3.0, 0.0], [0.0, 2.0], [-1.0, -1.0], [-2.0, -1.0]]
    labels = [0, 1, 2, 3]
    a = _one_hot_images(w, labels, 4)
    model = _FakeModel(_Theta(torch.zeros(2)))
    assert gradient_alignment(model, None, a, torch.tensor(labels), seed=seed) == pytest.approx(-1.0, abs=1e-6)


def test_alignment_equals_the_hand_computed_cosine_of_the_drawn_split(linear):
    """w0 = (1, 0), w1 = (0, 1), w2 = (1, 1), w3 = (1, −1), one image per class, θ = 0, so
    g_S ∝ −(w_a + w_b) and the three possible splits give, by hand,
        {0,1}|{2,3}: cos((1,1), (2,0))  = 1/√2
        {0,2}|{1,3}: cos((2,1), (1,0))  = 2/√5
        {0,3}|{1,2}: cos((2,−1), (1,2)) = 0.
    Each seed must give one of these, the same seed the same value, and the global RNG must not
    matter; across 8 seeds the split must vary (it is random)."""
    w = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]]
    labels = torch.tensor([0, 1, 2, 3])
    a = _one_hot_images(w, labels.tolist(), 4)
    model = _FakeModel(_Theta(torch.zeros(2)))
    by_hand = [1 / math.sqrt(2), 2 / math.sqrt(5), 0.0]
    values = []
    for seed in range(8):
        v = gradient_alignment(model, None, a, labels, seed=seed)
        assert min(abs(v - h) for h in by_hand) < 1e-6, v
        torch.manual_seed(1234 + seed)  # global RNG must not enter
        assert gradient_alignment(model, None, a, labels, seed=seed) == v
        values.append(round(v, 6))
    assert len(set(values)) >= 2


def test_alignment_splits_only_the_classes_present(linear):
    """Labels use classes {1, 4, 6, 9} of a 10-column model: the groups are cut from those four
    only (splitting all ten ids would leave groups without images, giving NaN or a different
    value). With two images per class and a non-zero θ, the expected value is computed for each
    of the 3 possible splits with the analytic gradient; the result must be one of them."""
    g = torch.Generator().manual_seed(5)
    labels = [1, 4, 6, 9, 9, 6, 4, 1]
    a = torch.randn(8, 10, 3, generator=g)
    theta = torch.randn(3, generator=g)
    model = _FakeModel(_Theta(theta))
    expected = []
    for s, q in _pairings([1, 4, 6, 9], 2):
        gs = _analytic_gradient(a[[i for i, y in enumerate(labels) if y in s]], theta, [y for y in labels if y in s], s)
        gq = _analytic_gradient(a[[i for i, y in enumerate(labels) if y in q]], theta, [y for y in labels if y in q], q)
        expected.append(_cos(gs, gq))
    assert max(expected) - min(expected) > 0.05  # the splits are distinguishable
    for seed in range(4):
        v = gradient_alignment(model, None, a, torch.tensor(labels), seed=seed)
        assert math.isfinite(v)
        assert min(abs(v - e) for e in expected) < 1e-5, (v, expected)


def test_alignment_with_three_groups_is_the_mean_over_the_three_pairs(linear):
    """Six classes in 3 groups of 2 at θ = 0 with distinct class directions: the value must equal the
    mean of the three pairwise cosines for one of the 15 ways to pair up the classes (computed
    by hand from g_S ∝ −Σ w), not e.g. the first pair's cosine only."""
    w = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, -1.0], [2.0, -1.0, 1.0]]
    labels = [0, 1, 2, 3, 4, 5]
    a = _one_hot_images(w, labels, 6)
    model = _FakeModel(_Theta(torch.zeros(3)))
    means = []
    for grouping in _pairings(labels, 2):
        sums = [-torch.tensor(w[x]) - torch.tensor(w[y]) for x, y in grouping]
        cosines = [_cos(sums[i], sums[j]) for i in range(3) for j in range(i + 1, 3)]
        means.append(sum(cosines) / 3)
    assert len(means) == 15
    for seed in range(3):
        v = gradient_alignment(model, None, a, torch.tensor(labels), groups=3, seed=seed)
        assert min(abs(v - m) for m in means) < 1e-6, (v, means)


# --------------------------------------------------------------------------- gradient_alignment (tiny CLIP)


def test_alignment_on_tiny_clip_is_the_cosine_of_autograd_group_gradients(backbone):
    """CoOp on the tiny CLIP, 4 classes × 2 images: for each of the 3 possible 2+2 splits the two
    group gradients are computed with ``torch.autograd.grad`` on group-only models; the function's
    value must be the cosine of one of those splits, for several seeds."""
    from conftest import synthetic_dataset

    data = synthetic_dataset(n_classes=4, per_class=2, seed=7)
    names = list(data.classnames)
    config = PromptConfig(n_ctx=4, ctx_init="a photo of a")
    torch.manual_seed(0)
    model = PromptedCLIP(backbone, config, names)
    state = model.prompts.state_dict()
    method = MethodConfig("coop", prompt=config)
    labels = data.labels

    def group_gradient(classes):
        keep = torch.isin(labels, torch.tensor(classes))
        return _reference_gradient(backbone, config, "ce", state, names, data.images[keep],
                                   labels[keep].tolist(), classes)

    expected = [_cos(group_gradient(s), group_gradient(q)) for s, q in _pairings([0, 1, 2, 3], 2)]
    assert max(expected) - min(expected) > 1e-3
    for seed in range(3):
        v = gradient_alignment(model, method, data.images, labels, seed=seed)
        assert -1.0 <= v <= 1.0
        assert min(abs(v - e) for e in expected) < 1e-4, (v, expected)


# --------------------------------------------------------------------------- alignment_curve


def test_alignment_curve_measures_at_step_zero_every_chunk_and_the_end_like_a_plain_run(
        backbone, tmp_path, monkeypatch):
    """CoOp on an 8-class synthetic dataset (base = 4 classes, so both groups hold 2), 2 shots,
    3 steps measured every 2: points at steps 0, 2, 3. The curve must train exactly like a plain
    ``run_base_to_new`` with the same seed and optimisation (measuring in between must not disturb
    training): the prompts seen by the last measurement equal the plain run's checkpointed prompts,
    and base/new accuracy at step 0 / at the end equal an untrained (0-step) / the 3-step plain run.
    Alignments are finite cosines."""
    from conftest import synthetic_dataset
    from dataclasses import replace
    from metaprompt_lite.checkpoints import load_checkpoint
    from metaprompt_lite.methods import get_method
    from metaprompt_lite.run import RunConfig, run_base_to_new

    seen, grads = [], []  # the prompt values at each measurement (probe 0); every probe's group gradients
    real = analysis.group_gradients

    def spy(model, method, images, labels, groups=2, seed=0, gradient=prompt_gradient):
        if seed == 0:
            seen.append({k: v.detach().clone() for k, v in model.prompts.state_dict().items()})
        grads.append(real(model, method, images, labels, groups, seed, gradient))
        return grads[-1]

    monkeypatch.setattr(analysis, "group_gradients", spy)
    data = synthetic_dataset(n_classes=8, per_class=4, seed=11)
    method = get_method("coop")
    optim = OptimConfig(lr=0.05, epochs=3, warmup_epochs=0, batch_size=4, max_steps=3)
    points = alignment_curve(backbone, data, method, optim, every=2, shots=2, seed=1, probes=2)
    assert [p.step for p in points] == [0, 2, 3]
    assert len(seen) == 3
    assert all(-1.0 <= p.alignment <= 1.0 and math.isfinite(p.alignment) for p in points)
    for k, point in enumerate(points):  # the means over the 2 probes, by hand from the gradients seen
        (s0, q0), (s1, q1) = grads[2 * k], grads[2 * k + 1]
        assert point.alignment == pytest.approx((_cos(s0, q0) + _cos(s1, q1)) / 2, abs=1e-6)
        assert point.agreement == pytest.approx(float(s0 @ q0 + s1 @ q1) / 2, rel=1e-5)
    assert all(0.0 <= p.base <= 100.0 and 0.0 <= p.new <= 100.0 for p in points)

    config = RunConfig(method="coop", shots=2, seed=1, optim=optim, progress=False, out_dir=str(tmp_path))
    start = run_base_to_new(replace(config, optim=replace(optim, max_steps=0), out_dir=None), data, backbone)
    end = run_base_to_new(config, data, backbone)
    assert len(end["history"]) == 3
    (checkpoint,) = tmp_path.glob("*.pt")
    trained = load_checkpoint(checkpoint)["prompts"]
    assert set(trained) == set(seen[-1])
    for key, value in trained.items():
        assert torch.equal(seen[-1][key], value), key  # the same tensors, saved and read back
    assert not torch.allclose(seen[0]["ctx"], trained["ctx"])  # training did move the prompts
    assert (points[0].base, points[0].new) == pytest.approx((start["base"], start["new"]), abs=1e-6)
    assert (points[-1].base, points[-1].new) == pytest.approx((end["base"], end["new"]), abs=1e-6)
