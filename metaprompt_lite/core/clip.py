"""A frozen open_clip ``CLIP``, run layer by layer so prompts can enter between the layers.

Explained in ``notebooks/01_zero_shot_clip`` and ``notebooks/03_vision_and_dual_prompts``.

CoOp replaces the context tokens' embeddings before the first text layer, deep prompts replace them
again before every deeper layer, visual prompts are extra tokens after the patches. open_clip
exposes every piece as an attribute (``token_embedding``, ``transformer.resblocks``, ``ln_final``,
``visual.conv1``, ...), so the passes are re-assembled here from them; with no prompts they equal
``model.encode_text`` and ``model.encode_image`` exactly (tested). :class:`Encoder` is the plain pair
the core uses; a faster one with the same methods (``metaprompt_lite.fastpath``) is handed to the
model by the benchmark's recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import open_clip
import torch
from torch import nn
from torch.nn import functional as F


def memo(store: dict | None, key: Any, make: Callable[[], Any]) -> Any:
    """``store[key]``, computed by ``make()`` on the first call; with no store, computed every time.
    The one cache mechanism: every cache (an encoder's, a run's, a batch's) is a dict read through it."""
    if store is None:
        return make()
    if key not in store:
        store[key] = make()
    return store[key]


@dataclass
class Backbone:
    """A frozen CLIP with what the rest needs to feed it (``metaprompt_lite.backbone.load_clip``)."""

    model: open_clip.CLIP
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    name: str
    pretrained: str | None
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

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


def freeze(model: nn.Module) -> nn.Module:
    """No gradients and eval mode for every backbone weight: only prompts learn."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


# --------------------------------------------------------------------------- pieces of a pass
def put(x: torch.Tensor, prompt: torch.Tensor, start: int) -> torch.Tensor:
    """``x`` with tokens ``start : start + n`` replaced by ``prompt`` ([n, D] or [B, n, D]). Built by
    concatenation, not in-place assignment, so gradients flow to ``prompt`` (also inside ``higher``)."""
    n = prompt.shape[-2]
    prompt = prompt.to(x.dtype).expand(x.shape[0], n, x.shape[-1])
    return torch.cat([x[:, :start], prompt, x[:, start + n :]], dim=1)


def deep_prompts(prompts: Sequence[torch.Tensor], start: int | None = None) -> Callable:
    """``replace(i, h)``: ``h`` with ``prompts[i]`` put at ``start`` (None: the last positions, where
    visual prompts sit) for every layer ``i`` that has a prompt; ``h`` unchanged beyond them."""
    def replace(i: int, h: torch.Tensor) -> torch.Tensor:
        if i >= len(prompts):
            return h
        return put(h, prompts[i], h.shape[1] - prompts[i].shape[-2] if start is None else start)
    return replace


def run_blocks(transformer: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None,
               replace: Callable[[int, torch.Tensor], torch.Tensor], stop: int | None = None) -> torch.Tensor:
    """``transformer.resblocks[:stop]`` on ``x`` [B, T, D], ``replace(i, x)`` before block i ≥ 1
    (deep prompts). Handles open_clip's sequence-first blocks."""
    batch_first = getattr(transformer, "batch_first", True)
    for i, block in enumerate(transformer.resblocks[:stop]):
        if i >= 1:
            x = replace(i, x)
        if batch_first:
            x = block(x, attn_mask=attn_mask)
        else:
            x = block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)
    return x


def project_text(model: open_clip.CLIP, x: torch.Tensor) -> torch.Tensor:
    projection = model.text_projection
    return projection(x) if isinstance(projection, nn.Linear) else x @ projection


# --------------------------------------------------------------------------- the two towers
def encode_text_layers(model: open_clip.CLIP, tokens: torch.Tensor, embeddings: torch.Tensor | None = None,
                       prompts: Sequence[torch.Tensor] = (), prompt_start: int = 1) -> torch.Tensor:
    """Text features [B, E] with ``prompts[i]`` ([n_ctx, D] or [B, n_ctx, D]) at positions
    ``prompt_start : prompt_start + n_ctx`` of layer i (i = 0: the token embeddings, CoOp's context):

        x_0 = E(tokens)[ctx ← p_0] + P;   x_{i+1} = block_i(x_i[ctx ← p_i]);   f_T = LN(x_L)[EOT] · W_text

    Under causal attention nothing after the last EOT reaches a pooled position, so the sequence is
    cut there (exact; class prompts fill about 10 of CLIP's 77 positions)."""
    cast_dtype = model.transformer.get_cast_dtype()
    pool_type = getattr(model, "text_pool_type", "argmax")  # the pooled position: each prompt's EOT token
    if pool_type not in ("argmax", "eos"):
        raise NotImplementedError(f"text_pool_type={pool_type!r}: prompt learners need EOT pooling")
    eot = tokens.argmax(dim=-1) if pool_type == "argmax" else (tokens == model.text_eos_id).int().argmax(dim=-1)
    causal = model.attn_mask is not None
    length = int(eot.max()) + 1 if causal else tokens.shape[1]
    tokens = tokens[:, :length]
    x = model.token_embedding(tokens) if embeddings is None else embeddings[:, :length]
    x = x.to(cast_dtype)
    if len(prompts) > 0:
        x = put(x, prompts[0], prompt_start)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    mask = model.attn_mask[:length, :length] if causal else None
    x = run_blocks(model.transformer, x, mask, deep_prompts(prompts, prompt_start))
    x = model.ln_final(x)
    return project_text(model, x[torch.arange(x.shape[0], device=x.device), eot])


