"""Corpus-only clipart (Tux Paint stamps, Openclipart): names, captions and, above all, the filter that
keeps held-out concepts out of pretraining."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metaprompt_lite.data import build, catalog, clipart
from metaprompt_lite.data import plan as planning
from metaprompt_lite.data.sources import SourceMissing, Sources
from conftest import pretraining_corpus

SVG = b"""<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><rect x="1" y="2" width="8" height="6"
fill="#c03"/></svg>"""
VOCABULARY = {"small", "truck", "owl", "branch", "red", "umbrella", "cow", "brown", "glass", "eiffel", "tower", "blue"}


def test_openclipart_names_keep_the_leading_english_words():
    assert clipart.openclipart_name("small_truck_steffen_gluc_01", VOCABULARY) == "small truck"
    assert clipart.openclipart_name("owl_on_branch_ganson", VOCABULARY) == "owl on branch"
    assert clipart.openclipart_name("owl_on_ganson", VOCABULARY) == "owl"  # a stop word never ends a name
    assert clipart.openclipart_name("farfalla_stilizzata", VOCABULARY) is None
    assert clipart.openclipart_name("small_01", VOCABULARY) is None  # only generic words
    assert clipart.openclipart_name("umbrellas", VOCABULARY) == "umbrellas"  # a regular plural
    assert clipart.openclipart_name("owl_bb_01", VOCABULARY | {"bb"}) == "owl"  # 2-letter lemmas end a name


def test_head_nouns_name_the_object_of_a_concept():
    assert clipart.head_nouns("rescue worker’s helmet") == ["helmet"]
    assert clipart.head_nouns("glass of milk") == ["glass"]
    assert clipart.head_nouns("nut and bolt") == ["nut", "bolt"]
    assert clipart.head_nouns("sun with face") == ["sun"]
    assert clipart.head_nouns("tiger face") == ["tiger"]
    assert clipart.head_nouns("pig nose") == ["pig"]
    assert clipart.head_nouns("ten o’clock") == ["clock"]
    assert clipart.head_nouns("globe showing americas") == ["globe"]
    assert clipart.head_nouns("woman’s boot") == ["boot"]


def test_the_filter_drops_held_out_concepts_by_name_and_head_noun_but_b2n_names_only_exactly():
    terms = clipart.excluded_terms(["cow", "rescue worker’s helmet"], ["red apple"])
    assert clipart.mentions("A brown cow.", terms)
    assert clipart.mentions("three cows", terms)  # plural
    assert clipart.mentions("a bike helmet", terms)  # head noun of a strict name
    assert clipart.mentions("Rescue Worker's Helmet", terms)  # case and apostrophe normalised
    assert clipart.mentions("a red apple", terms)
    assert not clipart.mentions("an apple", terms)  # B2N names: exact phrase only
    assert not clipart.mentions("a scowl", terms)  # whole words only
    assert not clipart.mentions("a cowboy hat", terms)


def test_the_filter_catches_singulars_plurals_look_alikes_and_folder_names():
    """Leaks the first --clipart build let through (experiments/clipart/): a grape
    for "grapes", a padlock for "locked", a piano for "musical keyboard", a house in a folder name."""
    terms = clipart.excluded_terms(["grapes", "blueberries", "locked", "musical keyboard", "house", "elephant"], [])
    assert clipart.mentions("a bunch of grape", terms) and clipart.mentions("a blueberry", terms)
    assert clipart.mentions("elephants", terms) and clipart.mentions("blueberries", terms)
    assert clipart.mentions("a closed padlock", terms) and clipart.mentions("piano keys", terms)
    assert clipart.mentions("town/houses/cartoon/red_roof.png", terms)  # folders and file names count
    assert clipart.mentions("chalet_di_montagna", terms)  # a look-alike of "house"
    assert not clipart.mentions("a gull", terms) and not clipart.mentions("a greenhouse", terms)
    assert clipart.singular("blueberries") == "blueberry" and clipart.singular("glasses") == "glass"
    assert clipart.singular("grapes") == "grape" and clipart.singular("bus") == "bus"


def _fake_sources(tmp_path: Path) -> Sources:
    stamps = tmp_path / "tuxpaint"
    for folder, stem, text in (("animals/bovines", "cow_brown", "A brown cow.\nfr.utf8=Une vache."),
                               ("household", "umbrella_red", "A red umbrella. It keeps you dry!"),
                               ("symbols/alphabets/english", "a_lower", "The letter a."),
                               ("household", "no_image", "A thing without an image.")):
        (stamps / folder).mkdir(parents=True, exist_ok=True)
        (stamps / folder / f"{stem}.txt").write_text(text)
        if stem != "no_image":
            Image.new("RGBA", (40, 30), (200, 30, 30, 255)).save(stamps / folder / f"{stem}.png")
    art = tmp_path / "openclipart"
    files = {"animals/birds/owl_on_branch_ganson.svg": b"owl", "tools/owl_on_branch_copy.svg": b"owl",  # same bytes
             "shapes/stars/star_5pt.svg": b"star", "tools/small_truck_01.svg": b"truck", "food/brown_cow_01.svg": b"cow",
             "tools/glass.svg": b"glass",  # the name of a concept the corpus already has
             "garage/blue_truck.svg": b"blue", "vehicles/cows/blue_truck.svg": b"blue"}  # one copy in a "cows" folder
    for rel, tag in files.items():
        (art / rel).parent.mkdir(parents=True, exist_ok=True)
        (art / rel).write_bytes(SVG + b"<!--" + tag + b"-->")
    wordnet = tmp_path / "wordnet"
    wordnet.mkdir()
    (wordnet / "index.noun").write_text("  header line\n" + "".join(f"{w} n 1 0 1 0 00000000\n" for w in sorted(VOCABULARY)))
    for pos in ("verb", "adj", "adv"):
        (wordnet / f"index.{pos}").write_text("")
    return Sources(npm=tmp_path / "npm", wordnet=wordnet, tuxpaint=stamps, openclipart=art)


def test_sources_are_read_with_names_descriptions_and_one_file_per_content(tmp_path):
    sources = _fake_sources(tmp_path)
    stamps = clipart.tuxpaint_stamps(sources.tuxpaint)
    assert [(s.name, s.description, s.category) for s in stamps] == [
        ("brown cow", "A brown cow.", "bovines"), ("red umbrella", "A red umbrella.", "household")]
    vocabulary = clipart.english_vocabulary(sources.wordnet)
    assert "owl" in vocabulary and "header" not in vocabulary
    drawings = clipart.openclipart(sources.openclipart, vocabulary)
    assert sorted(d.name for d in drawings) == ["blue truck", "brown cow", "glass", "owl on branch", "small truck"]  # no star, one owl
    truck = next(d for d in drawings if d.name == "blue truck")
    assert truck.paths == "garage/blue_truck.svg vehicles/cows/blue_truck.svg"  # every copy's path, for the filter
    captions = clipart.captions(stamps[1], {"red umbrella": "a canopy against rain", "umbrella": "wrong sense"})
    assert captions[:2] == ("A red umbrella.", "a red umbrella")
    assert "a picture of red umbrella" in captions and "red umbrella: a canopy against rain" in captions
    assert not any("wrong sense" in c for c in clipart.captions(stamps[1], {"umbrella": "wrong sense"}))
    assert clipart.stamp_name("The letter s with a very long description.") is None


def test_plan_clipart_adds_corpus_only_items_and_keeps_the_probe_concept_out(tmp_path):
    sources = _fake_sources(tmp_path)
    glass = planning.Item(catalog.Drawing("pkg:glass", "pkg", "glass", "style", lambda: None), 0, "glass", "1F95B",
                          "noto", "corpus", ("glass",))
    plan = planning.Plan(classnames={"emoji-unseen": ["cow"], "emoji-pacs": ["swan"], "emoji-objects": ["red apple"]},
                         corpus=[glass])
    planning.plan_clipart(sources, plan, {})
    plan.corpus.remove(glass)
    names = sorted(i.classname for i in plan.corpus)
    # dropped: both cows (probe), the glass (a corpus concept's name), the blue truck (a copy sits in "cows/")
    assert names == ["owl on branch", "red umbrella", "small truck"]
    assert all(i.split == "corpus" and i.captions for i in plan.corpus)
    assert {i.domain for i in plan.corpus} == {"tuxpaint", "openclipart"}
    assert all(i.concept == f"clipart-{i.classname}" for i in plan.corpus)
    assert not plan.datasets  # never in the suite
    images, empty = build.produce(plan.corpus, progress=False)
    assert images.shape == (3, 3, 64, 64) and (images < 255).any() and empty == []
    with pytest.raises(SourceMissing, match="probe"):
        planning.plan_clipart(sources, planning.Plan(), {})
    with pytest.raises(SourceMissing, match="apt-get install -y --no-install-recommends tuxpaint-stamps-default openclipart-svg$"):
        planning.plan_clipart(Sources(npm=tmp_path, tuxpaint=tmp_path / "none"), plan, {})


@pytest.mark.parametrize("which", ["pocket-clip", "built"])
def test_a_built_corpus_names_no_probe_or_dg_concept_in_its_clipart(which):
    """The pretraining corpus (the committed checkpoint's, from its manifest; and ``data/corpus`` when
    built): no clipart caption names a probe, emoji-pacs or novel B2N concept or its head noun."""
    meta, _ = pretraining_corpus(which)
    suite = Path(__file__).parents[1] / "data" / "suite"
    strict = [n for d in ("emoji-unseen", "emoji-pacs", *planning.NOVEL_B2N)
              for n in json.loads((suite / f"{d}.json").read_text())["classnames"]]
    terms = clipart.excluded_terms(strict, [])
    clip = [k for k, c in enumerate(meta["concept_ids"]) if c.startswith("clipart-")]
    if not clip and which == "built":
        pytest.skip("corpus built without --clipart")  # the committed checkpoint's has none: nothing can leak
    leaked = {meta["concept_names"][c] for c in clip if clipart.mentions(meta["concept_names"][c], terms)}
    assert not leaked
    captions = [c for caps, k in zip(meta["captions"], meta["concepts"]) if meta["concept_ids"][k].startswith("clipart-")
                for c in caps]
    assert not [c for c in captions if clipart.mentions(c.split(":")[0], terms)]  # glosses may use common words


def test_clipart_svgs_cairosvg_refuses_render_with_rsvg(tmp_path):
    """Some Openclipart / Tux Paint SVGs declare XML entities (Illustrator exports), which cairosvg
    refuses; the clipart renderer falls back to rsvg-convert instead of leaving a blank image."""
    import shutil

    from metaprompt_lite.data import render

    if shutil.which("rsvg-convert") is None:
        pytest.skip("rsvg-convert not installed (apt-get install -y librsvg2-bin)")
    path = tmp_path / "entity.svg"
    path.write_text('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY ns_svg "http://www.w3.org/2000/svg">]>'
                    '<svg xmlns="&ns_svg;" width="10" height="10"><rect x="2" y="2" width="6" height="6" '
                    'fill="#c03"/></svg>')
    from defusedxml import DefusedXmlException

    with pytest.raises(DefusedXmlException):  # cairosvg refuses the XML entity
        render.render_file(path)
    image = render.render_file_or_rsvg(path)
    assert image.size == (render.SIZE, render.SIZE) and image.getchannel("A").getbbox() is not None
    pixels = np.asarray(image)
    red = pixels[pixels[..., 3] == 255]
    assert len(red) and (red[:, 0] > 150).all() and (red[:, 1] < 60).all()
