"""Load a frozen open_clip ``CLIP`` and run its encoders layer by layer.

Explained in ``notebooks/01_zero_shot_clip`` and ``notebooks/03_vision_and_dual_prompts``.

Prompt learners need to touch the token sequence *inside* the transformers: CoOp replaces the
embeddings of placeholder tokens before the first layer, deep prompts (IVLP, MaPLe, MetaPrompt)
replace them again before every deeper layer, and visual prompts are extra tokens appended to the
patch sequence. open_clip exposes every piece as a plain attribute (``token_embedding``,
``positional_embedding``, ``transformer.resblocks``, ``ln_final``, ``text_projection``,
``attn_mask``; ``visual.conv1``, ``visual.class_embedding``, ``visual.ln_pre``, ``visual.ln_post``,
``visual.proj``), so this module re-assembles the forward passes from those attributes instead of
forking CLIP. With no prompts, :func:`encode_text_layers` and :func:`encode_image_layers` equal
``model.encode_text`` and ``model.encode_image`` exactly (tested).

The same code runs on a real ViT-B/16 (``load_clip("ViT-B-16", "openai")``, research tier) and on
the project's own small models registered from ``metaprompt_lite/model_configs``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import open_clip
import torch
from torch import nn
from torch.nn import functional as F

from metaprompt_lite.paths import TINY_MODEL, checkpoint_record, is_default_checkpoint, recorded_sha256
from metaprompt_lite.provenance import file_sha256

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
OFFLINE_DEFAULT_HINT = (
    "on an offline machine use the embedded tier: the pocket CLIP committed in data/ "
    "(see README, 'Embedded tier'), or `--model tiny-clip --pretrained none` for tests"
)

_registered = False

# open_clip's JSON configs cannot express a convolutional stem, so the models listed here get
# their patchify ``visual.conv1`` replaced by a :class:`ConvStem` with these hidden channels.
CONV_STEMS: dict[str, tuple[int, ...]] = {"pocket-clip": (32, 64, 128)}


def register_model_configs() -> None:
    """Add this package's model configs (``tiny-clip``, ``pocket-clip``) to open_clip's list.

    open_clip reads JSON model configs from a list of folders; adding ours there is the open_clip
    way to define a new architecture, and afterwards ``open_clip.create_model('tiny-clip')`` works
    like any built-in name.
    """
    global _registered
    if not _registered:
        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _registered = True


@dataclass
class Backbone:
    """A frozen CLIP with what the rest of the package needs to feed it."""

    model: open_clip.CLIP
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    name: str
    pretrained: str | None
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # exact outputs of the frozen model worth keeping (e.g. frozen text features of a class list):
    # the weights never change, so a result computed once serves every later run on this backbone
    memo: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    @property
    def text_width(self) -> int:
        return self.model.token_embedding.weight.shape[1]

    @property
    def vision_width(self) -> int:
        return self.model.visual.class_embedding.shape[0]

    @property
    def embed_dim(self) -> int:
        return self.model.text_projection.shape[1]

    @property
    def text_layers(self) -> int:
        return len(self.model.transformer.resblocks)

    @property
    def vision_layers(self) -> int:
        return len(self.model.visual.transformer.resblocks)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, 3, H, W]`` (or float in [0, 1]) -> normalised float at the model's size."""
        x = images.to(self.device)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = nn.functional.interpolate(
                x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False
            ).clamp_(0, 1)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


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


