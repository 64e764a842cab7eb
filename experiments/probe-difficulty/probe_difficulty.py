"""How hard is the unseen-concept probe? Hold two more concept sets out of pretraining and measure them alike.

The prototype figure behind the 50 % bar (data/README.md: unseen concepts 50-way 41–46 %
(327-way 25–27 %), trained on Twemoji + OpenMoji) held out 327 emoji; how it chose them is not
recorded, and we assume at random over all emoji. The committed probe (``emoji-unseen``) holds out 50
*object-like* emoji (Objects, Animals & Nature, Food & Drink, Travel & Places) shown in five styles.
This script trains the image phase at a short budget (the recipe of ``experiments/image-recipes/image_recipes.py``:
the committed text tower, a fresh image tower, seed 0, warm-up min(300, steps // 10)) on the corpus
minus two further sets of 50 emoji, removed in memory (every image of theirs and their rows of the
concept cross-entropy), both drawn from the corpus's emoji that have a plain drawing in all five
probe styles, i.e. what the probe, emoji-pacs and the B2N datasets left over (on the corpus before
the two novel B2N datasets existed, commit 8b41c58, these draws became those datasets,
``NOVEL_B2N`` in metaprompt_lite/data/plan.py; on today's corpus, which lacks them, it draws others):

* ``object``: 50 object-like concepts (a second sample of the probe's kind, from a leftover pool
  richer in Objects and Travel & Places than the probe's);
* ``random``: 50 of the remaining concepts of any category but flags (the prototype's kind, as we
  assume it; the pool is mostly People & Body, Smileys & Emotion and Symbols).

It prints 50-way zero-shot accuracy on each, on their plain Twemoji + OpenMoji drawings (the
prototype's styles) and on their plain drawings in the probe's five styles, next to the committed
probe; how close each held-out name is to a name still in the corpus (cosine of the text tower's
template-ensemble name embeddings: a "sibling" such as *man police officer* beside *police
officer*); and the accuracy without a held-out class whose name another corpus concept still carries
(a leak by name: the object set's emoji *t-shirt* shares its name with Fashion-MNIST's).

One difference remains: the text tower (distilled on the full text corpus) has read these concepts'
captions, the probe's not; with the MiniLM teacher as text side the probe moves by under 2 points
(model card), so this favours the two sets only a little.

Then the two sets (and the probe) as **base-to-new datasets** on the same image tower
(:func:`held_out_b2n`): the first 25 concepts are base, the last 25 new; the pool is each concept's
Twemoji + OpenMoji drawings (plain and the two background variants, 6 per class), the test its Noto,
Fluent and Fluent 3D ones (9). Zero-shot against a linear probe on the pool (base classes) and against
CoOp (pocket preset; ``--coop-epochs``, default the benchmark's 2 and the paper preset's 10; seeds 1-3):
does the papers' starting picture (base up, new down) appear on concepts the image tower never saw,
as it does not on the suite's B2N datasets whose concepts pretraining paired with their names?

Run from the repository root:
  python experiments/probe-difficulty/probe_difficulty.py --sources <npm prefix of the sources> [--steps 1000]
(~13 min for 1,000 steps on 2 cores, ~60 min for 5,000). ``--sources`` is where ``metaprompt-lite data
build`` installed the npm packages (its ``--sources``; default ``$METAPROMPT_SOURCES`` or
~/.cache/metaprompt-lite/sources); the emoji names and categories come from there. Writes
``<work>/results.json``; re-running with the same settings re-evaluates the finished state.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import torch

# the two experiments this one builds on: their scripts, imported by bare name from their folders
EXPERIMENTS = Path(__file__).resolve().parents[1]
for _folder in (EXPERIMENTS / "image-recipes", EXPERIMENTS / "pocket-diagnostics"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from image_recipes import CHECKPOINT, evaluate, fresh_image_phase, short_budget_config  # noqa: E402
from pocket_diagnostics import PROBE_POOL, FeatureCache, gains_by_epochs, headroom_rows  # noqa: E402
from metaprompt_lite.data import load_dataset, split_by_source
from metaprompt_lite.data.store import ImageDataset
from metaprompt_lite.data.plan import EMOJI_CATEGORIES
from metaprompt_lite.data.sources import EmojiMetadata, Sources, default_sources_dir
from metaprompt_lite.data.corpus import ImageTextCorpus, load_corpus
from metaprompt_lite.engine import accuracy
from metaprompt_lite.paths import data_dir
from metaprompt_lite.pretrain import CONCEPT_TEMPLATES, train_image_tower
from metaprompt_lite.core.clip import text_classifier
from metaprompt_lite.zeroshot import image_features

PROBE_STYLES = ("twemoji", "noto", "openmoji", "fluent", "fluent-3d")
PROTOTYPE_STYLES = ("twemoji", "openmoji")
N_HELD = 50
B2N_POOL_STYLES = PROTOTYPE_STYLES  # the rest of PROBE_STYLES is the test, as for the probe (diagnostics part 3)


def choose_holdouts(corpus: ImageTextCorpus, styles: list[str], meta: dict, seed: int = 0) -> dict[str, list[int]]:
    """Two disjoint sets of 50 corpus concepts (indices) with a plain drawing in every probe style."""
    plain = {}
    for i, (concept, style) in enumerate(zip(corpus.concepts.tolist(), styles)):
        if corpus.variant[i] == 0:
            plain.setdefault(concept, set()).add(style)
    eligible = [c for c, have in sorted(plain.items())
                if set(PROBE_STYLES) <= have and corpus.concept_ids[c] in meta
                and meta[corpus.concept_ids[c]].category != "Flags"]
    rng = random.Random(seed)
    objects = [c for c in eligible if meta[corpus.concept_ids[c]].category in EMOJI_CATEGORIES]
    object_set = sorted(rng.sample(objects, N_HELD))
    random_set = sorted(rng.sample([c for c in eligible if c not in set(object_set)], N_HELD))
    return {"random": random_set, "object": object_set}


def without(corpus: ImageTextCorpus, held: set[int]) -> ImageTextCorpus:
    """The corpus minus every image of the ``held`` concepts, concepts re-indexed."""
    keep_concepts = [c for c in range(len(corpus.concept_names)) if c not in held]
    new_index = {c: i for i, c in enumerate(keep_concepts)}
    keep = [i for i, c in enumerate(corpus.concepts.tolist()) if c not in held]
    return ImageTextCorpus(images=corpus.images[keep], captions=[corpus.captions[i] for i in keep],
                           concepts=torch.tensor([new_index[corpus.concepts[i].item()] for i in keep]),
                           concept_names=[corpus.concept_names[c] for c in keep_concepts],
                           concept_ids=[corpus.concept_ids[c] for c in keep_concepts],
                           variant=[corpus.variant[i] for i in keep] if corpus.variant else [],
                           styles=[corpus.styles[i] for i in keep] if corpus.styles else [],
                           style_names=corpus.style_names)


def held_out_rows(corpus: ImageTextCorpus, styles: list[str], concepts: list[int],
                  which_styles: tuple[str, ...]) -> tuple[list[int], torch.Tensor]:
    """The plain (variant 0) images of ``concepts`` in ``which_styles``, and their labels (positions in
    ``concepts``)."""
    label_of = {c: k for k, c in enumerate(concepts)}
    rows = [i for i, (c, s) in enumerate(zip(corpus.concepts.tolist(), styles))
            if c in label_of and s in which_styles and corpus.variant[i] == 0]
    return rows, torch.tensor([label_of[corpus.concepts[i].item()] for i in rows], dtype=torch.long)


def held_out_accuracy(backbone, corpus: ImageTextCorpus, styles: list[str], concepts: list[int],
                      which_styles: tuple[str, ...], templates: list[str], per_class: bool = False):
    """len(concepts)-way zero-shot accuracy on :func:`held_out_rows`; with ``per_class``, also each
    concept's accuracy (in the order of ``concepts``)."""
    rows, labels = held_out_rows(corpus, styles, concepts, which_styles)
    classifier = text_classifier(backbone, [corpus.concept_names[c] for c in concepts], templates)
    logits = image_features(backbone, corpus.images[rows]) @ classifier.t()
    if not per_class:
        return accuracy(logits, labels)
    correct = (logits.argmax(-1) == labels).float()
    return accuracy(logits, labels), [float(correct[labels == k].mean() * 100) for k in range(len(concepts))]


