"""Method recipes and presets: which prompts, which loss, which episodic update, and the budget
each method trains on.

Explained in ``notebooks/06_metaprompt_end_to_end`` and ``notebooks/07_prometar_and_gram``.

A method is a :class:`~metaprompt_lite.core.steps.MethodConfig` (plain dataclass instance);
:func:`make_step` turns it into one step function of :mod:`metaprompt_lite.core.steps` (there is no
trainer per method). :func:`preset` gives a method's recipe, budget and shots on a tier (pocket or
paper) under a protocol (official or tuned), all in this one place; :func:`prompted_clip` builds the
model a recipe runs, with the fast encoder; :func:`start_training` what its loop starts from.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from metaprompt_lite.core.loop import Batch, StepFn, TrainState, make_generator
from metaprompt_lite.core.prometar import GradientModulator, ProMetaRConfig, prometar_step
from metaprompt_lite.core.prompts import PromptConfig, PromptedCLIP
from metaprompt_lite.core.steps import (
    TEMPLATE_CHOICES,
    MethodConfig,
    metaprompt_step,
    regulated_step,
    supervised_step,
)
from metaprompt_lite.fastpath import FastEncoder
from metaprompt_lite.gram_artifacts import artifact_path, load_gram
from metaprompt_lite.optim import OptimConfig, build_optimizer, build_scheduler

# CLIP's ImageNet prompt templates (Radford et al. 2021, openai/CLIP notebooks/
# Prompt_Engineering_for_ImageNet.ipynb), as open_clip ships them: ProMetaR's frozen text target
# averages the first 60 of the 80 (mlvlab/ProMetaR, trainers/imagenet_templates.py, lines 3-64: the
# same 60, with "a photo of a {}." moved to the front).
IMAGENET60_TEMPLATES = tuple(template("{}") for template in OPENAI_IMAGENET_TEMPLATES[:60])


def prompt_templates(method: MethodConfig, templates, dataset: str = "") -> list[str]:
    """The templates of a method's frozen text f_T, from the dataset's ``templates`` (first = its hand
    template) and its name:

    ``bare``        the class name alone: MetaPrompt's zero-shot CLIP (``trainers/zsclip.py``, line 49:
                    the prompts are the class names, underscores replaced), its DG table's "CLIP" row
    ``single``      the hand template
    ``ensemble``    all of the dataset's templates
    ``metaprompt``  MetaPrompt's official f_T (``trainers/meta.py``, ``CustomCLIP``): the hand template
                    without its final period; on ImageNet its 8 templates (CLIP's 7 selected ones and
                    "a photo of a {}"), also without periods
    ``imagenet60``  ProMetaR's: CLIP's 60 ImageNet templates, whatever the dataset
    """
    if method.templates == "imagenet60":
        return list(IMAGENET60_TEMPLATES)
    if method.templates == "bare":
        return ["{}"]
    if method.templates == "metaprompt":
        chosen = templates if dataset == "ImageNet" else templates[:1]
        return [t[:-1] if t.endswith(".") else t for t in chosen]
    return list(templates) if method.templates == "ensemble" else list(templates[:1])


def prompted_clip(backbone, method: MethodConfig, classnames, templates, dataset: str = "",
                  seed: int | None = None, cache: dict | None = None) -> PromptedCLIP:
    """The method's :class:`PromptedCLIP` on ``classnames``, its frozen text built from the dataset's
    ``templates`` as the method's official code builds it (:func:`prompt_templates`, ``frozen_mean``),
    its random initial prompts drawn from ``seed`` (see :class:`PromptedCLIP`), its towers run by the
    :class:`~metaprompt_lite.fastpath.FastEncoder` (keeping frozen features in ``cache``, a run cache
    shared between models, or its own)."""
    return PromptedCLIP(backbone, method.prompt, list(classnames), prompt_templates(method, templates, dataset),
                        frozen_mean=method.frozen_mean, seed=seed,
                        encoder=FastEncoder(store={} if cache is None else cache))


def make_step(method: MethodConfig, state: TrainState, cross_domain: bool, total_steps: int,
              optim: OptimConfig | None = None, warmup_steps: int = 0) -> StepFn:
    """The loop's step for this method. Method-specific state (ProMetaR's modulation net, GRAM's
    regulator) lives in ``state.extras`` so checkpoints carry it. ``optim``/``warmup_steps``: the
    prompts' optimisation, whose schedule ProMetaR's modulation net follows when its config asks. A
    GRAM method needs its meta-learned regulator in ``state.extras["regulator"]``."""
    if method.prometar is not None:
        return _prometar(method.prometar, state, total_steps, optim, warmup_steps)
    if method.gram:
        if "regulator" not in state.extras:
            raise ValueError(f"{method.name} needs its meta-learned regulator: start it with start_training, which "
                             "reads the committed one, or extras={'regulator': load_gram(model, path)}")
        return lambda state, batch: regulated_step(state, batch, method)
    if method.episodic:
        return lambda state, batch: metaprompt_step(state, batch, method, cross_domain)
    return lambda state, batch: supervised_step(state, batch, method)


def _prometar(net: ProMetaRConfig, state: TrainState, total_steps: int, optim: OptimConfig | None,
              warmup_steps: int) -> StepFn:
    """ProMetaR's step, with its modulation net and the net's optimiser and schedule in ``state.extras``."""
    modulator = GradientModulator(state.model.prompts).to(state.model.backbone.device)
    if net.modulator_schedule == "constant":  # official: the scheduler is never stepped
        net_optim = OptimConfig(lr=net.modulator_lr, schedule="constant")
    else:  # the yaml's OPTIM_VNET: the prompts' schedule, with the net's own lr and warm-up lr
        net_optim = replace(optim or OptimConfig(), lr=net.modulator_lr, warmup_lr=net.modulator_warmup_lr)
    optimizer = build_optimizer(modulator.parameters(), net_optim)
    scheduler = build_scheduler(optimizer, total_steps, warmup_steps, net_optim)
    state.extras.update(modulator=modulator, modulator_optimizer=optimizer, modulator_scheduler=scheduler)

    def step(state: TrainState, batch: Batch) -> dict[str, float]:
        out = prometar_step(state, batch, modulator, optimizer, net)
        scheduler.step()
        return out
    return step


def start_training(model: PromptedCLIP, method: MethodConfig, optim: OptimConfig, total_steps: int,
                   warmup_steps: int = 0, seed: int = 0, cross_domain: bool = False, extras: dict | None = None,
                   gram_artifact=None) -> tuple[TrainState, StepFn]:
    """What every training loop starts from: the optimiser over the prompts, its schedule over
    ``total_steps``, the run's seeded generator, and the method's step function (which may add its
    own state to ``state.extras``). A GRAM method's prompts start from its meta-learned θ₀ and its
    regulator r is read from ``gram_artifact`` (default: :func:`~metaprompt_lite.gram_artifacts.artifact_path`
    of the backbone and the method)."""
    extras = dict(extras or {})
    if method.gram and "regulator" not in extras:
        extras["regulator"] = load_gram(model, gram_artifact or artifact_path(model.backbone.name, method.name))
    optimizer = build_optimizer(model.prompts.parameters(), optim)
    state = TrainState(model, optimizer, build_scheduler(optimizer, total_steps, warmup_steps, optim),
                       make_generator(seed), seed=seed, extras=extras)
    return state, make_step(method, state, cross_domain, total_steps, optim, warmup_steps)


# --------------------------------------------------------------------------- methods
# The official recipes (docs/methods.md gives each setting's file and line):
_COOP = PromptConfig(n_ctx=4, ctx_init="a photo of a", text_depth=1)
# IVLP (muzairkhattak/multimodal-prompt-learning, configs/trainers/IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml):
# 2 text + 2 vision tokens on all 12 layers, "a photo" learned and "of a" fixed
_IVLP = PromptConfig(n_ctx=2, ctx_init="a photo of a", text_depth=-1, n_vision=2, vision_depth=-1)
# ProMetaR's base learner (mlvlab/ProMetaR, configs/trainers/ProMetaR/vit_b16_c2_ep10_batch4_4+4ctx.yaml):
# 4 + 4 tokens, depth 9; also the learner GRAM-IVLP wraps here
_PROMETAR_BASE = PromptConfig(n_ctx=4, ctx_init="a photo of a", text_depth=9, n_vision=4, vision_depth=9)
# MaPLe (configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml): n_ctx 2 from "a photo of a", depth 9
_MAPLE = PromptConfig(n_ctx=2, ctx_init="a photo of a", text_depth=9, n_vision=2, vision_depth=9, coupled=True)
_METAPROMPT_B2N = PromptConfig(n_ctx=2, ctx_init=None, text_depth=-1, n_vision=2, vision_depth=-1)
_METAPROMPT_DG = replace(_METAPROMPT_B2N, n_ctx=4, n_vision=4)  # Meta_DG: N_CTX = N_PRO = 4
_METAPROMPT = MethodConfig("metaprompt", _METAPROMPT_B2N, loss="asymmetric", episodic=True,
                           meta_update="official", templates="metaprompt")
_PROMETAR = MethodConfig("prometar", _PROMETAR_BASE, prometar=ProMetaRConfig(), templates="imagenet60",
                         frozen_mean="raw")

METHODS: dict[str, MethodConfig] = {
    # zero-shot CLIP, three prompts: the bare class name (MetaPrompt's "CLIP" row), the hand template
    # ("CLIP (template)"), and this project's ensemble of the dataset's templates (no paper's row)
    "zsclip-bare": MethodConfig("zsclip-bare", trainable=False, templates="bare"),
    "zsclip": MethodConfig("zsclip", trainable=False),
    "zsclip-ens": MethodConfig("zsclip-ens", trainable=False, templates="ensemble"),
    "coop": MethodConfig("coop", _COOP),
    "cocoop": MethodConfig("cocoop", replace(_COOP, conditional=True)),
    "ivlp": MethodConfig("ivlp", _IVLP),
    "maple": MethodConfig("maple", _MAPLE),
    "metaprompt": _METAPROMPT,
    "prometar": _PROMETAR,
    "gram-coop": MethodConfig("gram-coop", _COOP, gram=True),
    "gram-ivlp": MethodConfig("gram-ivlp", _PROMETAR_BASE, gram=True),
    # ablations: the clean variants beside what produced the papers' numbers
    "metaprompt-clean": replace(_METAPROMPT, name="metaprompt-clean", meta_update="clean"),
    "prometar-netlr": replace(_PROMETAR, name="prometar-netlr",
                              prometar=ProMetaRConfig(modulator_lr=2.5e-4, modulator_schedule="prompts")),
    "prometar-base": MethodConfig("prometar-base", _PROMETAR_BASE),
}


# the benchmark's methods per suite, in the order tables list them
B2N_METHODS = ("zsclip-bare", "zsclip", "zsclip-ens", "coop", "cocoop", "ivlp", "maple", "metaprompt", "prometar",
               "gram-coop", "gram-ivlp", "metaprompt-clean", "prometar-base")
DG_METHODS = ("zsclip-bare", "zsclip", "zsclip-ens", "coop", "cocoop", "maple", "metaprompt")


def get_method(name: str, **overrides) -> MethodConfig:
    """A method recipe by name, with field overrides (e.g. ``meta_order=2``)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r} — use one of {', '.join(sorted(METHODS))}")
    return replace(METHODS[name], **overrides)


