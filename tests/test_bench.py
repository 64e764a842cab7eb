"""The benchmark writes resumable CSV rows; the report gives the expected tables."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

import metaprompt_lite.bench as bench_module
from metaprompt_lite.bench import BenchConfig, bench
from metaprompt_lite.report import b2n_average, dg_table, report
from metaprompt_lite.results_table import B2N_COLUMNS

# what made a row (run.row_settings), the same for every row of a hand-written results file
SETTINGS = {"protocol": "official", "model": "tiny-clip", "weights": "random", "epochs": 2, "batch_size": 16,
            "lr": "0.002", "shots": 6, "max_steps": "", "code": "0.2.0+abc"}


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


def _fast_preset(name, tier="pocket", suite="b2n", protocol="official", dataset=""):
    from metaprompt_lite.optim import OptimConfig
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
    for column, value in SETTINGS.items():
        frame[column] = value
    frame[list(B2N_COLUMNS)].to_csv(tmp_path / "b2n.csv", index=False)
    avg = b2n_average(frame)
    # coop: seed 1 averages (80, 50), seed 2 (70, 50); base 75 ± 7.07, new 50 ± 0
    assert avg.loc["coop", "base"] == pytest.approx(75.0)
    assert avg.loc["coop", "base_std"] == pytest.approx(7.0710678)
    assert avg.loc["coop", "new"] == pytest.approx(50.0)
    hm1, hm2 = 2 * 80 * 50 / 130, 2 * 70 * 50 / 120
    assert avg.loc["coop", "hm"] == pytest.approx((hm1 + hm2) / 2)
    assert avg.loc["metaprompt", "seeds"] == 1
    dg = pd.DataFrame([("metaprompt", "cards", "x", 1, 50.0, 1.0), ("metaprompt", "cards", "y", 1, 70.0, 1.0),
                       ("metaprompt", "cards", "x", 2, 60.0, 1.0), ("metaprompt", "cards", "y", 2, 80.0, 1.0)],
                      columns=["method", "benchmark", "target", "seed", "acc", "train_s"])
    for column, value in SETTINGS.items():
        dg[column] = value
    dg.to_csv(tmp_path / "dg.csv", index=False)
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

    from metaprompt_lite.cli_bench import _record_bench_meta

    def args(seeds):
        return argparse.Namespace(out_dir=str(tmp_path), model="tiny-clip", pretrained="none", tier="pocket", protocol="official",
                                  seeds=seeds)

    _record_bench_meta(args([1, 2]), {"b2n": 600.0})
    _record_bench_meta(args([3]), {"b2n": 300.0, "dg": 120.0})
    meta = json.loads((tmp_path / "bench_meta.json").read_text())
    assert meta["seeds"] == [1, 2, 3]
    assert meta["wall_minutes_by_suite"] == {"b2n": 15.0, "dg": 2.0}
    assert meta["wall_minutes"] == 17.0 and meta["pretrained"] is None


def test_bench_meta_keeps_each_sitting_with_its_load_and_clocks(tmp_path, monkeypatch):
    """Each invocation of a suite is one sitting, updated in place after every row: rows, wall and CPU
    minutes since it started, the load average at its start and at its last row; a resumed invocation adds
    a second sitting rather than overwriting the first."""
    import argparse
    import json

    from metaprompt_lite import cli_bench

    clock, cpu, load = [100.0], [10.0], [(0.1, 0.2, 0.3)]
    monkeypatch.setattr(cli_bench.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(cli_bench, "_cpu_seconds", lambda: cpu[0])
    monkeypatch.setattr(cli_bench.os, "getloadavg", lambda: load[0])
    args = argparse.Namespace(out_dir=str(tmp_path), model="tiny-clip", pretrained="none", tier="pocket",
                              protocol="official", seeds=[1])
    first = cli_bench.start_sitting("b2n")
    load[0] = (2.0, 1.5, 1.0)
    for _ in range(2):
        clock[0] += 60.0
        cpu[0] += 120.0
        cli_bench._record_bench_meta(args, {"b2n": 60.0}, cli_bench.update_sitting(first))
    second = cli_bench.start_sitting("b2n")
    second["started"] = "later"  # a resumed invocation (its own start time)
    clock[0] += 30.0
    cli_bench._record_bench_meta(args, {"b2n": 30.0}, cli_bench.update_sitting(second))
    meta = json.loads((tmp_path / "bench_meta.json").read_text())
    assert meta["wall_minutes_by_suite"] == {"b2n": 2.5}
    one, two = meta["sittings"]
    assert (one["rows"], one["wall_minutes"], one["cpu_minutes"]) == (2, 2.0, 4.0)
    assert one["load_average_start"] == [0.1, 0.2, 0.3] and one["load_average_end"] == [2.0, 1.5, 1.0]
    assert (two["rows"], two["wall_minutes"], two["started"]) == (1, 0.5, "later")
    assert not any(key.startswith("_") for key in one)


def test_bench_meta_names_the_default_checkpoint_relative_to_the_clone(tmp_path):
    """The committed results/bench_meta.json must not carry this machine's absolute path."""
    import argparse
    import json

    from metaprompt_lite.cli_bench import _record_bench_meta
    from metaprompt_lite.paths import POCKET_CHECKPOINT, data_dir

    absolute = str((data_dir() / POCKET_CHECKPOINT).resolve())
    if not Path(absolute).is_file():
        pytest.skip("no committed pocket CLIP checkpoint")
    for pretrained, expected in ((absolute, f"data/{POCKET_CHECKPOINT}"), ("openai", "openai")):
        _record_bench_meta(argparse.Namespace(out_dir=str(tmp_path), model="pocket-clip", pretrained=pretrained,
                                              tier="pocket", protocol="official", seeds=[1]), {"b2n": 60.0})
        assert json.loads((tmp_path / "bench_meta.json").read_text())["pretrained"] == expected


