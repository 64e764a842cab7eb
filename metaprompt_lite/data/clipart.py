"""Named clipart and photo cut-outs for the pretraining corpus: Tux Paint stamps and Openclipart.

Both ship in Debian (``tuxpaint-stamps-default``: ~1,000 stamps, many photo cut-outs, each with a
one-line English description; ``openclipart-svg``: ~8,000 public-domain SVG named by file). They add
*concepts* the emoji never name (tools, instruments, birds, vehicles, ...), which is what zero-shot
transfer to unseen names needs most, and photo-like cut-outs, which the emoji lack.

They enter the corpus only, never the suite, and never for a concept the suite evaluates: an image
is dropped when a caption or a path of its file mentions an evaluated concept (:func:`excluded_terms`,
:func:`mentions`); for the probe and the DG classes also their head nouns ("helmet" for "rescue
worker's helmet"), singulars and hand-listed look-alikes (:data:`LOOK_ALIKES`), so no cow, clock or
padlock picture stands in for a held-out emoji (``plan.plan_clipart``).

Openclipart file names carry author names and Italian words ("small_truck_steffen_gluc_01",
"farfalla_stilizzata"): :func:`openclipart_name` keeps the leading English words (WordNet's
vocabulary) and drops files with none.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

STOPWORDS = {"a", "an", "the", "of", "and", "with", "in", "on", "for", "to", "at", "by", "from", "or"}
GENERIC = {"icon", "button", "image", "picture", "clipart", "clip", "art", "symbol", "sample", "example",
           "test", "new", "old", "small", "big", "simple", "set", "bw", "color", "colour", "black", "white",
           "bordered", "ornamental", "another", "wooden", "sad"}
# Openclipart folders that hold no nameable object (icon themes, star polygons, gradients, flags of
# countries the flags datasets evaluate, Italian-named uploads)
OPENCLIPART_SKIP = ("computer/icons", "computer/buttons", "shapes", "special", "signs_and_symbols/flags",
                    "signs_and_symbols/led", "unsorted", "buttons")
TUXPAINT_SKIP = ("alphabets", "flags", "00_symbols")
MAX_SVG_BYTES = 400_000  # a few Openclipart files are huge scanned traces; cairosvg takes minutes on them


@dataclass(frozen=True)
class NamedImage:
    """One corpus-only image: its file, package, a short English name and an optional description."""

    path: Path
    package: str
    name: str
    description: str | None
    category: str  # e.g. "birds", from the folder
    paths: str = ""  # every path of the file (relative, space-separated): the filter reads them all


def english_vocabulary(wordnet_dir: Path) -> set[str]:
    """Single-word lemmas of every WordNet part of speech, plus their irregular inflections."""
    words: set[str] = set()
    for pos in ("noun", "verb", "adj", "adv"):
        index = Path(wordnet_dir) / f"index.{pos}"
        with open(index, encoding="latin-1") as f:
            for line in f:
                if not line.startswith(" "):
                    lemma = line.split(" ", 1)[0]
                    if "_" not in lemma and lemma.isalpha():
                        words.add(lemma.lower())
        exceptions = Path(wordnet_dir) / f"{pos}.exc"
        if exceptions.is_file():
            with open(exceptions, encoding="latin-1") as f:
                words.update(line.split(" ", 1)[0].lower() for line in f if line.strip())
    return words


def is_word(token: str, vocabulary: set[str]) -> bool:
    """A stop word, or a known word of 3 letters or more ("bb", "sm" are WordNet lemmas) or a regular
    plural of one."""
    return token in STOPWORDS or (len(token) >= 3 and (token in vocabulary or (token.endswith("s") and token[:-1] in vocabulary)
                                                       or (token.endswith("es") and token[:-2] in vocabulary)))


def openclipart_name(stem: str, vocabulary: set[str]) -> str | None:
    """The leading English words of an Openclipart file name, or None.

    ``small_truck_steffen_gluc_01`` -> ``small truck``; ``owl_on_branch_ganson`` -> ``owl on branch``;
    ``farfalla_stilizzata`` -> None. Digits are dropped; stop words may not end the name.
    """
    tokens = [t for t in re.split(r"[_\-\s.]+", re.sub(r"\d+", " ", stem.lower())) if t]
    words = []
    for token in tokens:
        if len(token) < 2 or not is_word(token, vocabulary):
            break
        words.append(token)
    while words and words[-1] in STOPWORDS:
        words.pop()
    if not words or all(w in GENERIC or w in STOPWORDS for w in words):
        return None
    return " ".join(words)


def normalise(text: str) -> str:
    """Lower case, typographic apostrophe as ASCII, no surrounding spaces: how names are compared."""
    return text.lower().replace("\u2019", "'").strip()


def head_nouns(name: str) -> list[str]:
    """The object a concept name is about: ``rescue worker's helmet`` -> helmet, ``glass of milk`` -> glass,
    ``nut and bolt`` -> nut, bolt, ``sun with face`` -> sun, ``tiger face`` / ``pig nose`` -> tiger / pig, ``ten o'clock`` -> clock."""
    name = normalise(name)
    for joiner in (" with ", " behind ", " showing ", " of "):
        if joiner in name:
            name = name.split(joiner)[0]
    parts = [p.strip() for p in name.split(" and ")]
    out = []
    for part in parts:
        words = part.replace("o'clock", "clock").split()
        if not words:
            continue
        if words[-1] in ("face", "nose") and len(words) > 1:
            words = words[:-1]
        out.append(words[-1].split("'")[0])
    return out


