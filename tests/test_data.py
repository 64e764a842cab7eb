"""The offline suite: the committed store, its manifest and checksums, the build's building blocks
(rendering, atlas, seeded variants) and the held-out policy of the pretraining corpus."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metaprompt_lite.data import build, catalog, render
from metaprompt_lite.data import plan as planning
from metaprompt_lite.data.sources import APT_INSTALL_LINE, SourceMissing, Sources, npm_install_line
from metaprompt_lite.data.store import (
    B2N_DATASETS,
    DG_BENCHMARKS,
    StoreError,
    _load,
    list_datasets,
    load_dataset,
    split_by_source,
    store_dir,
    summary,
)
from metaprompt_lite.paths import POCKET_CHECKPOINT
from metaprompt_lite.splits import base_new_split
from conftest import pretraining_corpus

STORE = store_dir()
SVG = b"""<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10">
<rect x="1" y="2" width="8" height="6" fill="#c03"/><circle cx="5" cy="5" r="2" fill="#fff"/></svg>"""


def _manifest_rows() -> list[dict]:
    with open(STORE / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_whole_suite_loads_quickly_and_is_well_formed():
    _load.cache_clear()
    t0 = time.perf_counter()
    datasets = {name: load_dataset(name) for name in list_datasets()}
    elapsed = time.perf_counter() - t0
    assert elapsed < 20, f"loading the suite took {elapsed:.1f} s"  # the target is < 5 s; CI machines vary
    assert len(B2N_DATASETS) >= 6 and "fashion" in B2N_DATASETS and len(DG_BENCHMARKS) >= 2
    for name, ds in datasets.items():
        assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (3, render.SIZE, render.SIZE)
        assert len(ds.labels) == len(ds.images) == len(ds.domain) == len(ds.split) == len(ds.drawing)
        assert set(ds.labels.tolist()) == set(range(len(ds.classnames))), name  # every class present
        assert len(set(ds.classnames)) == len(ds.classnames)
        assert all("{}" in t for t in ds.templates)
        assert ds.images.float().std() > 10, f"{name} looks blank"
        # the committed store agrees with the builder: suite and templates as plan.py defines them now
        assert ds.suite == planning.SUITES[name] and tuple(ds.templates) == planning.TEMPLATES[name], name
    assert list(planning.SUITES) == list(datasets) and set(planning.TEMPLATES) == set(datasets)


@pytest.mark.parametrize("name", B2N_DATASETS)
def test_base_to_new_pool_and_test_share_no_source_image(name):
    ds = load_dataset(name)
    pool = {d for d, s in zip(ds.drawing, ds.split.tolist()) if s == 0}
    test = {d for d, s in zip(ds.drawing, ds.split.tolist()) if s == 1}
    assert pool and test and not pool & test
    base, new = base_new_split(len(ds.classnames))
    assert len(base) == -(-len(ds.classnames) // 2) and base.tolist() == list(range(len(base)))
    row = summary(ds)
    assert row["test_per_class"] >= 6 and row["train_pool"] // len(ds.classnames) >= 4


@pytest.mark.parametrize("name", DG_BENCHMARKS)
def test_domain_benchmarks_share_classes_across_four_domains(name):
    ds = load_dataset(name)
    assert len(ds.domains) >= 4
    for d in range(len(ds.domains)):
        labels = ds.labels[ds.domain == d]
        assert set(labels.tolist()) == set(range(len(ds.classnames))), (name, ds.domains[d])


def test_manifest_lists_every_image_with_source_version_and_licence():
    rows = _manifest_rows()
    by_dataset: dict[str, list[dict]] = {}
    for row in rows:
        by_dataset.setdefault(row["dataset"], []).append(row)
    for name in list_datasets():
        ds = load_dataset(name)
        got = by_dataset[name]
        assert len(got) == len(ds)
        assert [r["drawing"] for r in got] == ds.drawing
        assert [int(r["label"]) for r in got] == ds.labels.tolist()
        assert all(r["package"] and r["version"] and r["licence"] for r in got), name


def test_checksum_mismatch_and_missing_store_are_clear_errors(tmp_path):
    copy = tmp_path / "suite"
    shutil.copytree(STORE, copy)
    with open(copy / "flags-pixel.json", "ab") as handle:
        handle.write(b" ")
    with pytest.raises(StoreError, match="checksum mismatch.*metaprompt-lite data build"):
        load_dataset("flags-pixel", copy)
    with pytest.raises(StoreError, match="MANIFEST.json missing"):
        load_dataset("flags-pixel", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*emoji-objects"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="unknown suite"):
        list_datasets("few-shot")


def test_missing_source_names_the_install_line(tmp_path):
    sources = Sources(npm=tmp_path)
    with pytest.raises(SourceMissing, match="npm install --no-save"):
        sources.require(tmp_path / "node_modules/openmoji/data/openmoji.json", "openmoji")
    with pytest.raises(SourceMissing, match="apt-get install"):
        sources.require(tmp_path / "nope", "gnome-cards-data")
    assert "openmoji@" in npm_install_line(tmp_path) and "dataset-fashion-mnist" in APT_INSTALL_LINE


def test_flags_without_the_emoji_sources_are_skipped_with_the_reason(tmp_path):
    """plan_flags reuses plan_emoji's Twemoji/OpenMoji drawings: without them it says so, and build()
    lists flags and flags-dg as missing with that reason and the install line instead of failing."""
    from metaprompt_lite.data.build import build
    from metaprompt_lite.data.plan import Plan, plan_flags

    with pytest.raises(SourceMissing, match="need the emoji sources"):
        plan_flags(Sources(npm=tmp_path), Plan())
    nowhere = tmp_path / "nowhere"
    sources = Sources(npm=tmp_path / "npm", aisleriot=nowhere, carddecks=nowhere, famfamfam=nowhere,
                      wordnet=nowhere, fashion=nowhere, tuxpaint=nowhere, openclipart=nowhere)
    report = build(tmp_path / "store", None, sources, progress=False)
    assert report["datasets"] == []
    for name in ("flags-pixel", "flags-dg"):
        assert "need the emoji sources" in report["missing"][name] and "npm install" in report["missing"][name]
    assert {"emoji-objects", "emoji-unseen", "cards", "fashion"} <= set(report["missing"])


def test_rendering_is_deterministic_and_variants_are_seeded():
    a, b = render.render_svg(SVG), render.render_svg(SVG)
    assert a.size == (render.SIZE, render.SIZE) and a.mode == "RGBA"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    seed = render.seed_of("pkg:file#x", 2)
    assert seed == render.seed_of("pkg:file#x", 2) != render.seed_of("pkg:file#x", 1)
    v1, v2 = render.variant(a, seed), render.variant(a, seed)
    assert v1.shape == (3, render.SIZE, render.SIZE) and np.array_equal(v1, v2)
    assert not np.array_equal(v1, render.variant(a, seed + 1))
    plain = render.variant(a, seed, plain=True)
    assert tuple(plain[:, 0, 0]) == (255, 255, 255)  # plain = on white


def test_atlas_round_trip():
    images = np.random.default_rng(0).integers(0, 256, (37, 3, render.SIZE, render.SIZE), dtype=np.uint8)
    grid = np.asarray(render.atlas(images))
    assert np.array_equal(render.from_atlas(grid, 37), images)


def _item(drawing_id: str, split: str) -> planning.Item:
    blank = Image.new("RGBA", (render.SIZE, render.SIZE), (0, 0, 0, 0))
    drawing = catalog.Drawing(drawing_id, "pkg", drawing_id, "style", lambda: blank)
    return planning.Item(drawing, 0, "thing", "c1", "style", split, ("a thing.",))


def test_corpus_refuses_evaluation_drawings(tmp_path):
    plan = planning.Plan(corpus=[_item("pkg:a", "corpus"), _item("pkg:b", "corpus")])
    with pytest.raises(AssertionError, match="evaluation drawings in the pretraining corpus"):
        build.write_corpus(tmp_path, plan, {"pkg:b"}, [], progress=False)
    report = build.write_corpus(tmp_path, plan, {"pkg:z"}, ["extra sentence."], progress=False)
    assert report["images"] == 2 * build.CORPUS_VARIANTS and (tmp_path / "images.npy").is_file()
    assert "extra sentence." in (tmp_path / "text.txt").read_text()


def test_corpus_variants_hold_each_drawing_plain_and_as_random_variants(tmp_path):
    """With ``variants=3`` (the default, the committed checkpoint's corpus), like the suite's images:
    variant 0 plain on white, the others seeded variants (background colour, rotation, scale, shift);
    every variant keeps its drawing's captions and concept."""
    square = Image.new("RGBA", (render.SIZE, render.SIZE), (0, 0, 0, 0))
    square.paste((200, 30, 30, 255), (16, 16, 48, 48))
    drawings = [catalog.Drawing(f"pkg:{k}", "pkg", k, "style", lambda: square) for k in "ab"]
    plan = planning.Plan(corpus=[planning.Item(d, 0, "thing", "c1", "style", "corpus", ("a thing.",)) for d in drawings])
    assert build.CORPUS_VARIANTS == 3
    report = build.write_corpus(tmp_path, plan, set(), [], progress=False, variants=3)
    assert report["images"] == 6
    meta = json.loads((tmp_path / "corpus.json").read_text())
    assert meta["variants"] == 3 and meta["variant"] == [0, 1, 2, 0, 1, 2]
    assert meta["drawings"] == ["pkg:a"] * 3 + ["pkg:b"] * 3 and meta["captions"] == [["a thing."]] * 6
    images = np.load(tmp_path / "images.npy")
    assert np.array_equal(images[0], images[3])  # plain: the same drawing gives the same image
    assert (images[0][:, 0, 0] == 255).all()  # on white
    assert all(not np.array_equal(images[0], images[i]) for i in (1, 2, 4, 5))
    assert not np.array_equal(images[1], images[4])  # seeded by drawing and variant
    again = tmp_path / "again"
    build.write_corpus(again, plan, set(), [], progress=False, variants=3)
    assert np.array_equal(np.load(again / "images.npy"), images)
    plain = tmp_path / "plain"
    build.write_corpus(plain, plan, set(), [], progress=False, variants=1)
    assert np.array_equal(np.load(plain / "images.npy"), images[[0, 3]])  # variant 0 = the plain corpus
    default = tmp_path / "default"
    build.write_corpus(default, plan, set(), [], progress=False)
    assert np.array_equal(np.load(default / "images.npy"), images)
    assert json.loads((plain / "corpus.json").read_text())["variant"] == [0, 0]
    with pytest.raises(ValueError, match="at least 1"):
        build.expand_variants(plan.corpus, 0)


def test_text_corpus_extras_hold_text_only_captions_and_class_names_but_not_the_probe():
    plan = planning.Plan(text_only=["a glossy emoji of teapot", "teapot, kettle"],
                         classnames={"emoji-novel-food": ["bagel"], "emoji-unseen": ["secret thing"]})
    extras = planning.text_corpus_extras(plan, {"teapot": "a pot for tea"}, limit=3)
    assert extras[:2] == ["a glossy emoji of teapot", "teapot, kettle"]
    assert "a photo of bagel, a type of food." in extras
    assert not any("secret thing" in s for s in extras)
    assert "teapot: a pot for tea" in extras


@pytest.mark.parametrize("with_images", [True, False])
def test_a_b2n_concept_enters_the_corpus_as_fluent_drawings_or_as_text_only(with_images):
    from metaprompt_lite.data.sources import EmojiConcept

    concept = EmojiConcept("1f375", "teacup without handle", "Food & Drink", "drink", ["tea"], ["green tea"], "🍵")

    class Styles:
        def get(self, style, key):
            return catalog.Drawing(f"{style}:{key}", style, key, style, lambda: None)

    plan = planning.Plan(b2n_concept_images=with_images)
    planning.add_b2n_concept_to_corpus(plan, "1f375", concept, Styles(), {})
    captions = [c for style in planning.B2N_CORPUS_STYLES for c in catalog.emoji_captions(concept, style, {})]
    if with_images:
        assert [i.domain for i in plan.corpus] == list(planning.B2N_CORPUS_STYLES) and not plan.text_only
        assert [c for i in plan.corpus for c in i.captions] == captions
    else:
        assert not plan.corpus and plan.text_only == captions  # the same sentences, no image
        assert set(captions) <= set(planning.text_corpus_extras(plan, {}, limit=0))  # they reach the text corpus


def test_the_corpus_manifest_is_the_committed_checkpoints_corpus():
    """The manifest's images and sentences are as many as the pretraining report counted (every image
    once per variant; the sentences: the text corpus and every caption)."""
    meta, text = pretraining_corpus("pocket-clip")
    report = json.loads((STORE.parent / POCKET_CHECKPOINT).with_suffix(".json").read_text())
    assert len(meta["drawings"]) == len(meta["concepts"]) == len(meta["captions"]) == report["images"]
    assert len(text | {c for caps in meta["captions"] for c in caps}) == report["sentences"]


@pytest.mark.parametrize("which", ["pocket-clip", "built"])
def test_a_built_corpus_holds_no_evaluation_image(which):
    """The pretraining corpus (the committed checkpoint's, from its manifest; and ``data/corpus`` when
    built) against the manifest of the committed suite: no source drawing, no probe or unseen-concept
    B2N concept and no pixel art may appear in it; the familiar B2N emoji concepts only as Fluent
    drawings (or, built with --no-b2n-concept-images, not at all)."""
    meta, text = pretraining_corpus(which)
    suite_drawings = {r["drawing"] for r in _manifest_rows()}
    assert not suite_drawings & set(meta["drawings"])
    probe = {r["concept"] for r in _manifest_rows() if r["dataset"] == "emoji-unseen"}
    assert not probe & set(meta["concept_ids"])
    b2n_emoji = {r["concept"] for r in _manifest_rows()
                 if r["dataset"] in (*planning.FAMILIAR_EMOJI.values(), "emoji-pixel")}
    assert len(b2n_emoji) == 200
    b2n_styles = {meta["style_names"][s] for c, s in zip(meta["concepts"], meta["styles"])
                  if meta["concept_ids"][c] in b2n_emoji}
    if meta.get("b2n_concept_images", True):  # only as Fluent drawings, never in a pool/test style
        assert b2n_styles == set(planning.B2N_CORPUS_STYLES)
    else:  # the --no-b2n-concept-images experiment: no image at all
        assert not b2n_emoji & set(meta["concept_ids"]) and not b2n_styles
    # either way their names are in the text corpus, for the text tower
    probe_names = {r["classname"] for r in _manifest_rows() if r["dataset"] == "emoji-unseen"}
    in_captions = {n for n in probe_names for phrase in catalog.STYLE_PHRASES.values() if phrase.format(n) in text}
    # known and documented (data/README.md): two probe names are short names of *other* corpus
    # concepts, "cow" of cow face 🐮 and "sun behind cloud" of sun behind large cloud 🌥
    assert in_captions <= {"cow", "sun behind cloud"}
    assert not {t.format(n) for n in probe_names for t in planning.GENERIC_TEMPLATES} & text  # no class-name sentence
    names = {r["classname"] for r in _manifest_rows() if r["concept"] in b2n_emoji}
    assert all(f"a photo of a {n}." in text for n in names)
    # the novel emoji B2N concepts: no image at all, in any style, but their captions and names as text
    unseen = (*planning.NOVEL_B2N, *planning.NOVEL_CATEGORIES.values())
    novel = {r["concept"] for r in _manifest_rows() if r["dataset"] in unseen}
    assert len(novel) == 250 and not novel & set(meta["concept_ids"])
    # the pixel look: no famfamfam pixel flag of any country
    assert not any(d.startswith("famfamfam-flag-png:") for d in meta["drawings"])
    novel_names = {r["classname"] for r in _manifest_rows() if r["concept"] in novel}
    # the captions their drawings would have had (the class-name sentences are added for every dataset anyway)
    assert all(catalog.STYLE_PHRASES[st].format(n) in text for n in novel_names for st in planning.B2N_EMOJI_STYLES)


def _fake_emoji(monkeypatch, concepts: dict[str, str], missing: tuple[tuple[str, str], ...] = ()):
    """Replace the emoji sources by ``concepts`` (key -> category), every style drawn except ``missing``
    (style, key) pairs, and shrink the planner's counts: 2 probe, 2 DG, up to 2 classes per category."""
    from metaprompt_lite.data.sources import EmojiConcept

    meta = {k: EmojiConcept(k, f"thing {k}", cat, "sub-thing", [], ["tag"], "?") for k, cat in concepts.items()}

    class Metadata:
        def __init__(self, sources):
            self.concepts = meta

    class Styles:
        STYLES = catalog.EmojiStyles.STYLES

        def __init__(self, sources):
            pass

        def get(self, style, key):
            if key not in meta or (style, key) in missing:
                return None
            return catalog.Drawing(f"{style}:{key}", style, key, style, lambda: None)

        def complete(self, key):
            return all(self.get(st, key) is not None for st in self.STYLES)

    monkeypatch.setattr(planning, "EmojiMetadata", Metadata)
    monkeypatch.setattr(planning, "EmojiStyles", Styles)
    monkeypatch.setattr(planning, "N_PROBE", 2)
    monkeypatch.setattr(planning, "N_EMOJI_DG", 2)
    monkeypatch.setattr(planning, "MAX_CLASSES", 2)


def test_plan_emoji_keeps_the_novel_concepts_out_of_the_corpus(monkeypatch):
    """The planner with fake sources: a novel concept gets its pool/test images (2 styles x 3 variants
    each) and the captions of all its drawings as text only, never a corpus image; the other concepts
    still reach the corpus."""
    objects = {f"O{i}": "Objects" for i in range(6)}
    people = {f"P{i}": "People & Body" for i in range(4)}
    _fake_emoji(monkeypatch, objects | people)
    monkeypatch.setattr(planning, "NOVEL_B2N", {"emoji-novel-mixed": ("P0", "P1")})
    plan = planning.Plan()
    planning.plan_emoji(None, plan, {})
    assert plan.classnames["emoji-novel-mixed"] == ["thing P0", "thing P1"]
    novel_items = plan.datasets["emoji-novel-mixed"]
    for key in ("P0", "P1"):
        for split in ("pool", "test"):
            mine = [(i.drawing.style, i.variant) for i in novel_items if i.concept == key and i.split == split]
            assert len({st for st, _ in mine}) == 2 and sorted(v for _, v in mine) == [0, 0, 1, 1, 2, 2]
    corpus_concepts = {i.concept for i in plan.corpus}
    assert not {"P0", "P1"} & corpus_concepts
    assert {"P2", "P3"} <= corpus_concepts  # the rest of the category is pretraining material
    for key in ("P0", "P1"):
        for style in catalog.EmojiStyles.STYLES:
            assert catalog.STYLE_PHRASES[style].format(f"thing {key}") in plan.text_only
    evaluated = {i.drawing.id for items in plan.datasets.values() for i in items}
    assert not evaluated & {i.drawing.id for i in plan.corpus}


@pytest.mark.parametrize("case", ["unknown", "incomplete", "taken"])
def test_plan_emoji_names_each_unusable_novel_concept_and_why(monkeypatch, case):
    objects = {f"O{i}": "Objects" for i in range(6)}
    missing = (("noto", "P0"),) if case == "incomplete" else ()
    _fake_emoji(monkeypatch, objects | {"P0": "People & Body"}, missing=missing)
    probe_key = planning._shuffled([k for k in objects], "emoji-split")[0]  # the planner's first probe concept
    key = {"unknown": "ZZZZ", "incomplete": "P0", "taken": probe_key}[case]
    monkeypatch.setattr(planning, "NOVEL_B2N", {"emoji-novel-mixed": (key,)})
    expected = {"unknown": "1 unknown to these emoji sources: \\['ZZZZ'\\]",
                "incomplete": "1 without a drawing in every style",
                "taken": f"1 already drawn for another dataset: "
                         f"\\['{probe_key} \\(thing {probe_key}\\) by emoji-unseen'\\]"}[case]
    with pytest.raises(SourceMissing, match=f"emoji-novel-mixed: of its emoji \\(NOVEL_B2N\\), {expected}"):
        planning.plan_emoji(Sources(npm="/nowhere"), planning.Plan(), {})


def test_novel_emoji_datasets_hold_their_listed_concepts_and_no_other_datasets():
    """The committed novel emoji B2N datasets hold the concepts of ``plan.NOVEL_B2N`` (a staleness check of
    the committed suite against the constant), drawn like the other emoji B2N datasets (per class 2
    drawings x 3 variants in the pool, 2 others x 3 in the test), and share no concept with any other
    dataset. That the corpus holds no image of them: test_plan_emoji_keeps_the_novel_concepts_out_of_the_corpus
    (the planner) and the built-corpus test above (skipped unless data/corpus is built)."""
    rows = _manifest_rows()
    concepts_of: dict[str, set[str]] = {}
    for r in rows:
        concepts_of.setdefault(r["dataset"], set()).add(r["concept"])
    for name, keys in planning.NOVEL_B2N.items():
        assert concepts_of[name] == set(keys) and len(keys) == 50
        others = set().union(*(c for d, c in concepts_of.items() if d != name))
        assert not concepts_of[name] & others
        dataset = load_dataset(name)
        assert len(dataset.classnames) == 50 and dataset.suite == "b2n"
        for label in range(50):
            mine = dataset.labels == label
            assert int((mine & (dataset.split == 0)).sum()) == 6 and int((mine & (dataset.split == 1)).sum()) == 6
        by_split: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for r in rows:
            if r["dataset"] == name:
                by_split.setdefault((r["concept"], r["split"]), []).append((r["drawing"], r["variant"]))
        for key in keys:
            pool, test = by_split[(key, "pool")], by_split[(key, "test")]
            for images in (pool, test):  # 2 drawings x variants 0, 1, 2
                assert sorted(images) == sorted((d, str(v)) for d in {d for d, _ in images} for v in range(3))
                assert len({d for d, _ in images}) == 2
            assert not {d for d, _ in pool} & {d for d, _ in test}
        packages = {r["package"] for r in rows if r["dataset"] == name}
        assert len(packages) == len(planning.B2N_EMOJI_STYLES)


def test_split_by_source_puts_the_named_packages_in_the_pool_and_names_an_empty_class():
    probe = load_dataset("emoji-unseen")
    assert (probe.split == 1).all()  # the probe is test-only as shipped
    pool_sources = {"openmoji", "@iconify-json/twemoji"}
    view = split_by_source(probe, pool_sources)
    for drawing, split in zip(view.drawing, view.split.tolist()):
        assert split == (0 if drawing.split(":")[0] in pool_sources else 1)
    per_class = [int(((view.labels == c) & (view.split == 0)).sum()) for c in range(len(view.classnames))]
    assert per_class == [2] * 50  # one drawing per pool package and class
    assert (view.images is probe.images) and (probe.split == 1).all()  # a view: the original is unchanged
    assert view.suite == "b2n" and probe.suite == "probe"
    with pytest.raises(ValueError, match="has no drawing from"):
        split_by_source(probe, {"twemoji", "openmoji"})  # a misspelt package is an error, not a smaller pool
    with pytest.raises(TypeError, match="not the string"):
        split_by_source(probe, "openmoji")
    everything = {d.split(":")[0] for d in probe.drawing}
    with pytest.raises(ValueError, match="has no test image"):
        split_by_source(probe, everything)


def test_data_build_cli_passes_the_corpus_experiments_choices(tmp_path, monkeypatch):
    from metaprompt_lite.cli import main

    seen = []

    def fake_build(store, corpus, sources, datasets, b2n_concept_images=True, corpus_variants=None, clipart=None,
                   allow_fewer=False):
        seen.append((Path(store), corpus, b2n_concept_images, corpus_variants, clipart))
        return {"datasets": [], "missing": {}}

    from metaprompt_lite.data import build as build_module

    monkeypatch.setattr(build_module, "build", fake_build)  # the CLI imports it when it builds
    for flags, expected in (([], (True, 3, False)), (["--no-b2n-concept-images"], (False, 3, False)),
                            (["--corpus-variants", "1"], (True, 1, False)), (["--clipart"], (True, 3, True))):
        assert main(["data", "build", "--no-install", "--sources", str(tmp_path), "--store", str(tmp_path / "s"),
                     "--corpus", str(tmp_path / "c"), *flags]) == 0
        assert seen[-1] == (tmp_path / "s", tmp_path / "c", *expected)
    n = len(seen)
    assert main(["data", "build", "--no-install", "--sources", str(tmp_path), "--clipart"]) == 2  # needs --corpus
    assert len(seen) == n


def test_drawings_that_render_empty_are_named_and_refused_for_evaluation(tmp_path, capsys):
    """A render error leaves the image white and a transparent render shows only the background: the
    build names such drawings (the corpus keeps their images, as in the committed checkpoint's corpus;
    data/README.md) and refuses to write them into an evaluation dataset."""
    def drawing(name, load):
        return catalog.Drawing(f"pkg:{name}", "pkg", name, "style", load)

    def broken():
        raise ValueError("cairo says no")

    good = drawing("good", lambda: render.render_svg(SVG))
    items = [planning.Item(d, v, d.file, d.file, "style", "test", (d.file,))
             for d in (good, drawing("broken", broken), drawing("clear", lambda: Image.new("RGBA", (64, 64))))
             for v in (0, 1)]
    images, empty = build.produce(items, progress=False)
    assert empty == ["pkg:broken", "pkg:clear"]
    assert (images[2:4] == 255).all() and (images[0] < 255).any()
    assert "cannot render pkg:broken: cairo says no" in capsys.readouterr().err
    plan = planning.Plan(datasets={"cards": items}, classnames={"cards": ["good", "broken", "clear"]},
                         domains={"cards": ["style"]})
    with pytest.raises(RuntimeError, match=r"cards: 2 evaluation drawings rendered empty: \['pkg:broken', 'pkg:clear'\]"):
        build.write_dataset(tmp_path, "cards", plan, Sources(npm=tmp_path), progress=False)