def test_bench_meta_names_a_moved_data_directory_by_its_variable(tmp_path, monkeypatch):
    """With METAPROMPT_LITE_DATA set, a checkpoint there is not recorded as data/... (which would name
    the clone's own, possibly different, file)."""
    from metaprompt_lite.cli_bench import _portable_path

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


def test_rows_record_what_made_them(tmp_path, monkeypatch, dataset):
    """Every row carries its protocol, backbone, weights, budget, the shots actually drawn (asked for
    16, the synthetic train pool has 4 per class), max_steps and the running code's version."""
    import metaprompt_lite.run as run_module
    from metaprompt_lite.provenance import code_version

    def sixteen_shots(*args, **kwargs):
        method, optim, _ = _fast_preset(*args, **kwargs)
        return method, optim, 16

    monkeypatch.setattr(bench_module, "preset", sixteen_shots)
    monkeypatch.setattr(run_module, "preset", sixteen_shots)
    path = bench(_config(tmp_path, lambda name: dataset))
    rows = {r["method"]: r for r in csv.DictReader(path.open())}
    assert rows["coop"]["protocol"] == "official" and rows["coop"]["model"] == "tiny-clip"
    assert rows["coop"]["weights"] == "random" and rows["coop"]["code"] == code_version()
    assert (rows["coop"]["epochs"], rows["coop"]["batch_size"], rows["coop"]["lr"]) == ("8", "4", "0.01")
    assert rows["coop"]["shots"] == "4" and rows["coop"]["max_steps"] == "2"
    assert (rows["zsclip"]["epochs"], rows["zsclip"]["shots"], rows["zsclip"]["lr"]) == ("0", "0", "0")


def test_a_resume_with_other_settings_is_refused_and_changes_nothing(tmp_path, monkeypatch, dataset):
    """A results file never holds two settings for one run: resuming with another max_steps (or
    weights, protocol, budget, code) is one error naming the difference and the fix, before any work."""
    _use_fast_presets(monkeypatch)
    path = bench(_config(tmp_path, lambda name: dataset))
    before = path.read_bytes()
    calls = []
    monkeypatch.setattr(bench_module, "run_base_to_new", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError) as error:
        bench(BenchConfig(**{**_config(tmp_path, lambda name: dataset).__dict__, "max_steps": 1}))
    message = str(error.value)
    assert "already holds 4 of these runs made with other settings" in message
    assert "max_steps '2' → '1'" in message and "use another --out-dir" in message
    assert path.read_bytes() == before and not calls
    monkeypatch.setattr(bench_module, "code_version", lambda: "9.9.9+other")
    with pytest.raises(ValueError, match="code '.*' → '9.9.9\\+other'"):
        bench(_config(tmp_path, lambda name: dataset))
    assert path.read_bytes() == before and not calls


def test_report_refuses_rows_made_with_different_settings(tmp_path):
    """Rows of two backbones (or protocols, code versions, budgets) in one file are not averaged."""
    from metaprompt_lite.report import read_results
    from metaprompt_lite.results_table import ResultsError

    rows = [("coop", "a", 1, 50.0, 40.0), ("coop", "a", 2, 52.0, 41.0)]
    frame = pd.DataFrame(rows, columns=["method", "dataset", "seed", "base", "new"])
    frame["hm"], frame["train_s"] = 44.0, 1.0
    for column, value in SETTINGS.items():
        frame[column] = value
    frame.loc[1, "weights"] = "sha256:0123456789abcdef"
    frame[list(B2N_COLUMNS)].to_csv(tmp_path / "b2n.csv", index=False)
    with pytest.raises(ResultsError, match="mixes rows of weights 'random' and 'sha256:0123456789abcdef'"):
        read_results(tmp_path / "b2n.csv")
    frame.loc[1, "weights"], frame.loc[1, "lr"] = "random", "0.008"
    frame[list(B2N_COLUMNS)].to_csv(tmp_path / "b2n.csv", index=False)
    with pytest.raises(ResultsError, match="two budgets for coop a across seeds"):
        read_results(tmp_path / "b2n.csv")


