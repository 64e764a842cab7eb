"""Where the committed artifacts live, and which backbone is the default.

The evaluation store and the pocket-CLIP checkpoint are committed under ``data/`` at the repository
root. ``METAPROMPT_LITE_DATA`` overrides the location (e.g. for a non-editable install).
"""

from __future__ import annotations

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
