"""Zero-shot CLIP (``metaprompt_lite.zeroshot``) against answers known in advance.

Most tests run the functions on a *fake* backbone whose text and image features are written by
hand: the tokenizer maps each full prompt string to a row of a table, ``encode_text`` returns that
row, and the "images" are feature vectors that ``encode_image`` passes through. The expected
accuracies then follow from plane geometry (angles written next to each vector), not from the code
under test. The last tests run the real ``tiny-clip`` and compare with a reference computed
directly from ``open_clip``'s ``encode_text`` / ``encode_image``.

The rules checked (docs/methods.md: the evaluation protocol and zero-shot CLIP):
  - base = first ceil(n/2) sorted class ids, new = the rest; base accuracy on base test images
    among base classes only, new accuracy on new test images among new classes only (CoCoOp);
    HM = 2·b·n/(b+n); only the test pool (split 1) is evaluated.
  - template ensemble = mean of normalised text features over templates, renormalised;
    "single" = the dataset's first template.
  - DG: accuracy on every image of each domain (as ``run_domain_generalization`` tests a target).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F

from metaprompt_lite import zeroshot
from metaprompt_lite.core.clip import text_classifier
from metaprompt_lite.zeroshot import (
    chance,
    format_rows,
    image_features,
    zero_shot_base_to_new,
    zero_shot_domains,
    zero_shot_suite,
)
from tolerances import assert_reorder_close, clip_terms


# --------------------------------------------------------------------------- a hand-built backbone


class _FakeCLIP:
    """``encode_text``: row lookup in a table of hand-written text features; ``encode_image``:
    the identity (the dataset's "images" are already feature vectors)."""

    def __init__(self, text_table: torch.Tensor):
        self.text_table = text_table

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text_table[tokens]

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.clone()


class _FakeTokenizer:
    """Maps each *exact* prompt string to one id; an unknown string (e.g. a class name whose
    underscore was not replaced by a space) raises, naming it."""

    def __init__(self, prompts: list[str]):
        self.prompts = prompts

    def __call__(self, texts) -> torch.Tensor:
        missing = [t for t in texts if t not in self.prompts]
        if missing:
            raise KeyError(f"the fake tokenizer has no features for {missing}")
        return torch.tensor([self.prompts.index(t) for t in texts])


def fake_backbone(text: dict[str, list[float] | torch.Tensor]) -> SimpleNamespace:
    """A stand-in for :class:`~metaprompt_lite.core.clip.Backbone` with the attributes zeroshot uses."""
    prompts = list(text)
    table = torch.stack([torch.as_tensor(text[p], dtype=torch.float32) for p in prompts])
    return SimpleNamespace(model=_FakeCLIP(table), tokenizer=_FakeTokenizer(prompts),
                           device=torch.device("cpu"), embed_dim=table.shape[1],
                           preprocess=lambda x: x.float())


def fake_dataset(features, labels, split=None, domain=None, classnames=None, templates=None,
                 domains=("only",), name="fake") -> SimpleNamespace:
    n = len(labels)
    return SimpleNamespace(
        name=name, classnames=list(classnames), templates=list(templates), domains=list(domains),
        images=torch.tensor(features, dtype=torch.float32), labels=torch.tensor(labels),
        split=torch.tensor(split if split is not None else [1] * n),
        domain=torch.tensor(domain if domain is not None else [0] * n),
    )


E4 = torch.eye(4)
BASE_PLANE, NEW_PLANE = (0, 1), (2, 3)


def at(degrees: float, plane: tuple[int, int], norm: float = 1.0) -> torch.Tensor:
    """A 4-d vector of length ``norm`` at ``degrees`` inside the plane spanned by two axes."""
    r = math.radians(degrees)
    return norm * (math.cos(r) * E4[plane[0]] + math.sin(r) * E4[plane[1]])


# Two templates, four classes (base = {0, 1} in the e0/e1 plane, new = {2, 3} in the e2/e3 plane).
# Class 0 is "sea_lion": the prompts must say "sea lion" (CLIP's class-name cleaning).
T0, T1 = "a photo of a {}.", "a sketch of a {}."
ENS_CLASSES = ["sea_lion", "cat", "dog", "owl"]
ENS_TEXT = {
    # T0 puts every class on an axis
    "a photo of a sea lion.": at(0, BASE_PLANE), "a photo of a cat.": at(90, BASE_PLANE),
    "a photo of a dog.": at(0, NEW_PLANE), "a photo of a owl.": at(90, NEW_PLANE),
    # T1 moves class 0 to 60° with length 3 (only per-template normalisation removes that length)
    # and class 3 to 30° in the new plane
    "a sketch of a sea lion.": at(60, BASE_PLANE, norm=3.0), "a sketch of a cat.": at(90, BASE_PLANE),
    "a sketch of a dog.": at(0, NEW_PLANE), "a sketch of a owl.": at(30, NEW_PLANE),
}
# The ensemble by docs/methods.md: normalise per template, average, renormalise -> the bisectors.
ENS_EXPECTED_CLASSIFIER = torch.stack([at(30, BASE_PLANE), at(90, BASE_PLANE), at(0, NEW_PLANE), at(60, NEW_PLANE)])
# Decision boundaries between the two classes of a plane (angle of the image feature):
#   base plane: T0 only 45°, correct ensemble 60°, ensemble without per-template normalisation
#   (class 0 at 46.1°) 68.05°, T1 only 75°, ensemble without renormalisation 52.9°;
#   new plane:  T0 only 45°, correct ensemble 30°, T1 only 15°, without renormalisation 37.1°.
# (label, angle, plane, split); the right-hand comments say which classifiers get it right.
ENS_IMAGES = [
    (0, 50, BASE_PLANE, 1),  # T0 wrong, ensemble right
    (0, 56, BASE_PLANE, 1),  # T0 wrong, ensemble right, un-renormalised sum wrong
    (1, 64, BASE_PLANE, 1),  # T0 right, ensemble right, un-normalised mean wrong, T1 wrong
    (1, 71, BASE_PLANE, 1),  # T0 right, ensemble right, T1 wrong
    (2, 10, NEW_PLANE, 1),  # right for every classifier
    (3, 40, NEW_PLANE, 1),  # T0 wrong, ensemble right, T1 right
    (3, 80, NEW_PLANE, 1),  # right for every classifier
    (2, 70, NEW_PLANE, 1),  # wrong for every classifier
    (0, 85, BASE_PLANE, 0),  # train pool: wrong everywhere, must not be counted
    (2, 85, NEW_PLANE, 0),  # train pool: wrong everywhere, must not be counted
]


def ensemble_dataset(**overrides) -> SimpleNamespace:
    args = dict(features=[at(a, p).tolist() for _, a, p, _ in ENS_IMAGES],
                labels=[y for y, *_ in ENS_IMAGES], split=[s for *_, s in ENS_IMAGES],
                classnames=ENS_CLASSES, templates=[T0, T1])
    args.update(overrides)
    return fake_dataset(**args)


# --------------------------------------------------------------------------- text_classifier / image_features


def test_text_classifier_is_the_renormalised_mean_of_normalised_template_features():
    """The ensemble classifier must be normalise-per-template -> mean -> renormalise (docs/methods.md): on
    the hand table that is the bisector of the two templates' directions for every class, whatever
    the templates' lengths (T1's class 0 has length 3). A plain mean of raw features would put
    class 0 at 46.1° instead of 30°; a missing renormalisation gives norms ≠ 1."""
    backbone = fake_backbone(ENS_TEXT)
    classifier = text_classifier(backbone, ENS_CLASSES, [T0, T1])
    assert classifier.shape == (4, 4)
    # normalise each template's 4-d rows, average two, renormalise: under 16 additions of unit size
    assert_reorder_close(classifier, ENS_EXPECTED_CLASSIFIER, 16, scale=1.0)
    single = text_classifier(backbone, ENS_CLASSES, [T1])  # one template: just its normalised rows
    assert_reorder_close(single, torch.stack([at(60, BASE_PLANE), at(90, BASE_PLANE),
                                              at(0, NEW_PLANE), at(30, NEW_PLANE)]), 16, scale=1.0)


def test_image_features_are_normalised_batched_and_handle_empty_input():
    """Image features are L2-normalised, identical whatever the batch size (5 images in batches of
    2 cover a partial last batch) and in input order; no images give an empty [0, E] tensor."""
    backbone = fake_backbone({"x": [1.0, 0.0, 0.0]})
    images = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0], [1.0, 1.0, 1.0], [0.0, 5.0, 0.0], [6.0, 0.0, 8.0]])
    expected = images / images.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(image_features(backbone, images, batch_size=2), expected)
    torch.testing.assert_close(image_features(backbone, images), expected)
    assert image_features(backbone, images[:0]).shape == (0, 3)


