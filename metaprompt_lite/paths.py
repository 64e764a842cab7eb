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


DATA_ENV = "METAPROMPT_LITE_DATA"


class DataDirError(NotADirectoryError):
    """``$METAPROMPT_LITE_DATA`` names no data directory: the message names the variable (a missing
    file under it would otherwise read as a damaged clone, with a `git checkout` hint that cannot help)."""


def data_dir(must_exist: bool = True) -> Path:
    """``$METAPROMPT_LITE_DATA``, else ``data/`` beside the package (a clone or editable install),
    else ``./data``. A variable naming no folder, a file, or a folder with neither ``suite/`` nor
    ``pocket-clip/`` is a :class:`DataDirError` (unless ``must_exist`` is false: a build writes there)."""
    value = os.environ.get(DATA_ENV)
    if value:
        path = Path(value)
        problem = ("does not exist" if not path.exists() else "is a file, not a folder" if not path.is_dir()
                   else "holds neither suite/ nor pocket-clip/"
                   if not ((path / "suite").is_dir() or (path / "pocket-clip").is_dir()) else None)
        if problem and must_exist:
            raise DataDirError(f"{DATA_ENV}={value} {problem} — point {DATA_ENV} at a data folder like the "
                               "repository's data/ (with suite/ and pocket-clip/), or unset it")
        return path
    beside = Path(__file__).resolve().parents[1] / "data"
    return beside if beside.is_dir() else Path.cwd() / "data"


def results_dir(protocol: str | None = None) -> Path:
    """The committed benchmark's ``results/`` (beside the data directory in a clone, else
    ``./results``), or with ``protocol`` its folder of that protocol's rows, ``results/<protocol>/``."""
    beside = data_dir(must_exist=False).parent / "results"
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