# --------------------------------------------------------------------------- presets
# (method, tier, suite, protocol) -> the method recipe, OptimConfig and shots of a run.
# Protocol "official": each method's official budget (docs/methods.md, "Official budgets": the file
# and line of every value; tests/test_methods.py pins them), on Dassl's schedule (1 warm-up epoch at
# 1e-5, cosine over the epochs, stepped per epoch), on either tier.
# Protocol "tuned" (pocket tier only): budgets chosen on a validation split of the *base* classes
# (``benchmarks/tune_pocket.py``; results/tuned/tuning.csv).
PROTOCOLS = ("official", "tuned")
PAPER_SHOTS = 16
DG_SHOTS = 5  # the papers' DG table (MetaPrompt's README): 5 shots per class per source domain
_OFFICIAL = {
    "coop": OptimConfig(lr=0.002, epochs=200, batch_size=32),  # CoOp/vit_b16_ctxv1.yaml
    "cocoop": OptimConfig(lr=0.002, epochs=10, batch_size=1),
    "ivlp": OptimConfig(lr=0.0035, epochs=5, batch_size=4),
    "maple": OptimConfig(lr=0.0035, epochs=5, batch_size=4),
    "metaprompt": OptimConfig(lr=0.0015, epochs=8, batch_size=16),
    "prometar": OptimConfig(lr=0.0025, epochs=10, batch_size=4),
}
# GRAM publishes no code and no downstream config: each GRAM row trains with its base learner's
# official budget (CoOp's; ProMetaR's base learner's), so that it differs from that learner only by
# GRAM's meta-learned init and gradient regulator. The ablations train as the method they ablate.
_OFFICIAL.update({"gram-coop": _OFFICIAL["coop"], "gram-ivlp": _OFFICIAL["prometar"],
                  "metaprompt-clean": _OFFICIAL["metaprompt"], "prometar-netlr": _OFFICIAL["prometar"],
                  "prometar-base": _OFFICIAL["prometar"]})