# --------------------------------------------------------------------------- base / new / all


def test_base_to_new_accuracies_follow_the_cocoop_protocol():
    """Five classes, one-hot text features (both templates point the same way, so single ==
    ensemble). base = {0, 1, 2} (ceil(5/2) = 3), new = {3, 4}. Test images:
        class 0 at e0                      all ✓  base ✓
        class 1 at 0.4·e1 + 0.6·e3         all ✗ (→3)  base ✓ (3 is not a base class)
        class 2 at e2                      all ✓  base ✓
        class 3 at 0.7·e0 + 0.3·e3         all ✗ (→0)  new ✓ (0 is not a new class)
        class 4 at 0.2·e4 + 0.8·e3         all ✗  new ✗
        class 4 at e4                      all ✓  new ✓
    so all = 3/6 = 50, base = 3/3 = 100, new = 2/3, HM = 80. Three train-pool images that every
    classifier gets wrong must be ignored. Catches: scoring base/new against all classes (base
    66.7, new 33.3), unrelabelled new labels (new 0), floor instead of ceil for the split (new 75),
    evaluating the train pool too."""
    eye = torch.eye(5)
    names = ["airplane", "bus", "car", "deer", "elk"]
    text = {}
    for template, scale in (("a photo of a {}.", 1.0), ("itap of a {}.", 7.0)):
        for c, name in enumerate(names):
            text[template.format(name)] = scale * eye[c]
    features = [eye[0], 0.4 * eye[1] + 0.6 * eye[3], eye[2], 0.7 * eye[0] + 0.3 * eye[3],
                0.2 * eye[4] + 0.8 * eye[3], eye[4],
                eye[1], eye[4], eye[4]]  # train pool: class 0 at e1, class 3 at e4 wrong; class 4 at e4 right
    dataset = fake_dataset([f.tolist() for f in features], [0, 1, 2, 3, 4, 4, 0, 3, 4],
                           split=[1, 1, 1, 1, 1, 1, 0, 0, 0], classnames=names,
                           templates=["a photo of a {}.", "itap of a {}."], name="five")
    rows = zero_shot_base_to_new(fake_backbone(text), dataset)
    expected = {"all": 50.0, "base": 100.0, "new": 200 / 3, "hm": 80.0}
    assert [r["templates"] for r in rows] == ["single", "ensemble"]
    for row in rows:
        assert row["dataset"] == "five"
        assert set(row) == {"dataset", "templates", "all", "base", "new", "hm"}
        assert {k: row[k] for k in expected} == pytest.approx(expected, abs=1e-4)


