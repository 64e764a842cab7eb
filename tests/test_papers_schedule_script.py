"""experiments/papers-schedule: its rows are the benchmark preset with only epochs and lr changed,
checked against `metaprompt-lite train` with the same overrides (an independent path through the CLI)."""

import json

from conftest import import_script


def test_rows_equal_train_with_the_same_epochs_and_lr(capsys, pocket):
    from metaprompt_lite.cli import main

    script = import_script("experiments/papers-schedule/papers_schedule.py")
    script._init(1, 0.05)
    rows = {row["method"]: row for row in script._run(("cards", 1))}
    for method in ("coop", "cocoop"):
        assert main(["train", "--method", method, "--dataset", "cards", "--seed", "1", "--epochs", "1",
                     "--lr", "0.05", "--json", "--out-dir", ""]) == 0
        trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert [f"{trained[k]:.4f}" for k in ("base", "new", "hm")] == [rows[method][k] for k in ("base", "new", "hm")]
