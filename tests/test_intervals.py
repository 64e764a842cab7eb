"""The paired bootstrap over seeds and datasets, the verdict rule, and the claims read with them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metaprompt_lite.claims import Claim, check, check_all, grid_cube
from metaprompt_lite.intervals import Interval, paired_bootstrap, smallest_holding_margin, verdict

FIRST = lambda m: m[..., 0]  # noqa: E731  a seed's score: its mean of the first value
DIFF = lambda s: s[..., 0] - s[..., 1]  # noqa: E731  margin: method 0 minus method 1


def test_hand_computed_interval_over_two_datasets():
    """One seed, two datasets whose margins are 0 and 2. A resample of two datasets draws {0, 0}, {0, 2}
    or {2, 2} with probabilities 1/4, 1/2, 1/4: mean margins 0, 1, 2. So the 95 % interval is [0, 2]
    and the 40 % one (30th to 70th percentile) is [1, 1]."""
    cube = np.zeros((2, 1, 2, 1))
    cube[0, 0, :, 0] = [10.0, 12.0]
    cube[1, 0, :, 0] = [10.0, 10.0]
    wide = paired_bootstrap(cube, FIRST, DIFF)
    assert (wide.margin, wide.low, wide.high, wide.per_seed) == (1.0, 0.0, 2.0, (1.0,))
    narrow = paired_bootstrap(cube, FIRST, DIFF, level=0.4)
    assert (narrow.low, narrow.high) == (1.0, 1.0)


def test_hand_computed_interval_over_two_seeds():
    """The same over seeds: two seeds with margins 0 and 4 on one dataset: resampled means 0, 2, 4."""
    cube = np.zeros((2, 2, 1, 1))
    cube[0, :, 0, 0] = [50.0, 54.0]
    cube[1, :, 0, 0] = [50.0, 50.0]
    interval = paired_bootstrap(cube, FIRST, DIFF)
    assert (interval.margin, interval.low, interval.high, interval.per_seed) == (2.0, 0.0, 4.0, (0.0, 4.0))
    narrow = paired_bootstrap(cube, FIRST, DIFF, level=0.4)
    assert (narrow.low, narrow.high) == (2.0, 2.0)
    only_datasets = paired_bootstrap(cube, FIRST, DIFF, resample=("datasets",))
    assert (only_datasets.low, only_datasets.high) == (2.0, 2.0)  # seeds not redrawn: no spread left


def test_a_constant_margin_gives_a_zero_width_interval():
    """Both methods vary a lot over seeds and datasets, but one is always 1.5 above the other: the
    paired bootstrap draws the same seeds and datasets for both, so the interval is the point 1.5
    (an unpaired one would be wide)."""
    rng = np.random.default_rng(3)
    base = rng.uniform(20, 80, size=(3, 10, 1))
    cube = np.stack([base + 1.5, base])
    interval = paired_bootstrap(cube, FIRST, DIFF)
    assert interval.margin == pytest.approx(1.5)
    assert interval.high - interval.low == pytest.approx(0.0, abs=1e-9)
    assert interval.low == pytest.approx(1.5)


def test_the_bootstrap_is_seeded():
    rng = np.random.default_rng(4)
    cube = rng.uniform(20, 80, size=(2, 3, 10, 1))
    assert paired_bootstrap(cube, FIRST, DIFF) == paired_bootstrap(cube, FIRST, DIFF)
    assert paired_bootstrap(cube, FIRST, DIFF, seed=1) != paired_bootstrap(cube, FIRST, DIFF)
    with pytest.raises(ValueError, match="unknown resample axis"):
        paired_bootstrap(cube, FIRST, DIFF, resample=("targets",))


def test_verdict_rule_on_the_three_cases():
    assert verdict(Interval(1.0, 0.5, 1.5, ()), bar=0.0) == "holds"
    assert verdict(Interval(0.2, -0.5, 0.5, ()), bar=0.0) == "within noise"
    assert verdict(Interval(-1.0, -1.5, -0.5, ()), bar=0.0) == "fails"
    assert verdict(Interval(1.75, 0.9, 2.6, ()), bar=1.0) == "within noise"  # the bar, not zero
    assert verdict(Interval(1.0, 0.0, 2.0, ()), bar=0.0) == "within noise"  # touching the bar is not clearing it
    # a claim that the margin is below its bar: the same rule, mirrored
    assert verdict(Interval(-6.0, -9.0, -2.0, ()), bar=0.0, below=True) == "holds"
    assert verdict(Interval(0.0, -1.0, 1.0, ()), bar=0.0, below=True) == "within noise"
    assert verdict(Interval(1.0, 0.5, 1.5, ()), bar=0.0, below=True) == "fails"


def test_smallest_margin_that_holds_is_the_bar_plus_the_half_width_on_its_side():
    interval = Interval(1.75, -0.55, 2.91, ())
    assert smallest_holding_margin(interval, bar=1.0) == pytest.approx(1.0 + 2.30)
    assert smallest_holding_margin(Interval(-5.0, -9.0, -2.0, ()), bar=0.0, below=True) == pytest.approx(-3.0)


def _b2n(scores: dict[str, list[tuple[float, float]]], seeds=(1, 2)) -> pd.DataFrame:
    """Rows of methods whose (base, new) per dataset are the same on every seed, plus a seed offset."""
    rows = [(m, f"d{d}", s, b + s, n + s) for m, cells in scores.items() for d, (b, n) in enumerate(cells)
            for s in seeds]
    return pd.DataFrame(rows, columns=["method", "dataset", "seed", "base", "new"])


def test_a_claim_reads_the_report_average_and_the_best_of_its_right_side():
    """The margin on the mean is the difference of the report's HM averages, against the best of the
    right side; a rank picks the k-th best of the left side."""
    from metaprompt_lite.report import b2n_average

    frame = _b2n({"metaprompt": [(60, 50), (40, 45)], "coop": [(70, 30), (50, 35)], "cocoop": [(55, 40), (45, 40)],
                  "zsclip": [(40, 40), (40, 40)]})
    hm = b2n_average(frame)["hm"]
    best = check(Claim("m", "b2n", ("metaprompt",), ("coop", "cocoop"), "hm"), frame)
    assert best.interval.margin == pytest.approx(hm["metaprompt"] - max(hm["coop"], hm["cocoop"]))
    second = check(Claim("r", "b2n", ("metaprompt", "coop", "cocoop"), ("zsclip",), "hm", rank=2), frame)
    assert second.interval.margin == pytest.approx(sorted(hm[["metaprompt", "coop", "cocoop"]])[1] - hm["zsclip"])
    assert (best.seeds, best.datasets) == (2, 2)


def test_claims_skip_absent_methods_and_incomplete_seeds():
    frame = _b2n({"coop": [(70, 30), (50, 35)], "zsclip": [(40, 40), (40, 40)]}, seeds=(1, 2, 3))
    frame = frame[~((frame.method == "coop") & (frame.seed == 3) & (frame.dataset == "d1"))]
    assert grid_cube(frame, ("coop", "zsclip"), "dataset", ["base", "new"]).shape == (2, 2, 2, 2)  # seed 3 dropped
    assert grid_cube(frame, ("coop", "maple"), "dataset", ["base", "new"]) is None
    names = [c.name for c in check_all(frame, None)]
    assert "CoOp base − zero-shot base ≥ +8" in names and not any("MetaPrompt" in n for n in names)


def test_dg_claims_are_read_per_benchmark():
    rows = [(m, b, t, s, acc + (5 if m == "metaprompt" else 0) + s)
            for m in ("metaprompt", "cocoop", "zsclip-ens") for b in ("pacs", "flags")
            for t, acc in (("x", 40), ("y", 60)) for s in (1, 2)]
    frame = pd.DataFrame(rows, columns=["method", "benchmark", "target", "seed", "acc"])
    checked = {c.name: c for c in check_all(None, frame)}
    mp = checked["pacs: MetaPrompt − CoCoOp > 0"]
    assert mp.interval.margin == pytest.approx(5.0) and mp.verdict == "holds"  # constant margin, above 0
    assert "flags: MetaPrompt − zero-shot ensemble > 0" in checked


# what made a row, the same for every row of a hand-written results file (as in test_bench)
SETTINGS = {"train_s": 1.0, "protocol": "official", "model": "tiny-clip", "weights": "random", "epochs": 2,
            "batch_size": 16, "lr": "0.002", "shots": 6, "max_steps": "", "code": "0.2.0+abc"}


def _write_b2n(folder, coop_gain: float):
    """CoOp ``coop_gain`` above zero-shot on base on every dataset and seed (new: 5 below, plus noise)."""
    from metaprompt_lite.results_table import B2N_COLUMNS

    rng = np.random.default_rng(1)
    rows = []
    for d in range(4):
        for s in (1, 2, 3):
            zs_base, zs_new = 40 + 5 * d, 45 - 3 * d
            rows += [("zsclip", f"d{d}", s, zs_base, zs_new),
                     ("coop", f"d{d}", s, zs_base + coop_gain, zs_new - 5 + rng.uniform(-1, 1))]
    frame = pd.DataFrame(rows, columns=["method", "dataset", "seed", "base", "new"])
    frame["hm"] = 2 * frame.base * frame.new / (frame.base + frame.new)
    for column, value in SETTINGS.items():
        frame[column] = value
    folder.mkdir(parents=True)
    frame[list(B2N_COLUMNS)].to_csv(folder / "b2n.csv", index=False)


def test_the_report_writes_each_claim_with_its_interval_and_verdict(tmp_path):
    from metaprompt_lite.report import markdown, overview, summary_text

    _write_b2n(tmp_path / "official", coop_gain=12.0)
    _write_b2n(tmp_path / "tuned", coop_gain=1.0)
    text = markdown(tmp_path / "official")
    assert "## Claims, with 95 % intervals" in text
    # a constant gain: a zero-width interval on every seed, clear of the +8 bar
    assert ("| CoOp base − zero-shot base ≥ +8 | +12.00 | [+12.00, +12.00] | +12.00, +12.00, +12.00 | holds | "
            "[+12.00, +12.00] holds |") in text
    assert "| CoOp new − zero-shot new < 0 | −" in text and "MetaPrompt" not in text  # no claim without its methods
    table = overview(tmp_path)
    assert ("| CoOp base − zero-shot base ≥ +8 | +12.00 [+12.00, +12.00] holds | +1.00 [+1.00, +1.00] fails |"
            in table)
    assert "| CoOp base − zero-shot base ≥ +8 | +12.00 |" in summary_text(tmp_path / "official")  # printed too


def test_a_grid_with_nothing_to_redraw_gives_no_verdict():
    """One seed and one dataset: every bootstrap draw is the grid itself, so the 'interval' is the margin
    and a verdict would rest on one run. No claim is read; with one seed and two datasets the claim is
    read over datasets and the seeds-alone column and half-width say '—'."""
    from metaprompt_lite.claims import markdown_table, resolution

    one = _b2n({"coop": [(70, 30)], "zsclip": [(40, 40)]}, seeds=(1,))
    assert check(Claim("c", "b2n", ("coop",), ("zsclip",), "base", bar=8.0), one) is None
    assert check_all(one, None) == []
    two = _b2n({"coop": [(70, 30), (50, 35)], "zsclip": [(40, 40), (40, 40)]}, seeds=(1,))
    claim = Claim("c", "b2n", ("coop",), ("zsclip",), "base", bar=8.0, headline=True)
    checked = check(claim, two)
    assert (checked.seeds, checked.datasets, checked.seeds_alone) == (1, 2, None)
    assert (checked.interval.low, checked.interval.high) == pytest.approx((10.0, 30.0))  # draws: both d1, both d0
    assert markdown_table([checked])[-1].endswith(" | holds | — |")
    assert resolution(checked, two).endswith("(half-width on the bar's side 10.00; seeds alone —, "
                                             "datasets alone 10.00)")
