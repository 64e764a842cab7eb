"""experiments/ten-epochs: its rows are the benchmark preset with only epochs and lr changed,
checked against `metaprompt-lite train` with the same overrides (an independent path through the CLI)."""

import csv
import json

import pytest

from conftest import import_script


def test_rows_equal_train_with_the_same_epochs_and_lr(capsys, pocket):
    from metaprompt_lite.cli import main

    script = import_script("experiments/ten-epochs/ten_epochs.py")
    script._init(1, 0.05)
    rows = {row["method"]: row for row in script._run(("cards", 1))}
    for method in ("coop", "cocoop"):
        assert main(["train", "--method", method, "--dataset", "cards", "--seed", "1", "--epochs", "1",
                     "--lr", "0.05", "--json", "--out-dir", ""]) == 0
        trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert [f"{trained[k]:.4f}" for k in ("base", "new", "hm")] == [rows[method][k] for k in ("base", "new", "hm")]


def test_resume_skips_finished_groups_and_refuses_other_settings(tmp_path):
    script = import_script("experiments/ten-epochs/ten_epochs.py")
    path = tmp_path / "rows.csv"
    assert script.finished_groups(path, 10, 0.002) == set()
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, script.FIELDS)
        writer.writeheader()
        for method in ("coop", "cocoop"):
            writer.writerow({"method": method, "dataset": "cards", "seed": 2, "epochs": 10, "lr": 0.002,
                             "base": "1", "new": "1", "hm": "1", "train_s": "1"})
    assert script.finished_groups(path, 10, 0.002) == {("cards", 2)}
    with pytest.raises(SystemExit, match=r"\(epochs, lr\) \[\('10', '0.002'\)\], not \(5, 0.002\)"):
        script.finished_groups(path, 5, 0.002)


def test_summary_of_the_committed_preset_rows_equals_their_benchmark_means(tmp_path):
    """Fed the committed CoOp rows, the summary's "10 epochs" line equals its tuned-preset line."""
    from metaprompt_lite.paths import results_dir

    script = import_script("experiments/ten-epochs/ten_epochs.py")
    rows = [r for r in csv.DictReader((results_dir("tuned") / "b2n.csv").open()) if r["method"] in ("coop", "cocoop")]
    path = tmp_path / "rows.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, script.FIELDS)
        writer.writeheader()
        writer.writerows({**{k: v for k, v in r.items() if k in script.FIELDS}, "epochs": 2, "lr": 0.002} for r in rows)
    summary = script.summarise(path)
    for method in ("coop", "cocoop"):
        assert summary[f"{method} (10 epochs)"] == summary[f"{method} (tuned presets)"]
    assert summary["coop (tuned presets)"] != summary["cocoop (tuned presets)"]
