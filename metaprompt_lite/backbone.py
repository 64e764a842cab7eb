"""Load a frozen open_clip ``CLIP``: the project's model configs, the pocket CLIP's conv stem, and
checkpoints verified before their weights are used, every failure a one-line error with its fix.

The same loader serves a real ViT-B/16 (``load_clip("ViT-B-16", "openai")``, research tier) and the
project's own small models registered from ``metaprompt_lite/model_configs``. What runs the loaded
model, layer by layer, is :mod:`metaprompt_lite.core.clip`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Sequence

import open_clip
import torch
from torch import nn
from torch.nn import functional as F

from metaprompt_lite.core.clip import Backbone, freeze
from metaprompt_lite.paths import TINY_MODEL, checkpoint_record, is_default_checkpoint, recorded_sha256
from metaprompt_lite.provenance import file_sha256

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
OFFLINE_DEFAULT_HINT = (
    "on an offline machine use the embedded tier: the pocket CLIP committed in data/ "
    "(see README, 'Embedded tier'), or `--model tiny-clip --pretrained none` for tests"
)

# open_clip's JSON configs cannot express a convolutional stem, so the models listed here get
# their patchify ``visual.conv1`` replaced by a :class:`ConvStem` with these hidden channels.
CONV_STEMS: dict[str, tuple[int, ...]] = {"pocket-clip": (32, 64, 128)}


@functools.cache
def register_model_configs() -> None:
    """Add this package's model configs (``tiny-clip``, ``pocket-clip``) to open_clip's list, once.

    open_clip reads JSON model configs from a list of folders; adding ours there is the open_clip
    way to define a new architecture, and afterwards ``open_clip.create_model('tiny-clip')`` works
    like any built-in name.
    """
    open_clip.add_model_config(MODEL_CONFIG_DIR)


@contextlib.contextmanager
def _quiet_root_logger(enabled: bool):
    """Silence open_clip's root-logger warning that no pretrained weights were loaded when that is
    intended (random init, or a local checkpoint loaded right after)."""
    root = logging.getLogger()
    level = root.level
    if enabled:
        root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _checkpoint_fix(model_name: str, tags: Sequence[str], path: str | os.PathLike | None = None) -> str:
    """What to do about a missing or unreadable checkpoint, in the command line's own spelling. `git
    checkout` is the fix for the committed pocket CLIP only: a file the user passed is theirs to fix."""
    if path is not None and is_default_checkpoint(path):
        return ("restore it with `git checkout data/pocket-clip`, rebuild it with `metaprompt-lite pretrain`, "
                "or pass `--pretrained none` for random weights")
    if model_name == "pocket-clip":
        return ("check the path, pass a checkpoint `metaprompt-lite pretrain` wrote, leave out --pretrained for "
                "the committed pocket CLIP, or pass `--pretrained none` for random weights")
    return (f"pass an existing checkpoint file, an open_clip tag ({', '.join(tags) or 'none for this model'}) "
            "or `--pretrained none` for random weights")


def verify_checkpoint(path: str, model_name: str, tags: Sequence[str]) -> None:
    """Check a checkpoint file against the sha256 its record holds (:func:`~metaprompt_lite.paths.
    recorded_sha256`): a changed, cut or swapped file is refused before its weights are used. The
    committed pocket CLIP must have its record; another file is checked when it has one."""
    expected = recorded_sha256(path)
    record = checkpoint_record(path)
    if expected is None:
        if is_default_checkpoint(path):
            raise ValueError(f"the pocket CLIP checkpoint {path} cannot be verified: its record {record} (with "
                             "the sha256) is missing — " + _checkpoint_fix(model_name, tags, path))
        return
    actual = file_sha256(path)
    if actual != expected:
        fix = (_checkpoint_fix(model_name, tags, path) if is_default_checkpoint(path) else
               f"pass the file that {record.name} describes (or delete that record if you changed the file on "
               "purpose), or `--pretrained none` for random weights")
        raise ValueError(f"checksum mismatch for {path}: sha256 {actual[:12]}… but {record} records "
                         f"{expected[:12]}… (the file was changed or cut short) — {fix}")


def _another_architecture(path: str, model: nn.Module, model_name: str, tags: Sequence[str]) -> str:
    """Why open_clip could not load ``path`` into ``model``, read from the file's tensors: not a
    checkpoint at all, or the weights of another architecture (named by a tensor that differs)."""
    fix = _checkpoint_fix(model_name, tags, path)
    try:
        state = open_clip.factory.load_state_dict(path)
    except Exception:  # noqa: BLE001 -- whatever a damaged or foreign file raises, the answer is the same
        return f"checkpoint {path} is cut short or not a checkpoint — " + fix
    tensors = {k: v for k, v in state.items() if torch.is_tensor(v)} if isinstance(state, dict) else {}
    expected = model.state_dict()
    common = sorted(set(tensors) & set(expected))
    if not common:
        return (f"checkpoint {path} holds no weights of an open_clip {model_name} (none of its tensor names) — "
                + fix)
    shapes = [k for k in common if tuple(tensors[k].shape) != tuple(expected[k].shape)]
    if shapes:
        name = shapes[0]
        detail = (f"{name} is {list(tensors[name].shape)} there, {list(expected[name].shape)} in {model_name}")
    else:
        missing = sorted(set(expected) - set(tensors)) or sorted(set(tensors) - set(expected))
        detail = f"{len(missing)} tensors differ in name, e.g. {missing[0]}" if missing else "another layout"
    return (f"checkpoint {path} holds weights for another architecture than {model_name} ({detail}) — pass "
            "the --model it was trained as")


class ShapeMismatch(ValueError):
    """A checkpoint tensor's shape is not the architecture's (:func:`check_shapes`)."""


def check_shapes(state, model: nn.Module, model_name: str, path: str) -> None:
    """Refuse a checkpoint any of whose tensors has another shape than the architecture's, before
    open_clip sees it: open_clip resizes positional embeddings to fit (a text ``positional_embedding``
    of 33 rows ran as 32, with other accuracies). Only a one-element tensor may differ in its number of
    dimensions (``logit_scale`` saved as a scalar or as ``[1]``, which open_clip reshapes losslessly)."""
    if not isinstance(state, dict):
        return  # not a state dict: open_clip's load fails, and :func:`_another_architecture` says why
    expected = model.state_dict()
    for name, tensor in state.items():
        if name in expected and torch.is_tensor(tensor) and tuple(tensor.shape) != tuple(expected[name].shape):
            if tensor.numel() == expected[name].numel() == 1:
                continue
            raise ShapeMismatch(f"checkpoint {path} holds weights for another architecture than {model_name} ({name} is "
                             f"{list(tensor.shape)} there, {list(expected[name].shape)} in {model_name}) — pass the "
                             "--model it was trained as")


def check_finite_weights(model: nn.Module, source: str) -> None:
    """Refuse weights with NaN or Inf (a damaged or diverged checkpoint): every output would be NaN,
    and every accuracy a meaningless constant."""
    bad = [name for name, tensor in model.state_dict().items()
           if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise ValueError(f"checkpoint {source} holds NaN or Inf in {len(bad)} tensors (e.g. {bad[0]}), a damaged "
                         "or diverged checkpoint — pass another checkpoint, or `--pretrained none` for random weights")


def _load_weights(model: nn.Module, model_name: str, path: str, tags: Sequence[str]) -> None:
    """open_clip's strict checkpoint load (safetensors, or ``torch.load`` with ``weights_only=True``),
    its failures as one-line errors naming the file and what it holds instead."""
    try:
        check_shapes(open_clip.factory.load_state_dict(path), model, model_name, path)
        open_clip.load_checkpoint(model, path, strict=True)
    except ShapeMismatch:
        raise
    except pickle.UnpicklingError as error:
        code = re.search(r"GLOBAL ([\w.]+)", str(error))  # what torch's weights-only unpickler refused to run
        if code:
            raise ValueError(f"checkpoint {path} holds pickled code ({code.group(1)}), refused without running it — "
                             + _checkpoint_fix(model_name, tags, path)) from error
        raise ValueError(f"checkpoint {path} is cut short or not a checkpoint — "
                         + _checkpoint_fix(model_name, tags, path)) from error
    except Exception as error:  # noqa: BLE001 -- open_clip raises anything from KeyError to AssertionError here
        raise ValueError(_another_architecture(path, model, model_name, tags)) from error
    check_finite_weights(model, path)


def _looks_like_path(pretrained: str) -> bool:
    return os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))


def load_clip(
    model_name: str,
    pretrained: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> Backbone:
    """Create an open_clip ``CLIP`` by name, load weights (tag or local file), freeze it.

    ``pretrained`` is ``None`` (random init), an open_clip tag such as ``"openai"`` (downloads: needs
    internet) or a path to a checkpoint file. Errors name the problem and the fix.
    """
    register_model_configs()
    available = open_clip.list_models()
    if model_name not in available:
        close = [m for m in available if model_name.lower().replace("/", "-") in m.lower()][:10]
        raise ValueError(
            f"unknown model name {model_name!r} — "
            + (f"did you mean one of {close}? " if close else "")
            + f"Available: {TINY_MODEL!r}, 'pocket-clip' and open_clip's built-ins "
            "(open_clip.list_models(), e.g. 'ViT-B-16')"
        )
    if pretrained is not None:
        pretrained = str(pretrained)
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in tags:
            if os.path.isdir(pretrained):
                raise IsADirectoryError(f"--pretrained {pretrained} is a folder, not a checkpoint file — name the "
                                        "checkpoint file in it (e.g. a .safetensors file that `metaprompt-lite "
                                        "pretrain` wrote), or pass `--pretrained none` for random weights")
            if _looks_like_path(pretrained) or not tags:
                if not os.path.isfile(pretrained):
                    raise FileNotFoundError(
                        f"checkpoint file {pretrained} for model {model_name} does not exist — "
                        + _checkpoint_fix(model_name, tags, pretrained)
                    )
            else:
                raise ValueError(
                    f"{pretrained!r} is neither a checkpoint file nor a pretrained tag of "
                    f"{model_name!r} — use one of its tags {tags}, a checkpoint file, or `--pretrained none`"
                )
    is_file = pretrained is not None and os.path.isfile(pretrained)
    if is_file:  # before building the model: a changed file fails at once
        verify_checkpoint(pretrained, model_name, open_clip.list_pretrained_tags_by_model(model_name))
    try:
        with _quiet_root_logger(is_file or pretrained is None):  # open_clip warns "no pretrained weights"
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=None if is_file else pretrained, device=device
            )
    except RuntimeError as error:
        if pretrained is not None and not is_file:
            raise RuntimeError(
                f"could not download the {model_name} weights {pretrained!r} (no internet?) — "
                + OFFLINE_DEFAULT_HINT
            ) from error
        raise
    if model_name in CONV_STEMS:
        attach_conv_stem(model, CONV_STEMS[model_name])
        model.to(device)
    if is_file:
        _load_weights(model, model_name, pretrained, open_clip.list_pretrained_tags_by_model(model_name))
    elif pretrained is not None:  # downloaded by tag
        check_finite_weights(model, f"{model_name} {pretrained!r}")
    if not isinstance(model, open_clip.CLIP):
        raise TypeError(
            f"{model_name!r} builds a {type(model).__name__}; the prompt learners need open_clip's "
            "CLIP class with its native text transformer (token_embedding, attn_mask, ...)."
        )
    freeze(model)
    norm = next(t for t in preprocess.transforms if hasattr(t, "mean"))
    return Backbone(
        model=model,
        tokenizer=open_clip.get_tokenizer(model_name),
        name=model_name,
        pretrained=pretrained,
        image_size=model.visual.image_size[0],
        mean=tuple(float(m) for m in norm.mean),
        std=tuple(float(s) for s in norm.std),
    )


