"""One run = one method on one dataset (base-to-new) or one held-out domain (DG), one seed.

Explained in ``notebooks/06_metaprompt_end_to_end``. The benchmark (``metaprompt-lite bench``) loops over
these; ``metaprompt-lite train`` runs one and prints its :class:`RunConfig` first.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from metaprompt_lite.backbone import load_clip
from metaprompt_lite.core.clip import Backbone
from metaprompt_lite.checkpoints import load_checkpoint, resume
from metaprompt_lite.core.loop import TrainState
from metaprompt_lite.optim import OptimConfig, steps_for
from metaprompt_lite.engine import accuracy, seed_everything, train
from metaprompt_lite.fastpath import batch_cache, frozen_features
from metaprompt_lite.methods import AUGMENTATION, MethodConfig, get_method, preset, prompted_clip, start_training
from metaprompt_lite.core.prompts import PromptedCLIP
from metaprompt_lite.splits import base_class_shots, base_new_split, dg_pools, few_shot_indices, smallest_pool
from metaprompt_lite.core.steps import compute_logits
from metaprompt_lite.zeroshot import base_new


@dataclass
class RunConfig:
    """Every knob of one run, printed at its start."""

    method: str = "coop"
    # the method's resolved recipe (the preset's, with any change asked for, e.g. meta_order=2);
    # None: the method's recipe as :data:`~metaprompt_lite.methods.METHODS` holds it
    recipe: MethodConfig | None = None
    protocol: str = "official"  # whose budget: "official" (the papers') or "tuned" (pocket validation)
    dataset: str = "emoji-novel-places"
    target: str | None = None  # DG: the held-out domain
    model: str = "tiny-clip"
    pretrained: str | None = None
    seed: int = 1
    shots: int = 16
    device: str = "cpu"
    flip: bool = False  # horizontal flips in augmentation (wrong for flags, cards, text)
    min_scale: float = 0.5  # random resized crop: smallest area kept (paper tier 0.08, pocket 0.5)
    interpolation: str = "bilinear"  # resizing a crop back (paper tier: Dassl's bicubic)
    optim: OptimConfig = field(default_factory=OptimConfig)
    gram_artifact: str | None = None  # GRAM's meta-learned prompts; None = data/gram/<model>-<method>.pt
    out_dir: str | None = None  # checkpoints go here (resumable runs); None = no checkpoints
    checkpoint_every: int = 50
    progress: bool = True

    def key(self) -> str:
        """A short hash of everything that changes the result (not device, progress, out_dir)."""
        payload = {k: v for k, v in asdict(self).items() if k not in ("device", "progress", "out_dir")}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def __post_init__(self) -> None:
        if self.recipe is None:
            self.recipe = get_method(self.method)


def preset_run(method: str, tier: str = "pocket", suite: str = "b2n", protocol: str = "official",
               **fields) -> RunConfig:
    """The :class:`RunConfig` of a method's preset (:func:`~metaprompt_lite.methods.preset`) on a tier and
    suite under a protocol: its recipe (MetaPrompt's DG runs: 4+4 prompts), optimisation, shots and
    the tier's augmentation. ``fields``: the rest (``dataset`` also picks the official per-dataset
    overrides)."""
    recipe, optim, shots = preset(method, tier, suite, protocol, fields.get("dataset", ""))
    return RunConfig(method=method, recipe=recipe, protocol=protocol, optim=optim, shots=shots,
                     **{**AUGMENTATION[tier], **fields})


def training_set(config: RunConfig, dataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(indices into ``dataset``, labels, source-domain ids or None) of the images a run trains on:
    ``shots`` per base class of the train pool (base-to-new), or per class per source domain (DG,
    domains renumbered 0..n_sources-1). The same draw for every method with the run's seed."""
    if config.target is None:
        index, labels = base_class_shots(dataset, config.shots, config.seed)
        return index, labels, None
    if config.target not in dataset.domains:
        raise ValueError(f"unknown target domain {config.target!r}; {dataset.name} has {list(dataset.domains)}")
    target = dataset.domains.index(config.target)
    drawable, _ = dg_pools(dataset.split, dataset.domain, target)
    source = drawable.nonzero().flatten()
    shots = few_shot_indices(dataset.labels[source], config.shots, config.seed, groups=dataset.domain[source])
    index = source[shots]
    _, domains = dataset.domain[index].unique(return_inverse=True)
    return index, dataset.labels[index], domains