def held_out_b2n(corpus: ImageTextCorpus, styles: list[str], concepts: list[int], templates: list[str],
                 name: str) -> ImageDataset:
    """The held-out ``concepts`` as a base-to-new dataset: every image of theirs in :data:`PROBE_STYLES`
    (plain and variants), labelled by position in ``concepts`` (so the first half are the base classes);
    the few-shot pool (split 0) is the :data:`B2N_POOL_STYLES` drawings, the test (split 1) the others
    (:func:`~metaprompt_lite.data.split_by_source`, with the style as a drawing's source). Raises
    ValueError if a concept lacks a pool or a test image."""
    label_of = {c: k for k, c in enumerate(concepts)}
    rows = [i for i, (c, s) in enumerate(zip(corpus.concepts.tolist(), styles)) if c in label_of and s in PROBE_STYLES]
    dataset = ImageDataset(name=name, suite="b2n", classnames=[corpus.concept_names[c] for c in concepts],
                           templates=list(templates), domains=["all"], images=corpus.images[rows],
                           labels=torch.tensor([label_of[corpus.concepts[i].item()] for i in rows], dtype=torch.long),
                           domain=torch.zeros(len(rows), dtype=torch.long), split=torch.ones(len(rows), dtype=torch.long),
                           drawing=[f"{styles[i]}:{corpus.concept_ids[corpus.concepts[i]]}#{corpus.variant[i]}"
                                    for i in rows])
    return split_by_source(dataset, set(B2N_POOL_STYLES))


