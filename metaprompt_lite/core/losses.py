"""Losses on CLIP logits.

Explained in ``notebooks/04_asymmetric_contrastive_loss``.

- :func:`clip_logits`: s · f_I · f_Tᵀ with s = exp(logit_scale), for shared or per-image text.
- :func:`cross_entropy`: CE with a label-range check that names the problem.
- :func:`asymmetric_contrastive_loss`: MetaPrompt's loss (IEEE TIP 2024, as in the official code).
- :func:`feature_consistency_l1`: PromptSRC/ProMetaR's L1 pull of prompted features to frozen ones.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def clip_logits(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """logits[b, c] = s · ⟨f_I(x_b), f_T(c)⟩.

    ``image_features`` [B, E]; ``text_features`` [C, E] (shared) or [B, C, E] (per image, CoCoOp).
    Features are expected L2-normalised, as CLIP's are.
    """
    if text_features.dim() == 3:
        return logit_scale * torch.einsum("be,bce->bc", image_features, text_features)
    return logit_scale * image_features @ text_features.t()


def _check_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[-1]):
        raise ValueError(
            f"labels range over [{int(labels.min())}, {int(labels.max())}] but the logits have "
            f"{logits.shape[-1]} classes: relabel the batch to 0..{logits.shape[-1] - 1} "
            "(metaprompt_lite.splits.relabel) or pass the matching class list"
        )


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy, after checking that every label indexes a logit column."""
    _check_labels(logits, labels)
    return F.cross_entropy(logits, labels)


ASYMMETRIC_TERMS = ("fused", "image", "text")


def asymmetric_contrastive_loss(logits_i: torch.Tensor, logits_t: torch.Tensor, labels: torch.Tensor,
                                terms: tuple[str, ...] = ASYMMETRIC_TERMS) -> torch.Tensor:
    """MetaPrompt's asymmetric contrastive loss.

    With s = exp(logit_scale), prompted encoders f̃ and frozen encoders f:

        logits_i = s · f̃_I(x) · f_T(classes)ᵀ      (prompted image vs frozen hand-template text)
        logits_t = s · f_I(x) · f̃_T(classes)ᵀ      (frozen image vs prompted text)
        L = CE(½(logits_i + logits_t), y) + CE(logits_i, y) + CE(logits_t, y)

    The prompted branches never meet: each is supervised through the other modality's frozen
    representation, which keeps both close to CLIP's original embedding space. Inference uses
    ½(logits_i + logits_t) (:func:`asymmetric_logits`).

    ``terms`` keeps a subset of ("fused", "image", "text") for ablations (default: all three, the paper).
    """
    _check_labels(logits_i, labels)
    unknown = set(terms) - set(ASYMMETRIC_TERMS)
    if unknown or not terms:
        raise ValueError(f"terms must be a non-empty subset of {ASYMMETRIC_TERMS}, got {terms}")
    parts = {"fused": lambda: F.cross_entropy(asymmetric_logits(logits_i, logits_t), labels),
             "image": lambda: F.cross_entropy(logits_i, labels),
             "text": lambda: F.cross_entropy(logits_t, labels)}
    return sum(parts[t]() for t in terms)


def asymmetric_logits(logits_i: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
    """½(logits_i + logits_t): MetaPrompt's inference logits."""
    return 0.5 * (logits_i + logits_t)


def feature_consistency_l1(prompted: torch.Tensor, frozen: torch.Tensor, weight: float) -> torch.Tensor:
    """weight · mean |f̃ − f|: the PromptSRC/ProMetaR self-regulating term.

    ProMetaR uses weight 50 for text features (frozen side: template ensemble) and 20 for image
    features. ``frozen`` is detached: only the prompted side moves.
    """
    if prompted.shape != frozen.shape:
        raise ValueError(f"feature shapes differ: prompted {tuple(prompted.shape)} vs frozen {tuple(frozen.shape)}")
    return weight * F.l1_loss(prompted, frozen.detach(), reduction="mean")
