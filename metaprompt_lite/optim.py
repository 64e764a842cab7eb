"""Optimisation as the papers' official code runs it: SGD with momentum and weight decay, a constant
warm-up, then Dassl's cosine stepped once per epoch (or, for the pocket presets, every batch).
The presets that use it, with the official configs' file and line, are in ``metaprompt_lite.methods``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


SCHEDULES = ("epoch", "step", "constant")


@dataclass
class OptimConfig:
    """SGD + constant warm-up + cosine, as CoOp/MetaPrompt train.

    ``schedule``: ``"epoch"`` is Dassl's (the official code of every method here): the warm-up epochs
    at ``warmup_lr``, then a cosine over ``epochs`` stepped once per epoch; ``"step"`` is a cosine
    stepped every batch down to 0 after the warm-up steps (the pocket presets'); ``"constant"`` keeps
    ``lr`` (see :func:`build_scheduler`)."""

    lr: float = 0.0015
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    epochs: int = 8
    batch_size: int = 16
    max_steps: int | None = None  # cap on total steps (tests, quick runs; 0: the untrained prompts)
    schedule: str = "epoch"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: use one of {SCHEDULES}")
        if not (math.isfinite(self.lr) and self.lr > 0):  # lr 0 divides by zero in the warm-up factor
            raise ValueError(f"the learning rate must be a number > 0, got {self.lr} — pass e.g. lr=0.002")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)} — pass a positive count")
        if self.max_steps is not None and self.max_steps < 0:  # 0: no step (a measurement at initialisation)
            raise ValueError(f"max_steps must be at least 0, got {self.max_steps} — pass a count of steps")


def build_optimizer(parameters, config: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def cosine_decay(t: float, span: float) -> float:
    """½ · (1 + cos(π · t / span)), from 1 at t = 0 to 0 at t = span (held at 0 beyond): the one
    cosine of every schedule here (the engine's and ``pretrain``'s)."""
    return 0.5 * (1 + math.cos(math.pi * min(t, span) / span))


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, config: OptimConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate of every step, by ``config.schedule``:

    ``"epoch"`` (Dassl's ``ConstantWarmupScheduler`` around ``CosineAnnealingLR(T_max=MAX_EPOCH)``,
    stepped at the end of each epoch; the warm-up epochs count within ``epochs``). With
    e = the step's epoch (``total_steps`` split into ``epochs`` equal epochs) and W = warm-up epochs:

        lr_e = warmup_lr                                        e < W
        lr_e = ½ · lr · (1 + cos(π · (e − W) / epochs))         e ≥ W

    so the last epoch of an 8-epoch run with one warm-up epoch trains at ½(1 + cos(6π/8)) ≈ 0.15 · lr,
    never 0. ``warmup_steps`` is not used.

    ``"step"``: warmup_lr for the warm-up steps, then a cosine stepped every batch down to 0:

        lr_t = ½ · lr · (1 + cos(π · (t − W) / (T − W)))

    ``"constant"``: lr at every step.
    """
    warmup_factor = config.warmup_lr / config.lr

    if config.schedule == "constant":
        def factor(step: int) -> float:
            return 1.0
    elif config.schedule == "epoch":
        epochs = max(1, config.epochs)
        per_epoch = max(1, total_steps // epochs)

        def factor(step: int) -> float:
            epoch = step // per_epoch
            if epoch < config.warmup_epochs:
                return warmup_factor
            return cosine_decay(epoch - config.warmup_epochs, epochs)
    else:
        decay_steps = max(1, total_steps - warmup_steps)

        def factor(step: int) -> float:
            if step < warmup_steps:
                return warmup_factor
            return cosine_decay(step - warmup_steps, decay_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def steps_for(n_examples: int, optim: OptimConfig) -> tuple[int, int]:
    """(total_steps, warmup_steps) for ``optim.epochs`` epochs over ``n_examples``."""
    per_epoch = max(1, n_examples // max(1, min(optim.batch_size, n_examples)))
    total = per_epoch * optim.epochs
    warmup = per_epoch * optim.warmup_epochs
    if optim.max_steps is not None:
        total = min(total, optim.max_steps)
        warmup = min(warmup, total // 4)
    return total, warmup
