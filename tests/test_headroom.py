"""The suite's design figure: the pixel-art look and the linear probe behind "headroom"."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from metaprompt_lite.data.render import pixelate
from metaprompt_lite.headroom import linear_probe


def test_pixelate_matches_pillow_box_downscale_then_nearest_upscale():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 3, 64, 64), dtype=np.uint8)
    ours = pixelate(images, 8)
    for image, mine in zip(images, ours):
        small = Image.fromarray(image.transpose(1, 2, 0)).resize((8, 8), Image.BOX)
        reference = np.asarray(small.resize((64, 64), Image.NEAREST)).transpose(2, 0, 1)
        assert np.abs(mine.astype(int) - reference.astype(int)).max() <= 1  # Pillow rounds in fixed point
    assert all(len(np.unique(block)) == 1 for block in [ours[0, 0, :8, :8], ours[1, 2, 56:, 8:16]])


def test_pixelate_keeps_a_picture_already_on_the_grid_and_refuses_a_misfit_grid():
    blocks = np.kron(np.arange(64, dtype=np.uint8).reshape(8, 8), np.ones((8, 8), dtype=np.uint8))
    image = np.stack([blocks] * 3)
    assert np.array_equal(pixelate(image, 8), image)
    try:
        pixelate(image, 7)
    except ValueError as error:
        assert "multiple" in str(error)
    else:
        raise AssertionError("a grid that does not divide the image must be refused")


def test_linear_probe_reaches_the_regularised_optimum():
    """At the minimum of the convex objective the gradient vanishes (checked independently of L-BFGS)."""
    torch.manual_seed(0)
    x = F.normalize(torch.randn(60, 16), dim=-1)
    y = torch.arange(60) % 4
    weight, bias = linear_probe(x, y, 4, weight_decay=1e-2)
    w = weight.double().requires_grad_()
    b = bias.double().requires_grad_()
    loss = F.cross_entropy(x.double() @ w + b, y) + 1e-2 * w.pow(2).sum()
    loss.backward()
    assert w.grad.abs().max() < 1e-4 and b.grad.abs().max() < 1e-4


def test_linear_probe_separates_separable_classes_and_is_deterministic():
    torch.manual_seed(1)
    centres = F.normalize(torch.randn(5, 32), dim=-1) * 3
    y = torch.arange(100) % 5
    x = F.normalize(centres[y] + 0.3 * torch.randn(100, 32), dim=-1)
    first = linear_probe(x, y, 5)
    second = linear_probe(x, y, 5)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert ((x @ first[0] + first[1]).argmax(-1) == y).float().mean() == 1.0
