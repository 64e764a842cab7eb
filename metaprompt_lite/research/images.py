"""Images on disk that behave like the offline suite's uint8 image tensor, decoded only when indexed.

Explained in ``docs/research_tier.md``. The offline suite keeps every image in one uint8 tensor
``[N, 3, S, S]``; the papers' datasets do not fit in memory (ImageNet's train split alone would be
~190 GB at 224 px), so :class:`LazyImages` holds file paths and decodes on indexing:

    images[i]            -> uint8 [3, S, S]
    images[LongTensor]   -> uint8 [B, 3, S, S]   (also lists, numpy arrays, slices, bool masks)
    images.subset(idx)   -> a LazyImages view of those files (nothing decoded)

Each image is preprocessed as CLIP's test transform does: resize the shorter side to ``S`` with
bicubic interpolation, then centre-crop ``S × S`` (torchvision's ``Resize(S)`` + ``CenterCrop(S)``
arithmetic). Normalisation stays in :meth:`metaprompt_lite.core.clip.Backbone.preprocess` and
training augmentation in :func:`metaprompt_lite.engine.augment`, exactly as for the offline suite.
Decoding runs in a thread pool (Pillow releases the GIL while decoding and resizing).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

DEFAULT_SIZE = 224  # CLIP ViT-B/16 input resolution


def load_image(path: str | os.PathLike, size: int = DEFAULT_SIZE) -> torch.Tensor:
    """Decode one file to uint8 ``[3, size, size]``: RGB, shorter side → size (bicubic), centre crop."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            width, height = image.size
            if width <= height:  # torchvision Resize(int): short side = size, long side truncated
                new_w, new_h = size, max(size, int(size * height / width))
            else:
                new_w, new_h = max(size, int(size * width / height)), size
            image = image.resize((new_w, new_h), Image.BICUBIC)
            left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
            image = image.crop((left, top, left + size, top + size))
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError) as error:
        raise OSError(f"cannot read image {path}: {error}. Re-extract the dataset or remove the "
                      "file from its split file.") from error
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _positions(index, n: int) -> list[int]:
    """Any index the offline tensor accepts (int, slice, list, numpy, Long/bool tensor) → positions."""
    if isinstance(index, slice):
        return list(range(n))[index]
    if isinstance(index, torch.Tensor):
        index = index.detach().cpu()
        if index.dtype == torch.bool:
            if index.shape != (n,):
                raise IndexError(f"a boolean mask for {n} images needs shape ({n},), got {tuple(index.shape)}")
            index = index.nonzero().flatten()
        elif index.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise IndexError(f"image index tensors must be integer or bool, got {index.dtype}")
        positions = index.reshape(-1).tolist()
    else:
        positions = np.asarray(index).reshape(-1).tolist()
    out = []
    for p in positions:
        p = int(p)
        if not -n <= p < n:
            raise IndexError(f"image index {p} is out of range for {n} images")
        out.append(p % n)
    return out


class LazyImages:
    """File paths that index like a uint8 ``[N, 3, size, size]`` tensor (see the module docstring)."""

    dtype = torch.uint8

    def __init__(self, paths: Sequence[str | os.PathLike], size: int = DEFAULT_SIZE,
                 workers: int | None = None) -> None:
        self.paths = [str(p) for p in paths]
        self.size = int(size)
        self.workers = workers if workers is not None else min(8, os.cpu_count() or 1)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), 3, self.size, self.size)

    def __repr__(self) -> str:
        return f"LazyImages({len(self)} files, {self.size}px)"

    def subset(self, index) -> "LazyImages":
        """A view of some of the files, in ``index`` order; decodes nothing."""
        return LazyImages([self.paths[p] for p in _positions(index, len(self))], self.size, self.workers)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, (int, np.integer)) or (isinstance(index, torch.Tensor) and index.dim() == 0
                                                    and index.dtype != torch.bool):
            return load_image(self.paths[_positions(int(index), len(self))[0]], self.size)
        paths = [self.paths[p] for p in _positions(index, len(self))]
        if not paths:
            return torch.empty(0, 3, self.size, self.size, dtype=torch.uint8)
        if self.workers > 1 and len(paths) > 1:
            with ThreadPoolExecutor(min(self.workers, len(paths))) as pool:
                decoded = list(pool.map(lambda p: load_image(p, self.size), paths))
        else:
            decoded = [load_image(p, self.size) for p in paths]
        return torch.stack(decoded)


def exists_all(paths: Sequence[str], sample: int = 0) -> list[str]:
    """The paths (of the first ``sample``, or all when 0) that are not files: cheap sanity check."""
    chosen = paths if sample <= 0 else paths[:sample]
    return [p for p in chosen if not Path(p).is_file()]
