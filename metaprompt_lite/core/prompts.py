"""Prompt learners: every learnable piece of CoOp, CoCoOp, IVLP, MaPLe and MetaPrompt.

Explained in ``notebooks/02_text_prompts`` and ``notebooks/03_vision_and_dual_prompts``.

- :class:`PromptLearner` holds *only* the learnable tensors and turns them into per-layer prompts
  (``higher`` patches exactly this module in the meta-learning inner loop).
- :class:`PromptedCLIP` holds the frozen CLIP, the class names' tokens and frozen text features,
  and encodes text and images with a given set of prompts.

Token sequences follow CoOp: ``[SOS] ctx_1 .. ctx_n classname . [EOS]``, the ``ctx`` positions
replaced by the learned vectors at layer 0 and, for deep prompts, before every deeper layer. When
``ctx_init`` has more tokens than ``n_ctx`` (IVLP, MaPLe: 2 of "a photo of a"), the rest stay fixed
words, as in their official code: ``[SOS] ctx_1 ctx_2 of a classname . [EOS]``. The recipes
(``metaprompt_lite.methods``): CoOp n_ctx 4, shallow; CoCoOp adds a meta-net π(f_I(x)) to every ctx
vector; IVLP and MetaPrompt independent text and vision prompts at every layer; MaPLe vision prompts
projected from the text prompts (``coupled``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from metaprompt_lite.core.clip import Backbone, Encoder, memo, text_classifier
from metaprompt_lite.core.losses import clip_logits

PROMPT_INIT_STD = 0.02  # N(0, 0.02) init of CoOp/VPT/MaPLe/MetaPrompt prompt vectors
META_NET_REDUCTION = 16  # CoCoOp: hidden width = d_img / 16
PLACEHOLDER = "X"  # the word whose token positions the context replaces


@dataclass(frozen=True)
class PromptConfig:
    """Which prompts exist and how they start. ``depth`` counts layers from the input (1 = shallow);
    ``-1`` means "every layer of the backbone", and a larger depth is capped at the layer count."""

    n_ctx: int = 4
    # word initialisation: its first n_ctx tokens initialise ctx, any further tokens stay fixed words
    # between the context and the class name (it needs at least n_ctx tokens)
    ctx_init: str | None = "a photo of a"
    text_depth: int = 1
    n_vision: int = 0  # VPT's n_pro
    vision_depth: int = 0
    conditional: bool = False  # CoCoOp meta-net
    coupled: bool = False  # MaPLe coupling: vision prompts projected from text prompts


@dataclass
class Prompts:
    """Per-layer prompts: ``text[i]`` [n_ctx, d_txt] (or [B, n_ctx, d_txt], one set per image when
    conditional); ``vision[i]`` [n_vision, d_img]."""

    text: list[torch.Tensor]
    vision: list[torch.Tensor]

    @property
    def conditional(self) -> bool:
        return len(self.text) > 0 and self.text[0].dim() == 3


def _resolve_depth(depth: int, layers: int, what: str) -> int:
    """-1 means every layer; a depth beyond the backbone's layers is capped at its layer count
    (so the paper's depth-9 recipes run unchanged on a shallower model)."""
    if depth < -1:
        raise ValueError(f"{what} depth must be -1 (all layers) or >= 0, got {depth}")
    return layers if depth == -1 else min(depth, layers)


class PromptLearner(nn.Module):
    """The learnable tensors of a prompt-learning method, nothing else.

    Parameters (present only when the config asks for them):
      ``ctx``         [n_ctx, d_txt]                 text context of layer 0 (CoOp)
      ``deep_ctx``    [text_depth-1, n_ctx, d_txt]   replacements at layers 1.. (IVLP/MaPLe/MetaPrompt)
      ``vision_ctx``  [vision_depth, n_vision, d_img] visual prompts, independent (VPT/IVLP/MetaPrompt)
      ``coupling``    vision_depth × Linear(d_txt, d_img) (MaPLe: p^v_i = W_i p^t_i + b_i); as in
                      MaPLe's code, layers 1.. start as copies of one freshly initialised layer
      ``meta_net``    Linear(E, E/16) → ReLU → Linear(E/16, d_txt) (CoCoOp: ctx_m(x) = ctx_m + π(x))
    """

    def __init__(self, config: PromptConfig, backbone: Backbone, ctx_init_embeddings: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        d_txt, d_img, d_emb = backbone.text_width, backbone.vision_width, backbone.embed_dim
        self.text_depth = _resolve_depth(config.text_depth, backbone.text_layers, "text")
        self.vision_depth = _resolve_depth(config.vision_depth, backbone.vision_layers, "vision")
        if config.n_ctx < 1:
            raise ValueError("n_ctx must be >= 1: every method here learns a text context")
        if self.text_depth < 1:
            raise ValueError("text_depth must be >= 1")
        if (config.n_vision > 0) != (self.vision_depth > 0):
            raise ValueError("n_vision and vision_depth must be both zero or both positive")
        if config.coupled and (config.n_vision != config.n_ctx or self.vision_depth > self.text_depth):
            raise ValueError("coupled (MaPLe) prompts need n_vision == n_ctx and vision_depth <= text_depth")
        if ctx_init_embeddings is not None:
            ctx = ctx_init_embeddings.detach().clone().float()
        else:
            ctx = torch.randn(config.n_ctx, d_txt) * PROMPT_INIT_STD
        self.ctx = nn.Parameter(ctx)
        if self.text_depth > 1:
            self.deep_ctx = nn.Parameter(torch.randn(self.text_depth - 1, config.n_ctx, d_txt) * PROMPT_INIT_STD)
        if self.vision_depth > 0 and not config.coupled:
            self.vision_ctx = nn.Parameter(torch.randn(self.vision_depth, config.n_vision, d_img) * PROMPT_INIT_STD)
        if config.coupled and self.vision_depth > 0:
            deep = nn.Linear(d_txt, d_img)  # MaPLe's _get_clones: the deep projections start equal
            self.coupling = nn.ModuleList([nn.Linear(d_txt, d_img)]
                                          + [copy.deepcopy(deep) for _ in range(self.vision_depth - 1)])
        if config.conditional:
            hidden = max(1, d_emb // META_NET_REDUCTION)
            self.meta_net = nn.Sequential(nn.Linear(d_emb, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, d_txt))

    def forward(self, image_features: torch.Tensor | None = None) -> Prompts:
        """Assemble the per-layer prompts. ``image_features`` [B, E] feed the CoCoOp meta-net."""
        text = [self.ctx] + (list(self.deep_ctx.unbind(0)) if self.text_depth > 1 else [])
        if self.config.coupled:
            vision = [proj(text[i]) for i, proj in enumerate(self.coupling)]
        elif self.vision_depth > 0:
            vision = list(self.vision_ctx.unbind(0))
        else:
            vision = []
        if self.config.conditional:
            if image_features is None:
                raise ValueError("a conditional (CoCoOp) prompt needs the image features")
            bias = self.meta_net(image_features)  # [B, d_txt]
            text = [text[0].unsqueeze(0) + bias.unsqueeze(1)] + text[1:]  # [B, n_ctx, d_txt]
        return Prompts(text=text, vision=vision)


class PromptedCLIP(nn.Module):
    """A frozen CLIP plus a :class:`PromptLearner`, with the two frozen/prompted encoder pairs.

    - prompted text  f̃_T(classes)  :meth:`text_features`
    - prompted image f̃_I(x)        :meth:`image_features`
    - frozen text    f_T(classes)   :attr:`frozen_text` (hand template(s), ensemble-averaged:
      ``frozen_mean="normalized"`` averages normalised features (CLIP's ensemble), ``"raw"`` averages
      the raw features (ProMetaR's target); either way the mean is normalised)
    - frozen image   f_I(x)         :meth:`frozen_image_features`

    All features are L2-normalised. ``class_ids`` selects a subset of the current classes (the
    text encoder then runs only on those, as MetaPrompt's episodes do).
    """

    def __init__(self, backbone: Backbone, config: PromptConfig, classnames: Sequence[str],
                 templates: Sequence[str] = ("a photo of a {}.",), frozen_mean: str = "normalized",
                 seed: int | None = None, encoder: Encoder | None = None) -> None:
        """``seed``: the random initial prompts are drawn right after seeding torch's generator with
        it, so they depend on the seed alone, not on whatever drew random numbers before (loading a
        backbone, building another model). None: drawn from the generator's current state.
        ``encoder``: how the towers run (:class:`~metaprompt_lite.core.clip.Encoder`, the plain one, by
        default; the benchmark's recipe hands over ``metaprompt_lite.fastpath.FastEncoder``)."""
        super().__init__()
        if frozen_mean not in ("normalized", "raw"):
            raise ValueError(f"frozen_mean must be 'normalized' or 'raw', got {frozen_mean!r}")
        self.backbone = backbone
        self.clip = backbone.model  # registered so .to(device) moves it; frozen by load_clip
        self.config = config
        self.frozen_mean = frozen_mean
        init = None
        if config.ctx_init:
            init = self._word_embeddings(config.ctx_init)
            if init.shape[0] < config.n_ctx:
                raise ValueError(f"ctx_init {config.ctx_init!r} has {init.shape[0]} tokens but n_ctx={config.n_ctx}; "
                                 "give at least n_ctx tokens or set ctx_init=None")
            init = init[: config.n_ctx]
        if seed is not None:
            torch.manual_seed(seed)
        self.prompts = PromptLearner(config, backbone, ctx_init_embeddings=init)
        self.encoder = encoder or Encoder()
        self.set_classes(classnames, templates)

    def train(self, mode: bool = True) -> "PromptedCLIP":
        """Only the prompt learner switches mode: the frozen CLIP stays in eval (no dropout,
        no BatchNorm statistics updates) while prompts train."""
        super().train(mode)
        self.clip.eval()
        return self

    # ----------------------------------------------------------------- classes and buffers
    @torch.no_grad()
    def _word_embeddings(self, phrase: str) -> torch.Tensor:
        tokens = self.backbone.tokenizer([phrase]).to(self.backbone.device)
        n = int(tokens[0].argmax()) - 1  # tokens between SOS and EOT
        return self.clip.token_embedding(tokens)[0, 1 : 1 + n]

    @torch.no_grad()
    def set_classes(self, classnames: Sequence[str], templates: Sequence[str] | None = None) -> None:
        """(Re)build the frozen token buffers and frozen text features for a class list (train on
        base classes, then ``set_classes(new_classnames)`` to evaluate on new ones)."""
        classnames = [str(c) for c in classnames]
        if len(classnames) == 0:
            raise ValueError("the class list is empty: give at least one class name")
        if templates is not None:
            templates = list(templates)
            if not templates or any("{}" not in t for t in templates):
                raise ValueError(f"every template needs a '{{}}' for the class name: {templates}")
            self.templates = templates
        self.classnames = classnames
        device = self.backbone.device
        n_ctx = self.config.n_ctx
        # the context words: ctx_init (its tokens beyond n_ctx stay as fixed words), or placeholders;
        # positions 1..n_ctx are replaced by the learned vectors either way
        context = self.config.ctx_init or " ".join([PLACEHOLDER] * n_ctx)
        names = [name.replace("_", " ") for name in classnames]
        tokens = self.backbone.tokenizer([f"{context} {name}." for name in names]).to(device)
        if int(tokens.argmax(-1).max()) >= tokens.shape[1] - 1:
            raise ValueError("a class name is too long for the text context length once prompted")
        embeddings = self.clip.token_embedding(tokens)
        self.register_buffer("tokenized", tokens, persistent=False)  # [C, L]
        self.register_buffer("token_prefix", embeddings[:, :1], persistent=False)  # SOS [C,1,D]
        self.register_buffer("token_suffix", embeddings[:, 1 + n_ctx :], persistent=False)  # name . EOS
        self.register_buffer("frozen_text", self._template_features(names), persistent=False)

    def _template_features(self, names: Sequence[str]) -> torch.Tensor:
        """Frozen f_T ([C, E]): zero-shot CLIP's template ensemble of the class names,
        normalize(Σ_t normalize(f(t, c))) for ``frozen_mean="normalized"``, normalize(Σ_t f(t, c)) for
        ``"raw"`` (the sum's direction is the mean's); kept per class list, templates and mean
        in the encoder's store, when it keeps one (the weights are frozen)."""
        key = ("frozen_text", id(self.clip), tuple(names), tuple(self.templates), self.frozen_mean)
        return memo(self.encoder.store, key, lambda: text_classifier(
            self.backbone, names, self.templates, mean=self.frozen_mean).to(self.backbone.device))

    @property
    def n_classes(self) -> int:
        return len(self.classnames)

    @property
    def logit_scale(self) -> torch.Tensor:
        """s = exp(logit_scale), frozen."""
        return self.clip.logit_scale.exp()

    # ----------------------------------------------------------------- encoders
    def learner(self, image_features: torch.Tensor | None = None) -> Prompts:
        """Run the prompt learner."""
        return self.prompts(image_features=image_features)

    def text_features(self, prompts: Prompts, class_ids: torch.Tensor | None = None,
                      encoder: Encoder | None = None) -> torch.Tensor:
        """Prompted f̃_T, normalised: [C, E], or [B, C, E] for conditional prompts. ``encoder``: this
        pass's encoder (second-order steps ask for ``model.encoder.second_order()``)."""
        ids = slice(None) if class_ids is None else class_ids
        prefix, suffix, tokens = self.token_prefix[ids], self.token_suffix[ids], self.tokenized[ids]
        placeholder = prefix.new_zeros(prefix.shape[0], self.config.n_ctx, prefix.shape[-1])
        embeddings = torch.cat([prefix, placeholder, suffix], dim=1)  # [C, L, D]
        features = (encoder or self.encoder).text(self.clip, tokens, embeddings, prompts.text)
        return F.normalize(features, dim=-1)

    def image_features(self, images: torch.Tensor, prompts: Prompts | None = None, normalize: bool = True,
                       stem: torch.Tensor | None = None, encoder: Encoder | None = None) -> torch.Tensor:
        """Prompted f̃_I (frozen f_I when there are no vision prompts), [B, E]: normalised, or the
        encoder's raw output with ``normalize=False`` (ProMetaR mixes those). ``stem``: the images'
        :meth:`image_stem`, when it was computed already; ``encoder`` as in :meth:`text_features`."""
        layer_prompts = prompts.vision if prompts is not None else []
        if stem is None:
            stem = self.image_stem(images)
        features = (encoder or self.encoder).image(self.clip, stem, layer_prompts)
        return F.normalize(features, dim=-1) if normalize else features

    @torch.no_grad()
    def image_stem(self, images: torch.Tensor) -> torch.Tensor:
        """The vision tower's first layer on the preprocessed images, ``visual.conv1`` ([B, width,
        grid, grid]). It is frozen and no prompt enters before it, so a batch's stem serves the
        frozen and every prompted image pass of every method (the benchmark computes it once)."""
        return self.clip.visual.conv1(self.backbone.preprocess(images).to(self.clip.transformer.get_cast_dtype()))

    @torch.no_grad()
    def frozen_image_features(self, images: torch.Tensor, stem: torch.Tensor | None = None,
                              encoder: Encoder | None = None) -> torch.Tensor:
        """Frozen f_I, normalised [B, E] (no prompts, no gradient); from ``stem`` when given."""
        if stem is None:
            return F.normalize(self.clip.encode_image(self.backbone.preprocess(images)), dim=-1)
        return F.normalize((encoder or self.encoder).image(self.clip, stem, ()), dim=-1)

    def frozen_text_features(self, class_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.frozen_text if class_ids is None else self.frozen_text[class_ids]

    def forward(self, images: torch.Tensor, class_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Standard prompted logits s · f̃_I(x) · f̃_T(classes)ᵀ ([B, C])."""
        frozen = self.frozen_image_features(images) if self.config.conditional else None
        prompts = self.learner(frozen)
        return clip_logits(self.image_features(images, prompts), self.text_features(prompts, class_ids), self.logit_scale)
