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


def default_model() -> tuple[str, str | None]:
    """The embedded tier's backbone: the committed pocket CLIP when present, else the tiny random
    model (printed as such by the commands that use it)."""
    checkpoint = data_dir() / POCKET_CHECKPOINT
    if checkpoint.is_file():
        return POCKET_MODEL, str(checkpoint)
    return TINY_MODEL, None
