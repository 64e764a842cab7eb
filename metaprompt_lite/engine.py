"""The benchmark's side of the training loop: seeding, metrics, where each step's batch comes from,
and a run's checkpoints and Ctrl-C around :func:`metaprompt_lite.core.loop.train`.

Everything that makes a run repeatable lives here or in the core: :func:`seed_everything`; batches
that are a pure function of (data, seed, step) (the epoch order from :func:`epoch_order`, the crops
from a generator keyed by (seed, step), :func:`training_batch`); the run's own ``torch.Generator``
for episode splits; and checkpoints holding the whole :class:`~metaprompt_lite.core.loop.TrainState`
(``metaprompt_lite.checkpoints``), so a resumed run continues bit for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from metaprompt_lite.checkpoints import run_state, save_checkpoint
from metaprompt_lite.core import loop
from metaprompt_lite.core.clip import memo
from metaprompt_lite.core.loop import Batch, StepFn, TrainState, make_generator
from metaprompt_lite.optim import OptimConfig


# --------------------------------------------------------------------------- seeding
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; ask torch for deterministic kernels (CPU runs repeat exactly)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def keyed_generator(*key: object) -> torch.Generator:
    """A generator seeded by a hash of ``key``: a pure function of the key, independent of every
    other stream (e.g. ``keyed_generator("augment", seed, step)``)."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return make_generator(int.from_bytes(digest[:8], "little") >> 1)



# --------------------------------------------------------------------------- metrics
def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * (logits.argmax(-1) == labels).float().mean().item()


def harmonic_mean(base: float, new: float) -> float:
    """HM = 2·b·n / (b + n), the papers' base-to-new summary."""
    return 0.0 if base + new == 0 else 2 * base * new / (base + new)


