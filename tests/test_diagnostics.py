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


def test_linear_probe_separates_separable_features_and_is_repeatable(diagnostics):
    """Part 5's ceiling: on features that a linear map separates (each class its own direction, plus
    noise) the probe scores 100% on fresh samples; on random labels it cannot beat chance by much."""
    generator = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(5, 32, generator=generator), dim=-1)

    def sample(n):
        labels = torch.arange(5).repeat(n)
        features = directions[labels] + 0.1 * torch.randn(len(labels), 32, generator=generator)
        return torch.nn.functional.normalize(features, dim=-1), labels

    train, train_labels = sample(2)
    test, test_labels = sample(20)
    head = diagnostics.linear_probe(train, train_labels, 5)
    assert (head(test * 10).argmax(-1) == test_labels).float().mean() == 1.0
    again = diagnostics.linear_probe(train, train_labels, 5)
    assert torch.equal(head.weight, again.weight)
    shuffled = test_labels[torch.randperm(len(test_labels), generator=generator)]
    assert (diagnostics.linear_probe(test, shuffled, 5)(sample(20)[0] * 10).argmax(-1) == test_labels).float().mean() < 0.5


def test_manifest_rows_follow_the_dataset_images(diagnostics):
    dataset = load_dataset("emoji-food")
    rows = diagnostics._manifest("emoji-food")
    assert [row["drawing"] for row in rows] == dataset.drawing
    assert [int(row["label"]) for row in rows] == dataset.labels.tolist()
    assert {row["variant"] for row in rows} == {"0", "1", "2"}
