"""What each research-tier dataset is: its folder, its split file, its class-name clean-ups, its
hand-written prompt template, and where its images come from.

Explained in ``docs/research_tier.md``. One :class:`DatasetSpec` per dataset, all in this one file,
so the facts taken from the papers' code (CoOp's ``DATASETS.md`` layout and its ``CUSTOM_TEMPLATES``;
DomainBed's folder layout for domain generalisation) sit in one place and nowhere else.

Templates: ``templates[0]`` is the dataset's single hand template (CoOp's ``CUSTOM_TEMPLATES``,
used by zero-shot CLIP and as MetaPrompt's frozen text); the rest are CLIP's seven
"select" ImageNet templates, which CoOp's ``ZeroshotCLIP2`` averages with the custom one for its
ensemble (for ImageNet CoOp uses the seven alone; here the ensemble also holds "a photo of a {}.").
"""

from __future__ import annotations

from dataclasses import dataclass, field

# CLIP's seven hand-picked ImageNet templates (CoOp: IMAGENET_TEMPLATES_SELECT), the ensemble part.
ENSEMBLE_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

# Class-name fixes of CoOp's dataset readers, applied only when the raw name matches (so names that
# a split file already holds in cleaned form pass through unchanged).
CALTECH101_NAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
EUROSAT_NAMES = {
    "AnnualCrop": "Annual Crop Land", "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land", "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings", "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land", "Residential": "Residential Buildings",
    "River": "River", "SeaLake": "Sea or Lake",
}