# Look-alikes of probe / emoji-pacs classes under other names, found by reviewing the kept images of
# the first --clipart build (experiments/clipart/). A hand-made list: synonyms not on
# it can still pass the filter.
LOOK_ALIKES = {
    "locked": ("lock", "padlock"), "musical keyboard": ("piano", "keyboard"),
    "round pushpin": ("pin", "thumbtack", "drawing pin"), "sun behind cloud": ("cloudy", "partly sunny"),
    "house": ("home", "cottage", "chalet", "igloo", "bungalow", "cabin"), "hut": ("shack", "shed", "igloo"),
    "cityscape": ("city", "skyline", "city horizon", "skyscraper"), "cow": ("bull", "cattle", "ox", "calf", "heifer"),
    "rescue worker’s helmet": ("hard hat", "hardhat"), "globe showing americas": ("globe", "earth", "world"),
    "sport utility vehicle": ("hummer", "jeep", "suv", "blazer", "land cruiser"), "cat face": ("kitten", "kitty"),
    "wastebasket": ("garbage", "trash", "wheelie bin", "rubbish", "waste bin", "litter bin"),
    "grapes": ("grape", "vine"), "blueberries": ("blueberry", "bilberry"), "musical note": ("quaver", "crotchet"),
    "shopping bags": ("shopping", "bag"), "glasses": ("spectacles", "eyeglasses", "sunglasses"),
    "woman’s boot": ("boot",), "folding hand fan": ("fan",), "ten o’clock": ("clock", "watch"),
    "rocket": ("spaceship", "space shuttle", "shuttle"), "racing car": ("race car", "formula one", "sportcar"),
    "fuel pump": ("gas station", "petrol", "gas pump"), "ferry": ("boat", "ship"), "motorway": ("highway", "road"),
}