def held_out_coop(backbone, datasets: dict[str, ImageDataset], epochs: tuple[int, ...], seeds=(1, 2, 3)) -> dict:
    """Base classes: zero-shot vs a linear probe on the pool; base and new: zero-shot vs CoOp (pocket
    preset, ``epochs`` each) on every dataset, with pocket_diagnostics' measures (its parts 5 and 6)."""
    return {"seeds": list(seeds), "pool_styles": list(B2N_POOL_STYLES),
            "headroom": headroom_rows(backbone, datasets, FeatureCache(backbone)),
            "by_epochs": gains_by_epochs(backbone, backbone.name, backbone.pretrained, datasets, epochs, seeds)}


def name_twins(corpus: ImageTextCorpus, chosen: list[int], held: set[int]) -> list[int]:
    """Held-out concepts whose name (case-folded) a concept still in the corpus also carries."""
    kept = {corpus.concept_names[c].casefold() for c in range(len(corpus.concept_names)) if c not in held}
    return [c for c in chosen if corpus.concept_names[c].casefold() in kept]


def nearest_kept(backbone, names: list[str], kept_names: list[str]) -> torch.Tensor:
    """For each name, the highest cosine between its template-ensemble text embedding and any kept name's."""
    similarity = text_classifier(backbone, names, CONCEPT_TEMPLATES) @ \
        text_classifier(backbone, kept_names, CONCEPT_TEMPLATES).t()
    return similarity.max(1).values