def test_single_template_versus_ensemble_rows():
    """The hand geometry of ``ENS_IMAGES`` (see the comments there): with the first template only,
    base = 2/4, new = 2/4, all = 4/8 -> 50/50/50, HM 50; with the correct ensemble base = 4/4,
    new = 3/4, all = 7/8, HM = 2·100·75/175. The wrong variants would give: last template as
    "single" all 62.5; raw-feature mean all 75; ensemble without renormalising all 75."""
    rows = zero_shot_base_to_new(fake_backbone(ENS_TEXT), ensemble_dataset())
    single, ensemble = rows
    assert single["templates"] == "single" and ensemble["templates"] == "ensemble"
    assert {k: single[k] for k in ("all", "base", "new", "hm")} == pytest.approx(
        {"all": 50.0, "base": 50.0, "new": 50.0, "hm": 50.0}, abs=1e-4)
    assert {k: ensemble[k] for k in ("all", "base", "new", "hm")} == pytest.approx(
        {"all": 87.5, "base": 100.0, "new": 75.0, "hm": 15000 / 175}, abs=1e-4)


def test_single_row_uses_the_first_template_whatever_the_order():
    """Swapping the dataset's templates makes T1 the "single" one: base 2/4 (64° and 71° go to
    class 0), new 3/4 (40° goes to class 3 since T1 puts it at 30°), all 5/8. The ensemble is
    order-free, so its row must not change."""
    rows = zero_shot_base_to_new(fake_backbone(ENS_TEXT), ensemble_dataset(templates=[T1, T0]))
    single, ensemble = rows
    assert {k: single[k] for k in ("all", "base", "new")} == pytest.approx(
        {"all": 62.5, "base": 50.0, "new": 75.0}, abs=1e-4)
    assert {k: ensemble[k] for k in ("all", "base", "new")} == pytest.approx(
        {"all": 87.5, "base": 100.0, "new": 75.0}, abs=1e-4)


