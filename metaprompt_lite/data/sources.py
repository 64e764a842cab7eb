"""Where the offline images come from: registry packages (npm, Debian, PyPI) and their metadata.

Every source is located on disk (never downloaded at run time by this module), versioned from its
own package metadata and tagged with its licence, so the manifest can say, per image, which
package@version and which file it came from. ``data/README.md`` lists each package, version and licence.

Emoji concepts are keyed by their Unicode code-point sequence in upper-case hex joined by ``-``,
without the variation selector ``FE0F`` (so ``2764-FE0F`` and ``2764`` are the same concept).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

NPM_PACKAGES = {
    "openmoji": "17.0.0",
    "@iconify-json/twemoji": "1.2.5",
    "@iconify-json/noto": "1.2.9",
    "@iconify-json/fluent-emoji": "1.2.7",
    "@iconify-json/fluent-emoji-flat": "1.2.6",
    "@iconify-json/fluent-emoji-high-contrast": "1.2.6",
    "@lobehub/fluent-emoji-3d": "1.1.0",
    "flag-icons": "7.5.0",
    "circle-flags": "2.8.3",
    "emoji-datasource-twitter": "16.0.0",
}
APT_PACKAGES = ("gnome-cards-data", "kdegames-card-data-kf5", "librsvg2-bin", "famfamfam-flag-png",
                "wordnet-base", "dataset-fashion-mnist")
CLIPART_APT_PACKAGES = ("tuxpaint-stamps-default", "openclipart-svg")  # only for `data build --clipart`


def npm_install_line(prefix: str | Path) -> str:
    return (f"npm install --no-save --prefix {prefix} "
            + " ".join(f"{name}@{version}" for name, version in NPM_PACKAGES.items()))


APT_INSTALL_LINE = "apt-get install -y --no-install-recommends " + " ".join(APT_PACKAGES)

LICENCES = {
    "@iconify-json/twemoji": "CC-BY-4.0",
    "emoji-datasource-twitter": "CC-BY-4.0 (images) / MIT (data)",
    "@iconify-json/noto": "Apache-2.0",
    "openmoji": "CC-BY-SA-4.0",
    "@iconify-json/fluent-emoji": "MIT",
    "@iconify-json/fluent-emoji-flat": "MIT",
    "@iconify-json/fluent-emoji-high-contrast": "MIT",
    "@lobehub/fluent-emoji-3d": "MIT",
    "flag-icons": "MIT",
    "circle-flags": "MIT",
    "famfamfam-flag-png": "public domain",
    "gnome-cards-data": "GPL-3+",
    "kdegames-card-data-kf5": "GPL-2+/LGPL-2+",
    "dataset-fashion-mnist": "MIT",
    "wordnet-base": "WordNet 3.0 licence",
    "tuxpaint-stamps-default": "GPL-2",
    "openclipart-svg": "public domain (Creative Commons Public Domain Dedication)",
}


class SourceMissing(RuntimeError):
    """A source package is not installed; the message carries its install line."""


def emoji_key(codepoints: str) -> str:
    """``'1f1eb-1f1f7'`` / ``'2764-FE0F'`` / ``'1F468_200D'`` -> canonical ``'1F1EB-1F1F7'``, ``'2764'``."""
    parts = codepoints.replace("_", "-").upper().split("-")
    return "-".join(p.lstrip("0").rjust(4, "0") for p in parts if p and p != "FE0F")


def flag_key(country_code: str) -> str:
    """ISO 3166 alpha-2 code -> the emoji key of its flag (two regional-indicator letters)."""
    return "-".join(f"{0x1F1E6 + ord(c) - ord('A'):X}" for c in country_code.upper())


@dataclass
class Sources:
    """Roots of every source. ``npm`` is an ``npm install --prefix`` directory; the rest are
    Debian install locations (override them to point at a fabricated tree in tests)."""

    npm: Path
    aisleriot: Path = Path("/usr/share/aisleriot/cards")
    carddecks: Path = Path("/usr/share/carddecks")
    famfamfam: Path = Path("/usr/share/flags/countries/16x11")
    wordnet: Path = Path("/usr/share/wordnet")
    fashion: Path = Path("/usr/share/datasets/fashion-mnist")
    tuxpaint: Path = Path("/usr/share/tuxpaint/stamps")
    openclipart: Path = Path("/usr/share/openclipart/svg")
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def node_modules(self) -> Path:
        return Path(self.npm) / "node_modules"

    def npm_dir(self, package: str) -> Path:
        path = self.node_modules / package
        if not (path / "package.json").is_file():
            raise SourceMissing(f"npm package {package} not found under {self.node_modules}; "
                                f"install it with:\n  {npm_install_line(self.npm)}")
        return path

    def version(self, package: str) -> str:
        """package@version as installed (npm package.json or dpkg), cached."""
        if package not in self.versions:
            if package.startswith("@") or package in NPM_PACKAGES:
                meta = json.loads((self.npm_dir(package) / "package.json").read_text())
                self.versions[package] = meta["version"]
            else:
                try:
                    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                                         capture_output=True, text=True, check=True).stdout.strip()
                except (OSError, subprocess.CalledProcessError):
                    out = "unknown"
                self.versions[package] = out or "unknown"
        return f"{package}@{self.versions[package]}"

    def require(self, path: Path, package: str) -> Path:
        if not Path(path).exists():
            line = (npm_install_line(self.npm) if package in NPM_PACKAGES else
                    "apt-get install -y --no-install-recommends " + " ".join(CLIPART_APT_PACKAGES)
                    if package in CLIPART_APT_PACKAGES else APT_INSTALL_LINE)
            raise SourceMissing(f"{package} not found ({path} is missing); install it with:\n  {line}")
        return Path(path)


def default_sources_dir() -> Path:
    return Path(os.environ.get("METAPROMPT_SOURCES", Path.home() / ".cache" / "metaprompt-lite" / "sources"))


def ensure_npm_sources(prefix: Path) -> None:
    """Install the npm sources into ``prefix`` if they are absent (npm reaches the registry)."""
    missing = [p for p in NPM_PACKAGES if not (prefix / "node_modules" / p / "package.json").is_file()]
    if not missing:
        return
    line = npm_install_line(prefix)
    try:
        subprocess.run(line.split(), check=True, capture_output=True)
    except FileNotFoundError as error:
        raise SourceMissing(f"npm is not installed (apt-get install npm), then run:\n  {line}") from error
    except subprocess.CalledProcessError as error:
        raise SourceMissing(f"npm install failed ({error.stderr.decode()[-300:]}); run:\n  {line}") from error


# --------------------------------------------------------------------------- emoji metadata
@dataclass
class EmojiConcept:
    key: str
    name: str  # CLDR short name, e.g. "red apple"
    category: str  # e.g. "Food & Drink"
    subcategory: str  # e.g. "food-fruit"
    short_names: list[str]
    tags: list[str]
    char: str


class EmojiMetadata:
    """Names, categories and tags of base emoji (no skin-tone variants), merged from
    emoji-datasource-twitter's ``emoji.json`` and OpenMoji's ``openmoji.json``."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    @cached_property
    def concepts(self) -> dict[str, EmojiConcept]:
        datasource = json.loads((self.sources.npm_dir("emoji-datasource-twitter") / "emoji.json").read_text())
        openmoji = json.loads((self.sources.npm_dir("openmoji") / "data" / "openmoji.json").read_text())
        annotations = {emoji_key(e["hexcode"]): e for e in openmoji if not e.get("skintone")}
        out = {}
        for entry in datasource:
            key = emoji_key(entry["unified"])
            om = annotations.get(key, {})
            name = (om.get("annotation") or entry.get("name") or key).lower()
            tags = [t.strip() for t in (om.get("tags", "") + "," + om.get("openmoji_tags", "")).split(",") if t.strip()]
            out[key] = EmojiConcept(key, name, entry.get("category", ""), entry.get("subcategory", ""),
                                    [s.replace("_", " ") for s in entry.get("short_names", [])], tags,
                                    "".join(chr(int(p, 16)) for p in key.split("-")))
        return dict(sorted(out.items()))


