"""The speed machinery, kept out of the core's maths: one encoder object that computes what the
plain :class:`~metaprompt_lite.core.clip.Encoder` computes, in fewer operations, and the caches a
benchmark shares between runs.

- :class:`FastEncoder`: the prompted text pass with the positions every class shares ([SOS] +
  context) run once per prompt set instead of once per class (:func:`encode_text_shared_prefix`, the
  same features up to float rounding), and both towers' last block run only where pooling reads it
  (EOT, CLS; :func:`cls_block`, the same bits where the CPU's GEMM rows are independent). Its
  :meth:`~FastEncoder.second_order` twin keeps the full last blocks for passes differentiated twice.
  It keeps the frozen text features of each class list in its ``store``.
- :func:`batch_cache`, :func:`frozen_features`: what the runs of one training set share: the
  augmented batches and their frozen stems and features, and the frozen features of the evaluation
  images. Exact: the backbone is frozen and a batch is a pure function of (data, seed, step).

Every cache is a dict read through :func:`metaprompt_lite.core.clip.memo`. The benchmark's recipe
(:func:`metaprompt_lite.methods.prompted_clip`) hands a :class:`FastEncoder` to the model; nothing
process-wide switches it. Explained in ``benchmarks/profile_run.py`` and ``benchmarks/throughput.py``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Sequence

import open_clip
import torch
from torch import nn
from torch.nn import functional as F

from metaprompt_lite.backbone import image_features
from metaprompt_lite.core.clip import (
    Backbone,
    Encoder,
    deep_prompts,
    image_tokens,
    memo,
    pool_image,
    project_text,
    put,
    run_blocks,
)

# Running a last block only at the pooled positions gives the same bits as running it everywhere
# wherever a row of a matrix product does not depend on the other rows of the call (MKL on an AMD EPYC
# with AVX-512 and on its AVX2 code; an Intel Xeon with AMX did not, so there the two differ by float
# rounding: tests/test_throughput.py probes it), since the left-out rows' gradients are exact zeros.
# Below 4 rows MKL takes its matrix-vector path, whose sums round differently, so passes over fewer rows
# (CoCoOp's one image, a meta-learning episode's few classes) keep the full block and their bits.
# Second derivatives through a pooled block round differently too, so :meth:`FastEncoder.second_order`
# runs every block in full. Tested on both sides of each bound.
MIN_POOLED_ROWS = 4


@dataclass
class FastEncoder(Encoder):
    """The plain encoders' results in fewer operations. ``share_prefix``: the class-independent text
    positions once per prompt set; ``pool_last``: last blocks at the pooled positions only (for at least
    :data:`MIN_POOLED_ROWS` rows); ``store``: the dict :func:`memo` keeps frozen features in (a run's
    cache, shared by every model built on it)."""

    share_prefix: bool = True
    pool_last: bool = True
    store: dict = field(default_factory=dict)

    def text(self, model: open_clip.CLIP, tokens: torch.Tensor, embeddings: torch.Tensor,
             prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.share_prefix:
            features = encode_text_shared_prefix(model, tokens, embeddings, prompts, pool_last=self.pool_last)
            if features is not None:
                return features
        return super().text(model, tokens, embeddings, prompts)

    def image(self, model: open_clip.CLIP, stem: torch.Tensor, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        visual = model.visual
        if (self.pool_last and stem.shape[0] >= MIN_POOLED_ROWS and getattr(visual, "pool_type", "tok") == "tok"
                and getattr(visual.transformer, "batch_first", True)
                and plain_attention(visual.transformer.resblocks[-1])):
            return encode_image_pooled(model, stem, prompts)
        return super().image(model, stem, prompts)

    def second_order(self) -> "FastEncoder":
        """This encoder with full last blocks (the same store): second derivatives through a pooled
        block round differently."""
        return replace(self, pool_last=False)


def _index_digest(index: torch.Tensor) -> str:
    """A key for a set of example indices: the sha256 of their bytes (not a sum, which collides)."""
    return hashlib.sha256(index.cpu().numpy().tobytes()).hexdigest()


# The batch cache holds every step's augmented images and stems: cheap for the embedded tier's 64 px
# drawings (a few MB a group), gigabytes at 224 px over ten epochs, so larger images are not cached.
BATCH_CACHE_MAX_PIXELS = 128 * 128


def batch_cache(cache: dict | None, backbone: Backbone, dataset, target: str | None, seed: int,
                train_index: torch.Tensor) -> dict | None:
    """The part of a run cache that holds one training set's augmented batches (shared by every
    method trained on it with this seed and backbone; see :func:`metaprompt_lite.engine.train`).
    None (no sharing) without a run cache or for images above ``BATCH_CACHE_MAX_PIXELS``."""
    if cache is None or dataset.images.shape[-1] * dataset.images.shape[-2] > BATCH_CACHE_MAX_PIXELS:
        return None
    key = ("batches", id(backbone), backbone.name, backbone.pretrained, dataset.name, id(dataset.images), target,
           seed, _index_digest(train_index))
    return memo(cache, key, dict)


def frozen_features(backbone: Backbone, dataset, index: torch.Tensor, cache: dict | None) -> torch.Tensor:
    """Frozen f_I of ``dataset.images[index]``, memoised in ``cache`` (exact: the backbone is frozen)."""
    key = ("frozen", id(backbone), backbone.name, backbone.pretrained, dataset.name, id(dataset.images),
           _index_digest(index))
    return memo(cache, key, lambda: image_features(backbone, dataset.images[index]))


def plain_attention(block: nn.Module) -> bool:
    """Whether ``block`` is open_clip's residual block around a plain fused-projection multi-head
    attention (what :func:`cls_block` and :func:`_prefix_attention` re-assemble)."""
    attn = getattr(block, "attn", None)
    return (isinstance(attn, nn.MultiheadAttention) and attn._qkv_same_embed_dim and attn.batch_first
            and attn.in_proj_bias is not None and attn.bias_k is None and not attn.add_zero_attn
            and not hasattr(block, "ln_1_kv")
            and all(hasattr(block, name) for name in ("ln_1", "ls_1", "ln_2", "mlp", "ls_2")))


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[N, T, D] -> [N, H, T, D/H], as ``nn.MultiheadAttention`` splits its projections."""
    return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