# Sub-folders of a DG domain that are split names, not classes (Dassl's office_home_dg/<domain>/train/...).
SPLIT_FOLDER_NAMES = frozenset({"train", "val", "test", "full", "crossval", "all"})


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives under ``DATA`` and how to read it.

    ``reader``:
      ``"split_json"``  CoOp's ``split_zhou_<Name>.json``: {"train"|"val"|"test": [[relpath, label, classname], ...]},
                        relpaths relative to ``image_dir`` (``""`` = the dataset folder itself)
      ``"imagenet"``    ``images/train/<wnid>/*``, ``images/val/<wnid>/*`` and ``classnames.txt`` (``<wnid> <name>``)
      ``"aircraft"``    ``variants.txt`` and ``images_variant_{train,test}.txt`` (``<image id> <variant>``)
      ``"domainbed"``   ``<domain>/<class>/*.jpg`` (DG)
    """

    name: str
    suite: str  # "b2n" | "dg"
    dirs: tuple[str, ...]  # accepted folder names under DATA, first = the documented one
    reader: str
    template: str
    image_dir: str = ""
    split_file: str = ""
    renames: dict[str, str] = field(default_factory=dict)
    layout: str = ""  # the expected tree, shown in the missing-data error
    source: str = ""  # where to get the data
    # DG: a target is scored on its "test" split (MetaPrompt's VLCS and DomainNet readers) or on "all"
    # its images (PACS, OfficeHome), where the tree has splits (research.readers.read_domainbed)
    dg_test: str = "test"

    @property
    def templates(self) -> list[str]:
        return [self.template, *ENSEMBLE_TEMPLATES]


_COOP = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"


def _json(name: str, dirname: str, image_dir: str, split_name: str, template: str, source: str,
          renames: dict[str, str] | None = None, extra: str = "") -> DatasetSpec:
    split_file = f"split_zhou_{split_name}.json"
    shown_image_dir = f"{image_dir}/" if image_dir else "<image folders>/"
    layout = f"{dirname}/\n  {shown_image_dir}\n{extra}  {split_file}"
    return DatasetSpec(name, "b2n", (dirname,), "split_json", template, image_dir, split_file,
                       renames or {}, layout, f"{source}; {split_file} from CoOp's DATASETS.md ({_COOP})")


B2N_SPECS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec(
        "ImageNet", "b2n", ("imagenet",), "imagenet", "a photo of a {}.", image_dir="images",
        layout="imagenet/\n  images/train/<wnid>/*.JPEG   (1,000 folders n01440764, ...)\n"
               "  images/val/<wnid>/*.JPEG     (validation images sorted into the same folders)\n"
               "  classnames.txt               (<wnid> <class name> per line, from CoOp)",
        source="https://image-net.org (registration); classnames.txt from CoOp's DATASETS.md "
               f"({_COOP}); torchvision.datasets.ImageNet cannot download it",
    ),
    _json("Caltech101", "caltech-101", "101_ObjectCategories", "Caltech101", "a photo of a {}.",
          "torchvision.datasets.Caltech101(root, download=True) or "
          "https://data.caltech.edu/records/mzrjq-6wc02", CALTECH101_NAMES),
    _json("OxfordPets", "oxford_pets", "images", "OxfordPets", "a photo of a {}, a type of pet.",
          "torchvision.datasets.OxfordIIITPet(root, download=True) or https://www.robots.ox.ac.uk/~vgg/data/pets/",
          extra="  annotations/\n"),
    _json("StanfordCars", "stanford_cars", "", "StanfordCars", "a photo of a {}.",
          "cars_train/, cars_test/, devkit/, cars_test_annos_withlabels.mat (the original URLs are gone; "
          "torchvision.datasets.StanfordCars no longer downloads: use a mirror, e.g. Kaggle)",
          extra="  cars_train/  cars_test/  devkit/\n"),
    _json("Flowers102", "oxford_flowers", "jpg", "OxfordFlowers", "a photo of a {}, a type of flower.",
          "torchvision.datasets.Flowers102(root, download=True) or https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
          extra="  cat_to_name.json  imagelabels.mat\n"),
    _json("Food101", "food-101", "images", "Food101", "a photo of {}, a type of food.",
          "torchvision.datasets.Food101(DATA, download=True) creates DATA/food-101/images directly"),
    DatasetSpec(
        "FGVCAircraft", "b2n", ("fgvc_aircraft",), "aircraft", "a photo of a {}, a type of aircraft.",
        image_dir="images",
        layout="fgvc_aircraft/            (the data/ folder of fgvc-aircraft-2013b, renamed)\n"
               "  images/<id>.jpg\n  variants.txt\n  images_variant_train.txt  images_variant_val.txt  "
               "images_variant_test.txt",
        source="torchvision.datasets.FGVCAircraft(root, download=True) (then link "
               "root/fgvc-aircraft-2013b/data as DATA/fgvc_aircraft) or "
               "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
    ),
    _json("SUN397", "sun397", "SUN397", "SUN397", "a photo of a {}.",
          "torchvision.datasets.SUN397(DATA/sun397, download=True) creates DATA/sun397/SUN397 directly"),
    _json("DTD", "dtd", "images", "DescribableTextures", "{} texture.",
          "torchvision.datasets.DTD(root, download=True) (images in root/dtd/dtd/images) or "
          "https://www.robots.ox.ac.uk/~vgg/data/dtd/"),
    _json("EuroSAT", "eurosat", "2750", "EuroSAT", "a centered satellite photo of {}.",
          "torchvision.datasets.EuroSAT(DATA, download=True) creates DATA/eurosat/2750 directly",
          EUROSAT_NAMES),
    _json("UCF101", "ucf101", "UCF-101-midframes", "UCF101", "a photo of a person doing {}.",
          "UCF-101-midframes.zip (middle frame of every video) from CoOp's DATASETS.md; "
          "torchvision.datasets.UCF101 reads videos and does not download"),
)}


def _dg(name: str, dirs: tuple[str, ...], domains: str, source: str, dg_test: str = "test") -> DatasetSpec:
    layout = f"{dirs[0]}/\n  <domain>/<class>/*.jpg      domains: {domains}"
    return DatasetSpec(name, "dg", dirs, "domainbed", "a photo of a {}.", layout=layout, source=source,
                       dg_test=dg_test)


DG_SPECS: dict[str, DatasetSpec] = {s.name: s for s in (
    _dg("PACS", ("PACS", "pacs/images", "pacs"), "art_painting, cartoon, photo, sketch",
        "DomainBed's download script (python -m domainbed.scripts.download) or Dassl's pacs.zip (pacs/images/...)",
        dg_test="all"),
    _dg("VLCS", ("VLCS", "vlcs"), "Caltech101, LabelMe, SUN09, VOC2007",
        "DomainBed's download script or Dassl's VLCS.zip"),
    _dg("OfficeHome", ("office_home", "office_home_dg", "OfficeHome", "OfficeHomeDataset_10072016"),
        "Art, Clipart, Product, Real World", "https://www.hemanthdv.org/officeHomeDataset.html "
        "or DomainBed's download script", dg_test="all"),
    _dg("DomainNet", ("domain_net", "domainnet", "DomainNet"),
        "clipart, infograph, painting, quickdraw, real, sketch",
        "http://ai.bu.edu/M3SDA/ (cleaned version) or DomainBed's download script"),
)}

SPECS: dict[str, DatasetSpec] = {**B2N_SPECS, **DG_SPECS}
RESEARCH_B2N: tuple[str, ...] = tuple(B2N_SPECS)
RESEARCH_DG: tuple[str, ...] = tuple(DG_SPECS)


def clean_classname(name: str, renames: dict[str, str] | None = None) -> str:
    """The papers' clean-up: the dataset's rename table, then underscores → spaces, single spaces."""
    name = (renames or {}).get(name, name)
    return " ".join(name.replace("_", " ").split())


def get_spec(name: str) -> DatasetSpec:
    """The spec of a dataset by name (case-insensitive)."""
    by_lower = {k.lower(): v for k, v in SPECS.items()}
    if name.lower() not in by_lower:
        raise ValueError(f"unknown research dataset {name!r}; base-to-new: {list(RESEARCH_B2N)}, "
                         f"domain generalisation: {list(RESEARCH_DG)}")
    return by_lower[name.lower()]
