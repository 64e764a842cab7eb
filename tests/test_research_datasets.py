"""Research-tier loaders against miniature copies of every dataset in its official layout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import is_share_of
from metaprompt_lite.research import (
    RESEARCH_B2N,
    RESEARCH_DG,
    LazyImages,
    clean_classname,
    get_spec,
    load_research_dataset,
)
from metaprompt_lite.research.fetch import SOURCES, link_into_layout
from metaprompt_lite.research.miniature import SPLIT_SIZES, make_miniature
from metaprompt_lite.research.miniature import _write_image
from metaprompt_lite.splits import BOTH, TEST, TRAIN, base_new_split, dg_pools, few_shot_indices, select_classes

N_CLASSES = 5


def test_name_tuples_cover_the_papers_datasets():
    assert RESEARCH_B2N == ("ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "Flowers102", "Food101",
                            "FGVCAircraft", "SUN397", "DTD", "EuroSAT", "UCF101")
    assert RESEARCH_DG == ("PACS", "VLCS", "OfficeHome", "DomainNet")


@pytest.mark.parametrize("name", RESEARCH_B2N)
def test_base_to_new_loader(tmp_path, name):
    expected = make_miniature(name, tmp_path, n_classes=N_CLASSES)
    data = load_research_dataset(name, tmp_path)
    assert data.name == name and data.suite == "b2n" and data.domains == [name]
    assert data.classnames == expected["classnames"]
    assert all("_" not in c and c == c.strip() for c in data.classnames)
    assert data.templates[0] == get_spec(name).template and "{}" in data.templates[0]
    assert len(data.templates) > 1
    # the val split of CoOp's files is not read: train pool (0) and test pool (1) only
    n_train, n_test = expected["counts"]["train"], expected["counts"]["test"]
    assert len(data.images) == len(data.labels) == len(data.split) == len(data.domain) == n_train + n_test
    assert int((data.split == 0).sum()) == n_train and int((data.split == 1).sum()) == n_test
    assert data.labels.dtype == torch.long and sorted(data.labels.unique().tolist()) == list(range(N_CLASSES))
    assert (data.domain == 0).all()
    # base/new: the first ceil(n/2) labels are base, exactly as splits.base_new_split says
    base, new = base_new_split(len(data.classnames))
    assert len(base) == math.ceil(N_CLASSES / 2) and base.tolist() + new.tolist() == list(range(N_CLASSES))
    # few-shot draw on the base-class train pool, as run_base_to_new does
    pool = (data.split == 0).nonzero().flatten()
    index, relabelled = select_classes(data.labels[pool], base)
    shots = few_shot_indices(relabelled, 2, seed=1)
    assert len(shots) == 2 * len(base)
    assert torch.equal(torch.bincount(relabelled[shots]), torch.full((len(base),), 2))
    assert torch.equal(shots, few_shot_indices(relabelled, 2, seed=1))
    # lazy images: uint8 [B, 3, 224, 224] decoded on indexing with an index tensor
    batch = data.images[pool[index[shots]]]
    assert batch.dtype == torch.uint8 and batch.shape == (len(shots), 3, 224, 224)


@pytest.mark.parametrize("name", RESEARCH_DG)
def test_domain_generalization_loader(tmp_path, name):
    expected = make_miniature(name, tmp_path, n_classes=3, splits={"train": 2})
    data = load_research_dataset(name, tmp_path)
    assert data.suite == "dg" and data.domains == expected["domains"]
    assert data.classnames == expected["classnames"]
    # a DomainBed tree has no splits: every image may be drawn as a source shot and is scored as a target
    assert len(data.labels) == expected["counts"]["all"] and (data.split == BOTH).all()
    assert torch.equal(torch.bincount(data.domain), torch.full((3,), 3 * 2))
    # DG few-shot: shots per class per source domain, as run_domain_generalization draws them
    source = (data.domain != 0).nonzero().flatten()
    shots = few_shot_indices(data.labels[source], 1, seed=2, groups=data.domain[source])
    assert len(shots) == 2 * 3
    assert data.images[source[shots[:2]]].shape == (2, 3, 224, 224)


def test_dassl_split_subfolders_are_merged(tmp_path):
    """Dassl's office_home_dg/<domain>/{train,val}/<class>/ reads like DomainBed's <domain>/<class>/."""
    for domain in ("art", "clipart"):
        for split in ("train", "val"):
            make_miniature("PACS", tmp_path / "tmp", n_classes=2, splits={"x": 1})
            for cls in ("Alarm_Clock", "Bike"):
                target = tmp_path / "office_home_dg" / domain / split / cls
                target.mkdir(parents=True)
                src = next((tmp_path / "tmp" / "PACS").rglob("*.jpg"))
                (target / f"{split}.jpg").write_bytes(src.read_bytes())
    data = load_research_dataset("officehome", tmp_path)
    assert data.domains == ["art", "clipart"] and data.classnames == ["Alarm Clock", "Bike"]
    assert len(data.labels) == 2 * 2 * 2


def test_lazy_images_index_like_a_tensor(tmp_path):
    make_miniature("DTD", tmp_path, n_classes=2, splits={"train": 2, "val": 0, "test": 1}, image_size=(50, 20))
    data = load_research_dataset("DTD", tmp_path, size=32)
    images = data.images
    assert isinstance(images, LazyImages) and len(images) == 6 and images.shape == (6, 3, 32, 32)
    full = images[torch.arange(6)]
    assert full.shape == (6, 3, 32, 32) and full.dtype == torch.uint8
    assert torch.equal(images[2], full[2])
    assert torch.equal(images[1:4], full[1:4])
    assert torch.equal(images[torch.tensor([5, 0])], full[[5, 0]])
    assert torch.equal(images[data.split == 1], full[data.split == 1])
    assert torch.equal(images.subset(torch.tensor([3, 1]))[0:2], full[[3, 1]])
    assert images[torch.tensor([], dtype=torch.long)].shape == (0, 3, 32, 32)
    with pytest.raises(IndexError):
        images[torch.tensor([6])]
    assert full.float().std() > 0


@pytest.mark.parametrize("size_wh", [(50, 20), (20, 50), (33, 33)])
def test_load_image_is_torchvision_resize_then_centre_crop(tmp_path, size_wh):
    """CLIP's test transform: a 50x20 image becomes 80x32 and keeps its centre columns (here the green
    band); equal to torchvision's Resize(32, bicubic) + CenterCrop(32) on the same file."""
    from torchvision import transforms
    from torchvision.transforms.functional import pil_to_tensor

    from metaprompt_lite.research.images import load_image

    width, height = size_wh
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    long_side = max(width, height)
    bands = [slice(0, long_side * 3 // 10), slice(long_side * 3 // 10, long_side * 7 // 10), slice(long_side * 7 // 10, None)]
    for channel, band in enumerate(bands):  # red, green, blue thirds along the long side
        if width >= height:
            pixels[:, band, channel] = 255
        else:
            pixels[band, :, channel] = 255
    path = tmp_path / "bands.png"
    Image.fromarray(pixels).save(path)
    ours = load_image(path, 32)
    reference = transforms.Compose([transforms.Resize(32, interpolation=transforms.InterpolationMode.BICUBIC),
                                    transforms.CenterCrop(32)])(Image.open(path).convert("RGB"))
    assert torch.equal(ours, pil_to_tensor(reference))
    if width != height:  # the crop keeps the green middle: no pure red or blue column survives
        centre = ours[:, 12:20, 12:20].float().mean((1, 2))
        assert centre[1] > 200 and centre[0] < 30 and centre[2] < 30


def test_classname_cleanups():
    assert clean_classname("american_bulldog") == "american bulldog"
    assert clean_classname("airplanes", get_spec("Caltech101").renames) == "airplane"
    assert clean_classname("SeaLake", get_spec("EuroSAT").renames) == "Sea or Lake"
    assert clean_classname("Sea or Lake", get_spec("EuroSAT").renames) == "Sea or Lake"
    assert get_spec("oxfordpets").template == "a photo of a {}, a type of pet."
    assert get_spec("DTD").template == "{} texture."


@pytest.mark.parametrize("name", ["OxfordPets", "ImageNet", "FGVCAircraft", "PACS"])
def test_missing_dataset_names_layout_and_source(tmp_path, name):
    with pytest.raises(FileNotFoundError) as error:
        load_research_dataset(name, tmp_path)
    message = str(error.value)
    spec = get_spec(name)
    assert str(tmp_path / spec.dirs[0]) in message
    assert "Expected layout" in message and spec.layout.splitlines()[0] in message
    assert "Get the data" in message and "docs/research_tier.md" in message


def test_missing_split_file_and_images(tmp_path):
    make_miniature("OxfordPets", tmp_path, n_classes=2)
    split_file = tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json"
    content = json.loads(split_file.read_text())
    split_file.unlink()
    with pytest.raises(FileNotFoundError, match="split_zhou_OxfordPets.json.*DATASETS.md"):
        load_research_dataset("OxfordPets", tmp_path)
    content["train"][0][0] = "nowhere/missing.jpg"
    split_file.write_text(json.dumps(content))
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_research_dataset("OxfordPets", tmp_path)
    with pytest.raises(ValueError, match="unknown research dataset"):
        load_research_dataset("CIFAR10", tmp_path)


def test_inconsistent_split_file_is_rejected(tmp_path):
    make_miniature("Food101", tmp_path, n_classes=2)
    split_file = tmp_path / "food-101" / "split_zhou_Food101.json"
    content = json.loads(split_file.read_text())
    content["test"][0][2] = "another name"
    split_file.write_text(json.dumps(content))
    with pytest.raises(ValueError, match="label 0 is both"):
        load_research_dataset("Food101", tmp_path)


def test_torchvision_fetch_links_into_coop_layout(tmp_path):
    """What fetch_with_torchvision does after torchvision's download: link its tree into CoOp's."""
    source = SOURCES["Flowers102"]
    (tmp_path / source.root / "flowers-102" / "jpg").mkdir(parents=True)
    (link,) = link_into_layout(source, tmp_path)
    assert link == tmp_path / "oxford_flowers" / "jpg" and link.is_symlink() and link.is_dir()
    assert link_into_layout(source, tmp_path) == [link]  # idempotent


def test_research_dataset_runs_through_the_engine(tmp_path, backbone):
    """The whole research-tier data path on the tiny CLIP: run_base_to_new and DG with a research dataset."""
    from metaprompt_lite.optim import OptimConfig
    from metaprompt_lite.run import RunConfig, run_base_to_new, run_domain_generalization

    make_miniature("EuroSAT", tmp_path, n_classes=4)
    make_miniature("VLCS", tmp_path, n_classes=2, splits={"train": 2})
    optim = OptimConfig(lr=0.002, batch_size=4, epochs=1, max_steps=2)
    b2n = load_research_dataset("EuroSAT", tmp_path, size=32)
    result = run_base_to_new(RunConfig(method="coop", dataset="EuroSAT", shots=2, optim=optim, progress=False),
                             b2n, backbone)
    assert len(result["history"]) == 1
    for name, classes in zip(("base", "new"), base_new_split(len(b2n.classnames))):
        n = int(((b2n.split == 1) & torch.isin(b2n.labels, torch.as_tensor(classes))).sum())
        assert is_share_of(result[name], n)
    dg = load_research_dataset("VLCS", tmp_path, size=32)
    result = run_domain_generalization(RunConfig(method="metaprompt", dataset="VLCS", target="LabelMe", shots=1,
                                                 optim=optim, progress=False), dg, backbone)
    n = int((dg.domain == dg.domains.index("LabelMe")).sum())
    assert is_share_of(result["acc"], n)


def test_split_sizes_constant_is_the_coop_format():
    assert set(SPLIT_SIZES) == {"train", "val", "test"}


# --------------------------------------------------------------------------- DG splits (MetaPrompt's readers)


def _tree(root, files: dict[str, int]) -> None:
    """Fabricated JPEGs at ``root / relpath`` (the value seeds the colour)."""
    for relpath, seed in files.items():
        _write_image(root / relpath, seed, (20, 16))


def _pools(data, target: str) -> tuple[set[str], set[str]]:
    """(drawable, scored) image paths of a DG run holding out ``target``, relative to the dataset root."""
    drawable, scored = dg_pools(data.split, data.domain, data.domains.index(target))
    paths = data.images.paths
    return ({str(Path(paths[i]).relative_to(data.root)) for i in drawable.nonzero().flatten().tolist()},
            {str(Path(paths[i]).relative_to(data.root)) for i in scored.nonzero().flatten().tolist()})


def test_vlcs_in_dassls_folders_draws_from_train_and_scores_the_target_test_split(tmp_path):
    """MetaPrompt's VLCS (datasets/vlcs.py): shots from the sources' train folders, the target scored
    on its test folder; crossval and full are neither."""
    files = {f"vlcs/{d}/{split}/{c}/{k}.jpg": i for i, (d, split, c, k) in enumerate(
        (d, split, c, k) for d in ("CALTECH", "SUN") for split in ("train", "crossval", "test", "full")
        for c in ("bird", "car") for k in range(2))}
    _tree(tmp_path, files)
    data = load_research_dataset("VLCS", tmp_path)
    assert data.domains == ["CALTECH", "SUN"] and data.classnames == ["bird", "car"]
    assert sorted(set(data.split.tolist())) == [TRAIN, TEST] and len(data.labels) == 2 * 2 * 2 * 2
    drawable, scored = _pools(data, "SUN")
    assert drawable == {f"CALTECH/train/{c}/{k}.jpg" for c in ("bird", "car") for k in range(2)}
    assert scored == {f"SUN/test/{c}/{k}.jpg" for c in ("bird", "car") for k in range(2)}


def test_office_home_is_drawn_from_train_and_scored_on_all_its_images(tmp_path):
    """MetaPrompt's OfficeHome (datasets/office_home.py): train split for shots, the target's train and
    val images together for scoring."""
    _tree(tmp_path, {f"office_home_dg/{d}/{split}/Bike/{k}.jpg": i for i, (d, split, k) in enumerate(
        (d, split, k) for d in ("art", "clipart") for split in ("train", "val") for k in range(2))})
    data = load_research_dataset("OfficeHome", tmp_path)
    assert sorted(set(data.split.tolist())) == [TEST, BOTH]
    drawable, scored = _pools(data, "clipart")
    assert drawable == {"art/train/Bike/0.jpg", "art/train/Bike/1.jpg"}
    assert scored == {f"clipart/{split}/Bike/{k}.jpg" for split in ("train", "val") for k in range(2)}


def test_domainnet_follows_its_split_lists_and_leaves_unlisted_images_out(tmp_path):
    """MetaPrompt's DomainNet (datasets/domainnet.py): splits/<domain>_{train,test}.txt."""
    root = tmp_path / "domain_net"
    _tree(root, {f"{d}/apple/{k}.jpg": i for i, (d, k) in enumerate((d, k) for d in ("real", "sketch")
                                                                   for k in range(3))})
    (root / "splits").mkdir()
    for d in ("real", "sketch"):
        (root / "splits" / f"{d}_train.txt").write_text(f"{d}/apple/0.jpg 0\n")
        (root / "splits" / f"{d}_test.txt").write_text(f"{d}/apple/1.jpg 0\n")  # 2.jpg: in no list
    data = load_research_dataset("DomainNet", tmp_path)
    assert data.domains == ["real", "sketch"] and len(data.labels) == 4
    assert _pools(data, "sketch") == ({"real/apple/0.jpg"}, {"sketch/apple/1.jpg"})


def test_pacs_kfold_lists_beside_images_draw_from_train_and_score_all(tmp_path):
    """MetaPrompt's PACS (datasets/pacs.py): shots from <domain>_train_kfold.txt, the target scored on
    its train and crossval lists together."""
    images = tmp_path / "pacs" / "images"
    _tree(images, {f"{d}/dog/{k}.jpg": i for i, (d, k) in enumerate((d, k) for d in ("photo", "sketch")
                                                                   for k in range(2))})
    (tmp_path / "pacs" / "splits").mkdir()
    for d in ("photo", "sketch"):
        (tmp_path / "pacs" / "splits" / f"{d}_train_kfold.txt").write_text(f"{d}/dog/0.jpg 1\n")
        (tmp_path / "pacs" / "splits" / f"{d}_crossval_kfold.txt").write_text(f"{d}/dog/1.jpg 1\n")
    data = load_research_dataset("PACS", tmp_path)
    assert data.domains == ["photo", "sketch"] and data.classnames == ["dog"]
    assert _pools(data, "sketch") == ({"photo/dog/0.jpg"}, {"sketch/dog/0.jpg", "sketch/dog/1.jpg"})


def test_a_dataset_of_one_split_is_drawn_and_scored_whole():
    """The offline suite's DG benchmarks hold every image in the test pool: a DG run draws from every
    source image and scores every target image, as before the research tier had splits."""
    split, domain = torch.full((6,), TEST), torch.tensor([0, 0, 1, 1, 2, 2])
    drawable, scored = dg_pools(split, domain, 1)
    assert drawable.tolist() == [True, True, False, False, True, True]
    assert scored.tolist() == [False, False, True, True, False, False]