class ConvStem(nn.Sequential):
    """Early convolutions in place of the patchify ``conv1`` (Xiao et al., "Early convolutions
    help transformers see better"): stride-2 3×3 conv + BatchNorm + ReLU blocks, then a 1×1 conv
    to the transformer width. Its total stride equals the patch size, so it returns the same
    ``[B, width, grid, grid]`` as the ``conv1`` it replaces and the ViT around it is unchanged."""

    def __init__(self, hidden: Sequence[int], width: int, patch_size: int) -> None:
        n_down = patch_size.bit_length() - 1
        if 2**n_down != patch_size or n_down != len(hidden) + 1:
            raise ValueError(
                f"a conv stem with {len(hidden)} hidden layers has stride {2 ** (len(hidden) + 1)}, "
                f"but the patch size is {patch_size}"
            )
        layers: list[nn.Module] = []
        channels = [3, *hidden, width]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, width, 1))
        super().__init__(*layers)


def attach_conv_stem(model: open_clip.CLIP, hidden: Sequence[int]) -> None:
    """Replace ``model.visual.conv1`` by a :class:`ConvStem` of matching stride and width."""
    visual = model.visual
    width = visual.class_embedding.shape[0]
    visual.conv1 = ConvStem(hidden, width, visual.patch_size[0])


def image_features(backbone: Backbone, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """[N, E] normalised frozen image features f_I of ``images`` (uint8 or float), in chunks."""
    out = [F.normalize(backbone.model.encode_image(backbone.preprocess(images[i:i + batch_size])), dim=-1).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0, backbone.embed_dim)
