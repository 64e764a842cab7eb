# %% [markdown]
# # 09 · The benchmark: reproducing the papers' tables on the embedded tier
#
# `metaprompt-lite bench` runs every method × dataset (or DG target) × seed on the shared engine and
# appends one CSV row per run (resumable); `metaprompt-lite report` turns `results/*.csv` into
# `results/README.md` and figures. The committed results come from one complete 3-seed run.

# %%
import json

import matplotlib.pyplot as plt
import pandas as pd
import torch

from metaprompt_lite.backbone import load_clip
from metaprompt_lite.data import load_dataset
from metaprompt_lite.methods import preset
from metaprompt_lite.paths import default_model, results_dir
from metaprompt_lite.report import PAPER_B2N, PAPER_DG, b2n_average, dg_table
from metaprompt_lite.run import RunConfig, run_base_to_new

results = results_dir("tuned")
b2n = pd.read_csv(results / "b2n.csv")
dg = pd.read_csv(results / "dg.csv")
meta = json.loads((results / "bench_meta.json").read_text())
print(f"{len(b2n)} base-to-new rows, {len(dg)} DG rows; seeds {sorted(b2n.seed.unique().tolist())}; "
      f"wall time {meta['wall_minutes']:.1f} min")
assert set(b2n.seed) == {1, 2, 3} and b2n.groupby("method").size().nunique() == 1  # complete
assert set(dg.seed) == {1, 2, 3} and dg.groupby("method").size().nunique() == 1

# %% [markdown]
# ## Base-to-new: ours (pocket CLIP, offline suite) beside the papers (ViT-B/16, 11 datasets)
# Compare the *pattern* — which method wins on new classes and on HM — not the level.

# %%
ours = b2n_average(b2n)
paper = pd.DataFrame(PAPER_B2N, index=["paper base", "paper new", "paper HM"]).T
table = ours[["base", "new", "hm", "hm_std"]].round(2).join(paper, how="left")
table

# %%
fig, ax = plt.subplots(figsize=(6.5, 5))
for method, row in ours.iterrows():
    ax.errorbar(row["base"], row["new"], xerr=row["base_std"], yerr=row["new_std"], fmt="o", capsize=2)
    ax.annotate(method, (row["base"], row["new"]), fontsize=8, xytext=(4, 3), textcoords="offset points")
ax.set_xlabel("base accuracy (%)")
ax.set_ylabel("new accuracy (%)")
ax.set_title("Base vs new, average over datasets (mean ± std, 3 seeds)")
plt.show()

# %% [markdown]
# ## Domain generalisation

# %%
dg_table(dg).round(2)

# %%
print("paper DG (mean over targets, ViT-B/16):")
pd.DataFrame(PAPER_DG).T

# %% [markdown]
# ## Targets of the reproduction, checked on the committed numbers
# Printed, not asserted where they can miss: `results/FINDINGS.md` explains each miss.

# %%
hm = ours["hm"]
best = hm[["coop", "cocoop", "ivlp", "maple"]].max()
checks = {
    "MetaPrompt HM ≥ best baseline + 1": hm["metaprompt"] >= best + 1,
    "MetaPrompt new ≥ zero-shot new": ours.loc["metaprompt", "new"] >= ours.loc["zsclip", "new"],
    "CoOp base ≥ zero-shot base + 8": ours.loc["coop", "base"] >= ours.loc["zsclip", "base"] + 8,
    "CoOp new < zero-shot new": ours.loc["coop", "new"] < ours.loc["zsclip", "new"],
    "ProMetaR HM > IVLP HM": hm["prometar"] > hm["ivlp"],
    "GRAM-CoOp HM > CoOp HM": hm["gram-coop"] > hm["coop"],
    "GRAM-IVLP HM > IVLP HM": hm["gram-ivlp"] > hm["ivlp"],
}
dg_mean = dg.groupby(["method", "seed"])["acc"].mean().groupby("method").mean()
checks["DG: MetaPrompt > zero-shot (ensemble)"] = dg_mean["metaprompt"] > dg_mean["zsclip-ens"]
checks["DG: MetaPrompt > CoCoOp"] = dg_mean["metaprompt"] > dg_mean["cocoop"]
for claim, ok in checks.items():
    print(f"{'✓' if ok else '✗'} {claim}")

# %% [markdown]
# ## A small live re-run that matches the committed rows
# Same seed, same code, same CPU arithmetic: the numbers agree with `results/tuned/b2n.csv`.

# %%
backbone = load_clip(*default_model())
dataset = load_dataset("fashion")
for name in ("zsclip", "coop"):
    _, optim, shots = preset(name, protocol="tuned")
    config = RunConfig(method=name, dataset="fashion", model=backbone.name, pretrained=backbone.pretrained, seed=1,
                       shots=shots, optim=optim, progress=False)
    live = run_base_to_new(config, dataset, backbone)
    row = b2n[(b2n.method == name) & (b2n.dataset == "fashion") & (b2n.seed == 1)].iloc[0]
    print(f"{name:7s} live base {live['base']:.2f} new {live['new']:.2f} | committed base {row.base:.2f} new {row.new:.2f}")
    assert abs(live["base"] - row.base) < 0.5 and abs(live["new"] - row.new) < 0.5

# %% [markdown]
# ## The research tier: ViT-B/16 on a GPU
# Not run by the tests (needs internet for the weights and the datasets):

# %%
# NBVAL_SKIP
import subprocess

subprocess.run(["metaprompt-lite", "bench", "--tier", "paper", "--model", "ViT-B-16", "--pretrained", "openai",
                "--device", "cuda", "--suite", "b2n", "--data-root", "/data/coop", "--out-dir", "results-vitb16"],
               check=True)

# %% [markdown]
# ## Summary
# - One command reproduces every row; rows are appended as runs finish, so an interrupted benchmark resumes.
# - The committed numbers are the mean of 3 seeds; the live re-run shows they are reproducible.
# - The checks above are the reproduction's targets; `results/FINDINGS.md` discusses the ones marked ✗.
#
# ## Exercises
# 1. Add a method variant (e.g. `metaprompt-clean` with `meta_order=2`) to the benchmark and compare.
# 2. Which dataset has the largest seed-to-seed standard deviation, and why?
# 3. Run the DG benchmark with 1 shot per class and domain: does MetaPrompt's advantage grow?