def iconify_icons(sources: Sources, package: str) -> tuple[dict[str, str], int, int]:
    """An iconify icon set: name -> SVG document, and its default width/height."""
    data = json.loads((sources.npm_dir(package) / "icons.json").read_text())
    width, height = data.get("width", 16), data.get("height", 16)
    svgs = {}
    for name, icon in data["icons"].items():
        w, h = icon.get("width", width), icon.get("height", height)
        svgs[name] = (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
                      f'width="{w}" height="{h}" viewBox="0 0 {w} {h}">{icon["body"]}</svg>')
    return svgs, width, height


def iconify_chars(sources: Sources, package: str) -> dict[str, str]:
    """emoji key -> icon name of an iconify set's ``chars.json``."""
    chars = json.loads((sources.npm_dir(package) / "chars.json").read_text())
    return {emoji_key(k): v for k, v in chars.items()}


# --------------------------------------------------------------------------- other metadata
def countries(sources: Sources) -> list[dict]:
    """flag-icons' country list (ISO countries only): code, name, capital, continent."""
    data = json.loads((sources.npm_dir("flag-icons") / "country.json").read_text())
    return sorted((c for c in data if c.get("iso")), key=lambda c: c["code"])


def wordnet_glosses(sources: Sources) -> dict[str, str]:
    """lemma (lower case, spaces) -> gloss of its first (most frequent) noun sense."""
    path = sources.require(Path(sources.wordnet) / "data.noun", "wordnet-base")
    glosses: dict[str, str] = {}
    with open(path, encoding="latin-1") as f:
        for line in f:
            if line.startswith("  ") or "|" not in line:
                continue
            head, gloss = line.split("|", 1)
            fields = head.split()
            n_words = int(fields[3], 16)
            gloss = gloss.strip().split(";")[0].strip()
            for i in range(n_words):
                lemma = fields[4 + 2 * i].lower().replace("_", " ")
                lemma = lemma.split("(")[0]
                glosses.setdefault(lemma, gloss)
    return glosses


FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                   "bag", "ankle boot")


def read_idx(path: Path):
    """An IDX file (MNIST format, gzip) as a numpy array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist(sources: Sources, split: str):
    """(images uint8 [N, 28, 28], labels uint8 [N]) of Fashion-MNIST ``train`` or ``t10k``."""
    root = sources.require(Path(sources.fashion), "dataset-fashion-mnist")
    return (read_idx(root / f"{split}-images-idx3-ubyte.gz"), read_idx(root / f"{split}-labels-idx1-ubyte.gz"))


CARD_RANKS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "jack", "queen", "king")
CARD_RANK_NAMES = ("ace", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                   "jack", "queen", "king")
CARD_SUITS = ("club", "diamond", "heart", "spade")


def card_decks(sources: Sources) -> list[tuple[str, Path, str, str]]:
    """Every deck SVG: (deck name, file, id scheme 'gnome'|'kde', package), sorted by name."""
    decks = []
    if Path(sources.aisleriot).is_dir():
        for path in sorted(Path(sources.aisleriot).glob("*.svgz")):
            if path.stem.isascii():
                decks.append((f"gnome-{path.stem}", path, "gnome", "gnome-cards-data"))
    if Path(sources.carddecks).is_dir():
        for path in sorted(Path(sources.carddecks).glob("svg-*/*.svg*")):
            decks.append((f"kde-{path.parent.name[4:]}", path, "kde", "kdegames-card-data-kf5"))
    return sorted(decks)


def card_id(rank: str, suit: str, scheme: str) -> str:
    return f"{suit}_{rank}" if scheme == "gnome" else f"{rank}_{suit}"
