"""What the source packages offer to draw, and how a drawing is described.

Each source image is a :class:`Drawing`: its identity (package:file#element, which the store and the
corpus record), its package and style, and how to render it (:mod:`metaprompt_lite.data.render`).
:class:`EmojiStyles` finds every emoji's drawing in each of the eight emoji styles, :func:`usable_deck`
which card decks render usably, and the ``*_captions`` functions give the sentences a drawing carries in
the pretraining corpus. Nothing here chooses: which drawing goes into which dataset, split or the corpus
is :mod:`metaprompt_lite.data.plan`'s job, rendering and writing :mod:`metaprompt_lite.data.build`'s;
kept apart so the selection reads without the packages' file layouts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from metaprompt_lite.data import render
from metaprompt_lite.data.sources import (
    CARD_RANK_NAMES,
    CARD_RANKS,
    Sources,
    card_id,
    emoji_key,
    iconify_chars,
    iconify_icons,
)

STYLE_PHRASES = {
    "twemoji": "an emoji of {}", "noto": "a cartoon emoji of {}", "openmoji": "a flat drawing of {}",
    "openmoji-line": "a black line drawing of {}", "fluent": "a glossy emoji of {}",
    "fluent-flat": "a flat cartoon of {}", "fluent-hc": "a black and white icon of {}",
    "fluent-3d": "a 3d render of {}", "flag-icons": "a picture of {}", "circle-flags": "a round badge of {}",
    "famfamfam": "a tiny pixel icon of {}", "card": "a playing card, {}", "photo": "a grey photo of {}",
}


@dataclass(frozen=True)
class Drawing:
    """One source image: how to render it and where it came from."""

    id: str  # package:file#element, unique
    package: str
    file: str
    style: str
    load: Callable[[], Image.Image] = field(compare=False, hash=False, repr=False)
    photo: bool = False


class EmojiStyles:
    """key -> Drawing for each of the eight emoji styles."""

    STYLES = ("twemoji", "noto", "openmoji", "openmoji-line", "fluent", "fluent-flat", "fluent-hc", "fluent-3d")

    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.by_style: dict[str, dict[str, Drawing]] = {}
        names = {}
        for package, style in (("@iconify-json/twemoji", "twemoji"), ("@iconify-json/noto", "noto")):
            chars = iconify_chars(sources, package)
            svgs, _, _ = iconify_icons(sources, package)
            self.by_style[style] = {k: self._svg(package, style, n, svgs[n]) for k, n in chars.items() if n in svgs}
            for k, n in chars.items():
                names.setdefault(k, n)
        for package, style in (("@iconify-json/fluent-emoji", "fluent"), ("@iconify-json/fluent-emoji-flat", "fluent-flat"),
                               ("@iconify-json/fluent-emoji-high-contrast", "fluent-hc")):
            svgs, _, _ = iconify_icons(sources, package)
            self.by_style[style] = {k: self._svg(package, style, n, svgs[n]) for k, n in names.items() if n in svgs}
        root = sources.npm_dir("openmoji")
        for sub, style in (("color", "openmoji"), ("black", "openmoji-line")):
            files = sorted((root / sub / "svg").glob("*.svg"))
            self.by_style[style] = {emoji_key(p.stem): self._file("openmoji", style, p, root) for p in files}
        root3d = sources.npm_dir("@lobehub/fluent-emoji-3d")
        files = sorted((root3d / "assets").glob("*.webp"))
        self.by_style["fluent-3d"] = {emoji_key(p.stem): self._file("@lobehub/fluent-emoji-3d", "fluent-3d", p, root3d)
                                      for p in files}

    @staticmethod
    def _svg(package: str, style: str, name: str, svg: str) -> Drawing:
        return Drawing(f"{package}:icons.json#{name}", package, f"icons.json#{name}", style,
                       lambda svg=svg: render.render_svg(svg))

    @staticmethod
    def _file(package: str, style: str, path: Path, root: Path) -> Drawing:
        rel = str(path.relative_to(root))
        return Drawing(f"{package}:{rel}", package, rel, style, lambda path=path: render.render_file(path))

    def get(self, style: str, key: str) -> Drawing | None:
        return self.by_style[style].get(key)

    def complete(self, key: str) -> bool:
        return all(key in self.by_style[s] for s in self.STYLES)


def emoji_captions(concept, style: str, glosses: dict[str, str]) -> tuple[str, ...]:
    name = concept.name
    out = [STYLE_PHRASES[style].format(name), name, f"a photo of a {name}."]
    out += [f"{STYLE_PHRASES[style].format(s)}" for s in concept.short_names[:2] if s != name]
    out += [f"{name}, {t}" for t in concept.tags[:3]]
    if concept.subcategory:
        out.append(f"{name}, a kind of {concept.subcategory.split('-')[-1]}")
    gloss = glosses.get(name) or glosses.get(name.split()[-1])
    if gloss:
        out.append(f"{name}: {gloss}")
    return tuple(dict.fromkeys(out))


def flag_captions(country: dict, style: str) -> tuple[str, ...]:
    name = country["name"]
    out = [STYLE_PHRASES[style].format(f"the flag of {name}"), f"the flag of {name}", f"flag of {name}",
           f"the national flag of {name}, a country in {country.get('continent') or 'the world'}"]
    if country.get("capital"):
        out.append(f"the flag of {name}, whose capital is {country['capital']}")
    return tuple(out)


def card_name(rank: str, suit: str) -> str:
    return f"{CARD_RANK_NAMES[CARD_RANKS.index(rank)]} of {suit}s"


def usable_deck(path: Path, scheme: str) -> bool:
    """A deck whose king of clubs renders as one card-shaped image at a usable size (some decks'
    SVGs have no dimensions or draw the element at a tiny scale)."""
    try:
        image = render.render_svg_element_raw(path, card_id("king", "club", scheme))
    except Exception:
        return False
    box = image.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if box is None:
        return False
    width, height = box[2] - box[0], box[3] - box[1]
    return height >= 150 and 1.2 <= height / max(1, width) <= 1.75