def cls_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block(x)[:, 0]`` ([B, D]) with the output projection and the MLP run on position 0 only
    (the attention itself runs for every position, as in the block):

        a = W_o softmax(q kᵀ / √d_h) v |₀ + b_o;   h = x₀ + a;   out = h + MLP(LN₂(h))
    """
    attn, (batch, tokens, width) = block.attn, x.shape
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    heads = attn.num_heads
    out = F.scaled_dot_product_attention(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads))
    h = x[:, 0] + block.ls_1(attn.out_proj(out.transpose(1, 2).reshape(batch, tokens, width)[:, 0]))
    return h + block.ls_2(block.mlp(block.ln_2(h)))


def encode_image_pooled(model: open_clip.CLIP, stem: torch.Tensor, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
    """:func:`~metaprompt_lite.core.clip.encode_image_layers` with its last block at the CLS position
    only (:func:`cls_block`)."""
    visual = model.visual
    x, n_tokens = image_tokens(model, None, prompts, stem)
    replace_at = deep_prompts(prompts)
    last = len(visual.transformer.resblocks) - 1
    x = run_blocks(visual.transformer, x, None, replace_at, stop=last)
    x = cls_block(visual.transformer.resblocks[-1], replace_at(last, x) if last >= 1 else x)[:, None]
    return pool_image(visual, x, n_tokens)


def common_prefix_length(tokens: torch.Tensor) -> int:
    """How many leading positions every row of ``tokens`` [N, L] shares, capped before the first
    row's EOT (the pooled position must stay row-specific)."""
    same = (tokens == tokens[:1]).all(dim=0)
    differs = (~same).nonzero()
    length = int(differs[0]) if len(differs) else tokens.shape[1]
    return min(length, int(tokens.argmax(dim=-1).min()))


