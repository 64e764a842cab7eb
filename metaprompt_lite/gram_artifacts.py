"""GRAM's meta-learned artifacts on disk: where a backbone's (θ₀, r) is kept, writing it, and starting
a model from it (:mod:`metaprompt_lite.core.gram` meta-learns them; ``metaprompt_lite.gram_build``
runs that job)."""

from __future__ import annotations

from pathlib import Path

from metaprompt_lite.checkpoints import load_checkpoint, save_checkpoint
from metaprompt_lite.core.gram import GradientRegulator
from metaprompt_lite.core.prompts import PromptedCLIP
from metaprompt_lite.paths import data_dir


def save_artifact(path: Path, init: dict, regulator: dict, meta: dict) -> None:
    save_checkpoint(path, {"init": init, "regulator": regulator, "meta": meta})


def artifact_path(backbone_name: str, method_name: str) -> Path:
    """Where the meta-learned (θ₀, r) of a GRAM method for a backbone is kept."""
    return data_dir() / "gram" / f"{backbone_name}-{method_name}.pt"


def load_gram(model: PromptedCLIP, path: str | Path) -> GradientRegulator:
    """Start ``model``'s prompts from the meta-learned θ₀ and return the regulator r."""
    path = Path(path)
    fix = ("`git checkout data/gram` restores the committed ones, `metaprompt-lite gram` meta-trains them "
           "again (it needs the corpus: `metaprompt-lite data build --corpus`)")
    if not path.is_file():
        raise FileNotFoundError(f"no GRAM meta-learned prompts at {path} — {fix}")
    artifact = load_checkpoint(path, fix=fix)
    artifact.require(("init", "regulator"), "a GRAM artifact")
    model.prompts.load_state_dict(artifact["init"])
    regulator = GradientRegulator(model.prompts)
    regulator.load_state_dict(artifact["regulator"])
    return regulator.to(model.backbone.device)