def drawn_shots(config: RunConfig, dataset) -> int:
    """The shots a run actually trains on: ``config.shots`` capped at the fewest images one class has
    to draw from (:func:`~metaprompt_lite.splits.smallest_pool`; per source domain in DG). Below
    ``config.shots`` when the train pool is smaller (the offline suite: 4 to 8)."""
    return min(config.shots, smallest_pool(dataset, config.target))


def row_settings(config: RunConfig, dataset, weights: str, code: str) -> dict[str, Any]:
    """What made a results row besides its key: protocol, backbone and weights (``provenance.weights_id``),
    the budget (epochs, batch, lr, shots actually drawn, ``max_steps`` when set) and the code version.
    An untrained method (zero-shot CLIP) has no budget: zeros (``max_steps`` is the benchmark's, so
    that one file holds one value of it)."""
    trained = config.recipe.trainable
    optim = config.optim
    return {"protocol": config.protocol, "model": config.model, "weights": weights,
            "epochs": optim.epochs if trained else 0, "batch_size": optim.batch_size if trained else 0,
            "lr": f"{optim.lr:g}" if trained else "0", "shots": drawn_shots(config, dataset) if trained else 0,
            "max_steps": "" if optim.max_steps is None else optim.max_steps, "code": code}


def load_backbone(model: str, pretrained: str | None, device: str = "cpu") -> Backbone:
    """The frozen backbone of a run, of ``train``, ``bench`` and every command: ``pretrained`` a
    checkpoint path or open_clip tag (:func:`~metaprompt_lite.backbone.load_clip`), or None for random
    weights drawn from seed 0, so that every process builds the same model."""
    if pretrained is not None:
        return load_clip(model, pretrained, device)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return load_clip(model, None, device)


def _fit(config: RunConfig, model: PromptedCLIP, method: MethodConfig, images, labels, domains,
         cross_domain: bool, batch_cache: dict | None = None) -> TrainState:
    total, warmup = steps_for(len(images), config.optim)
    state, step = start_training(model, method, config.optim, total, warmup, config.seed, cross_domain,
                                 gram_artifact=config.gram_artifact)
    path = None
    if config.out_dir is not None:
        path = Path(config.out_dir) / f"{config.method}-{config.dataset}-{config.target or 'b2n'}-s{config.seed}-{config.key()}.pt"
        if path.is_file():
            resume(state, load_checkpoint(path))
    return train(state, step, images, labels, domains, config.optim,
                 total, checkpoint_path=path, checkpoint_every=config.checkpoint_every,
                 flip=config.flip, min_scale=config.min_scale, progress=config.progress, batch_cache=batch_cache,
                 interpolation=config.interpolation)


def evaluate(model: PromptedCLIP, method: MethodConfig, images, labels: torch.Tensor,
             classnames: list[str], frozen: torch.Tensor | None = None, batch_size: int = 128) -> float:
    """Top-1 accuracy (%) over ``classnames``. ``frozen``: precomputed frozen f_I of ``images``."""
    model.set_classes(classnames)
    model.eval()
    device = model.backbone.device
    chunks = []
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            stop = min(start + batch_size, len(labels))
            x = images[start:stop].to(device)
            f = frozen[start:stop].to(device) if frozen is not None else None
            chunks.append(compute_logits(model, method, x, frozen_image=f).logits.float().cpu())
    return accuracy(torch.cat(chunks), labels)


def evaluate_base_new(model: PromptedCLIP, method: MethodConfig, dataset, backbone: Backbone | None = None,
                      cache: dict | None = None) -> dict[str, float]:
    """Base, new and HM accuracy (%) of ``model`` on ``dataset``'s test images
    (:func:`metaprompt_lite.zeroshot.base_new`); then the model is back on the base classes. With a
    ``backbone``, the frozen image features come from :func:`frozen_features` (memoised in ``cache``)."""
    names, templates = list(dataset.classnames), model.templates
    test = (dataset.split == 1).nonzero().flatten()

    def accuracy_of(index: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor) -> float:
        frozen = None if backbone is None else frozen_features(backbone, dataset, test[index], cache)
        return evaluate(model, method, dataset.images[test[index]], labels, [names[i] for i in classes], frozen)

    result = base_new(dataset.labels[test], len(names), accuracy_of)
    model.set_classes([names[i] for i in base_new_split(len(names))[0]], templates)
    return result