def _prefix_attention(attn: nn.MultiheadAttention, prefix: torch.Tensor, suffix: torch.Tensor,
                      mask: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention of the suffix rows over [their group's prefix ; themselves].

    ``prefix`` [G, P, D] (normalised), ``suffix`` [G·C, S, D] (normalised, group-major); ``mask``
    [S, P + S] additive. The prefix's keys and values are projected once per group:

        q = W_q s + b_q;  k = [W_k p + b_k ; W_k s + b_k];  v likewise;
        out = W_o softmax(q kᵀ / √d_h + mask) v + b_o        (per head, as nn.MultiheadAttention)

    ``pooled`` [G·C]: return only each row's output at that suffix position ([G·C, D]), with W_o
    applied to those rows alone (the attention itself still runs for every position).
    """
    groups, rows, heads = prefix.shape[0], suffix.shape[0], attn.num_heads
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3)

    def keys_of(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        shared = split_heads(F.linear(prefix, weight, bias), heads)  # [G, H, P, d_h]
        shared = shared.repeat_interleave(rows // groups, dim=0) if groups > 1 else shared.expand(rows, -1, -1, -1)
        return torch.cat([shared, split_heads(F.linear(suffix, weight, bias), heads)], dim=2)

    q = split_heads(F.linear(suffix, w_q, b_q), heads)
    out = F.scaled_dot_product_attention(q, keys_of(w_k, b_k), keys_of(w_v, b_v), attn_mask=mask.to(q.dtype))
    out = out.transpose(1, 2).reshape(rows, suffix.shape[1], -1)
    if pooled is not None:
        out = out[torch.arange(rows, device=out.device), pooled]
    return attn.out_proj(out)


def encode_text_shared_prefix(
    model: open_clip.CLIP,
    tokens: torch.Tensor,
    embeddings: torch.Tensor,
    prompts: Sequence[torch.Tensor],
    prompt_start: int = 1,
    pool_last: bool = True,
) -> torch.Tensor | None:
    """:func:`~metaprompt_lite.core.clip.encode_text_layers` for class prompts that share their first positions, computed once.

    Prompted class sequences are ``[SOS] ctx_1..ctx_n name . [EOT]``: every class has the same first
    ``P = 1 + n_ctx`` positions (or more, when fixed words follow the context). Under causal
    attention position t sees only positions ≤ t, so the hidden states of those P positions are the
    same for every class at every layer. This function runs them once per *group* of prompts
    instead of once per class, and runs the class-specific positions with attention over
    [shared prefix ; own positions]:

        prefix:  h^P_{i+1} = block_i(h^P_i[ctx ← p_i])                      ([G, P, D])
        suffix:  h^S_{i+1} = h^S_i + Attn(LN(h^S_i), LN([h^P_i ; h^S_i])) ;  h += MLP(LN(h))

    which is the same block with the prefix rows' keys and values shared (the text tower's cost
    falls by about P / L). Only each row's EOT state leaves the last block, so there (``pool_last``,
    for at least :data:`MIN_POOLED_ROWS` rows) the output projection and the MLP run on the EOT
    positions alone, and the prefix's own last block, which nothing reads, is skipped.
    ``prompts[i]`` is [n_ctx, D] (one group) or [G, n_ctx, D] (CoCoOp: one group per image);
    ``tokens`` [C, L] and ``embeddings`` [C, L, D] are the C classes, once. Returns [C, E] for one
    group, [G, C, E] for G groups; ``None`` when the shortcut does not apply (no causal mask, or the
    context does not lie inside the shared prefix): the plain pass runs then. Equal to
    it up to float rounding (tested).
    """
    if model.attn_mask is None or len(prompts) == 0 or getattr(model, "text_pool_type", "argmax") != "argmax":
        return None
    n_ctx = prompts[0].shape[-2]
    shared = common_prefix_length(tokens)
    if shared < prompt_start + n_ctx:
        return None
    cast_dtype = model.transformer.get_cast_dtype()
    eot = tokens.argmax(dim=-1)
    length = int(eot.max()) + 1
    x = embeddings[:, :length].to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    groups = prompts[0].shape[0] if prompts[0].dim() == 3 else 1
    # the shared positions, once per group: [G, P, D]; their embeddings are row 0's
    prefix = embeddings[:1, :shared].to(cast_dtype).expand(groups, -1, -1)
    prefix = put(prefix, prompts[0], prompt_start) + model.positional_embedding[:shared].to(cast_dtype)
    classes = tokens.shape[0]
    suffix = x[:, shared:].repeat(groups, 1, 1)  # [G·C, S, D], group-major
    mask = model.attn_mask[shared:length, :length]
    prefix_mask = model.attn_mask[:shared, :shared]
    transformer = model.transformer
    if not getattr(transformer, "batch_first", True) or not all(
            plain_attention(block) for block in transformer.resblocks):
        return None
    rows = torch.arange(suffix.shape[0], device=suffix.device)
    pooled = eot.repeat(groups) - shared  # each row's EOT position within the suffix
    last = len(transformer.resblocks) - 1
    # the last block only at the pooled positions (see :data:`MIN_POOLED_ROWS`): [G·C, D] after it
    pool_last = pool_last and len(rows) >= MIN_POOLED_ROWS
    for i, block in enumerate(transformer.resblocks):
        pool = pool_last and i == last
        if 0 < i < len(prompts):
            prefix = put(prefix, prompts[i], prompt_start)
        attended = _prefix_attention(block.attn, block.ln_1(prefix), block.ln_1(suffix), mask, pooled if pool else None)
        h = (suffix[rows, pooled] if pool else suffix) + block.ls_1(attended)
        suffix = h + block.ls_2(block.mlp(block.ln_2(h)))
        if i < last:  # after the last block nothing reads the prefix
            prefix = block(prefix, attn_mask=prefix_mask)
    features = project_text(model, model.ln_final(suffix if pool_last else suffix[rows, pooled]))
    return features if prompts[0].dim() == 2 else features.view(groups, classes, -1)
