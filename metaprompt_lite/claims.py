"""The papers' claims that compare methods, each with its bar, checked on a results grid with an interval
(:mod:`metaprompt_lite.intervals`) and a verdict: 'holds', 'within noise' or 'fails'.

A claim reads ``left − right`` on one metric: the ``rank``-th best of ``left`` (1: the best; the
size of ``left``: every one of them) minus the best of ``right``, recomputed on each bootstrap draw,
against ``bar`` (``below``: the margin must be under the bar). Base-to-new claims read ``b2n.csv``;
DG claims read ``dg.csv``, one check per benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from metaprompt_lite.intervals import Interval, paired_bootstrap, smallest_holding_margin, verdict

BASELINES = ("coop", "cocoop", "ivlp", "maple")
ABOVE_ZERO_SHOT = ("cocoop", "ivlp", "maple", "metaprompt", "prometar")
DG_LEARNED = ("coop", "cocoop", "maple", "metaprompt")
DRAWS, SEED = 10_000, 0


@dataclass(frozen=True)
class Claim:
    """One comparison: the ``rank``-th best of ``left`` minus the best of ``right`` on ``metric``
    ('base', 'new', 'hm'; 'acc' for DG), against ``bar``. ``headline``: printed with the grid's
    resolution."""

    text: str
    suite: str
    left: tuple[str, ...]
    right: tuple[str, ...]
    metric: str
    bar: float = 0.0
    below: bool = False
    rank: int = 1
    headline: bool = False


CLAIMS = (
    Claim("CoOp base − zero-shot base ≥ +8", "b2n", ("coop",), ("zsclip",), "base", bar=8.0),
    Claim("CoOp new − zero-shot new < 0", "b2n", ("coop",), ("zsclip",), "new", below=True),
    Claim("CoCoOp new − CoOp new > 0", "b2n", ("cocoop",), ("coop",), "new"),
    Claim("MetaPrompt HM − best baseline ≥ +1", "b2n", ("metaprompt",), BASELINES, "hm", bar=1.0, headline=True),
    Claim("ProMetaR HM − best baseline > 0", "b2n", ("prometar",), BASELINES, "hm", headline=True),
    Claim("4th best of CoCoOp, IVLP, MaPLe, MetaPrompt, ProMetaR − zero-shot HM > 0", "b2n", ABOVE_ZERO_SHOT,
          ("zsclip",), "hm", rank=4, headline=True),
    *(Claim(f"{name} HM − zero-shot HM > 0", "b2n", (key,), ("zsclip",), "hm")
      for key, name in (("cocoop", "CoCoOp"), ("ivlp", "IVLP"), ("maple", "MaPLe"), ("metaprompt", "MetaPrompt"),
                        ("prometar", "ProMetaR"))),
    Claim("ProMetaR HM − prometar-base HM > 0", "b2n", ("prometar",), ("prometar-base",), "hm"),
    Claim("GRAM-CoOp HM − CoOp HM > 0", "b2n", ("gram-coop",), ("coop",), "hm"),
    Claim("GRAM-IVLP HM − prometar-base HM > 0", "b2n", ("gram-ivlp",), ("prometar-base",), "hm"),
    Claim("MetaPrompt HM − metaprompt-clean HM > 0", "b2n", ("metaprompt",), ("metaprompt-clean",), "hm"),
    Claim("every learned method − zero-shot ensemble > 0 (the lowest)", "dg", DG_LEARNED, ("zsclip-ens",), "acc",
          rank=len(DG_LEARNED)),
    Claim("MetaPrompt − zero-shot ensemble > 0", "dg", ("metaprompt",), ("zsclip-ens",), "acc"),
    Claim("MetaPrompt − CoCoOp > 0", "dg", ("metaprompt",), ("cocoop",), "acc", headline=True),
)


@dataclass(frozen=True)
class Checked:
    """A claim read on a grid (``scope``: the benchmark of a DG claim, '' for base-to-new)."""

    claim: Claim
    scope: str
    interval: Interval
    verdict: str
    seeds: int
    datasets: int
    seeds_alone: Interval | None = None  # the interval when only seeds are redrawn (what more seeds would narrow)

    @property
    def name(self) -> str:
        return f"{self.scope}: {self.claim.text}" if self.scope else self.claim.text


def _score(metric: str):
    """A seed's score from its mean over datasets (values: base, new for b2n; acc for DG)."""
    if metric == "hm":
        return lambda m: np.where(m.sum(-1) > 0, 2 * m[..., 0] * m[..., 1] / np.maximum(m.sum(-1), 1e-12), 0.0)
    index = {"base": 0, "new": 1, "acc": 0}[metric]
    return lambda m: m[..., index]


def _compare(claim: Claim):
    """Scores (..., left + right methods) -> the margin (...)."""
    n = len(claim.left)

    def margin(scores: np.ndarray) -> np.ndarray:
        left = -np.sort(-scores[..., :n], axis=-1)[..., claim.rank - 1]
        return left - scores[..., n:].max(axis=-1)

    return margin


