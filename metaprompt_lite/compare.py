"""A benchmark's rows beside a reference run's (the committed ``results/<protocol>/``), row for row.

What a finished ``metaprompt-lite bench`` prints under "Beside the committed results". A row that
differs is not yet a finding: the comparison says by how much (the largest |Δ| in points, and in test
images, the unit a changed last bit moves an accuracy by), whether the two files were made with other
settings (then they are not expected to match), and whether the machines differ (CPU, torch's CPU
capability, MKL and oneDNN versions: :func:`metaprompt_lite.provenance.machine`, recorded in each
folder's ``bench_meta.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pandas as pd

from metaprompt_lite.provenance import MACHINE_KEYS
from metaprompt_lite.report import _method_order, b2n_average, read_results
from metaprompt_lite.results_table import SETTING_COLUMNS

SUITES = (("b2n", ("base", "new", "hm"), ["method", "dataset", "seed"]),
          ("dg", ("acc",), ["method", "benchmark", "target", "seed"]))


def images_per_column(dataset, target: str | None) -> dict[str, int]:
    """How many test images each accuracy column of a row is measured on: ``base`` and ``new`` (the test
    images of the base and of the new classes), or ``acc`` (every image of the DG target domain). HM is
    no count of images and has none."""
    from metaprompt_lite.splits import base_new_split  # torch: only when a comparison is printed

    if target is not None:
        return {"acc": int((dataset.domain == dataset.domains.index(target)).sum())}
    labels = dataset.labels[dataset.split == 1]
    base, new = base_new_split(len(dataset.classnames))
    return {"base": int(sum((labels == c).sum() for c in base.tolist())),
            "new": int(sum((labels == c).sum() for c in new.tolist()))}


def _default_loader(name: str):
    from metaprompt_lite.data import load_dataset

    return load_dataset(name)


def _counts(rows: pd.DataFrame, loader: Callable) -> dict[tuple, dict[str, int]]:
    """Test images per (dataset, target) of ``rows``; a dataset the loader cannot load has none."""
    counts: dict[tuple, dict[str, int]] = {}
    cells = {(r["dataset"], None) if "dataset" in rows else (r["benchmark"], r["target"]) for _, r in rows.iterrows()}
    loaded: dict[str, object] = {}
    for name, target in cells:
        try:
            dataset = loaded.setdefault(name, loader(name))
            counts[(name, target)] = images_per_column(dataset, target)
        except Exception:  # noqa: BLE001 -- a research-tier or synthetic name: the points still say how much
            counts[(name, target)] = {}
    return counts


def _cells(values: pd.Series) -> list[str]:
    return sorted({"" if pd.isna(v) else str(v) for v in values})


def settings_line(both: pd.DataFrame) -> str:
    """Whether the rows in both files were made with the same settings (``run.row_settings``)."""
    differences = []
    for column in SETTING_COLUMNS:
        mine, theirs = _cells(both[column]), _cells(both[f"{column}_ref"])
        if mine != theirs:
            differences.append(f"{column} {', '.join(map(repr, mine))} here, {', '.join(map(repr, theirs))} there")
    if not differences:
        return "settings: the same in every row (" + ", ".join(SETTING_COLUMNS) + ")"
    return "settings differ: " + "; ".join(differences) + " (rows of other settings are not expected to match)"


def read_machine(folder: Path) -> dict[str, str]:
    """The :data:`~metaprompt_lite.provenance.MACHINE_KEYS` a folder's ``bench_meta.json`` records (those it has)."""
    try:
        meta = json.loads((folder / "bench_meta.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: str(meta[k]) for k in MACHINE_KEYS if isinstance(meta, dict) and k in meta}


def machine_line(run_dir: Path, reference_dir: Path) -> str:
    """Whether the two folders' machines differ, as far as their ``bench_meta.json`` say."""
    mine, theirs = read_machine(run_dir), read_machine(reference_dir)
    unknown = [k for k in MACHINE_KEYS if k not in mine or k not in theirs]
    differ = [f"{k} {mine[k]!r} here, {theirs[k]!r} there" for k in MACHINE_KEYS
              if k in mine and k in theirs and mine[k] != theirs[k]]
    if differ:
        return "machines differ: " + "; ".join(differ)
    if unknown:
        which = "this run" if any(k not in mine for k in unknown) else "the reference"
        here = f"; this run's: {_described(mine)}" if mine else ""
        return f"machines: unknown whether they differ ({which} records no {', '.join(unknown)}{here})"
    return f"machines: the same ({_described(mine)})"


def _described(machine: dict[str, str]) -> str:
    return ", ".join(f"{k} {machine[k]}" for k in MACHINE_KEYS if k in machine)


def _row_delta(row: pd.Series, accuracies: tuple[str, ...], counts: dict[str, int]) -> tuple[float, int | None]:
    """The largest |Δ| of a row's accuracies in points, and in test images (None when no count is known)."""
    points = max(abs(row[c] - row[f"{c}_ref"]) for c in accuracies)
    images = [round(abs(row[c] - row[f"{c}_ref"]) * counts[c] / 100) for c in accuracies if c in counts]
    return points, (max(images) if images else None)


def comparison_text(run_dir: str | Path, reference_dir: str | Path, loader: Callable | None = None) -> str:
    """A benchmark's rows beside a reference run's, row for row: how many of the rows both hold are
    identical in every accuracy column, by how much the others differ at most (points and test images),
    whether the settings and the machines differ, the rows that differ (first ten), and for base-to-new
    the per-method averages of each side with their difference. ``loader(name)``: a dataset, for its
    test-image counts (default: the offline suite's)."""
    run_dir, reference_dir, loader = Path(run_dir), Path(reference_dir), loader or _default_loader
    parts = []
    for suite, accuracies, key in SUITES:
        mine_path, theirs_path = run_dir / f"{suite}.csv", reference_dir / f"{suite}.csv"
        if not mine_path.is_file() or not theirs_path.is_file():
            continue
        mine, theirs = read_results(mine_path), read_results(theirs_path)
        both = mine.merge(theirs, on=key, suffixes=("", "_ref"))
        if both.empty:
            parts.append(f"{suite}: none of this run's rows is in {theirs_path} yet")
            continue
        columns = list(accuracies)
        differ = both[(both[columns].values != both[[f"{c}_ref" for c in columns]].values).any(axis=1)]
        counts = _counts(differ, loader)
        cell_of = (lambda r: (r["dataset"], None)) if suite == "b2n" else (lambda r: (r["benchmark"], r["target"]))
        deltas = [_row_delta(r, accuracies, counts[cell_of(r)]) for _, r in differ.iterrows()]
        head = (f"{suite}: {len(both) - len(differ)} of the {len(both)} rows in both files are identical to "
                f"{theirs_path} (every accuracy column)")
        if deltas:
            known = [images for _, images in deltas if images is not None]
            head += (f"; the other {len(differ)} differ by at most {max(p for p, _ in deltas):.2f} points"
                     + (f" ({max(known)} test images)" if known else ""))
        lines = [head, "  " + settings_line(both), "  " + machine_line(run_dir, reference_dir)]
        for (_, r), (points, images) in list(zip(differ.iterrows(), deltas))[:10]:
            lines.append("  differs: " + " ".join(str(r[k]) for k in key) + "  "
                         + "  ".join(f"{c} {r[c]:.2f} vs {r[f'{c}_ref']:.2f}" for c in accuracies)
                         + f"  (|Δ| {points:.2f} points" + (f", {images} images)" if images is not None else ")"))
        if suite == "b2n":
            ours = b2n_average(mine)[["base", "new", "hm"]]
            ref = b2n_average(theirs[theirs.set_index(key).index.isin(mine.set_index(key).index)])[["base", "new", "hm"]]
            table = ours.merge(ref, left_index=True, right_index=True, suffixes=("", "_ref"))
            for c in ("base", "new", "hm"):
                table[f"Δ{c}"] = table[c] - table[f"{c}_ref"]
            lines.append("averages over the same rows (this run, the reference, Δ; accuracies in %):")
            lines.append(table.loc[_method_order(table.index)].round(2).to_string())
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