# Per-dataset overrides of the official budget: CoOp trained ImageNet with vit_b16_ep50_ctxv1.yaml.
_OFFICIAL_DATASET = {("coop", "ImageNet"): {"epochs": 50}, ("gram-coop", "ImageNet"): {"epochs": 50}}
# DG configs where a method has its own: MetaPrompt's Meta_DG (4+4 tokens, batch 32, 6 epochs) and
# MaPLe's cross-dataset config (lr 0.0026, 2 epochs, prompt depth 3); the rest keep their B2N budget.
_OFFICIAL_DG = {
    "metaprompt": OptimConfig(lr=0.0015, epochs=6, batch_size=32),
    "maple": OptimConfig(lr=0.0026, epochs=2, batch_size=4),
}
_DG_PROMPTS = {"metaprompt": _METAPROMPT_DG, "metaprompt-clean": _METAPROMPT_DG,
               "maple": replace(_MAPLE, text_depth=3, vision_depth=3)}
_OFFICIAL_DG["metaprompt-clean"] = _OFFICIAL_DG["metaprompt"]
# Tuned presets: (lr, epochs) from `benchmarks/tune_pocket.py` on suite v3 (grid lr {0.002, 0.008} x
# epochs {2, 4}, CoCoOp {1, 2}; scored by HM on pseudo-base/pseudo-new splits of the *base* classes'
# train pool of emoji-novel-places, flags-pixel and cards, one of each kind; one seed;
# results/tuned/tuning.csv and tuning.log). Validation chose 2 epochs for CoOp, IVLP and GRAM, and
# 4 for MaPLe, MetaPrompt and ProMetaR. Batch 16; the "step" schedule (a per-batch cosine to 0, no
# warm-up); the ablations train exactly as the method they ablate.
_TUNED_LR_EPOCHS = {"coop": (0.002, 2), "cocoop": (0.008, 1), "ivlp": (0.002, 2), "maple": (0.002, 4),
                    "metaprompt": (0.002, 4), "prometar": (0.002, 4), "gram-coop": (0.002, 2),
                    "gram-ivlp": (0.002, 2)}
