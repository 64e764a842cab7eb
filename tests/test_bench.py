"""The benchmark writes resumable CSV rows; the report gives the expected tables."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

import metaprompt_lite.bench as bench_module
from metaprompt_lite.bench import BenchConfig, bench
from metaprompt_lite.report import b2n_average, dg_table, report


def _config(tmp_path, loader, suite="b2n", methods=("zsclip", "coop")):
    return BenchConfig(suite=suite, methods=methods, datasets=["syn"], seeds=(1, 2), model="tiny-clip",
                       out_dir=str(tmp_path), progress=False, loader=loader, workers=1)


def test_bench_resumes_without_recomputing(tmp_path, monkeypatch, dataset):
    calls = []
    original = bench_module.run_base_to_new

    def counting(*args, **kwargs):
        calls.append(args[0].method)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed during the third run
        return original(*args, **kwargs)

    monkeypatch.setattr(bench_module, "run_base_to_new", counting)
    _use_fast_presets(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        bench(_config(tmp_path, lambda name: dataset))
    rows = list(csv.DictReader((tmp_path / "b2n.csv").open()))
    assert len(rows) == 2  # the finished runs are on disk, the interrupted one is not
    calls.clear()
    monkeypatch.setattr(bench_module, "run_base_to_new", original)
    bench(_config(tmp_path, lambda name: dataset))
    rows = list(csv.DictReader((tmp_path / "b2n.csv").open()))
    assert len(rows) == 4 and len({(r["method"], r["seed"]) for r in rows}) == 4
    bench(_config(tmp_path, lambda name: dataset))  # nothing left: no new rows
    assert len(list(csv.DictReader((tmp_path / "b2n.csv").open()))) == 4


def _fast_preset(name, tier="pocket", suite="b2n"):
    from metaprompt_lite.engine import OptimConfig
    from metaprompt_lite.methods import get_method

    return get_method(name), OptimConfig(lr=0.01, batch_size=4, max_steps=2, warmup_epochs=0), 2


def _use_fast_presets(monkeypatch):
    import metaprompt_lite.run as run_module

    monkeypatch.setattr(bench_module, "preset", _fast_preset)
    monkeypatch.setattr(run_module, "preset", _fast_preset)  # bench's runs come from run.preset_run


def test_bench_dg_rows(tmp_path, monkeypatch, dg_dataset):
    _use_fast_presets(monkeypatch)
    path = bench(_config(tmp_path, lambda name: dg_dataset, suite="dg", methods=("zsclip", "metaprompt")))
    frame = pd.read_csv(path)
    assert len(frame) == 2 * 3 * 2  # methods × targets × seeds
    assert set(frame["target"]) == set(dg_dataset.domains)


def test_bench_rejects_unknown_suite_and_method(tmp_path, dataset):
    with pytest.raises(ValueError, match="unknown suite"):
        bench(BenchConfig(suite="x", out_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="unknown method"):
        bench(_config(tmp_path, lambda name: dataset, methods=("nope",)))


def test_report_on_a_fixed_csv(tmp_path):
    rows = [
        # method, dataset, seed, base, new
        ("coop", "a", 1, 90.0, 40.0), ("coop", "b", 1, 70.0, 60.0),
        ("coop", "a", 2, 80.0, 50.0), ("coop", "b", 2, 60.0, 50.0),
        ("metaprompt", "a", 1, 85.0, 60.0), ("metaprompt", "b", 1, 75.0, 70.0),
    ]
    frame = pd.DataFrame(rows, columns=["method", "dataset", "seed", "base", "new"])
    frame["hm"] = 2 * frame.base * frame.new / (frame.base + frame.new)
    frame["train_s"] = 1.0
    frame.to_csv(tmp_path / "b2n.csv", index=False)
    avg = b2n_average(frame)
    # coop: seed 1 averages (80, 50), seed 2 (70, 50); base 75 ± 7.07, new 50 ± 0
    assert avg.loc["coop", "base"] == pytest.approx(75.0)
    assert avg.loc["coop", "base_std"] == pytest.approx(7.0710678)
    assert avg.loc["coop", "new"] == pytest.approx(50.0)
    hm1, hm2 = 2 * 80 * 50 / 130, 2 * 70 * 50 / 120
    assert avg.loc["coop", "hm"] == pytest.approx((hm1 + hm2) / 2)
    assert avg.loc["metaprompt", "seeds"] == 1
    pd.DataFrame([("metaprompt", "cards", "x", 1, 50.0, 1.0), ("metaprompt", "cards", "y", 1, 70.0, 1.0),
                  ("metaprompt", "cards", "x", 2, 60.0, 1.0), ("metaprompt", "cards", "y", 2, 80.0, 1.0)],
                 columns=["method", "benchmark", "target", "seed", "acc", "train_s"]).to_csv(tmp_path / "dg.csv", index=False)
    table = dg_table(pd.read_csv(tmp_path / "dg.csv"))
    assert table.loc[("cards", "metaprompt"), "x"] == pytest.approx(55.0)
    assert table.loc[("cards", "metaprompt"), "mean"] == pytest.approx(65.0)
    path = report(tmp_path)
    text = path.read_text()
    assert "| coop | 75.00 ± 7.07 | 50.00 ± 0.00 |" in text
    assert "| metaprompt | 55.00 | 75.00 | 65.00 ± 7.07 |" in text
    assert "82.69" in text  # the paper's CoOp base beside ours
    for figure in ("base_vs_new.png", "hm_per_dataset.png", "dg_targets.png"):
        assert (tmp_path / figure).stat().st_size > 1000
    with pytest.raises(FileNotFoundError, match="— run `metaprompt-lite bench` first"):
        report(tmp_path / "empty")


def test_cli_zeroshot_prints_a_table(capsys):
    from metaprompt_lite.cli import main

    assert main(["zeroshot", "--suite", "probe", "--model", "tiny-clip", "--pretrained", "none"]) == 0
    out = capsys.readouterr().out
    assert "emoji-unseen" in out and "single" in out and "ensemble" in out


def test_cli_rejects_unknown_suite(capsys):
    from metaprompt_lite.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["zeroshot", "--suite", "imagenet"])
    assert exit_info.value.code == 2 and "invalid choice: 'imagenet'" in capsys.readouterr().err


def test_bench_meta_sums_wall_time_per_suite_over_resumed_invocations(tmp_path):
    import argparse
    import json

    from metaprompt_lite.cli import _record_bench_meta

    def args(seeds):
        return argparse.Namespace(out_dir=str(tmp_path), model="tiny-clip", pretrained="none", tier="pocket",
                                  seeds=seeds)

    _record_bench_meta(args([1, 2]), {"b2n": 600.0})
    _record_bench_meta(args([3]), {"b2n": 300.0, "dg": 120.0})
    meta = json.loads((tmp_path / "bench_meta.json").read_text())
    assert meta["seeds"] == [1, 2, 3]
    assert meta["wall_minutes_by_suite"] == {"b2n": 15.0, "dg": 2.0}
    assert meta["wall_minutes"] == 17.0 and meta["pretrained"] is None


def test_bench_meta_names_the_default_checkpoint_relative_to_the_clone(tmp_path):
    """The committed results/bench_meta.json must not carry this machine's absolute path."""
    import argparse
    import json

    from metaprompt_lite.cli import _record_bench_meta
    from metaprompt_lite.paths import POCKET_CHECKPOINT, data_dir

    absolute = str((data_dir() / POCKET_CHECKPOINT).resolve())
    if not Path(absolute).is_file():
        pytest.skip("no committed pocket CLIP checkpoint")
    for pretrained, expected in ((absolute, f"data/{POCKET_CHECKPOINT}"), ("openai", "openai")):
        _record_bench_meta(argparse.Namespace(out_dir=str(tmp_path), model="pocket-clip", pretrained=pretrained,
                                              tier="pocket", seeds=[1]), {"b2n": 60.0})
        assert json.loads((tmp_path / "bench_meta.json").read_text())["pretrained"] == expected


