"""Research tier: the papers' datasets (CoOp's 11 base-to-new datasets, 4 DG benchmarks) for a real
open_clip ViT-B/16, read lazily from disk into the offline suite's dataset shape.

Explained in ``docs/research_tier.md``. Modules, one job each:

- :mod:`~metaprompt_lite.research.catalog`  per-dataset facts: folder, split file, templates, clean-ups
- :mod:`~metaprompt_lite.research.readers`  the on-disk layouts → image records
- :mod:`~metaprompt_lite.research.images`   :class:`LazyImages`, decode + resize + centre-crop on indexing
- :mod:`~metaprompt_lite.research.dataset`  :class:`ResearchDataset` and :func:`load_research_dataset`
- :mod:`~metaprompt_lite.research.fetch`    optional downloads through ``torchvision.datasets``
"""

from metaprompt_lite.research.catalog import RESEARCH_B2N, RESEARCH_DG, SPECS, clean_classname, get_spec
from metaprompt_lite.research.dataset import ResearchDataset, load_research_dataset
from metaprompt_lite.research.images import LazyImages, load_image

__all__ = ["RESEARCH_B2N", "RESEARCH_DG", "SPECS", "LazyImages", "ResearchDataset", "clean_classname",
           "get_spec", "load_image", "load_research_dataset"]