def singular(word: str) -> str:
    """A rough English singular: blueberries -> blueberry, grapes -> grape, glasses -> glass."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def excluded_terms(strict_names: list[str], exact_names: list[str]) -> set[str]:
    """Phrases that disqualify a corpus image: every name, plus for ``strict_names`` (the probe's and
    the DG classes') their head nouns, the singular of each, and their :data:`LOOK_ALIKES`."""
    terms = {normalise(n) for n in list(strict_names) + list(exact_names)}
    for name in strict_names:
        heads = head_nouns(name)
        terms.update(heads)
        terms.update(singular(h) for h in heads)
        terms.update(normalise(t) for t in LOOK_ALIKES.get(name, LOOK_ALIKES.get(normalise(name), ())))
        words = normalise(name).split()
        terms.add(" ".join(words[:-1] + [singular(words[-1])]) if words else "")
    return {t for t in terms if len(t) >= 3}


def mentions(text: str, terms: set[str]) -> bool:
    """Whether ``text`` contains one of ``terms`` as whole words (plural -s/-es/-ies allowed)."""
    text = normalise(text).replace("_", " ").replace("-", " ")
    for t in terms:
        stem = re.escape(t[:-1]) + "(y|ies)" if t.endswith("y") else re.escape(t) + "(s|es)?"
        if re.search(rf"(?<![a-z]){stem}(?![a-z])", text):
            return True
    return False


def stamp_name(description: str, max_words: int = 5) -> str | None:
    """A stamp's name from its description: ``A red umbrella.`` -> ``red umbrella``; None when the
    description is longer than ``max_words`` words (then the file name is used)."""
    words = description.lower().rstrip(".!? ").split()
    while words and words[0] in ("a", "an", "the", "some"):
        words = words[1:]
    return " ".join(words) if 0 < len(words) <= max_words else None


def tuxpaint_stamps(root: Path) -> list[NamedImage]:
    """Every Tux Paint stamp with an English description (the first line of its ``.txt``) and an image
    (``.svg`` preferred over ``.png``), outside :data:`TUXPAINT_SKIP`; named by :func:`stamp_name`."""
    out = []
    for text in sorted(Path(root).rglob("*.txt")):
        rel = text.relative_to(root)
        if any(part in TUXPAINT_SKIP for part in rel.parts):
            continue
        image = next((p for p in (text.with_suffix(".svg"), text.with_suffix(".png")) if p.is_file()), None)
        if image is None:
            continue
        first = text.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
        description = first[0].strip() if first else ""
        if not description or "=" in description:
            continue
        description = re.split(r"(?<=[.!?])\s", description)[0].strip()
        name = stamp_name(description) or re.sub(r"[_\-]+", " ", re.sub(r"\d+", "", text.stem)).strip()
        if not name:
            continue
        out.append(NamedImage(image, "tuxpaint-stamps-default", name, description, rel.parts[-2] if len(rel.parts) > 1
                              else "stamps", str(rel)))
    return out


def openclipart(root: Path, vocabulary: set[str]) -> list[NamedImage]:
    """Every Openclipart SVG with an English name (:func:`openclipart_name`), one per distinct file
    content, outside :data:`OPENCLIPART_SKIP`, at most :data:`MAX_SVG_BYTES`."""
    digests = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(Path(root).rglob("*.svg"))}
    copies: dict[str, list[Path]] = {}  # every path of one file content, skipped folders included
    for path, digest in digests.items():
        copies.setdefault(digest, []).append(path)
    out, seen = [], set()
    for path, digest in digests.items():
        rel = path.relative_to(root)
        folder = "/".join(rel.parts[:-1])
        if any(folder == s or folder.startswith(s + "/") or rel.parts[0] == s for s in OPENCLIPART_SKIP):
            continue
        if path.stat().st_size > MAX_SVG_BYTES:
            continue
        if digest in seen:
            continue
        seen.add(digest)
        name = openclipart_name(path.stem, vocabulary)
        if name is not None:
            out.append(NamedImage(path, "openclipart-svg", name, None, rel.parts[-2] if len(rel.parts) > 1 else "",
                                  " ".join(str(p.relative_to(root)) for p in copies[digest])))
    return out


def captions(image: NamedImage, glosses: dict[str, str]) -> tuple[str, ...]:
    """Captions of a corpus-only image: its description, its name with a style phrase, its category and
    (when WordNet has one) the gloss of its name."""
    name = image.name
    style = "a picture of {}" if image.package.startswith("tuxpaint") else "a clipart of {}"
    out = []
    if image.description:
        out += [image.description, image.description.rstrip(".!? ").lower()]
    out += [style.format(name), name, f"a drawing of a {name}."]
    category = image.category.replace("_", " ").strip()
    if category and category not in name:
        out.append(f"{name}, {category}")
    gloss = glosses.get(name)  # the name's own sense only: its last word's can be another thing ("pen")
    if gloss:
        out.append(f"{name}: {gloss}")
    return tuple(dict.fromkeys(out))