def test_a_results_file_holds_one_code_version_per_method(tmp_path):
    """A method added later may carry another code version than the file's other methods (its rows
    join a finished file); one method's rows from two code versions are refused."""
    from metaprompt_lite.report import read_results
    from metaprompt_lite.results_table import ResultsError

    rows = [("coop", "a", 1, 50.0, 40.0), ("coop", "a", 2, 52.0, 41.0), ("zsclip-bare", "a", 1, 30.0, 30.0),
            ("zsclip-bare", "a", 2, 30.0, 30.0)]
    frame = pd.DataFrame(rows, columns=["method", "dataset", "seed", "base", "new"])
    frame["hm"], frame["train_s"] = 44.0, 1.0
    for column, value in SETTINGS.items():
        frame[column] = value
    frame.loc[frame["method"] == "zsclip-bare", "code"] = "0.2.0+later"
    frame[list(B2N_COLUMNS)].to_csv(tmp_path / "b2n.csv", index=False)
    assert set(read_results(tmp_path / "b2n.csv")["code"]) == {"0.2.0+abc", "0.2.0+later"}
    frame.loc[1, "code"] = "0.2.0+later"
    frame[list(B2N_COLUMNS)].to_csv(tmp_path / "b2n.csv", index=False)
    with pytest.raises(ResultsError, match="mixes coop rows of code '0.2.0\\+abc' and '0.2.0\\+later'"):
        read_results(tmp_path / "b2n.csv")


def test_a_bench_prints_its_rows_beside_the_committed_ones(tmp_path, monkeypatch, dataset):
    """The comparison a finished bench prints: identical rows counted, differing rows named."""
    from metaprompt_lite.compare import comparison_text

    _use_fast_presets(monkeypatch)
    mine = bench(_config(tmp_path / "mine", lambda name: dataset))
    reference = tmp_path / "reference"
    reference.mkdir()
    text = mine.read_text()  # the same rows first
    (reference / "b2n.csv").write_text(text)
    assert "b2n: 4 of the 4 rows in both files are identical" in comparison_text(tmp_path / "mine", reference)
    lines = text.splitlines(keepends=True)
    fields = lines[-1].split(",")
    fields[3] = "1.0000"  # another base accuracy in the last row
    (reference / "b2n.csv").write_text("".join(lines[:-1]) + ",".join(fields))
    out = comparison_text(tmp_path / "mine", reference)
    assert "3 of the 4 rows" in out and "differs: " + ",".join(fields[:3]).replace(",", " ") in out
    (reference / "b2n.csv").write_text("".join(lines[:1]) + lines[1].replace(",1,", ",7,", 1))  # another seed only
    assert comparison_text(tmp_path / "mine", reference) == f"b2n: none of this run's rows is in {reference / 'b2n.csv'} yet"


def test_the_start_up_estimate_is_steps_times_the_measured_step_per_class():
    """One group's estimate, by hand: each method's official steps × its seconds per step at the reference
    dataset × classes / the reference's classes (25 base classes for base-to-new, 40 for a DG target,
    with the DG table's own MetaPrompt step, whose episodes span source domains)."""
    from metaprompt_lite.bench import (DG_STEP_SECONDS, STEP_SECONDS, BenchConfig, Group, group_seconds,
                                       run_config)
    from metaprompt_lite.data import load_dataset
    from metaprompt_lite.optim import steps_for
    from metaprompt_lite.run import training_set

    for suite, name, target, per_step, reference in (("b2n", "fashion", None, STEP_SECONDS, 25),
                                                     ("dg", "emoji-pacs", "photo", DG_STEP_SECONDS, 40)):
        config = BenchConfig(suite=suite, protocol="official", progress=False)
        dataset = load_dataset(name)
        methods = ("zsclip", "coop", "metaprompt")
        by_hand = 0.0
        for method in methods[1:]:
            run = run_config(config, method, name, target, 1)
            steps, _ = steps_for(len(training_set(run, dataset)[0]), run.optim)
            classes = len(dataset.classnames) / (2 if target is None else 1)
            by_hand += steps * per_step[method] * classes / reference
        got = group_seconds(config, Group(name, target, 1, methods), dataset)
        assert got == pytest.approx(by_hand) and got > 0
    assert DG_STEP_SECONDS["metaprompt"] != STEP_SECONDS["metaprompt"]
