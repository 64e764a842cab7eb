"""The training loop every method shares: :func:`train` hands each step's :class:`Batch` to the
method's step function (:mod:`metaprompt_lite.core.steps`), then steps the scheduler.

Explained in ``notebooks/02_text_prompts`` and ``notebooks/06_metaprompt_end_to_end``. A run repeats
exactly when its batches are a pure function of (data, seed, step) and its :class:`TrainState` is
saved and restored whole; batches, checkpoint files and caches live outside the core
(``metaprompt_lite.engine``, ``metaprompt_lite.checkpoints``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from metaprompt_lite.core.clip import memo


def make_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


@dataclass
class Batch:
    images: torch.Tensor  # float [B, 3, H, W] in [0, 1] (augmented) or uint8
    labels: torch.Tensor  # [B], 0..n_classes-1 of the training classes
    domains: torch.Tensor  # [B] domain index (all zero when there is one domain)
    epoch: int = 0  # the epoch the batch belongs to
    # what is computed once per batch from the frozen backbone (:func:`~metaprompt_lite.core.clip.memo`)
    store: dict = field(default_factory=dict, repr=False)

    def image_stem(self, model: nn.Module) -> torch.Tensor:
        """The batch's vision stem (``PromptedCLIP.image_stem``), computed once: prompts enter after
        it, so the frozen and every prompted image pass start from it."""
        return memo(self.store, "stem", lambda: model.image_stem(self.images))

    def frozen_image(self, model: nn.Module) -> torch.Tensor:
        """Frozen f_I of the batch ([B, E], normalised), computed once. The backbone is frozen, so
        every method that trains on this batch (a benchmark keeps its batches) shares it."""
        return memo(self.store, "frozen", lambda: model.frozen_image_features(self.images, stem=self.image_stem(model)))


@dataclass
class TrainState:
    """Everything a step function may touch, and everything a checkpoint stores."""

    model: nn.Module  # a PromptedCLIP
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator  # episode splits (batches and crops come from training_batch's own keys)
    seed: int = 0  # epoch orders
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    # method-specific objects with state (ProMetaR's modulation net and its optimizer, ...):
    # anything with state_dict()/load_state_dict(), saved and restored with the run (metaprompt_lite.checkpoints)
    extras: dict[str, Any] = field(default_factory=dict)
    train_s: float = 0.0  # wall seconds of training so far, over every resumed part of the run

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


StepFn = Callable[[TrainState, Batch], dict[str, float]]


def check_finite(losses: dict[str, float], step: int) -> None:
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(
            f"non-finite loss at step {step}: {bad} — lower the learning rate (--lr), check the inputs for "
            "NaN, or resume from the last checkpoint"
        )


def train(state: TrainState, step_fn: StepFn, batch_of: Callable[[int], Batch], total_steps: int,
          after_step: Callable[[TrainState], None] | None = None, progress: bool = True,
          stop_after: int | None = None) -> TrainState:
    """Run ``step_fn`` on ``batch_of(step)`` until ``total_steps`` (from ``state.step``, so a restored
    state resumes), then step the scheduler; ``after_step(state)`` after each step (the benchmark
    saves checkpoints there). Each history entry records the step's losses, lr, ``step_s`` and
    ``train_s``, the run's training wall seconds so far (resumed parts included). ``stop_after``: stop
    after that many steps of this call (to test interruption)."""
    started, train_s, done_here = time.perf_counter(), state.train_s, 0
    bar = tqdm(total=total_steps, initial=state.step, desc="train", disable=not progress, leave=False)
    state.model.train()
    try:
        while state.step < total_steps and (stop_after is None or done_here < stop_after):
            batch = batch_of(state.step)
            t0 = time.perf_counter()
            losses = step_fn(state, batch)
            check_finite(losses, state.step)
            state.scheduler.step()
            state.step += 1
            state.train_s = train_s + time.perf_counter() - started
            state.history.append({"step": state.step, "epoch": batch.epoch, "lr": state.lr, "step_s": time.perf_counter() - t0,
                                  **losses, "train_s": state.train_s})
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
            done_here += 1
            if after_step is not None:
                after_step(state)
    finally:
        bar.close()
    return state
