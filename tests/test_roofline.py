"""benchmarks/roofline.py's arithmetic: GFLOP/s, share of the peak, the floor in minutes, the FLOPs of
a known product, of one step of the tiny CLIP, and of a small grid counted by hand. Nothing is timed."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import import_script, synthetic_dataset


@pytest.fixture(scope="module")
def roofline():
    return import_script("benchmarks/roofline.py")


def test_rates_and_floor_on_known_numbers(roofline):
    assert roofline.gflop_per_s(3e9, 0.5) == pytest.approx(6.0)
    assert roofline.percent_of_peak(25.0, 200.0) == pytest.approx(12.5)
    # 2 cores at 100 GFLOP/s each do 12 TFLOP in one minute
    assert roofline.floor_minutes(12e12, 100.0) == pytest.approx(1.0)
    assert roofline.floor_minutes(12e12, 100.0, cores=1) == pytest.approx(2.0)


def test_count_flops_of_a_product_and_of_a_module_under_no_grad(roofline):
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    assert roofline.count_flops(lambda: torch.mm(a, b)) == 2 * 64 * 32 * 16
    layer = torch.nn.Linear(8, 3)
    deep = torch.nn.Parameter(torch.randn(2, 5, 8))
    with torch.no_grad():  # a view of a parameter as a module's input, as MaPLe's coupling in evaluation
        assert roofline.count_flops(lambda: layer(deep.unbind(0)[1])) == 2 * 5 * 8 * 3


def test_one_step_of_the_tiny_clip_has_positive_repeatable_flops(roofline, backbone):
    dataset = synthetic_dataset()
    counts = [roofline.step_flops(roofline.probe("coop", "b2n", dataset, backbone)) for _ in range(2)]
    first, second = counts
    assert first["warm"] > 0 and first["warm"] == second["warm"] == first["warm_min"] == first["warm_max"]
    assert first["cold"] == second["cold"]
    # CoOp's image side is the frozen features: a fresh batch adds them to the step
    assert first["uses_frozen"] and first["cold"] == first["warm"] + first["stem"] + first["frozen"]
    assert first["frozen"] > 0 and first["stem"] > 0


def _steps(warm, stem=0, frozen=0, uses_stem=False, uses_frozen=False):
    return {"warm": warm, "stem": stem, "frozen": frozen, "uses_stem": uses_stem, "uses_frozen": uses_frozen}


def test_grid_flops_counted_by_hand(roofline):
    rows = [
        {"method": "coop", "place": "d", "seed": 1, "steps": 10, "batch_size": 32},
        {"method": "gram-coop", "place": "d", "seed": 1, "steps": 10, "batch_size": 32},
        {"method": "ivlp", "place": "d", "seed": 1, "steps": 4, "batch_size": 4},
        {"method": "prometar", "place": "d", "seed": 1, "steps": 8, "batch_size": 4},
        {"method": "zsclip", "place": "d", "seed": 1, "steps": 0, "batch_size": 0},
    ]
    steps = {("coop", "d"): _steps(100, 7, 11, uses_frozen=True), ("gram-coop", "d"): _steps(100, 7, 11, uses_frozen=True),
             ("ivlp", "d"): _steps(50, 3, 5, uses_stem=True), ("prometar", "d"): _steps(200, 3, 5, uses_stem=True)}
    evals = {("coop", "d"): 1, ("gram-coop", "d"): 1, ("ivlp", "d"): 2, ("prometar", "d"): 3, ("zsclip", "d"): 4}
    flops = roofline.grid_flops(rows, steps, evals, {"d": 1000})
    # batch 32: one group of 10 steps sharing stem and features; batch 4: 8 steps sharing the stem only
    shared = 10 * (7 + 11) + 8 * 3
    assert flops["shared_batch_features"] == shared
    assert flops["train"] == 10 * 100 * 2 + 4 * 50 + 8 * 200 + shared
    assert flops["eval"] == 1 + 1 + 2 + 3 + 4 + 1000
    assert flops["total"] == flops["train"] + flops["eval"]


def test_grid_rows_take_steps_from_curves_and_leave_out_zsclip_bare(roofline, tmp_path):
    (tmp_path / "curves").mkdir()
    (tmp_path / "b2n.csv").write_text("method,dataset,seed,batch_size\nzsclip-bare,d,1,0\nzsclip,d,1,0\ncoop,d,2,32\n")
    (tmp_path / "curves" / "coop-d-s2.json").write_text(json.dumps([{"step": 1}, {"step": 2}, {"step": 3}]))
    (tmp_path / "dg.csv").write_text("method,benchmark,target,seed,batch_size\ncoop,b,t,1,32\n")
    (tmp_path / "curves" / "coop-b-t-s1.json").write_text(json.dumps([{"step": 1}, {"step": 7}]))
    assert roofline.grid_rows("b2n", tmp_path) == [
        {"method": "zsclip", "place": "d", "seed": 1, "steps": 0, "batch_size": 0},
        {"method": "coop", "place": "d", "seed": 2, "steps": 3, "batch_size": 32}]
    assert roofline.grid_rows("dg", tmp_path) == [
        {"method": "coop", "place": "b/t", "seed": 1, "steps": 7, "batch_size": 32}]
