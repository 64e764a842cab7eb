"""The shared engine: seeding, metrics, optimisation, checkpoints, the training loop.

(Class splits and few-shot draws: ``metaprompt_lite.splits``.)

Explained in ``notebooks/02_text_prompts`` (training loop) and ``notebooks/06_metaprompt_end_to_end``.

One loop serves every method: :func:`train` takes each step's batch (:func:`training_batch`) and
hands it to the method's step function (:mod:`metaprompt_lite.steps`), which returns its losses.
Everything that makes a run repeatable lives here: :func:`seed_everything`; batches that are a pure
function of (data, seed, step) (the epoch order from :func:`epoch_order`, the crops from a generator
keyed by (seed, step)); the run's own ``torch.Generator`` for episode splits; and checkpoints holding
prompts, optimizer, scheduler, generator and step (so a resumed run continues bit for bit).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import pickle
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from metaprompt_lite import faults
from metaprompt_lite.fastpath import memo


# --------------------------------------------------------------------------- seeding
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; ask torch for deterministic kernels (CPU runs repeat exactly)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def make_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


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


# --------------------------------------------------------------------------- configuration
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


# --------------------------------------------------------------------------- augmentation
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


# --------------------------------------------------------------------------- checkpoints
class CheckpointError(ValueError):
    """A checkpoint file cannot be loaded (cut short, not a checkpoint, or holding code): one-line message."""


class Checkpoint(dict):
    """What :func:`load_checkpoint` returns: the saved dict, which remembers its file and the fix, so
    that the code reading it can refuse a file of another kind by name (:meth:`require`)."""

    path: Path
    fix: str

    def require(self, keys: Sequence[str], what: str) -> None:
        """Refuse a safe but foreign file (another program's, or another kind of checkpoint) before
        reading it, instead of a ``KeyError`` deep inside."""
        missing = [k for k in keys if k not in self]
        if missing:
            raise CheckpointError(f"{self.path} is not {what} (it lacks {', '.join(missing)}) — {self.fix}")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write atomically (temp file, then rename): an interrupted save never corrupts a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    if faults.armed("mid-checkpoint"):  # tests: the machine dies with the temp file half written
        with open(tmp, "r+b") as f:
            f.truncate(os.path.getsize(tmp) // 2)
        faults.die()
    os.replace(tmp, path)
    faults.fault_point("after-checkpoint")


def load_checkpoint(path: str | os.PathLike, fix: str | None = None) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint`: tensors, numbers, strings and containers
    only (``weights_only=True``: a pickled object that would run code on load is refused). Every
    failure is a :class:`CheckpointError` (or ``FileNotFoundError``) naming the file; ``fix`` says what
    to do (default: delete the file to start that run afresh)."""
    path = Path(path)
    fix = fix or f"delete {path} to start that run afresh"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} — {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found:
            raise CheckpointError(f"{path} holds pickled code ({found.group(1)}), refused without running it: a "
                                  f"checkpoint holds tensors and plain values only — {fix}") from error
        raise CheckpointError(f"{path} is cut short or not a checkpoint — {fix}") from error
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path} is cut short or not a checkpoint — {fix}") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a checkpoint (it holds a {type(state).__name__}, not a dict) — {fix}")
    checkpoint = Checkpoint(state)
    checkpoint.path, checkpoint.fix = path, fix
    return checkpoint


