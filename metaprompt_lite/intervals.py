"""A margin between methods with its uncertainty: a paired bootstrap over seeds and datasets, and the
verdict a claim's bar reads from the interval (docs/intervals.md).

Results are a grid: method × seed × dataset (for DG: × target), each cell one or more accuracies.
A method's score follows the papers' averages: per seed, the mean over datasets (then, for HM, the
harmonic mean of the mean base and new), and the mean of that over seeds. A claim compares scores, so
its margin is a function of the grid. The bootstrap draws seeds with replacement and datasets with
replacement, the same draw for every method of the comparison (paired: what a seed or a dataset does
to both sides cancels), recomputes the margin, and reads the 2.5th and 97.5th percentiles. Seeded, so
the same grid gives the same interval, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# the axes the bootstrap may redraw; both by default (the other settings show which one the width comes from)
RESAMPLE_BOTH = ("seeds", "datasets")


@dataclass(frozen=True)
class Interval:
    """A margin on the full grid, its percentile interval over bootstrap draws, and its value on each
    seed alone (every dataset)."""

    margin: float
    low: float
    high: float
    per_seed: tuple[float, ...]


def resample_weights(n: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, n): how often each of ``n`` items is drawn in a resample of size ``n`` with replacement,
    divided by ``n`` (the weights of a mean over the resample)."""
    picks = rng.integers(0, n, size=(draws, n))
    counts = np.zeros((draws, n))
    np.add.at(counts, (np.arange(draws)[:, None], picks), 1.0)
    return counts / n


def paired_bootstrap(cube: np.ndarray, score: Callable[[np.ndarray], np.ndarray],
                     compare: Callable[[np.ndarray], np.ndarray], draws: int = 10_000, seed: int = 0,
                     level: float = 0.95, resample: tuple[str, ...] = RESAMPLE_BOTH) -> Interval:
    """The margin ``compare(scores)`` of a grid and its ``level`` percentile interval.

    ``cube``: (methods, seeds, datasets, values), complete. ``score`` maps a seed's mean over datasets,
    an array (..., values), to that seed's score (...); a method's score is the mean of it over seeds.
    ``compare`` maps scores (..., methods) to the margin (...). ``resample`` names the axes redrawn
    ("seeds", "datasets", or both); an axis not named keeps every item once."""
    unknown = set(resample) - set(RESAMPLE_BOTH)
    if unknown:
        raise ValueError(f"unknown resample axis {sorted(unknown)} — use 'seeds' and/or 'datasets'")
    cube = np.asarray(cube, dtype=float)
    n_methods, n_seeds, n_datasets, _ = cube.shape
    seed_scores = score(cube.mean(axis=2))  # (methods, seeds)
    margin = float(compare(seed_scores.mean(axis=1)))
    per_seed = tuple(float(m) for m in compare(seed_scores.T))
    rng = np.random.default_rng(seed)
    seed_w = (resample_weights(n_seeds, draws, rng) if "seeds" in resample
              else np.full((draws, n_seeds), 1.0 / n_seeds))
    data_w = (resample_weights(n_datasets, draws, rng) if "datasets" in resample
              else np.full((draws, n_datasets), 1.0 / n_datasets))
    means = np.einsum("msdv,bd->bmsv", cube, data_w)  # each draw's mean over its datasets, per seed
    scores = np.einsum("bms,bs->bm", score(means), seed_w)  # then over its seeds
    margins = compare(scores)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(margins, [tail, 100 - tail])
    return Interval(margin, float(low), float(high), per_seed)


def verdict(interval: Interval, bar: float, below: bool = False) -> str:
    """'holds' when the whole interval clears ``bar`` (is above it; with ``below``, under it), 'fails'
    when the whole interval is on the wrong side, 'within noise' when it straddles or touches the bar."""
    low, high = (interval.low, interval.high) if not below else (-interval.high, -interval.low)
    bar = bar if not below else -bar
    if low > bar:
        return "holds"
    if high < bar:
        return "fails"
    return "within noise"


def smallest_holding_margin(interval: Interval, bar: float, below: bool = False) -> float:
    """The smallest margin (the largest, for a claim ``below`` its bar) the grid would call 'holds' if
    the interval kept its spread: the bar plus the interval's half on the bar's side."""
    return bar + (interval.margin - interval.low) if not below else bar - (interval.high - interval.margin)
