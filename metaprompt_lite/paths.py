"""Where the committed artifacts live, and which backbone is the default.

The evaluation store and the pocket-CLIP checkpoint are committed under ``data/`` at the repository
root. ``METAPROMPT_LITE_DATA`` overrides the location (e.g. for a non-editable install).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TINY_MODEL = "tiny-clip"  # random init, CPU, seconds: for tests
POCKET_MODEL = "pocket-clip"
POCKET_CHECKPOINT = "pocket-clip/pocket-clip.safetensors"


def data_dir() -> Path:
    """``$METAPROMPT_LITE_DATA``, else ``data/`` beside the package (a clone or editable install),
    else ``./data``."""
    if os.environ.get("METAPROMPT_LITE_DATA"):
        return Path(os.environ["METAPROMPT_LITE_DATA"])
    beside = Path(__file__).resolve().parents[1] / "data"
    return beside if beside.is_dir() else Path.cwd() / "data"


def results_dir(protocol: str | None = None) -> Path:
    """The committed benchmark's ``results/`` (beside the data directory in a clone, else
    ``./results``), or with ``protocol`` its folder of that protocol's rows, ``results/<protocol>/``."""
    beside = data_dir().parent / "results"
    root = beside if beside.is_dir() else Path.cwd() / "results"
    return root / protocol if protocol else root


class MissingCheckpoint(FileNotFoundError):
    """The default checkpoint is not there: no silent fallback to random weights."""


def default_model() -> tuple[str, str]:
    """The embedded tier's backbone: the committed pocket CLIP. Its absence is an error naming the file
    and the fix, never a silent fall back to random weights (those only on request: ``--pretrained
    none``, or ``load_clip(TINY_MODEL)`` in tests)."""
    checkpoint = data_dir() / POCKET_CHECKPOINT
    if not checkpoint.is_file():
        raise MissingCheckpoint(
            f"the pocket CLIP checkpoint {checkpoint} is missing — restore it with `git checkout data/pocket-clip`, "
            "rebuild it with `metaprompt-lite pretrain`, or pass `--pretrained none` for random weights")
    return POCKET_MODEL, str(checkpoint)


def is_default_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is the committed pocket-CLIP checkpoint (the one `git checkout` restores)."""
    try:
        return Path(path).resolve() == (data_dir() / POCKET_CHECKPOINT).resolve()
    except OSError:
        return False


def checkpoint_record(path: str | os.PathLike) -> Path:
    """The pretraining report beside a checkpoint (``pocket-clip.json`` beside ``pocket-clip.safetensors``,
    as ``metaprompt-lite pretrain`` writes them): its ``sha256`` is the one record of the file's hash
    (the model card quotes it)."""
    return Path(path).with_suffix(".json")


def recorded_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 that the checkpoint's record (:func:`checkpoint_record`) holds, or None when there is
    no record, or one without a hash (a checkpoint the user made some other way)."""
    record = checkpoint_record(path)
    try:
        value = json.loads(record.read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
