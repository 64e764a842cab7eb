"""Losses against hand-written evaluations of the papers' formulas."""

from __future__ import annotations

import math

import pytest
import torch

from metaprompt_lite.core.losses import (
    asymmetric_contrastive_loss,
    asymmetric_logits,
    clip_logits,
    cross_entropy,
    feature_consistency_l1,
)


def _ce_by_hand(logits: list[list[float]], labels: list[int]) -> float:
    total = 0.0
    for row, y in zip(logits, labels):
        total += -row[y] + math.log(sum(math.exp(v) for v in row))
    return total / len(labels)


def test_asymmetric_loss_equals_the_formula():
    logits_i = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]
    logits_t = [[1.0, 1.5, 0.0], [-0.5, 2.0, 0.7]]
    labels = [0, 2]
    fused = [[(a + b) / 2 for a, b in zip(ri, rt)] for ri, rt in zip(logits_i, logits_t)]
    expected = _ce_by_hand(fused, labels) + _ce_by_hand(logits_i, labels) + _ce_by_hand(logits_t, labels)
    got = asymmetric_contrastive_loss(torch.tensor(logits_i), torch.tensor(logits_t), torch.tensor(labels))
    assert got.item() == pytest.approx(expected, abs=1e-6)
    torch.testing.assert_close(asymmetric_logits(torch.tensor(logits_i), torch.tensor(logits_t)), torch.tensor(fused))


def test_asymmetric_branches_get_their_own_gradients():
    """Each CE term reaches its branch: d/d(logits_i) = ½·(p_fused − y)/B + (p_i − y)/B."""
    logits_i = torch.tensor([[2.0, 0.5, -1.0]], requires_grad=True)
    logits_t = torch.tensor([[1.0, 1.5, 0.0]], requires_grad=True)
    y = torch.tensor([1])
    asymmetric_contrastive_loss(logits_i, logits_t, y).backward()
    onehot = torch.tensor([[0.0, 1.0, 0.0]])
    fused = torch.softmax((logits_i + logits_t).detach() / 2, -1)
    expected = 0.5 * (fused - onehot) + (torch.softmax(logits_i.detach(), -1) - onehot)
    torch.testing.assert_close(logits_i.grad, expected)


def test_clip_logits_shared_and_per_image_text():
    g = torch.Generator().manual_seed(0)
    image = torch.randn(2, 4, generator=g)
    text = torch.randn(3, 4, generator=g)
    scale = torch.tensor(10.0)
    expected = [[10.0 * float(image[b] @ text[c]) for c in range(3)] for b in range(2)]
    torch.testing.assert_close(clip_logits(image, text, scale), torch.tensor(expected))
    per_image = torch.stack([text, 2 * text])
    torch.testing.assert_close(clip_logits(image, per_image, scale)[1], 2 * torch.tensor(expected[1]))


def test_label_range_is_checked():
    with pytest.raises(ValueError, match="labels range over \\[0, 5\\] but the logits have 3 classes"):
        cross_entropy(torch.zeros(2, 3), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="relabel"):
        asymmetric_contrastive_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([-1]))


def test_feature_consistency_l1():
    prompted = torch.tensor([[1.0, -2.0], [0.0, 0.5]], requires_grad=True)
    frozen = torch.tensor([[0.0, 0.0], [1.0, 0.5]])
    loss = feature_consistency_l1(prompted, frozen, weight=50.0)
    assert loss.item() == pytest.approx(50.0 * (1 + 2 + 1 + 0) / 4)
    with pytest.raises(ValueError, match="shapes differ"):
        feature_consistency_l1(prompted, frozen[:1], 1.0)


def test_asymmetric_loss_terms_are_the_paper_terms():
    torch.manual_seed(0)
    logits_i, logits_t, y = torch.randn(5, 3), torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    ce = torch.nn.functional.cross_entropy
    assert torch.allclose(asymmetric_contrastive_loss(logits_i, logits_t, y, ("image",)), ce(logits_i, y))
    assert torch.allclose(asymmetric_contrastive_loss(logits_i, logits_t, y, ("text",)), ce(logits_t, y))
    assert torch.allclose(asymmetric_contrastive_loss(logits_i, logits_t, y, ("fused",)),
                          ce((logits_i + logits_t) / 2, y))
    with pytest.raises(ValueError, match="subset"):
        asymmetric_contrastive_loss(logits_i, logits_t, y, ("both",))
