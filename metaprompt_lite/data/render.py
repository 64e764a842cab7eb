"""Turn source files into fixed-size RGB images, deterministically.

A *drawing* (one SVG, PNG or WebP file) is rendered once to RGBA, then placed on a background as
one or more *variants* (scale, rotation, shift, background colour drawn from a seed derived from
the image's identity). Variants of one drawing count as the same source image: the splits never put
two variants of one drawing on different sides.
"""

from __future__ import annotations

import hashlib
import io
import math
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 64  # the pocket CLIP's input resolution
BACKGROUNDS = ((255, 255, 255), (245, 245, 240), (230, 236, 245), (250, 240, 228), (235, 245, 235),
               (40, 40, 48), (200, 200, 200))


def seed_of(*parts: object) -> int:
    """A stable 32-bit seed from the identity of an image (not Python's salted ``hash``)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:4], "little")


def render_svg(svg: str | bytes, size: int = SIZE) -> Image.Image:
    """SVG -> RGBA square image, aspect kept, centred (cairosvg)."""
    import cairosvg

    data = svg.encode() if isinstance(svg, str) else svg
    # circle-flags use <mask>, which cairosvg renders blank; a clipPath is equivalent here
    data = data.replace(b"<mask ", b"<clipPath ").replace(b"</mask>", b"</clipPath>").replace(
        b'mask="url(', b'clip-path="url(')
    png = cairosvg.svg2png(bytestring=data, output_width=size * 2)
    return fit(Image.open(io.BytesIO(png)), size)


def render_file(path: Path, size: int = SIZE) -> Image.Image:
    """Any image file (SVG, PNG, WebP, ...) -> RGBA square image."""
    path = Path(path)
    if path.suffix == ".svg":
        return render_svg(path.read_bytes(), size)
    with Image.open(path) as image:
        return fit(image, size)


def render_file_or_rsvg(path: Path, size: int = SIZE) -> Image.Image:
    """:func:`render_file`, falling back to ``rsvg-convert`` for the SVGs cairosvg refuses (XML
    entities, no declared size, ...). Used for the corpus-only clipart, whose SVGs come from many
    editors; the suite's and the emoji's drawings keep the plain renderer."""
    try:
        return render_file(path, size)
    except Exception:
        if Path(path).suffix != ".svg":
            raise
    try:
        png = subprocess.run(["rsvg-convert", "-w", str(size * 2), str(path)], capture_output=True, check=True,
                             timeout=120).stdout
    except FileNotFoundError as error:
        raise RuntimeError("rsvg-convert is missing: apt-get install -y librsvg2-bin") from error
    return fit(Image.open(io.BytesIO(png)), size)


def render_svg_element(path: Path, element_id: str, height: int = SIZE * 6) -> Image.Image:
    """One element (e.g. a card) cut out of a multi-element SVG with ``rsvg-convert -i``, cropped to
    its visible pixels (some decks give elements an oversized invisible bounding box)."""
    image = render_svg_element_raw(path, element_id, height)
    box = image.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    return fit(image.crop(box) if box else image, SIZE)


def render_svg_element_raw(path: Path, element_id: str, height: int = SIZE * 6) -> Image.Image:
    """``rsvg-convert -i element_id -h height`` as an RGBA image (not cropped, not resized)."""
    try:
        png = subprocess.run(["rsvg-convert", "-i", element_id, "-h", str(height), str(path)],
                             capture_output=True, check=True).stdout
    except FileNotFoundError as error:
        raise RuntimeError("rsvg-convert is missing: apt-get install -y librsvg2-bin") from error
    return Image.open(io.BytesIO(png)).convert("RGBA")


def fit(image: Image.Image, size: int = SIZE) -> Image.Image:
    """Resize so the longer side is ``size`` (Lanczos), centre on a transparent square."""
    image = image.convert("RGBA")
    w, h = image.size
    scale = size / max(w, h)
    image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return canvas


def grey_to_rgba(pixels: np.ndarray, size: int = SIZE) -> Image.Image:
    """A grey photo (e.g. Fashion-MNIST 28x28, white object on black) -> opaque RGBA at ``size``."""
    image = Image.fromarray(pixels, mode="L").resize((size, size), Image.BICUBIC)
    return image.convert("RGBA")


def variant(drawing: Image.Image, seed: int, plain: bool = False) -> np.ndarray:
    """One variant of a drawing as uint8 [3, SIZE, SIZE]. ``plain``: centred on white, as drawn.

    Otherwise: scale 0.7-1.0, rotation within ±15°, shift within ±5 px and a background colour,
    all from ``seed``, so rebuilding gives the same bytes.
    """
    rng = np.random.default_rng(seed)
    if plain:
        background, angle, scale, shift = BACKGROUNDS[0], 0.0, 0.9, (0, 0)
    else:
        background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        angle = float(rng.uniform(-15, 15))
        scale = float(rng.uniform(0.7, 1.0))
        shift = (int(rng.integers(-5, 6)), int(rng.integers(-5, 6)))
    size = drawing.width
    small = drawing.resize((max(1, round(size * scale)),) * 2, Image.BICUBIC).rotate(
        angle, resample=Image.BICUBIC, expand=False)
    canvas = Image.new("RGBA", (size, size), background + (255,))
    offset = ((size - small.width) // 2 + shift[0], (size - small.height) // 2 + shift[1])
    canvas.alpha_composite(small, offset)
    return np.asarray(canvas.convert("RGB")).transpose(2, 0, 1).copy()


def photo_variant(image: Image.Image, seed: int, plain: bool = False) -> np.ndarray:
    """A variant of an opaque photo: small random crop-and-resize instead of a background."""
    if plain:
        return np.asarray(image.convert("RGB")).transpose(2, 0, 1).copy()
    rng = np.random.default_rng(seed)
    size = image.width
    crop = int(round(size * float(rng.uniform(0.8, 1.0))))
    x, y = int(rng.integers(0, size - crop + 1)), int(rng.integers(0, size - crop + 1))
    out = image.convert("RGB").crop((x, y, x + crop, y + crop)).resize((size, size), Image.BICUBIC)
    return np.asarray(out).transpose(2, 0, 1).copy()


def atlas(images: np.ndarray, columns: int = 32) -> Image.Image:
    """uint8 [N, 3, S, S] -> one RGB grid image (row-major), the store's on-disk format."""
    n, _, s, _ = images.shape
    rows = max(1, math.ceil(n / columns))
    grid = np.zeros((rows * s, columns * s, 3), dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        grid[r * s:(r + 1) * s, c * s:(c + 1) * s] = images[i].transpose(1, 2, 0)
    return Image.fromarray(grid)


def from_atlas(grid: np.ndarray, n: int, size: int = SIZE) -> np.ndarray:
    """Inverse of :func:`atlas`: [rows*S, cols*S, 3] -> uint8 [n, 3, S, S]."""
    rows, columns = grid.shape[0] // size, grid.shape[1] // size
    tiles = grid.reshape(rows, size, columns, size, 3).transpose(0, 2, 4, 1, 3).reshape(rows * columns, 3, size, size)
    return np.ascontiguousarray(tiles[:n])


PIXEL_GRID = 8  # the pixel-art look: 8x8 blocks of a 64-px image (see data/README.md)


def pixelate(images: np.ndarray, grid: int = PIXEL_GRID) -> np.ndarray:
    """The pixel-art look: uint8 [..., 3, S, S] -> the same shape, each (S/grid)² block replaced by its
    mean colour (rounded), as a sprite drawn on a ``grid`` x ``grid`` canvas and shown enlarged with
    nearest-neighbour scaling. Pretraining never shows it (data/README.md)."""
    size = images.shape[-1]
    if size % grid:
        raise ValueError(f"image size {size} is not a multiple of the pixel grid {grid}")
    block = size // grid
    shape = images.shape[:-2] + (grid, block, grid, block)
    means = images.reshape(shape).astype(np.float64).mean(axis=(-3, -1))
    small = np.floor(means + 0.5).astype(np.uint8)
    return small.repeat(block, axis=-2).repeat(block, axis=-1)
