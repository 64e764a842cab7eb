"""Checkpoint files: written atomically, read back refusing anything but tensors and plain values,
every failure a one-line error naming the file and the fix. The fault points of the kill-and-resume
tests (``metaprompt_lite.faults``) sit in the save path here, outside the training loop."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any, Sequence

import torch

from metaprompt_lite import faults
from metaprompt_lite.core.loop import TrainState

RUN_CHECKPOINT_KEYS = ("prompts", "optimizer", "scheduler", "generator", "torch_rng", "step", "history")


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


def run_state(state: TrainState) -> dict[str, Any]:
    """Everything a run's checkpoint holds: prompts, optimiser, scheduler, the episode generator, torch's
    global RNG, the step, the history, method extras and the training seconds so far."""
    return {
        "prompts": state.model.prompts.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "generator": state.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "step": state.step,
        "history": state.history,
        "extras": {k: v.state_dict() for k, v in state.extras.items()},
        "train_s": state.train_s,
    }


def resume(state: TrainState, saved: dict[str, Any]) -> None:
    """Restore :func:`run_state` into ``state``. A file of another kind is refused by name (when it
    came from :func:`load_checkpoint`; a plain dict by its missing keys). A checkpoint from before
    ``train_s`` was saved gets the sum of its steps' ``step_s`` (a little less than the wall time)."""
    if isinstance(saved, Checkpoint):
        saved.require(RUN_CHECKPOINT_KEYS, "a run checkpoint")
    elif missing := [k for k in RUN_CHECKPOINT_KEYS if k not in saved]:
        raise CheckpointError(f"not a run checkpoint (it lacks {', '.join(missing)})")
    state.model.prompts.load_state_dict(saved["prompts"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.generator.set_state(saved["generator"])
    torch.set_rng_state(saved["torch_rng"])
    state.step = saved["step"]
    state.history = list(saved["history"])
    missing = set(state.extras) ^ set(saved.get("extras", {}))
    if missing:
        raise ValueError(f"checkpoint and run disagree on method state {sorted(missing)}: "
                         "was it written by another method?")
    for key, obj in state.extras.items():
        obj.load_state_dict(saved["extras"][key])
    state.train_s = float(saved.get("train_s", sum(h.get("step_s", 0.0) for h in state.history)))