# --------------------------------------------------------------------------- domains


def test_zero_shot_domains_per_domain_accuracy_on_every_image_of_the_domain():
    """The eight ``ENS_IMAGES`` test images split into two domains (interleaved, and with both train
    and test pool members, since a DG target is tested on all its images):
        photo  = 0@50 ✗/✓, 1@64 ✓/✓, 2@10 ✓/✓, 2@70 ✗/✗, 0@56 ✗/✓   (T0 / ensemble)
        sketch = 1@71 ✓/✓, 3@40 ✗/✓, 3@80 ✓/✓
    -> single: photo 2/5 = 40, sketch 2/3; ensemble: photo 4/5 = 80, sketch 100. Rows come in
    order single×(photo, sketch) then ensemble×(photo, sketch)."""
    test_images = ENS_IMAGES[:8]
    domain = [0, 0, 0, 1, 0, 1, 1, 0]  # photo: 0@50, 0@56, 1@64, 2@10, 2@70; sketch: 1@71, 3@40, 3@80
    split = [1, 0, 1, 0, 1, 1, 0, 0]
    dataset = fake_dataset([at(a, p).tolist() for _, a, p, _ in test_images], [y for y, *_ in test_images],
                           split=split, domain=domain, classnames=ENS_CLASSES, templates=[T0, T1],
                           domains=["photo", "sketch"], name="toy-dg")
    rows = zero_shot_domains(fake_backbone(ENS_TEXT), dataset)
    got = [(r["benchmark"], r["target"], r["templates"], r["acc"]) for r in rows]
    expected = [("toy-dg", "photo", "single", 40.0), ("toy-dg", "sketch", "single", 200 / 3),
                ("toy-dg", "photo", "ensemble", 80.0), ("toy-dg", "sketch", "ensemble", 100.0)]
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    assert [g[3] for g in got] == pytest.approx([e[3] for e in expected], abs=1e-4)
    assert all(set(r) == {"benchmark", "target", "templates", "acc"} for r in rows)


# --------------------------------------------------------------------------- chance, suite, table


@pytest.mark.parametrize("n, expected", [
    (2, {"all": 50.0, "base": 100.0, "new": 100.0}),
    (5, {"all": 20.0, "base": 100 / 3, "new": 50.0}),  # base = 3 classes, new = 2
    (6, {"all": 100 / 6, "base": 100 / 3, "new": 100 / 3}),
    (11, {"all": 100 / 11, "base": 100 / 6, "new": 20.0}),
])
def test_chance_is_one_over_the_number_of_classes_of_the_subset(n, expected):
    """Chance accuracy (%) = 100 / #classes scored: all n, base ceil(n/2), new floor(n/2)."""
    dataset = SimpleNamespace(classnames=[f"c{i}" for i in range(n)])
    assert chance(dataset) == pytest.approx(expected["all"])
    for subset, value in expected.items():
        assert chance(dataset, subset) == pytest.approx(value)


def test_chance_rejects_unknown_subsets_and_too_few_classes():
    """An unknown subset name or a one-class dataset (no base-to-new split) is an error, not a number."""
    with pytest.raises(KeyError):
        chance(SimpleNamespace(classnames=["a", "b"]), "novel")
    with pytest.raises(ValueError):
        chance(SimpleNamespace(classnames=["a"]))


