"""The speed machinery, kept apart from the maths: every shortcut here computes what the plain
code computes (exactly, or to float rounding where said), only once or in fewer operations.

- :func:`prompted_text_features`: the prompted text pass with the positions every class shares
  ([SOS] + context) run once per prompt set instead of once per class (the same features up to
  float rounding), and its last block at the EOT positions only (the same bits). ``PromptedCLIP.
  text_features`` calls it, and falls back to the plain pass. (The image side of the last-block
  shortcut is ``pool_last`` of :func:`metaprompt_lite.backbone.encode_image_layers`.)
- :func:`memo`: get-or-compute in a dict that a run or a benchmark passes down.
- :func:`batch_cache`, :func:`frozen_features`: what the runs of one training set share: the
  augmented batches and their frozen stems and features (the engine's training loop reads them
  through :func:`memo`), and the frozen features of the evaluation images. Exact: the backbone is
  frozen and a batch is a pure function of (data, seed, step).

Explained in ``benchmarks/profile_run.py`` (where a run's time goes) and ``benchmarks/throughput.py``.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

import open_clip
import torch
from torch import nn
from torch.nn import functional as F

from metaprompt_lite.backbone import Backbone, _put, image_features, plain_attention, pool_last_block


def memo(cache: dict | None, key: Any, make: Callable[[], Any]) -> Any:
    """``cache[key]``, computed by ``make()`` on the first call (no cache: computed every time)."""
    if cache is None:
        return make()
    if key not in cache:
        cache[key] = make()
    return cache[key]


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
    return cache.setdefault(key, {})


def frozen_features(backbone: Backbone, dataset, index: torch.Tensor, cache: dict | None) -> torch.Tensor:
    """Frozen f_I of ``dataset.images[index]``, memoised in ``cache`` (exact: the backbone is frozen)."""
    key = ("frozen", id(backbone), backbone.name, backbone.pretrained, dataset.name, id(dataset.images),
           _index_digest(index))
    return memo(cache, key, lambda: image_features(backbone, dataset.images[index]))


def prompted_text_features(model: open_clip.CLIP, tokens: torch.Tensor, embeddings: torch.Tensor,
                           prompts: Sequence[torch.Tensor], pool_last: bool = True) -> torch.Tensor | None:
    """Prompted text features by :func:`encode_text_shared_prefix`, or None where it does not apply
    (the caller then runs :func:`metaprompt_lite.backbone.encode_text_layers`)."""
    return encode_text_shared_prefix(model, tokens, embeddings, prompts, pool_last=pool_last)


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

    def split_heads(x: torch.Tensor) -> torch.Tensor:  # [N, T, D] -> [N, H, T, D/H]
        return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)

    def keys_of(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        shared = split_heads(F.linear(prefix, weight, bias))  # [G, H, P, d_h]
        shared = shared.repeat_interleave(rows // groups, dim=0) if groups > 1 else shared.expand(rows, -1, -1, -1)
        return torch.cat([shared, split_heads(F.linear(suffix, weight, bias))], dim=2)

    q = split_heads(F.linear(suffix, w_q, b_q))
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
    """:func:`encode_text_layers` for class prompts that share their first positions, computed once.

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
    context does not lie inside the shared prefix): call :func:`encode_text_layers` then. Equal to
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
    prefix = _put(prefix, prompts[0], prompt_start) + model.positional_embedding[:shared].to(cast_dtype)
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
    pool_last = pool_last_block(pool_last, len(rows))
    for i, block in enumerate(transformer.resblocks):
        pool = pool_last and i == last
        if 0 < i < len(prompts):
            prefix = _put(prefix, prompts[i], prompt_start)
        attended = _prefix_attention(block.attn, block.ln_1(prefix), block.ln_1(suffix), mask, pooled if pool else None)
        h = (suffix[rows, pooled] if pool else suffix) + block.ls_1(attended)
        suffix = h + block.ls_2(block.mlp(block.ln_2(h)))
        if i < last:  # after the last block nothing reads the prefix
            prefix = block(prefix, attn_mask=prefix_mask)
    x = model.ln_final(suffix if pool_last else suffix[rows, pooled])
    projection = model.text_projection
    features = projection(x) if isinstance(projection, nn.Linear) else x @ projection
    return features if prompts[0].dim() == 2 else features.view(groups, classes, -1)
