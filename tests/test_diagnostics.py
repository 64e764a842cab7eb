"""The pieces behind `experiments/pocket-diagnostics/pocket_diagnostics.py`: part 4's image transforms and style split, part 5's
linear probe, part 6's summary and part 7's pool of three styles, and the shared feature cache."""

from __future__ import annotations

import pytest
import torch

from conftest import import_script
from metaprompt_lite.data import load_dataset, split_by_source


@pytest.fixture(scope="module")
def diagnostics():
    return import_script("experiments/pocket-diagnostics/pocket_diagnostics.py")


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


@pytest.mark.parametrize("name", ["emoji-objects", "emoji-novel-food"])
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
    assert (head(test).argmax(-1) == test_labels).float().mean() == 1.0
    assert torch.allclose(head(test), head.linear(10 * test))  # the ×10 lives in the probe, not its callers
    again = diagnostics.linear_probe(train, train_labels, 5)
    assert torch.equal(head.linear.weight, again.linear.weight)
    shuffled = test_labels[torch.randperm(len(test_labels), generator=generator)]
    assert (diagnostics.linear_probe(test, shuffled, 5)(sample(20)[0]).argmax(-1) == test_labels).float().mean() < 0.5


def test_manifest_rows_follow_the_dataset_images(diagnostics):
    dataset = load_dataset("emoji-novel-food")
    rows = diagnostics._manifest("emoji-novel-food")
    assert [row["drawing"] for row in rows] == dataset.drawing
    assert [int(row["label"]) for row in rows] == dataset.labels.tolist()
    assert {row["variant"] for row in rows} == {"0", "1", "2"}


@pytest.mark.parametrize("name", ["emoji-objects", "emoji-novel-places"])
def test_pool_of_three_styles_moves_exactly_one_test_style_per_class(diagnostics, name):
    dataset = load_dataset(name)
    three = diagnostics.pool_of_three_styles(dataset)
    assert three.images is dataset.images and torch.equal(three.labels, dataset.labels)
    packages = [d.split(":")[0] for d in dataset.drawing]
    moved_styles = set()
    for label in range(len(dataset.classnames)):
        mine = (dataset.labels == label).nonzero().flatten().tolist()
        before = {side: {packages[i] for i in mine if int(dataset.split[i]) == side} for side in (0, 1)}
        after = {side: {packages[i] for i in mine if int(three.split[i]) == side} for side in (0, 1)}
        assert len(before[0]) == len(before[1]) == 2
        assert before[0] < after[0] and len(after[0]) == 3 and len(after[1]) == 1
        assert after[1] < before[1]  # the test keeps one of its own styles, with all its images
        assert sum(int(three.split[i]) == 1 for i in mine) == 3
        moved_styles |= after[0] - before[0]
    assert len(moved_styles) == 4  # a seeded choice per class, not one style for the whole dataset
    again = diagnostics.pool_of_three_styles(dataset)
    assert torch.equal(again.split, three.split)
    with pytest.raises(ValueError, match="two per class"):
        diagnostics.pool_of_three_styles(three)


def test_feature_cache_embeds_each_image_tensor_once(diagnostics, monkeypatch):
    calls = []

    def fake_features(backbone, images):
        calls.append(images)
        return images.float().flatten(1)[:, :4]

    monkeypatch.setattr(diagnostics, "image_features", fake_features)
    dataset = load_dataset("emoji-novel-food")
    cache = diagnostics.FeatureCache(backbone=None)
    first = cache(dataset)
    assert cache(diagnostics.pool_of_three_styles(dataset)) is first  # a re-split copy shares the images
    assert len(calls) == 1
    other = load_dataset("flags-pixel")
    assert cache(other).shape[0] == len(other) and len(calls) == 2


def test_mean_gains_counts_rises_and_falls(diagnostics):
    rows = {"a": {"zs_base": 50.0, "coop_base": 60.0, "zs_new": 40.0, "coop_new": 30.0},
            "b": {"zs_base": 50.0, "coop_base": 48.0, "zs_new": 40.0, "coop_new": 41.0}}
    summary = diagnostics._mean_gains(rows)
    assert summary == {"mean_base_gain": 4.0, "mean_new_gain": -4.5, "base_up": 1, "new_down": 1, "datasets": 2}


def test_parts_run_only_the_chosen_measures_and_part_7_needs_5_and_6(diagnostics, monkeypatch, tmp_path, capsys):
    import json
    import sys

    called = []
    monkeypatch.setattr(diagnostics, "load_clip", lambda model, pretrained: None)
    monkeypatch.setattr(diagnostics, "headroom", lambda backbone, features: called.append(5) or {"x": 1})
    epochs_asked = []
    monkeypatch.setattr(diagnostics, "epoch_cap", lambda backbone, model, pretrained, epochs:
                        called.append(6) or epochs_asked.append(epochs) or {"y": 2})
    for name in ("memorisation", "text_or_image", "coop_gain", "other_explanations", "pool_styles"):
        monkeypatch.setattr(diagnostics, name, lambda *a, **k: pytest.fail("a part that was not asked for ran"))
    out = tmp_path / "d.json"
    monkeypatch.setattr(sys, "argv", ["pocket_diagnostics.py", "--parts", "6", "5", "--out", str(out)])
    diagnostics.main()
    report = json.loads(out.read_text())
    assert called == [5, 6] and report["parts"] == [5, 6]
    assert report["headroom"] == {"x": 1} and report["epoch_cap"] == {"y": 2} and "memorisation" not in report
    monkeypatch.setattr(sys, "argv", ["pocket_diagnostics.py", "--parts", "6", "--coop-epochs", "25", "3"])
    diagnostics.main()
    assert epochs_asked == [(2, diagnostics.POOL_STYLES_EPOCHS), (25, 3)]
    monkeypatch.setattr(sys, "argv", ["pocket_diagnostics.py", "--parts", "7", "6"])
    with pytest.raises(SystemExit) as exit_info:
        diagnostics.main()
    assert exit_info.value.code == 2 and "part 7 reuses the rows of parts 5 and 6" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["pocket_diagnostics.py", "--parts", "5", "6", "7", "--coop-epochs", "25"])
    with pytest.raises(SystemExit) as exit_info:
        diagnostics.main()
    assert exit_info.value.code == 2 and f"add {diagnostics.POOL_STYLES_EPOCHS} to --coop-epochs" in capsys.readouterr().err