def test_zero_shot_suite_routes_suites_and_adds_chance_and_class_count(monkeypatch):
    """``zero_shot_suite`` loads every dataset of the suite (passing ``root`` on): b2n/probe rows are
    the base-to-new rows plus ``chance`` (= 100/n over all classes) and ``classes``; dg rows are the
    per-domain rows. Checked with the hand-built backbone, so the numbers are those of the tests
    above."""
    datasets = {"ens": ensemble_dataset(name="ens"),
                "ens-dg": ensemble_dataset(name="ens-dg", domain=[0, 1] * 5, domains=["a", "b"])}
    seen = []
    suites = {"b2n": ["ens"], "probe": ["ens"], "dg": ["ens-dg"]}
    monkeypatch.setattr(zeroshot, "list_datasets", lambda suite: suites[suite])

    def load(name, root=None):
        seen.append((name, root))
        return datasets[name]

    monkeypatch.setattr(zeroshot, "load_dataset", load)
    backbone = fake_backbone(ENS_TEXT)
    rows = zero_shot_suite(backbone, "b2n", root="/some/root")
    assert seen == [("ens", "/some/root")]
    assert [(r["dataset"], r["templates"], r["chance"], r["classes"]) for r in rows] == [
        ("ens", "single", 25.0, 4), ("ens", "ensemble", 25.0, 4)]
    assert rows[1]["all"] == pytest.approx(87.5)
    assert [r["templates"] for r in zero_shot_suite(backbone, "probe")] == ["single", "ensemble"]
    dg = zero_shot_suite(backbone, "dg")
    assert [(r["benchmark"], r["target"], r["templates"]) for r in dg] == [
        ("ens-dg", "a", "single"), ("ens-dg", "b", "single"), ("ens-dg", "a", "ensemble"), ("ens-dg", "b", "ensemble")]
    assert all("chance" not in r for r in dg)


def test_format_rows_prints_an_aligned_table_with_one_decimal():
    """Columns are the first row's keys, left-aligned to the widest cell, floats with one decimal,
    other values as ``str``; no rows give a placeholder."""
    rows = [{"dataset": "flags", "templates": "single", "all": 12.345, "classes": 10},
            {"dataset": "emoji-food", "templates": "ensemble", "all": 100.0, "classes": 8}]
    assert format_rows(rows).splitlines() == [
        "dataset     templates  all    classes",
        "flags       single     12.3   10     ",
        "emoji-food  ensemble   100.0  8      ",
    ]
    assert format_rows([]) == "(no rows)"


# --------------------------------------------------------------------------- the real tiny CLIP


def _reference_rows(backbone, dataset) -> list[dict]:
    """Zero-shot rows computed straight from open_clip, without the zeroshot module."""
    model = backbone.model
    n = len(dataset.classnames)
    m = math.ceil(n / 2)
    test = [i for i in range(len(dataset.labels)) if int(dataset.split[i]) == 1]
    with torch.no_grad():
        img = model.encode_image(backbone.preprocess(dataset.images[test]))
        img = img / img.norm(dim=-1, keepdim=True)
        rows = []
        for kind, templates in (("single", dataset.templates[:1]), ("ensemble", dataset.templates)):
            per_template = []
            for t in templates:
                txt = model.encode_text(backbone.tokenizer([t.format(c.replace("_", " ")) for c in dataset.classnames]))
                per_template.append(txt / txt.norm(dim=-1, keepdim=True))
            mean = torch.stack(per_template).mean(0)
            cls = mean / mean.norm(dim=-1, keepdim=True)
            sims = img @ cls.t()
            labels = dataset.labels[test].tolist()

            def acc(allowed):
                scored = [(k, y) for k, y in enumerate(labels) if y in allowed]
                hits = sum(max(allowed, key=lambda c: float(sims[k, c])) == y for k, y in scored)
                return 100.0 * hits / len(scored)

            base, new = acc(list(range(m))), acc(list(range(m, n)))
            rows.append({"all": acc(list(range(n))), "base": base, "new": new,
                         "hm": 2 * base * new / (base + new) if base + new else 0.0})
    return rows