_TUNED_LR_EPOCHS.update({"metaprompt-clean": _TUNED_LR_EPOCHS["metaprompt"],
                         "prometar-netlr": _TUNED_LR_EPOCHS["prometar"],
                         "prometar-base": _TUNED_LR_EPOCHS["prometar"]})
_TUNED = {name: OptimConfig(lr=lr, epochs=epochs, warmup_epochs=0, batch_size=16, schedule="step")
          for name, (lr, epochs) in _TUNED_LR_EPOCHS.items()}
# Tuned DG: each method's tuned B2N lr, with epochs capped at 2 (CoCoOp 1): the tuning saw only B2N
# base classes and no DG validation was run. MetaPrompt keeps Meta_DG's prompt size and batch (32).
_TUNED_DG = {name: replace(_TUNED[name], epochs=min(_TUNED[name].epochs, 2))
             for name in ("coop", "cocoop", "maple", "metaprompt", "metaprompt-clean")}
for _name in ("metaprompt", "metaprompt-clean"):
    _TUNED_DG[_name] = replace(_TUNED_DG[_name], batch_size=32)
TIERS = ("pocket", "paper")
# Augmentation of a training batch (random resized crop + horizontal flip), per tier. Paper: every
# official config's RandomResizedCrop scale (0.08, 1) (Dassl's INPUT.RRCROP_SCALE default), bicubic
# (INPUT.INTERPOLATION), and random_flip. Pocket (named choices): crops keep >= half the area (a 64-px
# drawing cropped to 8 % is a few pixels of one stroke) and no flips (a mirrored flag, card or text is
# another class or none); bilinear.
AUGMENTATION: dict[str, dict] = {"paper": {"flip": True, "min_scale": 0.08, "interpolation": "bicubic"},
                                 "pocket": {"flip": False, "min_scale": 0.5, "interpolation": "bilinear"}}
