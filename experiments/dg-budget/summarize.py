"""Print results.jsonl (MetaPrompt on the official DG protocol at 6 and 60 epochs, seed 1) beside the
committed official seed-1 rows of CoCoOp and MetaPrompt, per target and as each benchmark's mean.

Run from the repository root:  python experiments/dg-budget/summarize.py
"""

import json
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
runs = pd.DataFrame([{"benchmark": r["benchmark"], "target": r["target"], "epochs": r["epochs"], "acc": r["result"]["acc"]}
                     for r in map(json.loads, (HERE / "results.jsonl").read_text().splitlines())])
table = runs.pivot_table(index=["benchmark", "target"], columns="epochs", values="acc")
table.columns = [f"metaprompt {e} ep" for e in table.columns]
committed = pd.read_csv(HERE.parents[1] / "results" / "official" / "dg.csv")
committed = committed[committed.seed == 1].pivot_table(index=["benchmark", "target"], columns="method", values="acc")
table = table.join(committed[["metaprompt", "cocoop"]].add_prefix("committed "))
assert (table["metaprompt 6 ep"] - table["committed metaprompt"]).abs().max() < 1e-3  # the same runs as the rows
means = table.groupby(level="benchmark").mean()
print(table.round(2).to_string(), "\n\nmean over targets\n", means.round(2).to_string(), sep="")
(HERE / "summary.json").write_text(json.dumps({"per_target": table.round(4).reset_index().to_dict("records"),
                                               "mean": means.round(4).reset_index().to_dict("records")}, indent=1) + "\n")