def test_tiny_clip_rows_equal_a_direct_open_clip_reference(backbone):
    """On the random tiny CLIP and the synthetic 7-class dataset (odd: base 4, new 3; one class name
    with an underscore), all/base/new/HM of both rows equal a reference computed from
    ``encode_text``/``encode_image`` with per-subset argmax in plain Python."""
    from conftest import synthetic_dataset

    dataset = synthetic_dataset(n_classes=7, per_class=6)
    dataset.classnames = list(dataset.classnames[:6]) + ["sea_lion"]
    dataset.templates = ["a photo of a {}.", "a drawing of a {}.", "a blurry photo of the {}."]
    rows = zero_shot_base_to_new(backbone, dataset)
    reference = _reference_rows(backbone, dataset)
    assert [r["templates"] for r in rows] == ["single", "ensemble"]
    for row, ref in zip(rows, reference):
        assert {k: row[k] for k in ref} == pytest.approx(ref, abs=1e-4)
    # the tiny text encoder must make the two classifiers differ, else the test proves little
    single = text_classifier(backbone, dataset.classnames, dataset.templates[:1])
    ensemble = text_classifier(backbone, dataset.classnames, dataset.templates)
    assert not torch.allclose(single, ensemble, atol=1e-3)


def test_tiny_clip_base_new_agree_with_the_zsclip_method_run(backbone, dataset):
    """The zero-shot table and a ``zsclip`` / ``zsclip-ens`` run of the training pipeline
    (``run_base_to_new``, PromptedCLIP's frozen features) must report the same base and new
    accuracy: they are two implementations of one protocol."""
    from metaprompt_lite.run import RunConfig, run_base_to_new

    rows = zero_shot_base_to_new(backbone, dataset)
    for row, method in zip(rows, ("zsclip", "zsclip-ens")):
        result = run_base_to_new(RunConfig(method=method, progress=False), dataset, backbone)
        assert (row["base"], row["new"]) == pytest.approx((result["base"], result["new"]), abs=1e-4)


def test_image_features_on_tiny_clip_match_encode_image(backbone, dataset):
    """``image_features`` = normalised ``encode_image(preprocess(x))`` on the real model, with a
    batch size that leaves a partial last batch."""
    images = dataset.images[:11]
    with torch.no_grad():
        ref = F.normalize(backbone.model.encode_image(backbone.preprocess(images)), dim=-1)
    # batches of 4 against one of 11: the image tower's GEMMs over other rows (tests/tolerances.py)
    assert_reorder_close(image_features(backbone, images, batch_size=4), ref, clip_terms(backbone, 1, ("image",)))


def test_zsclip_bare_prompts_are_the_class_names_alone(backbone, dataset):
    """``zsclip-bare`` (MetaPrompt's zero-shot CLIP: the prompt is the class name, underscores
    replaced) scores base and new classes as a classifier of the bare names' text features built
    straight from open_clip, and differs from the hand template's ``zsclip``."""
    from metaprompt_lite.run import RunConfig, run_base_to_new

    model, n = backbone.model, len(dataset.classnames)
    test = (dataset.split == 1).nonzero().flatten()
    with torch.no_grad():
        img = F.normalize(model.encode_image(backbone.preprocess(dataset.images[test])), dim=-1)
        txt = F.normalize(model.encode_text(backbone.tokenizer([c.replace("_", " ") for c in dataset.classnames])),
                          dim=-1)
    labels, sims = dataset.labels[test], img @ txt.t()

    def acc(classes: list[int]) -> float:
        keep = torch.isin(labels, torch.tensor(classes))
        predicted = torch.tensor(classes)[sims[keep][:, classes].argmax(1)]
        return 100.0 * float((predicted == labels[keep]).float().mean())

    m = math.ceil(n / 2)
    bare = run_base_to_new(RunConfig(method="zsclip-bare", progress=False), dataset, backbone)
    # the same predictions counted two ways: equal but for float32 means of 0/1 (a few ulps of 100)
    assert (bare["base"], bare["new"]) == pytest.approx((acc(list(range(m))), acc(list(range(m, n)))), abs=1e-4)
    hand = run_base_to_new(RunConfig(method="zsclip", progress=False), dataset, backbone)
    assert (bare["base"], bare["new"]) != (hand["base"], hand["new"])
