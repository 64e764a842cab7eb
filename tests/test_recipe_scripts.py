"""The helpers of the image-phase experiments (`experiments/image-recipes/image_recipes.py`,
`experiments/probe-difficulty/probe_difficulty.py`): variants parse into PretrainConfig fields,
held-out concepts leave the corpus entirely and the rest keeps its names."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from conftest import import_script
from metaprompt_lite.data.corpus import ImageTextCorpus
from metaprompt_lite.pretrain import PretrainConfig

PROBE_STYLES = ("twemoji", "noto", "openmoji", "fluent", "fluent-3d")


@pytest.fixture(scope="module")
def scripts():
    return SimpleNamespace(recipes=import_script("experiments/image-recipes/image_recipes.py"),
                           difficulty=import_script("experiments/probe-difficulty/probe_difficulty.py"))


def test_a_variant_names_pretrain_config_fields(scripts):
    base = PretrainConfig(image_steps=100)
    name, config = scripts.recipes.parse_variant("soft:soft_label_tau=0.07,concept_weight=2,flip=false", base)
    assert name == "soft" and config.soft_label_tau == 0.07 and config.concept_weight == 2.0
    assert config.flip is False and config.image_steps == 100
    assert scripts.recipes.parse_variant("base", base) == ("base", base)
    assert scripts.recipes.parse_variant("t:text_from=/x.safetensors", base)[1].text_from == "/x.safetensors"
    with pytest.raises(SystemExit, match="soft_label_tua"):
        scripts.recipes.parse_variant("typo:soft_label_tua=0.1", base)


def _corpus_and_meta():
    """60 object-like and 60 other emoji concepts, each in the five probe styles (plain + 1 variant), plus
    5 concepts missing a style, 5 whose Noto drawing exists only as a variant, and 5 flags."""
    styles, concepts, variant, names, ids, meta = [], [], [], [], [], {}
    for c in range(135):
        key = f"K{c}"
        category = ("Objects" if c < 60 else "People & Body" if c < 120 else "Food & Drink" if c < 130 else "Flags")
        meta[key] = SimpleNamespace(category=category)
        names.append(f"concept {c}")
        ids.append(key)
        have = PROBE_STYLES[:4] if 120 <= c < 125 else PROBE_STYLES
        for style in have:
            for v in ((1,) if 125 <= c < 130 and style == "noto" else (0, 1)):
                styles.append(style)
                concepts.append(c)
                variant.append(v)
    n = len(concepts)
    corpus = ImageTextCorpus(images=torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).clone(),
                             captions=[[names[c]] for c in concepts], concepts=torch.tensor(concepts),
                             concept_names=names, concept_ids=ids, variant=variant,
                             styles=[PROBE_STYLES.index(s) for s in styles], style_names=list(PROBE_STYLES))
    return corpus, styles, meta


def test_holdout_sets_are_disjoint_complete_in_every_style_and_of_their_kind(scripts):
    corpus, styles, meta = _corpus_and_meta()
    sets = scripts.difficulty.choose_holdouts(corpus, styles, meta)
    assert len(sets["object"]) == len(sets["random"]) == 50
    assert not set(sets["object"]) & set(sets["random"])
    assert all(meta[f"K{c}"].category == "Objects" for c in sets["object"])
    # a style missing, a style only as a variant, or a flag: never drawn
    assert all(c < 120 for c in sets["object"] + sets["random"])
    assert sorted(sets["object"] + sets["random"]) != list(range(100))  # drawn, not the first 100
    assert sets == scripts.difficulty.choose_holdouts(corpus, styles, meta)  # seeded


def test_without_removes_every_image_of_the_held_concepts_and_keeps_names_aligned(scripts):
    corpus, styles, meta = _corpus_and_meta()
    held = {0, 5, 77}
    rest = scripts.difficulty.without(corpus, held)
    assert len(rest.concept_names) == len(corpus.concept_names) - 3
    assert not {"concept 0", "concept 5", "concept 77"} & set(rest.concept_names)
    kept = [i for i, c in enumerate(corpus.concepts.tolist()) if c not in held]
    assert len(rest.images) == len(kept) and torch.equal(rest.images, corpus.images[kept])
    for i, j in enumerate(kept):  # every kept image still carries its own concept's name and caption
        assert rest.concept_names[rest.concepts[i]] == corpus.concept_names[corpus.concepts[j]]
        assert rest.captions[i] == corpus.captions[j] and rest.variant[i] == corpus.variant[j]
        assert rest.style_names[rest.styles[i]] == styles[j]
        assert rest.concept_ids[rest.concepts[i]] == corpus.concept_ids[corpus.concepts[j]]


def test_held_out_rows_are_the_plain_drawings_of_the_chosen_concepts_in_the_chosen_styles(scripts):
    corpus, styles, meta = _corpus_and_meta()
    rows, labels = scripts.difficulty.held_out_rows(corpus, styles, [7, 3, 126], ("twemoji", "noto"))
    # 7 and 3: plain Twemoji + plain Noto; 126: plain Twemoji only (its Noto drawing is a variant)
    assert len(rows) == 5 and sorted(labels.tolist()) == [0, 0, 1, 1, 2]
    for i, label in zip(rows, labels.tolist()):
        assert corpus.variant[i] == 0 and styles[i] in ("twemoji", "noto")
        assert corpus.concepts[i].item() == [7, 3, 126][label]


def test_held_out_b2n_pools_twemoji_and_openmoji_and_tests_the_other_three_styles(scripts):
    corpus, styles, meta = _corpus_and_meta()
    concepts = [9, 2, 20, 14]  # rows below 256: the fake corpus's uint8 images hold their row number
    dataset = scripts.difficulty.held_out_b2n(corpus, styles, concepts, ["a {}."], "held")
    assert dataset.classnames == ["concept 9", "concept 2", "concept 20", "concept 14"]
    assert len(dataset) == 4 * 5 * 2  # five styles, plain + one variant, nothing else
    for image, label, split, drawing in zip(dataset.images, dataset.labels, dataset.split, dataset.drawing):
        row = int(image[0, 0, 0])
        assert corpus.concepts[row].item() == concepts[label]
        assert split.item() == (0 if styles[row] in ("twemoji", "openmoji") else 1)
        assert drawing.startswith(styles[row] + ":")
    assert [(dataset.split[dataset.labels == k] == 0).sum().item() for k in range(4)] == [4] * 4
    no_pool = ["noto" if c == 3 else s for c, s in zip(corpus.concepts.tolist(), styles)]  # concept 3: no pool style
    with pytest.raises(ValueError, match="'concept 3' has no pool image"):
        scripts.difficulty.held_out_b2n(corpus, no_pool, [2, 3], ["a {}."], "held")


def test_name_twins_finds_a_held_out_name_still_carried_by_a_kept_concept(scripts):
    corpus, styles, meta = _corpus_and_meta()
    corpus.concept_names[130] = "Concept 4"  # a kept flag renamed like held-out concept 4
    assert scripts.difficulty.name_twins(corpus, [4, 9], {4, 9}) == [4]
    assert scripts.difficulty.name_twins(corpus, [4, 9], {4, 9, 130}) == []


def test_a_work_folder_refuses_a_run_with_other_settings(scripts, tmp_path):
    config = PretrainConfig(image_steps=1000)
    scripts.recipes.claim_work_dir(tmp_path / "soft", config)
    scripts.recipes.claim_work_dir(tmp_path / "soft", PretrainConfig(image_steps=1000, progress=False))  # same run
    with pytest.raises(SystemExit, match="image_steps"):
        scripts.recipes.claim_work_dir(tmp_path / "soft", PretrainConfig(image_steps=5000))
    with pytest.raises(SystemExit, match="soft_label_tau"):
        scripts.recipes.claim_work_dir(tmp_path / "soft", PretrainConfig(image_steps=1000, soft_label_tau=0.07))