def image_tokens(model: open_clip.CLIP, images: torch.Tensor | None, prompts: Sequence[torch.Tensor] = (),
                 stem: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """The vision tower's input sequence, after ``ln_pre``: [cls; patches] + P, then the ``n_pro``
    prompt tokens of layer 0 (no position, as in VPT and MaPLe). Returns it and the count of
    non-prompt tokens. ``stem``: ``visual.conv1(images)`` computed beforehand (frozen, before any prompt)."""
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
    if len(prompts) > 0:
        n_pro = prompts[0].shape[-2]
        x = torch.cat([x, prompts[0].to(x.dtype).expand(x.shape[0], n_pro, x.shape[-1])], dim=1)
    return visual.ln_pre(x), n_tokens


def pool_image(visual: nn.Module, x: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """f_I = LN_post(x[cls]) · W_proj, the prompt tokens dropped first (pooling sees what the
    unprompted model sees)."""
    x = x[:, :n_tokens]
    pool_type = getattr(visual, "pool_type", "tok")
    if pool_type not in ("tok", "avg"):
        raise NotImplementedError(f"vision pool_type={pool_type!r} is not supported")

    def pool(h: torch.Tensor) -> torch.Tensor:
        return h[:, 0] if pool_type == "tok" else h[:, 1:].mean(dim=1)

    pooled = visual.ln_post(pool(x)) if getattr(visual, "final_ln_after_pool", False) else pool(visual.ln_post(x))
    return pooled @ visual.proj if visual.proj is not None else pooled


def encode_image_layers(model: open_clip.CLIP, images: torch.Tensor | None, prompts: Sequence[torch.Tensor] = (),
                        stem: torch.Tensor | None = None) -> torch.Tensor:
    """Image features [B, E] with visual prompts (VPT-deep): ``prompts[0]`` [n_pro, D] appended to
    the patch sequence, ``prompts[i]`` replacing the last ``n_pro`` tokens entering layer i.

        x_0 = LN_pre([cls; conv1(img)] + P ; p_0);   x_{i+1} = block_i(x_i[prompt ← p_i]);
        f_I = LN_post(x_L[cls]) · W_proj"""
    x, n_tokens = image_tokens(model, images, prompts, stem)
    x = run_blocks(model.visual.transformer, x, None, deep_prompts(prompts))
    return pool_image(model.visual, x, n_tokens)


class Encoder:
    """The plain encoders of a prompted CLIP: every layer at every position, nothing kept.

    A faster encoder (``metaprompt_lite.fastpath.FastEncoder``) has the same three methods and
    computes the same features (exactly, or to float rounding where it says so)."""

    store: dict | None = None  # what :func:`memo` keeps between calls: nothing

    def text(self, model: open_clip.CLIP, tokens: torch.Tensor, embeddings: torch.Tensor,
             prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Raw prompted text features: [C, E], or [B, C, E] for per-image prompts (CoCoOp: all B·C
        prompts in one batch, image-major)."""
        if len(prompts) == 0 or prompts[0].dim() == 2:
            return encode_text_layers(model, tokens, embeddings, prompts)
        batch, classes = prompts[0].shape[0], tokens.shape[0]
        first = prompts[0].repeat_interleave(classes, dim=0)  # [B·C, n_ctx, D]
        features = encode_text_layers(model, tokens.repeat(batch, 1), embeddings.repeat(batch, 1, 1),
                                      [first, *prompts[1:]])
        return features.view(batch, classes, -1)

    def image(self, model: open_clip.CLIP, stem: torch.Tensor, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Raw image features [B, E] from the images' stem (``visual.conv1`` output)."""
        return encode_image_layers(model, None, prompts, stem=stem)

    def second_order(self) -> "Encoder":
        """The encoder for passes that are differentiated twice (second-order meta-gradients)."""
        return self


# --------------------------------------------------------------------------- frozen features
@torch.no_grad()
def template_ensemble(encode: Callable[[list[str]], torch.Tensor], classnames: Sequence[str],
                      templates: Sequence[str], mean: str = "normalized") -> torch.Tensor:
    """[C, E] template ensemble of any sentence encoder's features of the filled-in class names:

        mean="normalized":  normalize(Σ_t normalize(f(t, c)))   (CLIP's ensemble)
        mean="raw":         normalize(Σ_t f(t, c))               (ProMetaR's frozen text target)"""
    if mean not in ("normalized", "raw"):
        raise ValueError(f"mean must be 'normalized' or 'raw', got {mean!r}")
    total = 0
    for template in templates:
        features = encode([template.format(c.replace("_", " ")) for c in classnames])
        total = total + (features if mean == "raw" else F.normalize(features, dim=-1))
    return F.normalize(total, dim=-1).cpu()


def text_classifier(backbone: Backbone, classnames: Sequence[str], templates: Sequence[str],
                    mean: str = "normalized") -> torch.Tensor:
    """[C, E] normalised template-ensemble text features of the frozen text tower (zero-shot CLIP)."""
    def encode(sentences: list[str]) -> torch.Tensor:
        return backbone.model.encode_text(backbone.tokenizer(sentences).to(backbone.device))

    return template_ensemble(encode, classnames, templates, mean)
