"""Zero-shot CLIP: hand templates, template ensembles, all/base/new and per-domain accuracy.

Explained in ``notebooks/01_zero_shot_clip``. Logits = s · f_I(x) · f_T(classes)ᵀ with
f_T = normalised mean over templates of normalised text features (CLIP's ensemble).
Image features are computed once per dataset and shared by every evaluation here.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.nn import functional as F

from metaprompt_lite.backbone import image_features  # zero-shot CLIP's f_I
from metaprompt_lite.core.clip import Backbone, text_classifier
from metaprompt_lite.data import list_datasets, load_dataset
from metaprompt_lite.engine import accuracy, harmonic_mean
from metaprompt_lite.splits import base_new_split, select_classes


@torch.no_grad()
def _acc(features: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor) -> float:
    return accuracy(features @ classifier.t(), labels)


def base_new(labels: torch.Tensor, n_classes: int, accuracy_of: Callable) -> dict[str, float]:
    """The base-to-new evaluation (the CoCoOp protocol), for any scorer: base test images among the
    base classes, new among the new, each relabelled 0..k−1, and their HM. ``accuracy_of(index,
    relabelled, classes)`` scores the examples ``index`` of ``labels`` against ``classes``."""
    base, new = base_new_split(n_classes)
    row = {}
    for name, classes in (("base", base), ("new", new)):
        index, relabelled = select_classes(labels, classes)
        row[name] = accuracy_of(index, relabelled, classes)
    row["hm"] = harmonic_mean(row["base"], row["new"])
    return row


def base_new_scores(features: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor) -> dict:
    """{all, base, new, hm} accuracy of normalised image ``features`` against a [C, E] ``classifier``
    (:func:`base_new`)."""
    return {"all": _acc(features, labels, classifier),
            **base_new(labels, len(classifier), lambda index, relabelled, classes: _acc(
                features[index], relabelled, classifier[classes]))}


def domain_scores(features: torch.Tensor, dataset, classifier: torch.Tensor) -> dict[str, float]:
    """{domain: accuracy} of normalised ``features`` of all of ``dataset``'s images."""
    return {domain: _acc(features[dataset.domain == d], dataset.labels[dataset.domain == d], classifier)
            for d, domain in enumerate(dataset.domains)}


def zero_shot_base_to_new(backbone: Backbone, dataset) -> list[dict]:
    """Rows (dataset, templates, all, base, new, hm) on the test pool, single and ensemble."""
    test = (dataset.split == 1).nonzero().flatten()
    features, labels = image_features(backbone, dataset.images[test]), dataset.labels[test]
    rows = []
    for kind, templates in (("single", dataset.templates[:1]), ("ensemble", dataset.templates)):
        classifier = text_classifier(backbone, dataset.classnames, templates)
        rows.append({"dataset": dataset.name, "templates": kind, **base_new_scores(features, labels, classifier)})
    return rows


def zero_shot_domains(backbone: Backbone, dataset) -> list[dict]:
    """Rows (benchmark, target, templates, acc): accuracy on every domain's images."""
    features = image_features(backbone, dataset.images)
    rows = []
    for kind, templates in (("single", dataset.templates[:1]), ("ensemble", dataset.templates)):
        classifier = text_classifier(backbone, dataset.classnames, templates)
        rows += [{"benchmark": dataset.name, "target": domain, "templates": kind, "acc": acc}
                 for domain, acc in domain_scores(features, dataset, classifier).items()]
    return rows


def chance(dataset, subset: str = "all") -> float:
    n = len(dataset.classnames)
    base, new = base_new_split(n)
    return 100.0 / {"all": n, "base": len(base), "new": len(new)}[subset]


def zero_shot_suite(backbone: Backbone, suite: str = "b2n", root=None) -> list[dict]:
    """Zero-shot rows for every dataset of a suite: ``b2n`` (all/base/new/hm), ``dg`` (per domain),
    ``probe`` (all classes: concepts held out of pocket-CLIP pretraining)."""
    rows = []
    for name in list_datasets(suite):
        dataset = load_dataset(name, root)
        if suite == "dg":
            rows += zero_shot_domains(backbone, dataset)
        else:
            for row in zero_shot_base_to_new(backbone, dataset):
                row["chance"] = chance(dataset)
                row["classes"] = len(dataset.classnames)
                rows.append(row)
    return rows


def format_rows(rows: list[dict]) -> str:
    """A plain text table (floats with one decimal)."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [[f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
