"""The command line's arguments: their types and checks, in one place.

Each value a user types is checked where it is parsed (a seed, a count, a learning rate, a device, a
shard), so a bad one is a one-line usage error before anything is loaded; the checks that need the
dataset or the file system (``--target``, ``--shots``, a folder to write to) are here too, called by
the commands before any output. Only modules without torch are imported at the top: parsing, ``--help``
and a usage error load no torch (tests/test_cli_guards.py, benchmarks/cli_startup.py).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

from metaprompt_lite.paths import POCKET_CHECKPOINT, POCKET_MODEL, default_model

PROTOCOLS = ("official", "tuned")  # methods.PROTOCOLS, without loading the methods (tests/test_cli_guards.py)
SEED_LIMIT = 2**32  # numpy's and the generators' seed range: 0 <= seed < 2**32


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: … — see `… --help```) instead of usage + message."""

    def error(self, message: str):
        hint = "" if " — " in message else f" — see `{self.prog} --help`"
        self.exit(2, f"error: {message}{hint}\n")


def _seed(text: str) -> int:
    """A seed from the command line: an integer with 0 <= seed < 2**32."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed {text!r} is not an integer — use 0 <= seed < 2**32") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"seed {value} is out of range — use 0 <= seed < 2**32 (4294967296)")
    return value


def _shard(text: str) -> tuple[int, int]:
    """``--shard K/N``: the K-th of N parts of the grid, 1 <= K <= N."""
    k, _, n = text.partition("/")
    try:
        shard = int(k), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N — use two integers, e.g. --shard 1/4") from None
    if not 1 <= shard[0] <= shard[1]:
        raise argparse.ArgumentTypeError(f"shard {text} is out of range — use K/N with 1 <= K <= N, e.g. "
                                         f"--shard 1/{max(shard[1], 2)}")
    return shard


def _number(text: str, kind: type):
    """``text`` as an int or a finite float, or the argparse error saying what was expected."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or (kind is float and not math.isfinite(value)):
        what = "a whole number" if kind is int else "a finite number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def positive_int(text: str) -> int:
    """A count that must be at least 1 (batch size, epochs, steps, shots, threads): checked while
    parsing, so a 0 or a negative number is a one-line usage error before anything is loaded."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value}")
    return value


def thread_count(text: str) -> int:
    """``--threads``: at least 1 and at most this machine's cores (more only slows a run down: 999
    threads on 2 cores ran 40 times slower)."""
    value = positive_int(text)
    cores = os.cpu_count() or 1
    if value > cores:
        raise argparse.ArgumentTypeError(f"{value} is more than this machine's {cores} cores — use 1 to {cores}")
    return value


def non_negative_int(text: str) -> int:
    """A count where 0 means 'the default' (``bench --workers 0``: one per core)."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0 (a learning rate: 0 divides by zero in the warm-up, a negative one
    climbs the loss)."""
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def device(text: str) -> str:
    """A torch device this machine has: ``cpu``, or ``cuda``/``cuda:N``/``mps`` when present. Checked
    while parsing, so a typo or a missing GPU fails in one line before a model or dataset loads."""
    if text == "cpu":  # the default: no need to load torch to parse the arguments
        return text
    import torch

    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r} (use cpu, cuda or cuda:N)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r} needs a CUDA GPU and this machine has none (or torch was "
                                             "built without CUDA) — use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: there is no GPU {parsed.index}, this machine has "
                                             f"{torch.cuda.device_count()} — use cuda:0 .. "
                                             f"cuda:{torch.cuda.device_count() - 1}")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r} needs an Apple GPU (MPS) and this machine has none — use "
                                         "--device cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"device {text!r} is not supported (use cpu, cuda or cuda:N)")
    return text


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--pretrained`` and ``--device``, the same for every command that loads a CLIP."""
    parser.add_argument("--model", default=POCKET_MODEL, help=f"open_clip model name (default: {POCKET_MODEL})")
    parser.add_argument("--pretrained", default=None,
                        help="open_clip tag (e.g. openai) or checkpoint path; 'none' = random weights "
                        f"(default for {POCKET_MODEL}: data/{POCKET_CHECKPOINT})")
    parser.add_argument("--device", type=device, default="cpu",
                        help="cpu, cuda, cuda:N or mps, one this machine has (default: cpu)")


def _resolve_pretrained(args) -> None:
    """Fill in the default checkpoint: the committed pocket CLIP, or an error naming it and the fix
    (never a silent fall back to random weights); another model needs an explicit ``--pretrained``."""
    if args.pretrained is not None:
        return
    if args.model != POCKET_MODEL:
        raise ValueError(f"--model {args.model} needs --pretrained — give an open_clip tag (e.g. openai), a "
                         "checkpoint file, or none for random weights")
    args.pretrained = default_model()[1]


def _pretrained(value: str | None) -> str | None:
    """``--pretrained`` as the loaders take it: None (random weights) for 'none' or an empty value."""
    return None if value in (None, "", "none", "None") else value


def _check_target(args, dataset) -> None:
    """``--target``: required by a DG benchmark and one of its domains; refused on a base-to-new
    dataset (it has no domains, and silently ignoring it would report another run than asked)."""
    from metaprompt_lite.data import DG_BENCHMARKS

    if dataset.suite == "dg":
        if args.target is None:
            raise ValueError(f"--target is required for the DG benchmark {args.dataset} — use one of "
                             f"{', '.join(dataset.domains)}")
        if args.target not in dataset.domains:
            raise ValueError(f"{args.dataset} has no domain {args.target!r} — use --target with one of "
                             f"{', '.join(dataset.domains)}")
    elif args.target is not None:
        raise ValueError(f"--target is for DG benchmarks; {args.dataset} is a base-to-new dataset — drop "
                         f"--target {args.target}, or use a DG benchmark ({', '.join(DG_BENCHMARKS)})")


def _check_shots(args, dataset, pool: int) -> None:
    """A typed ``--shots`` above the images a class has (``pool``: :func:`~metaprompt_lite.splits.smallest_pool`)
    would be capped without a word (the preset's 16 is, by design): refuse it, so the run is the one asked for."""
    if args.shots is not None and args.shots > pool:
        where = "per class and source domain" if dataset.suite == "dg" else "per base class in its train pool"
        raise ValueError(f"--shots {args.shots} is more than {args.dataset} has: {pool} images {where} — use "
                         f"--shots {pool} or fewer")


def _check_train(args, dataset) -> int:
    """``train``'s arguments against its dataset and the file system, in this order: ``--target``, ``--shots``,
    ``--out-dir`` (the checkpoints go there: an unwritable folder fails now, not after the training). Returns
    the fewest images a class has to draw its shots from (:func:`~metaprompt_lite.splits.smallest_pool`). One
    call from ``cli._run_train``, so its reader opens this module once for every check."""
    from metaprompt_lite.splits import smallest_pool

    _check_target(args, dataset)
    pool = smallest_pool(dataset, args.target)
    _check_shots(args, dataset, pool)
    if args.out_dir:
        _check_writable(args.out_dir, "--out-dir")
    return pool


def _check_writable(folder: str, option: str = "--out-dir") -> None:
    """Fail before any training if ``folder`` cannot take the results: it (or the first existing
    folder above it, where it would be created) must be a folder this process can create files in.
    Probed with a temporary file, which also catches a read-only file system; nothing stays behind."""
    path = Path(folder or ".").absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot write to {option} {folder}: {existing} is a file, not a folder — "
                                 "pass a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise PermissionError(f"cannot write to {option} {folder}: {existing} is not writable "
                              f"({error.strerror}) — pass a folder you can write to") from None