def _siblings(cosines: list[float]) -> str:
    near = sum(c >= 0.9 for c in cosines)
    return f"nearest kept name: mean cosine {sum(cosines) / len(cosines):.3f}, {near}/{len(cosines)} at ≥ 0.9"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--corpus", default=str(data_dir() / "corpus"))
    parser.add_argument("--sources", default=str(default_sources_dir()), help="npm prefix of the sources")
    parser.add_argument("--work", default=".cache/image_recipes/holdout", help="one folder per --steps")
    parser.add_argument("--coop-epochs", type=int, nargs="+", default=[2, 10],
                        help="CoOp budgets of the base-to-new stage (0: skip the stage)")
    args = parser.parse_args()
    corpus, _ = load_corpus(args.corpus)
    if len(corpus.styles) != len(corpus.images) or len(corpus.variant) != len(corpus.images):
        raise SystemExit(f"{args.corpus}/corpus.json lacks per-image styles or variants (an older build); rebuild "
                         f"it with: metaprompt-lite data build --corpus {args.corpus}")
    styles = [corpus.style_names[s] for s in corpus.styles]
    meta = EmojiMetadata(Sources(npm=Path(args.sources))).concepts
    sets = choose_holdouts(corpus, styles, meta)
    held = set(sets["random"]) | set(sets["object"])
    categories = {name: dict(Counter(meta[corpus.concept_ids[c]].category for c in chosen).most_common())
                  for name, chosen in sets.items()}
    print({name: [corpus.concept_names[c] for c in chosen][:8] + ["..."] for name, chosen in sets.items()})

    config = short_budget_config(args.steps)
    work = Path(args.work)
    backbone = fresh_image_phase(config, work, CHECKPOINT)
    start = time.perf_counter()
    report = train_image_tower(backbone, without(corpus, held), config, work / "image.pt")
    report["image_s"] = time.perf_counter() - start
    report["committed_probe"] = evaluate(backbone)
    probe = load_dataset("emoji-unseen")
    probe_templates = probe.templates  # single = the first, as for the probe
    kept_names = [corpus.concept_names[c] for c in range(len(corpus.concept_names)) if c not in held]
    report["committed_probe"]["nearest_kept_cosine"] = nearest_kept(backbone, probe.classnames, kept_names).tolist()
    for name, chosen in sets.items():
        twins = name_twins(corpus, chosen, held)
        clean = [c for c in chosen if c not in twins]
        names = [corpus.concept_names[c] for c in chosen]
        report[name] = {"concepts": names, "categories": categories[name],
                        "name_twins": [corpus.concept_names[c] for c in twins],
                        "nearest_kept_cosine": nearest_kept(backbone, names, kept_names).tolist()}
        for label, which in (("prototype_styles", PROTOTYPE_STYLES), ("probe_styles", PROBE_STYLES)):
            for t_label, templates in (("single", probe_templates[:1]), ("ensemble", probe_templates)):
                report[name][f"{label}_{t_label}"] = held_out_accuracy(backbone, corpus, styles, chosen, which,
                                                                       templates)
        _, report[name]["per_class_probe_styles_single"] = held_out_accuracy(
            backbone, corpus, styles, chosen, PROBE_STYLES, probe_templates[:1], per_class=True)
        by_category: dict[str, list[float]] = {}
        for c, acc in zip(chosen, report[name]["per_class_probe_styles_single"]):
            by_category.setdefault(meta[corpus.concept_ids[c]].category, []).append(acc)
        report[name]["probe_styles_single_by_category"] = {k: sum(v) / len(v) for k, v in by_category.items()}
        print(f"{name}: 5-style single-template accuracy by category", report[name]["probe_styles_single_by_category"])
        for label, which in (("prototype_styles", PROTOTYPE_STYLES), ("probe_styles", PROBE_STYLES)):
            if twins:  # the same, without the classes whose name leaked
                report[name][f"{label}_single_without_twins"] = held_out_accuracy(
                    backbone, corpus, styles, clean, which, probe_templates[:1])
    if args.coop_epochs != [0]:
        print("base-to-new on the held-out concepts (25 base / 25 new, pool = Twemoji + OpenMoji):")
        datasets = {f"held-out {name}": held_out_b2n(corpus, styles, chosen, probe_templates, f"held-out-{name}")
                    for name, chosen in sets.items()}
        datasets["committed probe"] = split_by_source(probe, set(PROBE_POOL))
        report["base_to_new"] = held_out_coop(backbone, datasets, tuple(args.coop_epochs))
    (work / "results.json").write_text(json.dumps(report, indent=2))
    p = report["committed_probe"]
    print(f"committed probe (object-like, 5 styles): {p['probe']:.1f} (ens {p['probe_ensemble']:.1f}) "
          f"B2N base/new/HM {p['b2n_base']:.2f}/{p['b2n_new']:.2f}/{p['b2n_hm']:.2f}; "
          f"{_siblings(p['nearest_kept_cosine'])}")
    for name in sets:
        r = report[name]
        twins = (f"; without the name twins {r['name_twins']}: {r['prototype_styles_single_without_twins']:.1f} / "
                 f"{r['probe_styles_single_without_twins']:.1f}") if r["name_twins"] else ""
        print(f"{name:>7}: Twemoji+OpenMoji {r['prototype_styles_single']:.1f} (ens {r['prototype_styles_ensemble']:.1f}); "
              f"5 styles {r['probe_styles_single']:.1f} (ens {r['probe_styles_ensemble']:.1f}){twins}; "
              f"{_siblings(r['nearest_kept_cosine'])}; categories {r['categories']}")
    print(f"image phase {report['image_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