# --------------------------------------------------------------------------- batches
def augment(images: torch.Tensor, generator: torch.Generator, flip: bool = False,
            min_scale: float = 0.5, interpolation: str = "bilinear") -> torch.Tensor:
    """Random resized crop (area in [min_scale, 1], aspect 3/4..4/3, resized back with
    ``interpolation``: "bilinear" or Dassl's "bicubic") and optional horizontal flip, on uint8
    [B, 3, H, W]; returns float in [0, 1] at the same size. Driven by ``generator`` only."""
    batch, _, height, width = images.shape
    x = images.float() / 255.0
    out = torch.empty_like(x)
    u = torch.rand(batch, 5, generator=generator)
    for b in range(batch):
        area = min_scale + (1 - min_scale) * u[b, 0].item()
        aspect = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[b, 1].item())
        h = max(1, min(height, round(height * math.sqrt(area / aspect))))
        w = max(1, min(width, round(width * math.sqrt(area * aspect))))
        top = int(u[b, 2].item() * (height - h + 1))
        left = int(u[b, 3].item() * (width - w + 1))
        crop = x[b : b + 1, :, top : top + h, left : left + w]
        crop = F.interpolate(crop, size=(height, width), mode=interpolation, align_corners=False)
        if interpolation == "bicubic":  # bicubic overshoots; images stay in [0, 1]
            crop = crop.clamp(0, 1)
        out[b] = crop[0].flip(-1) if flip and u[b, 4].item() < 0.5 else crop[0]
    return out


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled example order of one epoch: a pure function of (seed, epoch)."""
    return torch.randperm(n, generator=make_generator(seed * 1_000_003 + epoch))


def training_batch(images: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor, seed: int,
                   step: int, batch_size: int, flip: bool = False, min_scale: float = 0.5,
                   interpolation: str = "bilinear") -> Batch:
    """The augmented batch of ``step``: a pure function of (data, seed, step, batch size,
    augmentation). Its examples come from :func:`epoch_order`, its crops from a generator keyed by
    (seed, step) (not the run's generator, which episodes draw from), so every method with the same
    data, seed and batch size trains on the same batches, and a batch can be computed once for all."""
    n = len(images)
    per_epoch = n // batch_size  # the last incomplete batch is dropped, as CoOp's loader does
    epoch, position = divmod(step, per_epoch)
    index = epoch_order(n, seed, epoch)[position * batch_size : (position + 1) * batch_size]
    crops = augment(images[index], keyed_generator("augment", seed, step), flip=flip, min_scale=min_scale,
                    interpolation=interpolation)
    return Batch(crops, labels[index], domains[index], epoch=epoch)



# --------------------------------------------------------------------------- a run's loop
class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C inside :func:`train`, carrying what is really on disk: the run's checkpoint file and the
    step it holds, or none (before the first ``checkpoint_every`` steps nothing was saved)."""

    def __init__(self, step: int, checkpoint: Path | None, checkpoint_step: int | None, every: int) -> None:
        super().__init__(step)
        self.step, self.checkpoint, self.checkpoint_step, self.every = step, checkpoint, checkpoint_step, every

    def kept(self) -> str:
        """``interrupted at step 4: ...`` for the Ctrl-C line of ``metaprompt-lite train``."""
        if self.checkpoint is None:
            return (f"interrupted at step {self.step}: no checkpoint yet (one is written every {self.every} steps), "
                    "nothing was kept; run the same command to start again")
        at = f" of step {self.checkpoint_step}" if self.checkpoint_step is not None else ""
        return (f"interrupted at step {self.step}: the run's checkpoint{at} is kept in {self.checkpoint}; run "
                "the same command to resume from it")


def _autocast(model: nn.Module):
    """bf16 autocast on CUDA (the research tier: ViT-B/16 fits a 16 GB GPU at the papers' batch
    sizes), nothing on CPU (exact fp32, repeatable numbers)."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train(
    state: TrainState,
    step_fn: StepFn,
    images: torch.Tensor,
    labels: torch.Tensor,
    domains: torch.Tensor | None,
    optim: OptimConfig,
    total_steps: int,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    flip: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    min_scale: float = 0.5,
    batch_cache: dict | None = None,
    interpolation: str = "bilinear",
) -> TrainState:
    """:func:`metaprompt_lite.core.loop.train` on shuffled, augmented batches of ``images``
    (:func:`training_batch`), with a checkpoint every ``checkpoint_every`` steps and at the end
    (resuming from ``state.step``: "2 steps + save + load + 2 steps" equals "4 steps" bit for bit).
    ``batch_cache``: a dict shared by the runs of *one* training set and seed (the benchmark runs
    every method on it): the augmented batches and their frozen features are computed once for all.
    ``stop_after`` stops early after that many steps in this call (to test interruption). Ctrl-C
    raises :class:`TrainingInterrupted`, which says whether a checkpoint is on disk and of which step."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise ValueError("no training images: check the dataset, the class split and the shots")
    domains = torch.zeros_like(labels) if domains is None else domains
    batch_size = min(optim.batch_size, len(images))
    # what is on disk, for the Ctrl-C message: a checkpoint there at the start is the one the run resumed from
    saved = {"step": state.step if checkpoint_path is not None and Path(checkpoint_path).is_file() else None}

    def batch_of(step: int) -> Batch:
        key = (state.seed, step, batch_size, len(images), flip, min_scale, interpolation)
        return memo(batch_cache, key, lambda: training_batch(images, labels, domains, state.seed, step, batch_size,
                                                             flip, min_scale, interpolation))

    def after_step(state: TrainState) -> None:
        if checkpoint_path is not None and state.step % checkpoint_every == 0:
            save_checkpoint(checkpoint_path, run_state(state))
            saved["step"] = state.step

    def step(state: TrainState, batch: Batch) -> dict[str, float]:
        with _autocast(state.model):
            return step_fn(state, batch)

    try:
        loop.train(state, step, batch_of, total_steps, after_step, progress, stop_after)
    except KeyboardInterrupt as interrupt:
        raise TrainingInterrupted(state.step, None if saved["step"] is None else Path(checkpoint_path), saved["step"],
                                  checkpoint_every) from interrupt
    if checkpoint_path is not None:
        save_checkpoint(checkpoint_path, run_state(state))
    return state