def freeze(model: nn.Module) -> nn.Module:
    """No gradients and eval mode for every backbone weight: only prompts learn."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


# Running a last block only at the pooled positions (the EOT state of each prompt, the CLS state of each
# image) gives the same bits as running it everywhere wherever a row of a matrix product does not depend
# on the other rows of the call (MKL on the machines measured: an AMD EPYC with AVX-512, and its AVX2
# code; an Intel Xeon with AMX did not, so there the two differ by float rounding: tests/test_throughput.py
# probes it), since the gradients of the rows left out are exact zeros. Except below 4 rows: there the
# CPU's BLAS (MKL) takes its matrix-vector path, whose sums round differently, so passes over fewer
# rows (CoCoOp's one image, a meta-learning episode's few classes) keep the full block and stay bit
# for bit what they were. Tested on both sides of the bound.
# Second derivatives are another matter: through a pooled block they round differently in the last
# bits (the left-out rows' zero gradients still enter second-order sums of other shapes), so a
# second-order region (``metaprompt_lite.meta.double_backward_attention``) runs every block in full.
MIN_POOLED_ROWS = 4
_FULL_LAST_BLOCK = contextvars.ContextVar("full_last_block", default=False)


@contextlib.contextmanager
def full_last_block() -> Iterator[None]:
    """Inside: every encoder pass runs its last block in full (no ``pool_last``), for passes that will
    be differentiated twice."""
    token = _FULL_LAST_BLOCK.set(True)
    try:
        yield
    finally:
        _FULL_LAST_BLOCK.reset(token)


def pool_last_block(requested: bool, rows: int) -> bool:
    """Whether a pass over ``rows`` pooled rows may run its last block at those rows only: asked
    for, at least :data:`MIN_POOLED_ROWS` rows, and outside :func:`full_last_block`."""
    return requested and rows >= MIN_POOLED_ROWS and not _FULL_LAST_BLOCK.get()


def plain_attention(block: nn.Module) -> bool:
    """Whether ``block`` is open_clip's residual block around a plain fused-projection multi-head
    attention (what :func:`cls_block` and ``fastpath``'s prefix attention re-assemble)."""
    attn = getattr(block, "attn", None)
    return (isinstance(attn, nn.MultiheadAttention) and attn._qkv_same_embed_dim and attn.batch_first
            and attn.in_proj_bias is not None and attn.bias_k is None and not attn.add_zero_attn
            and not hasattr(block, "ln_1_kv")
            and all(hasattr(block, name) for name in ("ln_1", "ls_1", "ln_2", "mlp", "ls_2")))


def cls_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block(x)[:, 0]`` ([B, D]) with the output projection and the MLP run on position 0 only
    (the attention itself runs for every position, as in the block):

        a = W_o softmax(q kᵀ / √d_h) v |₀ + b_o;   h = x₀ + a;   out = h + MLP(LN₂(h))
    """
    attn, (batch, tokens, width) = block.attn, x.shape
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)

    def split_heads(t: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, H, T, D/H]
        return t.view(batch, tokens, attn.num_heads, -1).transpose(1, 2)

    out = F.scaled_dot_product_attention(split_heads(q), split_heads(k), split_heads(v))
    h = x[:, 0] + block.ls_1(attn.out_proj(out.transpose(1, 2).reshape(batch, tokens, width)[:, 0]))
    return h + block.ls_2(block.mlp(block.ln_2(h)))


def _run_blocks(
    transformer: nn.Module,
    x: torch.Tensor,
    attn_mask: torch.Tensor | None,
    replace: Callable[[int, torch.Tensor], torch.Tensor],
    stop: int | None = None,
) -> torch.Tensor:
    """Run ``transformer.resblocks[:stop]`` on ``x`` ([batch, tokens, width]), calling
    ``replace(i, x)`` before block ``i >= 1``. Handles open_clip's ``batch_first`` switch."""
    batch_first = getattr(transformer, "batch_first", True)
    for i, block in enumerate(transformer.resblocks[:stop]):
        if i >= 1:
            x = replace(i, x)
        if batch_first:
            x = block(x, attn_mask=attn_mask)
        else:  # sequence-first blocks: [tokens, batch, width]
            x = block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)
    return x


def _put(x: torch.Tensor, prompt: torch.Tensor, start: int) -> torch.Tensor:
    """Return ``x`` with tokens ``start : start + n`` replaced by ``prompt`` ([n, D] or [B, n, D]).

    Built by concatenation, not in-place assignment, so gradients flow to ``prompt`` and the
    operation is safe inside ``higher``'s functional inner loop.
    """
    n = prompt.shape[-2]
    prompt = prompt.to(x.dtype).expand(x.shape[0], n, x.shape[-1])
    return torch.cat([x[:, :start], prompt, x[:, start + n :]], dim=1)


def encode_text_layers(
    model: open_clip.CLIP,
    tokens: torch.Tensor,
    embeddings: torch.Tensor | None = None,
    prompts: Sequence[torch.Tensor] = (),
    prompt_start: int = 1,
) -> torch.Tensor:
    """Text features with prompts replaced at the first ``len(prompts)`` layers.

    ``tokens`` [B, L] are the token ids (their argmax, CLIP's EOT, picks the pooled position);
    ``embeddings`` [B, L, D] defaults to ``model.token_embedding(tokens)``. ``prompts[0]`` replaces
    positions ``prompt_start : prompt_start + n_ctx`` of the token embeddings (CoOp's context, before
    the positional embedding is added); ``prompts[i]`` for i >= 1 replaces the same positions of the
    hidden states entering layer i (deep prompts). Each prompt is [n_ctx, D] or [B, n_ctx, D].

        x_0 = E(tokens)[ctx ← p_0] + P;   x_{i+1} = block_i(x_i[ctx ← p_i]);
        f_T = LN(x_L)[EOT] · W_text
    """
    cast_dtype = model.transformer.get_cast_dtype()
    pool_type = getattr(model, "text_pool_type", "argmax")
    if pool_type == "argmax":
        eot = tokens.argmax(dim=-1)
    elif pool_type == "eos":
        eot = (tokens == model.text_eos_id).int().argmax(dim=-1)
    else:
        raise NotImplementedError(f"text_pool_type={pool_type!r}: prompt learners need EOT pooling")
    # Causal attention: position t only sees positions <= t, so everything after the last EOT is
    # padding that cannot change the pooled features. Truncating there is exact and saves most of
    # the text tower's cost (class prompts are ~10 of CLIP's 77 / the pocket CLIP's 32 positions).
    causal = model.attn_mask is not None
    length = int(eot.max()) + 1 if causal else tokens.shape[1]
    tokens = tokens[:, :length]
    x = model.token_embedding(tokens) if embeddings is None else embeddings[:, :length]
    x = x.to(cast_dtype)
    if len(prompts) > 0:
        x = _put(x, prompts[0], prompt_start)
    x = x + model.positional_embedding[:length].to(cast_dtype)

    def replace(i: int, h: torch.Tensor) -> torch.Tensor:
        return _put(h, prompts[i], prompt_start) if i < len(prompts) else h

    mask = model.attn_mask[:length, :length] if causal else None
    x = _run_blocks(model.transformer, x, mask, replace)
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), eot]
    projection = model.text_projection
    return projection(x) if isinstance(projection, nn.Linear) else x @ projection