SUITES = ("b2n", "dg")


def check_protocol(tier: str, protocol: str) -> None:
    """The tier and protocol exist together: the tuned budgets were chosen on the pocket tier only."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r} — use one of {TIERS}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} — use one of {PROTOCOLS}")
    if protocol == "tuned" and tier != "pocket":
        raise ValueError("the tuned protocol exists on the pocket tier only (its budgets were chosen on the "
                         "pocket suite) — use --protocol official on the paper tier")


def budget(name: str, suite: str = "b2n", protocol: str = "official", dataset: str = "") -> OptimConfig:
    """A method's training budget (optimiser, epochs, batch, schedule) under ``protocol``."""
    if not METHODS[name].trainable:
        return OptimConfig()  # zero-shot CLIP trains nothing: its rows record no budget (run.row_settings)
    if protocol == "tuned":
        return _TUNED_DG.get(name, _TUNED[name]) if suite == "dg" else _TUNED[name]
    optim = _OFFICIAL_DG.get(name, _OFFICIAL[name]) if suite == "dg" else _OFFICIAL[name]
    return replace(optim, **_OFFICIAL_DATASET.get((name, dataset), {}))


def preset(name: str, tier: str = "pocket", suite: str = "b2n", protocol: str = "official",
           dataset: str = "") -> tuple[MethodConfig, OptimConfig, int]:
    """(method recipe, optimisation, shots) of a method on a tier under a protocol, for base-to-new
    (``suite="b2n"``, 16 shots) or domain generalisation (``"dg"``: the method's DG config where it
    has one, 5 shots per class per source domain). ``dataset``: for the official per-dataset
    overrides (CoOp on ImageNet: 50 epochs). A train pool with fewer images per class than the shots
    gives all it has: the rows record the shots actually drawn."""
    method = get_method(name)
    check_protocol(tier, protocol)
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r} — use one of {SUITES}")
    optim = budget(name, suite, protocol, dataset)
    if suite == "b2n":
        return method, optim, PAPER_SHOTS
    if name in _DG_PROMPTS and (protocol == "official" or name.startswith("metaprompt")):
        method = replace(method, prompt=_DG_PROMPTS[name])
    return method, optim, DG_SHOTS
