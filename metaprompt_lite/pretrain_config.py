"""The pocket CLIP's pretraining settings (:class:`PretrainConfig`), apart from :mod:`~metaprompt_lite.pretrain`.

A plain dataclass with no torch import, so that ``metaprompt-lite pretrain --help`` and its argument errors
show the defaults without loading torch (about 3 s); :mod:`~metaprompt_lite.pretrain` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PretrainConfig:
    model: str = "pocket-clip"
    out: str = "data/pocket-clip/pocket-clip.safetensors"
    work_dir: str = ".cache/pretrain"
    seed: int = 0
    text_steps: int = 1800  # the committed checkpoint's value
    text_batch: int = 256
    text_lr: float = 2e-3
    image_steps: int = 5000
    image_batch: int = 128
    image_lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 300
    concept_weight: float = 1.0
    # experiments on the image phase's targets (0 = off, the committed checkpoint's recipe):
    # semantic soft labels for the concept CE, q = softmax(t_y · t_kᵀ / tau); `--soft-label-tau`
    soft_label_tau: float = 0.0
    # weight of a regression term 1 − cos(f_I(x), f_T(caption)); `--regress-weight`
    regress_weight: float = 0.0
    grey_prob: float = 0.2
    min_scale: float = 0.35
    flip: bool = True
    holdout_fraction: float = 0.02
    checkpoint_every: int = 250
    # bf16 autocast for the image tower: ~25 % faster on a CPU with native bf16, ~14x slower on an
    # AVX2-only CPU (0.65 s/step in float32 there). The committed checkpoint: float32. `--image-bf16`
    image_bf16: bool = False
    # experiments that change only the image phase: take this checkpoint's text tower instead of
    # distilling one (:func:`text_state_from_checkpoint`); `--text-from`
    text_from: str | None = None
    progress: bool = True
