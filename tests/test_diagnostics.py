"""The image transforms and style split behind `benchmarks/pocket_diagnostics.py` part 4 (two other
explanations of the missing CoOp base gain, which the script tests)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from metaprompt_lite.data import load_dataset, split_by_source

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "pocket_diagnostics.py"


@pytest.fixture(scope="module")
def diagnostics():
    spec = importlib.util.spec_from_file_location("pocket_diagnostics", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pixelate_keeps_flat_images_and_leaves_at_most_size_levels_per_row(diagnostics):
    flat = torch.full((2, 3, 64, 64), 77, dtype=torch.uint8)
    assert torch.equal(diagnostics.pixelate(flat), flat)
    noise = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    out = diagnostics.pixelate(noise, size=12)
    assert out.shape == noise.shape and out.dtype == torch.uint8
    assert max(len(row.unique()) for row in out.reshape(-1, 64)) <= 12
    assert not torch.equal(out, noise)


def test_grey_low_contrast_is_grey_and_squeezed_around_mid_grey(diagnostics):
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    images[0] = 0
    images[1] = 255
    out = diagnostics.grey_low_contrast(images)
    assert out.dtype == torch.uint8
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert int(out[0].min()) == 96 and int(out[1].max()) == 198  # 96 + 0.4 * 255
    assert int(out.min()) >= 96 and int(out.max()) <= 198


@pytest.mark.parametrize("name", ["emoji-objects", "emoji-food"])
def test_fixed_split_has_every_class_on_both_sides_with_the_pool_styles_only_in_the_pool(diagnostics, name):
    dataset = load_dataset(name)
    view = split_by_source(dataset, set(diagnostics.FIXED_POOL))
    packages = [d.split(":")[0] for d in view.drawing]
    pool = (view.split == 0).tolist()
    assert {p for p, in_pool in zip(packages, pool) if in_pool} == set(diagnostics.FIXED_POOL)
    assert {p for p, in_pool in zip(packages, pool) if not in_pool} == {"@iconify-json/noto", "@lobehub/fluent-emoji-3d"}
    for label in range(len(view.classnames)):  # every class has all four styles, two on each side
        mine = view.labels == label
        sources = {p: s for p, s, m in zip(packages, view.split.tolist(), mine.tolist()) if m}
        assert len(sources) == 4 and sorted(sources.values()) == [0, 0, 1, 1], view.classnames[label]