def encode_image_layers(
    model: open_clip.CLIP,
    images: torch.Tensor | None,
    prompts: Sequence[torch.Tensor] = (),
    stem: torch.Tensor | None = None,
    pool_last: bool = False,
) -> torch.Tensor:
    """Image features with ``n_pro`` prompt tokens appended to the patch sequence (VPT-deep).

    ``stem``: ``visual.conv1(images)`` computed beforehand (it is frozen and no prompt enters before
    it, so one stem output serves every prompted and frozen pass over the same images); then
    ``images`` is not needed.
    ``prompts[0]`` [n_pro, D] or [B, n_pro, D] is appended after the positional embedding (so
    prompts carry no position, as in VPT/MaPLe) and before ``ln_pre``; ``prompts[i]`` replaces the
    last ``n_pro`` tokens entering layer i. The prompt tokens are dropped before pooling, so with
    ``prompts=()`` this equals ``model.encode_image``. ``pool_last``: the last block at the CLS
    position only (:func:`cls_block`; the same bits for at least :data:`MIN_POOLED_ROWS` images).

        x_0 = LN_pre([cls; conv1(img) patches] + P ; p_0);   x_{i+1} = block_i(x_i[prompt ← p_i])
        f_I = LN_post(x_L[cls]) · W_proj
    """
    visual = model.visual
    if getattr(visual, "attn_pool", None) is not None:
        raise NotImplementedError("vision towers with attentional pooling are not supported")
    cast_dtype = model.transformer.get_cast_dtype()
    x = visual.conv1(images.to(cast_dtype)) if stem is None else stem.to(cast_dtype)  # [B, width, grid, grid]
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [B, grid*grid, width]
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.patch_dropout(x)
    n_tokens = x.shape[1]
    n_pro = prompts[0].shape[-2] if len(prompts) > 0 else 0
    if n_pro:
        x = torch.cat([x, prompts[0].to(x.dtype).expand(x.shape[0], n_pro, x.shape[-1])], dim=1)
    x = visual.ln_pre(x)

    def replace(i: int, h: torch.Tensor) -> torch.Tensor:
        return _put(h, prompts[i], h.shape[1] - n_pro) if i < len(prompts) else h

    blocks = visual.transformer.resblocks
    if (pool_last_block(pool_last, x.shape[0]) and getattr(visual, "pool_type", "tok") == "tok"
            and getattr(visual.transformer, "batch_first", True) and plain_attention(blocks[-1])):
        last = len(blocks) - 1
        x = _run_blocks(visual.transformer, x, None, replace, stop=last)
        x = cls_block(blocks[-1], replace(last, x) if last >= 1 else x)[:, None]  # the CLS token alone
    else:
        x = _run_blocks(visual.transformer, x, None, replace)
    x = x[:, :n_tokens]  # drop prompt tokens: pooling sees what the unprompted model sees
    if getattr(visual, "final_ln_after_pool", False):
        pooled = visual.ln_post(_global_pool(visual, x))
    else:
        pooled = _global_pool(visual, visual.ln_post(x))
    return pooled @ visual.proj if visual.proj is not None else pooled


def _global_pool(visual: nn.Module, x: torch.Tensor) -> torch.Tensor:
    pool_type = getattr(visual, "pool_type", "tok")
    if pool_type == "tok":
        return x[:, 0]
    if pool_type == "avg":
        return x[:, 1:].mean(dim=1)
    raise NotImplementedError(f"vision pool_type={pool_type!r} is not supported")


def image_features(backbone: Backbone, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """[N, E] normalised frozen image features f_I of ``images`` (uint8 or float), in chunks."""
    out = [F.normalize(backbone.model.encode_image(backbone.preprocess(images[i:i + batch_size])), dim=-1).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0, backbone.embed_dim)