# --------------------------------------------------------------------------- training loop
@dataclass
class Batch:
    images: torch.Tensor  # float [B, 3, H, W] in [0, 1] (augmented) or uint8
    labels: torch.Tensor  # [B], 0..n_classes-1 of the training classes
    domains: torch.Tensor  # [B] domain index (all zero when there is one domain)
    frozen: torch.Tensor | None = None  # frozen f_I(images), normalised: filled on first use
    stem: torch.Tensor | None = None  # the vision tower's frozen first layer on images: likewise

    def image_stem(self, model: nn.Module) -> torch.Tensor:
        """The batch's vision stem (``PromptedCLIP.image_stem``), computed once: prompts enter after
        it, so the frozen and every prompted image pass start from it."""
        if self.stem is None:
            self.stem = model.image_stem(self.images)
        return self.stem

    def frozen_image(self, model: nn.Module) -> torch.Tensor:
        """Frozen f_I of the batch ([B, E], normalised), computed once. The backbone is frozen, so
        every method that trains on this batch (see ``batch_cache`` in :func:`train`) shares it."""
        if self.frozen is None:
            self.frozen = model.frozen_image_features(self.images, stem=self.image_stem(model))
        return self.frozen


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
    # anything with state_dict()/load_state_dict(), saved and restored with the checkpoint
    extras: dict[str, Any] = field(default_factory=dict)
    train_s: float = 0.0  # wall seconds of training so far, over every resumed part of the run

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {
            "prompts": self.model.prompts.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "step": self.step,
            "history": self.history,
            "extras": {k: v.state_dict() for k, v in self.extras.items()},
            "train_s": self.train_s,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint of :meth:`state_dict`. One of another kind (a file that is not a run
        checkpoint) is refused by name when it came from :func:`load_checkpoint`. A checkpoint from
        before ``train_s`` was saved gets the sum of its steps' ``step_s`` (the time in the step
        functions: a little less than the wall time it stands for)."""
        if isinstance(state, Checkpoint):
            state.require(RUN_CHECKPOINT_KEYS, "a run checkpoint")
        else:
            missing = [k for k in RUN_CHECKPOINT_KEYS if k not in state]
            if missing:
                raise CheckpointError(f"not a run checkpoint (it lacks {', '.join(missing)})")
        self.model.prompts.load_state_dict(state["prompts"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step = state["step"]
        self.history = list(state["history"])
        missing = set(self.extras) ^ set(state.get("extras", {}))
        if missing:
            raise ValueError(f"checkpoint and run disagree on method state {sorted(missing)}: "
                             "was it written by another method?")
        for key, obj in self.extras.items():
            obj.load_state_dict(state["extras"][key])
        self.train_s = float(state.get("train_s", sum(h.get("step_s", 0.0) for h in self.history)))


RUN_CHECKPOINT_KEYS = ("prompts", "optimizer", "scheduler", "generator", "torch_rng", "step", "history")


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
    return Batch(crops, labels[index], domains[index])


StepFn = Callable[[TrainState, Batch], dict[str, float]]


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


def check_finite(losses: dict[str, float], step: int) -> None:
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(
            f"non-finite loss at step {step}: {bad} — lower the learning rate (--lr), check the inputs for "
            "NaN, or resume from the last checkpoint"
        )


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
    """Run ``step_fn`` on shuffled, augmented batches until ``total_steps`` (resuming from
    ``state.step``). Each batch is a pure function of (data, seed, step) (:func:`training_batch`),
    and the generator driving episodes is saved in checkpoints, so "2 steps + save + load + 2 steps"
    equals "4 steps" bit for bit.
    ``batch_cache``: a dict shared by the runs of *one* training set and seed (the benchmark runs
    every method on it): the augmented batches and their frozen features are computed once for all.
    ``stop_after`` stops early after that many steps in this call (to test interruption).
    Each history entry records ``train_s``, the run's training wall seconds so far, resumed parts
    included (:attr:`TrainState.train_s` is in the checkpoint). Ctrl-C raises
    :class:`TrainingInterrupted`, which says whether a checkpoint is on disk and of which step."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise ValueError("no training images: check the dataset, the class split and the shots")
    domains = torch.zeros_like(labels) if domains is None else domains
    n = len(images)
    batch_size = min(optim.batch_size, n)
    per_epoch = n // batch_size  # the last incomplete batch is dropped, as CoOp's loader does
    done_here = 0
    # what is on disk, for the Ctrl-C message: a checkpoint there at the start is the one the run resumed from
    saved_step = state.step if checkpoint_path is not None and Path(checkpoint_path).is_file() else None
    started, train_s = time.perf_counter(), state.train_s
    bar = tqdm(total=total_steps, initial=state.step, desc="train", disable=not progress, leave=False)
    state.model.train()
    try:
        while state.step < total_steps and (stop_after is None or done_here < stop_after):
            _train_step(state, step_fn, images, labels, domains, batch_size, per_epoch, flip, min_scale,
                        interpolation, batch_cache, bar)
            state.train_s = train_s + time.perf_counter() - started
            state.history[-1]["train_s"] = state.train_s
            done_here += 1
            if checkpoint_path is not None and state.step % checkpoint_every == 0:
                save_checkpoint(checkpoint_path, state.state_dict())
                saved_step = state.step
    except KeyboardInterrupt as interrupt:
        bar.close()  # first: the Ctrl-C line must not be glued to the bar
        raise TrainingInterrupted(state.step, None if saved_step is None else Path(checkpoint_path), saved_step,
                                  checkpoint_every) from interrupt
    bar.close()
    if checkpoint_path is not None:
        save_checkpoint(checkpoint_path, state.state_dict())
    return state


def _train_step(state: TrainState, step_fn: StepFn, images: torch.Tensor, labels: torch.Tensor,
                domains: torch.Tensor, batch_size: int, per_epoch: int, flip: bool, min_scale: float,
                interpolation: str, batch_cache: dict | None, bar: tqdm) -> None:
    """One step of :func:`train`: the step's batch (from ``batch_cache`` when there), the method's
    step function, the scheduler, and a history entry."""
    epoch = state.step // per_epoch
    key = (state.seed, state.step, batch_size, len(images), flip, min_scale, interpolation)
    batch = memo(batch_cache, key, lambda: training_batch(images, labels, domains, state.seed, state.step, batch_size,
                                                         flip, min_scale, interpolation))
    t0 = time.perf_counter()
    with _autocast(state.model):
        losses = step_fn(state, batch)
    check_finite(losses, state.step)
    state.scheduler.step()
    state.step += 1
    state.history.append({"step": state.step, "epoch": epoch, "lr": state.lr,
                          "step_s": time.perf_counter() - t0, **losses})
    bar.update(1)
    bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})


def steps_for(n_examples: int, optim: OptimConfig) -> tuple[int, int]:
    """(total_steps, warmup_steps) for ``optim.epochs`` epochs over ``n_examples``."""
    per_epoch = max(1, n_examples // max(1, min(optim.batch_size, n_examples)))
    total = per_epoch * optim.epochs
    warmup = per_epoch * optim.warmup_epochs
    if optim.max_steps is not None:
        total = min(total, optim.max_steps)
        warmup = min(warmup, total // 4)
    return total, warmup