def test_bench_meta_names_a_moved_data_directory_by_its_variable(tmp_path, monkeypatch):
    """With METAPROMPT_LITE_DATA set, a checkpoint there is not recorded as data/... (which would name
    the clone's own, possibly different, file)."""
    from metaprompt_lite.cli import _portable_path

    moved = tmp_path / "elsewhere"
    (moved / "pocket-clip").mkdir(parents=True)
    checkpoint = moved / "pocket-clip" / "mine.safetensors"
    checkpoint.write_bytes(b"x")
    monkeypatch.setenv("METAPROMPT_LITE_DATA", str(moved))
    assert _portable_path(str(checkpoint)) == "$METAPROMPT_LITE_DATA/pocket-clip/mine.safetensors"
    outside = tmp_path / "other.safetensors"
    outside.write_bytes(b"x")
    assert _portable_path(str(outside)) == str(outside)
    monkeypatch.delenv("METAPROMPT_LITE_DATA")
    assert _portable_path(str(checkpoint)) == str(checkpoint)  # not under the clone's data/ any more


def test_results_dir_is_beside_the_data_directory_else_the_working_directory(tmp_path, monkeypatch):
    """paths.results_dir: a clone's results/ (beside data/), where the notebooks read the committed run;
    with the data directory moved elsewhere and no results/ beside it, ./results."""
    from metaprompt_lite.paths import results_dir

    (tmp_path / "clone" / "data").mkdir(parents=True)
    (tmp_path / "clone" / "results").mkdir()
    monkeypatch.setenv("METAPROMPT_LITE_DATA", str(tmp_path / "clone" / "data"))
    assert results_dir() == tmp_path / "clone" / "results"
    (tmp_path / "elsewhere" / "data").mkdir(parents=True)
    monkeypatch.setenv("METAPROMPT_LITE_DATA", str(tmp_path / "elsewhere" / "data"))
    monkeypatch.chdir(tmp_path)
    assert results_dir() == tmp_path / "results"