def run_base_to_new(config: RunConfig, dataset, backbone: Backbone | None = None,
                    cache: dict | None = None) -> dict[str, Any]:
    """Train on ``shots`` per base class (train pool), test on base and on new test images."""
    if config.target is not None:
        raise ValueError(f"--target {config.target} is for DG benchmarks; {dataset.name} is a base-to-new "
                         "dataset — drop --target")
    backbone = backbone or load_backbone(config.model, config.pretrained, config.device)
    seed_everything(config.seed)
    method = config.recipe
    base, _ = base_new_split(len(dataset.classnames))
    train_index, train_labels, _ = training_set(config, dataset)
    model = prompted_clip(backbone, method, [dataset.classnames[i] for i in base], dataset.templates, dataset.name,
                          seed=config.seed, cache=cache)
    t0 = time.perf_counter()
    state = None
    if method.trainable:
        state = _fit(config, model, method, dataset.images[train_index], train_labels,
                     None, cross_domain=False,
                     batch_cache=batch_cache(cache, backbone, dataset, None, config.seed, train_index))
    # a resumed run's checkpoint carries the seconds of its earlier part: the row counts the whole run
    train_s = state.train_s if state is not None else time.perf_counter() - t0
    result = evaluate_base_new(model, method, dataset, backbone, cache)
    result["train_s"] = train_s
    result["history"] = state.history if state is not None else []
    return result


def base_new_gain(config: RunConfig, dataset, backbone: Backbone | None = None,
                  seeds: tuple[int, ...] = (1,)) -> dict[str, Any]:
    """Zero-shot CLIP beside ``config.method`` (one base-to-new run per seed) on ``dataset``: the papers'
    starting picture is a trained prompt with ``base`` above ``zs_base`` and ``new`` below ``zs_new``.
    Returns ``zs_base``, ``zs_new``, the method's seed means ``base``, ``new`` and ``base_per_seed``,
    ``new_per_seed``."""
    zero_shot = run_base_to_new(replace(config, method="zsclip", recipe=None), dataset, backbone)
    runs = [run_base_to_new(replace(config, seed=seed), dataset, backbone) for seed in seeds]
    base, new = [r["base"] for r in runs], [r["new"] for r in runs]
    return {"zs_base": zero_shot["base"], "zs_new": zero_shot["new"], "base": sum(base) / len(base),
            "new": sum(new) / len(new), "base_per_seed": base, "new_per_seed": new}


def run_domain_generalization(config: RunConfig, dataset, backbone: Backbone | None = None,
                              cache: dict | None = None) -> dict[str, Any]:
    """Train on ``shots`` per class per source domain (their train pools), test on ``config.target``'s
    test pool (:func:`~metaprompt_lite.splits.dg_pools`: every image of it on the offline suite)."""
    train_index, train_labels, domains = training_set(config, dataset)
    backbone = backbone or load_backbone(config.model, config.pretrained, config.device)
    seed_everything(config.seed)
    method = config.recipe
    target = dataset.domains.index(config.target)
    model = prompted_clip(backbone, method, dataset.classnames, dataset.templates, dataset.name, seed=config.seed,
                          cache=cache)
    t0 = time.perf_counter()
    state = None
    if method.trainable:
        state = _fit(config, model, method, dataset.images[train_index], train_labels,
                     domains, cross_domain=True,
                     batch_cache=batch_cache(cache, backbone, dataset, config.target, config.seed, train_index))
    # a resumed run's checkpoint carries the seconds of its earlier part: the row counts the whole run
    train_s = state.train_s if state is not None else time.perf_counter() - t0
    test = dg_pools(dataset.split, dataset.domain, target)[1].nonzero().flatten()
    acc = evaluate(model, method, dataset.images[test], dataset.labels[test], list(dataset.classnames),
                   frozen_features(backbone, dataset, test, cache))
    return {"acc": acc, "train_s": train_s, "history": state.history if state is not None else []}
