"""Contact sheets: one figure per dataset showing classes (rows) across styles and splits (columns)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from metaprompt_lite.data.store import ImageDataset


def contact_sheet(dataset: ImageDataset, n_classes: int = 8, per_column: int = 1):
    """Rows: the first ``n_classes`` classes (evenly spaced over the class list). Columns: for a
    base-to-new dataset the train pool then the test pool; for a DG benchmark one per domain.
    Each cell shows the first image of that class in that column."""
    step = max(1, len(dataset.classnames) // n_classes)
    classes = list(range(0, len(dataset.classnames), step))[:n_classes]
    if dataset.suite == "dg":
        columns = [(d, (dataset.domain == k)) for k, d in enumerate(dataset.domains)]
    else:
        columns = [("train pool", dataset.split == 0), ("test", dataset.split == 1)]
    cells = []
    for name, mask in columns:
        for c in classes:
            idx = (mask & (dataset.labels == c)).nonzero().flatten()
            # spread over the column's images of the class (different drawings, not variants)
            picks = idx[torch.linspace(0, len(idx) - 1, steps=min(len(idx), 2 * per_column)).long()] if len(idx) else idx
            cells.append((name, c, picks))
    n_cols = len(columns) * 2 * per_column
    fig, axes = plt.subplots(len(classes), n_cols, figsize=(1.1 * n_cols + 1.5, 1.1 * len(classes) + 0.6),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for (name, c, picks) in cells:
        col0 = [n for n, _ in columns].index(name) * 2 * per_column
        row = classes.index(c)
        for j, i in enumerate(picks.tolist()):
            ax = axes[row, col0 + j]
            ax.imshow(dataset.images[i].permute(1, 2, 0).numpy())
            if row == 0 and j == 0:
                ax.set_title(name, fontsize=9, loc="left")
        axes[row, 0].text(-8, 32, dataset.classnames[c][:22], ha="right", va="center", fontsize=8)
    fig.suptitle(f"{dataset.name}: {len(dataset.classnames)} classes, {len(dataset)} images", fontsize=10)
    fig.subplots_adjust(left=0.22, wspace=0.05, hspace=0.1)
    return fig
