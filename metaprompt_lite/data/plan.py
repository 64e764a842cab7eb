"""Which drawing goes where: the datasets of the offline suite and the pretraining corpus.

:func:`make_plan` chooses, among the drawings the sources offer (:mod:`metaprompt_lite.data.catalog`),
every image of every dataset (its class, pool/test split, domain, variant and look) and every image and
text-only sentence of the pretraining corpus, as a :class:`Plan`; :mod:`metaprompt_lite.data.build`
renders and writes it. All choices are seeded by the identity of a concept or image, so the plan (and
the build) is the same on every run:

* **Emoji** concepts present in all eight styles, from the object-like categories, are shuffled once;
  the first 50 are the **probe** (never in pretraining, in any style: the "unseen concepts" bar),
  the next 40 the **emoji-pacs** DG classes; of the rest, per category in that order, Objects gives
  the 100 classes of the familiar ``emoji-objects``, each other category the 50 of an unseen-concept
  dataset (``emoji-novel-animals/-food/-places``), and every category 25 more for ``emoji-pixel``.
  - B2N: per class, 2 of {Fluent 3D, Noto, OpenMoji, Twemoji} give the few-shot pool, the other 2
    the test. Pretraining sees the familiar concepts (emoji-objects, emoji-pixel) only as Fluent colour
    / flat / high-contrast drawings. With ``b2n_concept_images=False`` (``--no-b2n-concept-images``, an
    experiment) it sees no image of them: their captions stay in the text corpus as text only.
  - emoji-pixel's pool and test images are drawn in the pixel-art look (:func:`render.pixelate`),
    which pretraining never shows (no famfamfam pixel flag either).
  - emoji-pacs: photo = Fluent 3D, art = Noto, cartoon = Fluent flat, sketch = OpenMoji line;
    pretraining sees these concepts only as Twemoji drawings.
* **Unseen-concept emoji** B2N datasets: ``emoji-novel-animals/-food/-places`` above and
  ``emoji-novel-objects``, ``emoji-novel-mixed`` (:data:`NOVEL_B2N`): pretraining never shows them as an
  image, in any style (the captions of all their drawings stay in the text corpus as text only).
  Their relatives (other animals, foods, places) stay in the corpus. The suite's counterpart of the
  papers' datasets whose names CLIP pairs weakly with their images (Aircraft, Cars, Flowers). 15 of
  emoji-novel-mixed's concepts have a gender or person variant in the corpus (man police officer ↔
  police officer), and its clock faces have other clock faces there (data/README.md). The
  measurements behind the first two: ``experiments/probe-difficulty/``.
* **Flags**: 40 countries for ``flags-dg`` (rectangle = flag-icons, circle = circle-flags,
  pixel = famfamfam, emoji = OpenMoji; pretraining: Twemoji only), 100 for B2N ``flags-pixel``
  (per class, 2 of Twemoji / OpenMoji / circle-flags / famfamfam to the pool, the other 2 to the
  test, all in the pixel-art look; pretraining: their flag-icons drawings).
* **Cards** (52 classes): pool = 4 decks, test = 6 other decks, pretraining = 14 further decks.
* **Fashion-MNIST**: pool = 50 train images per class, test = 100 test images per class,
  pretraining = 300 other train images per class.
* **Clipart** (only with ``clipart=True``, ``--clipart``, an experiment): Tux Paint stamps and
  Openclipart drawings, corpus only, none naming an evaluated emoji concept (:func:`plan_clipart`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from metaprompt_lite.data import clipart, render
from metaprompt_lite.data.catalog import Drawing, EmojiStyles, card_name, emoji_captions, flag_captions, usable_deck
from metaprompt_lite.data.sources import (
    CARD_RANKS,
    CARD_SUITS,
    FASHION_CLASSES,
    EmojiMetadata,
    SourceMissing,
    Sources,
    card_decks,
    card_id,
    countries,
    fashion_mnist,
    flag_key,
    npm_install_line,
    wordnet_glosses,
)
from metaprompt_lite.data.store import B2N_DATASETS, DG_BENCHMARKS, PROBES

EMOJI_CATEGORIES = ("Objects", "Animals & Nature", "Food & Drink", "Travel & Places")  # the object-like ones
# Suite v3's emoji B2N datasets drawn per category: emoji-objects is the familiar one (its concepts are in
# the corpus as Fluent drawings); the emoji-novel-* ones are held out of pretraining as images (names
# stay as text); emoji-pixel takes 25 more familiar concepts of each category, shown in the pixel look.
FAMILIAR_EMOJI = {"Objects": "emoji-objects"}
NOVEL_CATEGORIES = {"Animals & Nature": "emoji-novel-animals", "Food & Drink": "emoji-novel-food",
                    "Travel & Places": "emoji-novel-places"}
N_NOVEL, N_PIXEL_PER_CATEGORY = 50, 25
MAX_CLASSES = 100
N_PROBE, N_EMOJI_DG, N_FLAGS_DG, N_FLAGS_B2N = 50, 40, 40, 100
POOL_VARIANTS, TEST_VARIANTS, DG_VARIANTS = 3, 3, 4
B2N_EMOJI_STYLES = ("fluent-3d", "noto", "openmoji", "twemoji")  # 2 per class to the pool, 2 to the test
B2N_CORPUS_STYLES = ("fluent", "fluent-flat", "fluent-hc")  # the B2N concepts' pretraining drawings
B2N_FLAG_STYLES = ("circle-flags", "famfamfam", "openmoji", "twemoji")

# The novel emoji B2N datasets' concepts (emoji keys), drawn by ``experiments/probe-difficulty/probe_difficulty.py``
# (``choose_holdouts``, seed 0) from the corpus as built before these datasets existed (commit 8b41c58;
# the current corpus no longer holds them, so re-running it draws others): among the emoji the other
# datasets leave with a plain drawing in Twemoji, Noto, OpenMoji, Fluent and Fluent 3D, 50 object-like
# (Objects, Travel & Places, Animals & Nature, Food & Drink) and 50 of any category but flags (mostly
# People & Body, Smileys & Emotion).
# One name, "t-shirt", is also a Fashion-MNIST class, whose photos stay in the corpus.
NOVEL_B2N = {
    "emoji-novel-objects": (
        "1F308", "1F31F", "1F32A", "1F332", "1F33D", "1F35A", "1F3E9", "1F3F0", "1F426", "1F437", "1F455", "1F45C",
        "1F484", "1F492", "1F4BC", "1F4D0", "1F4E0", "1F4E2", "1F4FD", "1F507", "1F50E", "1F516", "1F517", "1F554",
        "1F556", "1F55B", "1F562", "1F5DD", "1F5DE", "1F685", "1F69E", "1F6DF", "1F6E0", "1F6EB", "1F95C", "1F98C",
        "1F98F", "1F9AF", "1F9C9", "1F9ED", "1F9FE", "1FA73", "1FA9F", "1FAA6", "1FACE", "2600", "2696", "2697",
        "26A1", "2712",
    ),
    "emoji-novel-mixed": (
        "0030-20E3", "1F374", "1F396", "1F3A9", "1F3C0", "1F3CB", "1F3E6", "1F466", "1F468-200D-1F527",
        "1F469-200D-1F3A4", "1F469-200D-2695", "1F46E-200D-2642", "1F496", "1F49A", "1F4A6", "1F4C4", "1F4CF",
        "1F4DC", "1F4DE", "1F616", "1F640", "1F644", "1F64B-200D-2642", "1F6B0", "1F6B4", "1F6B5-200D-2640",
        "1F6B6-200D-2642", "1F6D7", "1F7E9", "1F919", "1F922", "1F92E", "1F96F", "1F9CD", "1F9CE", "1F9D1",
        "1F9D1-200D-1F9B3", "1FA76", "1FAA1", "1FAA5", "1FAC5", "1FAF0", "1FAF3", "260E", "2620", "262E", "26F5",
        "26F9-200D-2642", "271D", "3030",
    ),
}

GENERIC_TEMPLATES = ("a drawing of a {}.", "an emoji of a {}.", "a picture of a {}.", "an icon of a {}.")
TEMPLATES = {
    "emoji-objects": ("a photo of a {}.",) + GENERIC_TEMPLATES,
    "emoji-novel-animals": ("a photo of a {}, a type of animal.",) + GENERIC_TEMPLATES,
    "emoji-novel-food": ("a photo of {}, a type of food.",) + GENERIC_TEMPLATES,
    "emoji-novel-places": ("a photo of a {}, a type of place or vehicle.",) + GENERIC_TEMPLATES,
    "emoji-pixel": ("a photo of a {}.",) + GENERIC_TEMPLATES + ("a pixel art drawing of a {}.",),
    "emoji-novel-objects": ("a photo of a {}.",) + GENERIC_TEMPLATES,
    "emoji-novel-mixed": ("a photo of a {}.",) + GENERIC_TEMPLATES,
    "flags-pixel": ("a photo of the flag of {}.", "the flag of {}.", "a drawing of the flag of {}.",
                    "the national flag of {}.", "an icon of the flag of {}.", "a pixel art flag of {}."),
    "cards": ("a photo of the {}, a playing card.", "the {}.", "a playing card: the {}.",
              "a drawing of the {} card.", "the {} from a deck of cards."),
    "fashion": ("a photo of a {}, a type of clothing.", "a black and white photo of a {}.",
                "a photo of a {}.", "a low resolution photo of a {}.", "a product photo of a {}."),
    "emoji-pacs": ("a photo of a {}.",) + GENERIC_TEMPLATES,
    "flags-dg": ("a photo of the flag of {}.", "the flag of {}.", "a drawing of the flag of {}.",
                 "the national flag of {}.", "an icon of the flag of {}."),
    "emoji-unseen": ("a photo of a {}.",) + GENERIC_TEMPLATES,
}
# The suite each dataset belongs to, in the store's order: the loader's lists are the one source.
SUITES = {**dict.fromkeys(B2N_DATASETS, "b2n"), **dict.fromkeys(DG_BENCHMARKS, "dg"), **dict.fromkeys(PROBES, "probe")}


def split_styles(styles: tuple[str, ...], key: str, n_pool: int) -> tuple[list[str], list[str]]:
    """Per class, which source styles go to the train pool and which to the test pool: a seeded
    shuffle of ``styles`` for this class. Every style is in the pool for some classes and in the
    test for others, so pool and test follow the same style distribution (no systematic train/test
    style shift, as in the papers' base-to-new protocol), while a class never shares a drawing
    between its pool and its test images."""
    order = _shuffled(list(styles), f"styles/{key}")
    return sorted(order[:n_pool]), sorted(order[n_pool:])


def _shuffled(keys, salt: str) -> list:
    return sorted(keys, key=lambda k: render.seed_of(salt, k))


# --------------------------------------------------------------------------- records
@dataclass
class Item:
    """One image to produce: a drawing and a variant index (0 = plain)."""

    drawing: Drawing
    variant: int
    classname: str
    concept: str
    domain: str
    split: str  # "pool" | "test" | "corpus"
    captions: tuple[str, ...] = ()
    look: str = "plain"  # "plain" | "pixel" (render.pixelate after the variant is drawn)


@dataclass
class Plan:
    datasets: dict[str, list[Item]] = field(default_factory=dict)
    classnames: dict[str, list[str]] = field(default_factory=dict)
    domains: dict[str, list[str]] = field(default_factory=dict)
    corpus: list[Item] = field(default_factory=list)
    text_only: list[str] = field(default_factory=list)  # sentences for the text corpus, with no image
    b2n_concept_images: bool = True  # False: the object-category B2N emoji concepts enter the corpus as text only
    missing: dict[str, str] = field(default_factory=dict)  # dataset -> reason
    emoji_styles: EmojiStyles | None = None  # set by plan_emoji; the flags reuse its Twemoji/OpenMoji drawings


def add_concept_to_corpus(plan: Plan, key: str, concept, styles, glosses: dict[str, str],
                          style_names: tuple[str, ...], images: bool = True) -> None:
    """Pretraining material of one emoji concept: its drawing in each of ``style_names`` the sources
    have, with its captions or, when ``images`` is False, the same captions as text only."""
    for style in style_names:
        drawing = styles.get(style, key)
        if drawing is None:
            continue
        captions = emoji_captions(concept, style, glosses)
        if images:
            plan.corpus.append(Item(drawing, 0, concept.name, key, style, "corpus", captions))
        else:
            plan.text_only += captions


def add_b2n_concept_to_corpus(plan: Plan, key: str, concept, styles, glosses: dict[str, str]) -> None:
    """Pretraining material of one emoji B2N concept: its Fluent drawings (``B2N_CORPUS_STYLES``) with
    their captions or, when ``plan.b2n_concept_images`` is False, the same captions as text only."""
    add_concept_to_corpus(plan, key, concept, styles, glosses, B2N_CORPUS_STYLES, plan.b2n_concept_images)


def plan_emoji(sources: Sources, plan: Plan, glosses: dict[str, str]) -> None:
    meta = EmojiMetadata(sources).concepts
    styles = EmojiStyles(sources)
    complete = [k for k, c in meta.items() if c.category in EMOJI_CATEGORIES and styles.complete(k)]
    order = _shuffled(complete, "emoji-split")
    probe, dg, rest = order[:N_PROBE], order[N_PROBE:N_PROBE + N_EMOJI_DG], order[N_PROBE + N_EMOJI_DG:]
    holder = {k: "emoji-unseen" for k in probe} | {k: "emoji-pacs" for k in dg}  # emoji key -> its dataset
    listed = {k for keys in NOVEL_B2N.values() for k in keys}
    familiar: dict[str, list[str]] = {}  # in the corpus as Fluent drawings
    novel: dict[str, list[str]] = {}  # no image in the corpus
    pixel: list[str] = []
    for category in EMOJI_CATEGORIES:  # per category, in the seeded order: the dataset's, then 25 for emoji-pixel
        keys = [k for k in rest if meta[k].category == category and k not in listed]
        if category in FAMILIAR_EMOJI:
            familiar[FAMILIAR_EMOJI[category]], keys = sorted(keys[:MAX_CLASSES]), keys[MAX_CLASSES:]
        else:
            novel[NOVEL_CATEGORIES[category]], keys = sorted(keys[:N_NOVEL]), keys[N_NOVEL:]
        pixel += keys[:N_PIXEL_PER_CATEGORY]
    familiar["emoji-pixel"] = sorted(pixel)
    for dataset, keys in {**familiar, **novel}.items():
        holder |= {k: dataset for k in keys}

    def items(keys, dataset, assignments, variants, split_of, look="plain"):
        out = []
        for key in keys:
            for style, domain in assignments:
                drawing = styles.get(style, key)
                for v in range(variants):
                    out.append(Item(drawing, v, meta[key].name, key, domain, split_of(style), look=look))
        return out

    for dataset, keys in NOVEL_B2N.items():
        keys = sorted(keys)
        unknown = [k for k in keys if k not in meta]
        incomplete = [k for k in keys if k in meta and any(styles.get(st, k) is None for st in B2N_EMOJI_STYLES)]
        taken = [f"{k} ({meta[k].name}) by {holder[k]}" for k in keys if k in holder]
        problems = [f"{len(unknown)} unknown to these emoji sources: {unknown}"] if unknown else []
        problems += [f"{len(incomplete)} without a drawing in every style of {B2N_EMOJI_STYLES}: "
                     f"{incomplete}"] if incomplete else []
        problems += [f"{len(taken)} already drawn for another dataset: {taken}"] if taken else []
        if problems:
            raise SourceMissing(f"{dataset}: of its emoji (NOVEL_B2N), " + "; ".join(problems) + ". These "
                                f"emoji sources differ from the ones the suite was built with: install the "
                                f"versions of data/README.md with:\n  {npm_install_line(sources.npm)}")
        holder |= {k: dataset for k in keys}
        novel[dataset] = keys
    chosen = {**familiar, **novel}
    for dataset in sorted(chosen, key=list(SUITES).index):
        keys = chosen[dataset]
        look = "pixel" if dataset == "emoji-pixel" else "plain"
        domain = "pixel" if look == "pixel" else "emoji"
        plan.classnames[dataset] = [meta[k].name for k in keys]
        plan.domains[dataset] = [domain]
        pool, test = [], []
        for key in keys:
            pool_styles, test_styles = split_styles(B2N_EMOJI_STYLES, key, 2)
            pool += items([key], dataset, [(st, domain) for st in pool_styles], POOL_VARIANTS, lambda s: "pool", look)
            test += items([key], dataset, [(st, domain) for st in test_styles], TEST_VARIANTS, lambda s: "test", look)
        plan.datasets[dataset] = pool + test
    for keys in familiar.values():
        for key in keys:
            add_b2n_concept_to_corpus(plan, key, meta[key], styles, glosses)
    for keys in novel.values():  # never an image: the captions their drawings would have had, as text only
        for key in keys:
            add_concept_to_corpus(plan, key, meta[key], styles, glosses, EmojiStyles.STYLES, images=False)
    dg = sorted(dg)
    pacs = (("fluent-3d", "photo"), ("noto", "art"), ("fluent-flat", "cartoon"), ("openmoji-line", "sketch"))
    plan.classnames["emoji-pacs"] = [meta[k].name for k in dg]
    plan.domains["emoji-pacs"] = [d for _, d in pacs]
    plan.datasets["emoji-pacs"] = items(dg, "emoji-pacs", pacs, DG_VARIANTS, lambda s: "test")
    for key in dg:
        add_concept_to_corpus(plan, key, meta[key], styles, glosses, ("twemoji",))
    probe = sorted(probe)
    plan.classnames["emoji-unseen"] = [meta[k].name for k in probe]
    plan.domains["emoji-unseen"] = ["emoji"]
    plan.datasets["emoji-unseen"] = items(probe, "emoji-unseen", [(s, "emoji") for s in
                                          ("twemoji", "noto", "openmoji", "fluent", "fluent-3d")], 1, lambda s: "test")
    # everything else (any category, any style present) is pretraining material
    for key, concept in meta.items():
        if key not in holder and concept.category != "Flags":
            add_concept_to_corpus(plan, key, concept, styles, glosses, EmojiStyles.STYLES)
    plan.emoji_styles = styles


def plan_flags(sources: Sources, plan: Plan) -> None:
    if plan.emoji_styles is None:
        raise SourceMissing("the flags need the emoji sources (their Twemoji and OpenMoji drawings); "
                            f"install them with:\n  {npm_install_line(sources.npm)}")
    styles = plan.emoji_styles
    icons = sources.npm_dir("flag-icons")
    circles = sources.npm_dir("circle-flags") / "flags"
    pixels = sources.require(sources.famfamfam, "famfamfam-flag-png")

    def drawings(code: str) -> dict[str, Drawing | None]:
        key = flag_key(code)
        out = {"twemoji": styles.get("twemoji", key), "openmoji": styles.get("openmoji", key)}
        for style, path, root, package in (
            ("flag-icons", icons / "flags" / "4x3" / f"{code}.svg", icons, "flag-icons"),
            ("flag-icons-1x1", icons / "flags" / "1x1" / f"{code}.svg", icons, "flag-icons"),
            ("circle-flags", circles / f"{code}.svg", circles.parent, "circle-flags"),
            ("famfamfam", Path(pixels) / f"{code}.png", Path(pixels), "famfamfam-flag-png"),
        ):
            out[style] = (Drawing(f"{package}:{path.relative_to(root)}", package, str(path.relative_to(root)),
                                  style, lambda path=path: render.render_file(path)) if path.is_file() else None)
        return out

    table = {c["code"]: c for c in countries(sources)}
    usable = [c for c in table if all(drawings(c).values())]
    order = _shuffled(usable, "flag-split")
    dg, b2n = sorted(order[:N_FLAGS_DG]), order[N_FLAGS_DG:N_FLAGS_DG + N_FLAGS_B2N]
    b2n = sorted(b2n, key=lambda c: table[c]["name"])
    dg = sorted(dg, key=lambda c: table[c]["name"])
    used = set(dg) | set(b2n)

    def items(codes, assignments, variants, split, look="plain"):
        return [Item(drawings(code)[style], v, table[code]["name"], f"flag-{code}", domain, split, look=look)
                for code in codes for style, domain in assignments for v in range(variants)]

    plan.classnames["flags-pixel"] = [table[c]["name"] for c in b2n]
    plan.domains["flags-pixel"] = ["pixel"]
    pool, test = [], []
    for code in b2n:  # the four flag styles, each in the pixel look
        pool_styles, test_styles = split_styles(B2N_FLAG_STYLES, f"flag-{code}", 2)
        pool += items([code], [(st, "pixel") for st in pool_styles], POOL_VARIANTS, "pool", "pixel")
        test += items([code], [(st, "pixel") for st in test_styles], TEST_VARIANTS, "test", "pixel")
    plan.datasets["flags-pixel"] = pool + test
    doms = (("flag-icons", "rectangle"), ("circle-flags", "circle"), ("famfamfam", "pixel"), ("openmoji", "emoji"))
    plan.classnames["flags-dg"] = [table[c]["name"] for c in dg]
    plan.domains["flags-dg"] = [d for _, d in doms]
    plan.datasets["flags-dg"] = items(dg, doms, DG_VARIANTS, "test")
    for code in sorted(table):
        corpus_styles = (("flag-icons", "flag-icons-1x1") if code in b2n else ("twemoji",) if code in dg
                         else ("twemoji", "openmoji", "flag-icons", "flag-icons-1x1", "circle-flags"))
        # no famfamfam pixel flag of any country: the pixel look stays out of pretraining
        d = drawings(code)
        for style in corpus_styles:
            if d.get(style) is not None:
                phrase = "flag-icons" if style == "flag-icons-1x1" else style
                plan.corpus.append(Item(d[style], 0, table[code]["name"], f"flag-{code}", style, "corpus",
                                        flag_captions(table[code], phrase)))
    del used


def plan_cards(sources: Sources, plan: Plan) -> None:
    decks = [d for d in card_decks(sources) if usable_deck(d[1], d[2])]
    if len(decks) < 10:
        raise SourceMissing(f"only {len(decks)} card decks found; install them with:\n  "
                            "apt-get install -y --no-install-recommends gnome-cards-data kdegames-card-data-kf5 librsvg2-bin")
    order = _shuffled([d[0] for d in decks], "card-split")
    by_name = {d[0]: d for d in decks}
    evaluation, corpus = order[:10], order[10:24]
    classes = [(r, s) for s in CARD_SUITS for r in CARD_RANKS]
    plan.classnames["cards"] = [card_name(r, s) for r, s in classes]
    plan.domains["cards"] = ["card"]

    def drawing(deck: str, rank: str, suit: str) -> Drawing:
        name, path, scheme, package = by_name[deck]
        element = card_id(rank, suit, scheme)
        root = sources.aisleriot if scheme == "gnome" else sources.carddecks
        rel = str(Path(path).relative_to(root))
        return Drawing(f"{package}:{rel}#{element}", package, f"{rel}#{element}", deck,
                       lambda: render.render_svg_element(path, element))

    items = {"pool": [], "test": []}
    for rank, suit in classes:  # per card: 4 of the 10 evaluation decks for the pool, 6 for the test
        pool_decks, test_decks = split_styles(tuple(sorted(evaluation)), f"card-{suit}-{rank}", 4)
        for split, decks_, variants in (("pool", pool_decks, 2), ("test", test_decks, 1)):
            for deck in decks_:
                for v in range(variants):
                    items[split].append(Item(drawing(deck, rank, suit), v, card_name(rank, suit),
                                             f"card-{suit}-{rank}", "card", split))
    items = items["pool"] + items["test"]
    plan.datasets["cards"] = items
    for deck in sorted(corpus):
        for rank, suit in classes:
            name = card_name(rank, suit)
            plan.corpus.append(Item(drawing(deck, rank, suit), 0, name, f"card-{suit}-{rank}", "card", "corpus",
                                    (f"the {name}", f"a playing card, the {name}", f"{name}, a playing card",
                                     f"the {name} from a deck of cards")))


def plan_clipart(sources: Sources, plan: Plan, glosses: dict[str, str]) -> None:
    """Corpus-only images with names no suite dataset uses: Tux Paint stamps and Openclipart
    (:mod:`metaprompt_lite.data.clipart`). An image is dropped when any caption (gloss included) or any
    path of its file mentions an evaluated emoji concept (for the probe, emoji-pacs and the novel B2N
    datasets also by head noun, singular and hand-listed look-alike, :func:`clipart.excluded_terms`;
    the novel datasets only after the clipart experiment had run), or when its name is
    already a corpus or suite concept's (no second concept of the same name)."""
    stamps = clipart.tuxpaint_stamps(sources.require(sources.tuxpaint, "tuxpaint-stamps-default"))
    vocabulary = clipart.english_vocabulary(sources.require(Path(sources.wordnet), "wordnet-base"))
    drawings = clipart.openclipart(sources.require(sources.openclipart, "openclipart-svg"), vocabulary)
    strict = [n for d in ("emoji-unseen", "emoji-pacs", *NOVEL_B2N, *NOVEL_CATEGORIES.values())
              for n in plan.classnames.get(d, [])]
    exact = [n for d in (*FAMILIAR_EMOJI.values(), "emoji-pixel", "flags-pixel", "flags-dg")
             for n in plan.classnames.get(d, [])]
    if not strict:
        raise SourceMissing("the clipart filter needs the emoji sources (the probe's class names)")
    terms = clipart.excluded_terms(strict, exact)
    known = {clipart.normalise(i.classname) for i in plan.corpus} | {
        clipart.normalise(n) for names in plan.classnames.values() for n in names}
    roots = {"tuxpaint-stamps-default": Path(sources.tuxpaint), "openclipart-svg": Path(sources.openclipart)}
    for image in stamps + drawings:
        captions = clipart.captions(image, glosses)
        # every caption (glosses included) and every path of the file, folders and file names
        if clipart.mentions(" | ".join(captions + (image.paths,)), terms) or clipart.normalise(image.name) in known:
            continue
        rel = str(image.path.relative_to(roots[image.package]))
        drawing = Drawing(f"{image.package}:{rel}", image.package, rel, "clipart",
                          lambda path=image.path: render.render_file_or_rsvg(path))
        plan.corpus.append(Item(drawing, 0, image.name, f"clipart-{image.name}", image.package.split("-")[0],
                                "corpus", captions))


def plan_fashion(sources: Sources, plan: Plan) -> None:
    train_x, train_y = fashion_mnist(sources, "train")
    test_x, test_y = fashion_mnist(sources, "t10k")
    package = "dataset-fashion-mnist"
    plan.classnames["fashion"] = list(FASHION_CLASSES)
    plan.domains["fashion"] = ["photo"]

    def drawing(split: str, index: int, pixels) -> Drawing:
        rel = f"{split}-images-idx3-ubyte.gz#{index}"
        return Drawing(f"{package}:{rel}", package, rel, "photo", lambda: render.grey_to_rgba(pixels), photo=True)

    items = []
    corpus = []
    for label, name in enumerate(FASHION_CLASSES):
        train_ids = _shuffled(np.flatnonzero(train_y == label).tolist(), f"fashion-train-{label}")
        test_ids = _shuffled(np.flatnonzero(test_y == label).tolist(), f"fashion-test-{label}")
        items += [Item(drawing("train", i, train_x[i]), 0, name, f"fashion-{label}", "photo", "pool")
                  for i in sorted(train_ids[:50])]
        items += [Item(drawing("t10k", i, test_x[i]), 0, name, f"fashion-{label}", "photo", "test")
                  for i in sorted(test_ids[:100])]
        corpus += [Item(drawing("train", i, train_x[i]), 0, name, f"fashion-{label}", "photo", "corpus",
                        (f"a grey photo of a {name}", f"a photo of a {name}", f"{name}, a type of clothing",
                         f"a low resolution product photo of a {name}"))
                   for i in sorted(train_ids[50:350])]
    plan.datasets["fashion"] = items
    plan.corpus += corpus


def make_plan(sources: Sources, b2n_concept_images: bool = True, clipart: bool = False) -> tuple[Plan, dict[str, str]]:
    """The plan of every dataset and of the corpus, and the WordNet glosses its captions used. A missing
    source skips the datasets that need it: ``plan.missing`` names them, with the reason and install line.
    ``b2n_concept_images=False`` gives the object-category emoji B2N concepts to the corpus as text only;
    ``clipart=True`` adds the Tux Paint / Openclipart corpus images (:func:`plan_clipart`)."""
    plan = Plan(b2n_concept_images=b2n_concept_images)
    try:
        glosses = wordnet_glosses(sources)
    except SourceMissing as error:
        glosses = {}
        plan.missing["wordnet glosses (captions)"] = str(error)
    steps = ((lambda: plan_emoji(sources, plan, glosses),
              (*FAMILIAR_EMOJI.values(), "emoji-pixel", *NOVEL_CATEGORIES.values(), *NOVEL_B2N, "emoji-pacs",
               "emoji-unseen")),
             (lambda: plan_flags(sources, plan), ("flags-pixel", "flags-dg")),
             (lambda: plan_cards(sources, plan), ("cards",)),
             (lambda: plan_fashion(sources, plan), ("fashion",)))
    if clipart:
        steps += ((lambda: plan_clipart(sources, plan, glosses), ("clipart (corpus only)",)),)
    for planner, names in steps:  # a missing source skips its datasets, with the reason and install line
        try:
            planner()
        except SourceMissing as error:
            for name in names:
                plan.missing[name] = str(error)
    return plan, glosses


def text_corpus_extras(plan: Plan, glosses: dict[str, str], limit: int = 30000) -> list[str]:
    """Sentences for text distillation beyond the image captions: the text-only captions (the novel
    datasets' concepts; with ``b2n_concept_images=False`` also the object-category B2N ones), evaluation
    class names × their templates (not the probe's) and WordNet noun glosses."""
    out = list(plan.text_only)
    for name, classnames in plan.classnames.items():
        if SUITES[name] == "probe":
            continue
        out += [t.format(c) for c in classnames for t in TEMPLATES[name]]
    lemmas = _shuffled(sorted(glosses), "wordnet")[:limit]
    out += [f"{lemma}: {glosses[lemma]}" for lemma in lemmas]
    out += [f"a photo of a {lemma}." for lemma in lemmas[: limit // 3]]
    return out