def grid_cube(frame: pd.DataFrame, methods: tuple[str, ...], unit: str, values: list[str]) -> np.ndarray | None:
    """(methods, seeds, units, values) of the seeds on which every one of ``methods`` covers every unit
    (dataset or target) of ``frame``; None when a method is absent or no seed is complete."""
    rows = frame[frame["method"].isin(methods)]
    if set(rows["method"]) != set(methods):
        return None
    units = sorted(frame[unit].unique())
    covered = rows.groupby(["method", "seed"])[unit].nunique()
    complete = covered[covered == len(units)].reset_index().groupby("seed")["method"].nunique()
    seeds = sorted(complete[complete == len(set(methods))].index)
    if not seeds:
        return None
    table = rows[rows["seed"].isin(seeds)].groupby(["method", "seed", unit])[values].mean()
    index = pd.MultiIndex.from_product([list(methods), seeds, units])
    return table.reindex(index).to_numpy().reshape(len(methods), len(seeds), len(units), len(values))


def check(claim: Claim, frame: pd.DataFrame, scope: str = "", resample=("seeds", "datasets")) -> Checked | None:
    """``claim`` on ``frame`` (one suite's rows; a DG frame already cut to one benchmark), or None when
    the grid lacks its methods or every axis it would redraw holds one item (one seed, one dataset):
    such an "interval" is the margin itself, zero-width by construction, and no evidence for a verdict.
    The seeds-alone interval is None on one seed, for the same reason."""
    unit, values = ("dataset", ["base", "new"]) if claim.suite == "b2n" else ("target", ["acc"])
    methods = claim.left + claim.right
    cube = grid_cube(frame, methods, unit, values)
    if cube is None:
        return None
    sizes = {"seeds": cube.shape[1], "datasets": cube.shape[2]}
    if all(sizes[axis] < 2 for axis in resample):
        return None
    score, compare = _score(claim.metric), _compare(claim)
    interval = paired_bootstrap(cube, score, compare, draws=DRAWS, seed=SEED, resample=tuple(resample))
    seeds_alone = (paired_bootstrap(cube, score, compare, draws=DRAWS, seed=SEED, resample=("seeds",))
                   if set(resample) == {"seeds", "datasets"} and sizes["seeds"] > 1 else None)
    return Checked(claim, scope, interval, verdict(interval, claim.bar, claim.below), cube.shape[1], cube.shape[2],
                   seeds_alone)


def check_all(b2n: pd.DataFrame | None, dg: pd.DataFrame | None, resample=("seeds", "datasets")) -> list[Checked]:
    """Every claim of :data:`CLAIMS` the frames can answer, base-to-new first, DG per benchmark."""
    out = []
    for claim in CLAIMS:
        if claim.suite == "b2n" and b2n is not None:
            out.append(check(claim, b2n, resample=resample))
        elif claim.suite == "dg" and dg is not None:
            out += [check(claim, rows, benchmark, resample) for benchmark, rows in dg.groupby("benchmark")]
    return [c for c in out if c is not None]


def _signed(value: float) -> str:
    return f"{value:+.2f}".replace("-", "−")


def cell(c: Checked) -> str:
    """'+1.75 [+0.90, +2.60] holds': the margin on the mean, its 95 % interval and the verdict."""
    return f"{_signed(c.interval.margin)} [{_signed(c.interval.low)}, {_signed(c.interval.high)}] {c.verdict}"


def _span(interval: Interval) -> str:
    return f"[{_signed(interval.low)}, {_signed(interval.high)}]"


def markdown_table(checked: list[Checked]) -> list[str]:
    """One protocol's claims: margin, interval, per-seed margins and verdict, and the interval and
    verdict over seeds alone (the datasets fixed: what more seeds could change)."""
    lines = ["| claim | margin | 95 % interval | per seed | verdict | seeds alone |", "|---|---|---|---|---|---|"]
    for c in checked:
        i, alone = c.interval, c.seeds_alone
        seeds = f"{_span(alone)} {verdict(alone, c.claim.bar, c.claim.below)}" if alone else "—"
        lines.append(f"| {c.name} | {_signed(i.margin)} | {_span(i)} | " + ", ".join(_signed(m) for m in i.per_seed)
                     + f" | {c.verdict} | {seeds} |")
    return lines


def resolution(c: Checked, frame: pd.DataFrame) -> str:
    """What the grid can resolve for a headline claim: the smallest margin it would call 'holds' at the
    same spread, and the interval's half-width on the bar's side when only seeds or only datasets are
    redrawn (more seeds narrow the first, not the second)."""
    claim = c.claim
    parts = []
    for axis in ("seeds", "datasets"):
        alone = check(claim, frame, c.scope, resample=(axis,))
        if alone is None:  # one item on that axis: nothing to redraw
            parts.append(f"{axis} alone —")
            continue
        near = abs(smallest_holding_margin(alone.interval, claim.bar, claim.below) - claim.bar)
        parts.append(f"{axis} alone {near:.2f}")
    smallest = smallest_holding_margin(c.interval, claim.bar, claim.below)
    return (f"{c.name}: margin {_signed(c.interval.margin)}, {c.verdict}; the grid ({c.seeds} seeds × {c.datasets}) "
            f"calls 'holds' a margin of {_signed(smallest)} or {'less' if claim.below else 'more'} (half-width on "
            f"the bar's side {abs(smallest - claim.bar):.2f}; " + ", ".join(parts) + ")")


def resolution_lines(checked: list[Checked], b2n: pd.DataFrame | None, dg: pd.DataFrame | None) -> list[str]:
    """:func:`resolution` of each headline claim in ``checked``."""
    lines = []
    for c in checked:
        if c.claim.headline:
            frame = b2n if c.claim.suite == "b2n" else dg[dg["benchmark"] == c.scope]
            lines.append(resolution(c, frame))
    return lines
