"""How far apart two float32 computations of one quantity may be, and why: the tests' tolerances.

float32 rounds every operation to within u = 2⁻²⁴ of its exact result (``EPS32`` = 2u ≈ 1.19e-7).
Two computations that differ only in the order of their additions (a fast path against the plain
one, a transcription against the package, or one code under another CPU kernel path: AVX-512, AVX2,
torch's scalar ``default``, another MKL GEMM kernel) round differently.

A sum of n terms taken in any order is within (n − 1)·u·Σ|terms| of the exact sum in the worst case
(Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §4.2). That worst case needs every
rounding to err the same way; treating the roundings as independent random variables of mean zero,
the error is within about λ·√n·u·Σ|terms| except with probability at most n·2·exp(−λ²/2) (Higham and
Mary, "A new approach to probabilistic rounding error analysis", SIAM J. Sci. Comput. 41(5), 2019).
Two orders of the same sum are then within λ·√n·eps·Σ|terms| of each other. λ = 6 makes that
probability 3e-8 per term, and the measured differences sit well inside (tests/test_kernel_paths.py
runs the comparisons under every kernel path this project meets).

    atol = LAMBDA · √terms · EPS32 · scale,   rtol = 0

``terms`` counts the additions on the longest chain the two sides may order differently (along a
chain of sums the counts add), and ``scale`` stands for Σ|terms|: the largest |value| of the
quantity, or of the part of it the two sides compute differently (for a step, the update). For a
CLIP tower of L layers, width D and T tokens, each layer sums over D (the attention's projections),
T (the softmax-weighted values), D and 4D (the MLP), so one forward pass chains L·(6D + T) additions;
a backward pass as many again, a second-order pass a third.

What the bound must still catch, a wrong position, mask, label, sign or order of derivative, moves
results by far more: each test that relies on telling two results apart checks that their
difference exceeds the bound (e.g. tests/test_meta.py, first against second order).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

EPS32 = torch.finfo(torch.float32).eps
LAMBDA = 6.0  # the probabilistic bound's confidence: 2·exp(−18) ≈ 3e-8 per term


def tower_terms(layers: int, width: int, tokens: int) -> int:
    """Additions chained through one pass of a transformer tower: L·(6D + T)."""
    return layers * (6 * width + tokens)


def config_terms(model: str = "tiny-clip", passes: int = 1, towers: tuple[str, ...] = ("text", "image")) -> int:
    """Additions chained through ``towers`` of the package's model config ``model`` (no model built),
    ``passes`` times (1: forward; 2: with the backward; 3: with a second-order backward)."""
    config = json.loads((Path(__file__).resolve().parents[1] / "metaprompt_lite" / "model_configs"
                         / f"{model}.json").read_text())
    text, vision = config["text_cfg"], config["vision_cfg"]
    tokens = (vision["image_size"] // (vision.get("patch_size") or 1)) ** 2 + 1
    counts = {"text": tower_terms(text["layers"], text["width"], text["context_length"]),
              "image": tower_terms(vision["layers"], vision["width"], tokens)}
    return passes * sum(counts[t] for t in towers)


def clip_terms(backbone, passes: int = 1, towers: tuple[str, ...] = ("text", "image")) -> int:
    """:func:`config_terms` of a loaded :class:`metaprompt_lite.core.clip.Backbone` (its model's config)."""
    return config_terms(backbone.name, passes, towers)


def step_atol(expected: torch.Tensor, start: torch.Tensor, terms: int) -> float:
    """The tolerance of parameters after a step from ``start``: both sides subtract an update computed in
    another order, so the reordering bound at the update's size, plus one rounding of θ − update (two
    adjacent floats at |θ|)."""
    return reorder_atol(terms, scale_of(expected - start)) + EPS32 * scale_of(expected)


def reorder_atol(terms: int, scale: float) -> float:
    """The difference two orders of ``terms`` chained additions of size ``scale`` can make (the
    probabilistic bound above)."""
    return LAMBDA * terms ** 0.5 * EPS32 * scale


def scale_of(*tensors: torch.Tensor) -> float:
    """The largest |value| among ``tensors``: the size the rounding is relative to."""
    return max(float(t.detach().abs().max()) for t in tensors if t.numel())


def assert_reorder_close(actual: torch.Tensor, expected: torch.Tensor, terms: int, scale: float | None = None,
                         msg: str = "") -> None:
    """``actual`` equals ``expected`` up to the reordering of ``terms`` chained additions of size
    ``scale`` (default: the largest |value| of ``expected``)."""
    scale = scale_of(expected) if scale is None else scale
    atol = reorder_atol(terms, scale)
    torch.testing.assert_close(actual.detach(), expected.detach(), rtol=0, atol=atol,
                               msg=lambda m: f"{msg}{': ' if msg else ''}{m} (bound: {terms} additions of "
                                             f"size {scale:.3g} in another order, {atol:.3g})")


def assert_step_close(actual: torch.Tensor, expected: torch.Tensor, start: torch.Tensor, terms: int,
                      msg: str = "") -> None:
    """Parameters after a step from ``start``, within :func:`step_atol`."""
    expected = expected.detach()
    atol = step_atol(expected, start, terms)
    torch.testing.assert_close(actual.detach(), expected, rtol=0, atol=atol,
                               msg=lambda m: f"{msg}{': ' if msg else ''}{m} (bound: an update of {terms} "
                                             f"additions in another order, {atol:.3g})")
