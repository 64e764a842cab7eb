# %% [markdown]
# # 09 · The benchmark: every method of the course, side by side
#
# `metaprompt-lite bench` runs every method × dataset (or DG target) × seed and appends one CSV row per
# run (resumable); `metaprompt-lite report` turns the rows into `results/<protocol>/README.md` and its
# figures. Two protocols, one folder each. **official** (`results/official/`, the headline) trains every
# method at its paper's budget (GRAM, which publishes none, at its learner's); **tuned**
# (`results/tuned/`) at a budget chosen on base-class validation, the same tuning for every method (no
# paper reports it). Every row records the settings and the code version that made it. This is the
# course's one place for benchmark tables; it reads them in the order the course taught the methods.
#
# The tables also name variants of the course's methods:
# - `zsclip-bare`: zero-shot CLIP prompted with the bare class name (MetaPrompt's own zero-shot row);
#   `zsclip` uses the dataset's hand template and `zsclip-ens` the mean of its templates' text
#   embeddings (notebook 01's ensemble).
# - `metaprompt-clean`: MetaPrompt with the meta-update as the paper writes it (the prompts restored
#   exactly after each inner step); `metaprompt` runs the official code's update.
# - `prometar-base`: ProMetaR's learner (4 + 4 prompts; its recipe's depth 9 is capped at the pocket
#   CLIP's 4 layers, so every layer is prompted, as in IVLP) trained without its meta-regularisation;
#   `gram-ivlp`: GRAM's θ₀ and regulator around that same learner.

# %%
import json
import re

import pandas as pd

from metaprompt_lite.backbone import load_clip
from metaprompt_lite.claims import BASELINES, cell, check, check_all
from metaprompt_lite.data import load_dataset
from metaprompt_lite.data.store import B2N_KINDS
from metaprompt_lite.headroom import headroom_rows
from metaprompt_lite.intervals import smallest_holding_margin
from metaprompt_lite.methods import budget
from metaprompt_lite.optim import steps_for
from metaprompt_lite.paths import default_model, results_dir
from metaprompt_lite.report import PAPER_B2N, PAPER_DG, b2n_average, dg_table, read_results
from metaprompt_lite.run import preset_run, run_base_to_new

PROTOCOLS = ("official", "tuned")
ORDER = ("zsclip-bare", "zsclip", "zsclip-ens", "coop", "cocoop", "ivlp", "maple", "metaprompt", "metaprompt-clean",
         "prometar", "prometar-base", "gram-coop", "gram-ivlp")  # the course's order
ZERO_SHOT = [m for m in ORDER if m.startswith("zsclip")]
SUITE_IN_NOTE = {"b2n": "Base-to-new", "dg": "DG"}


def committed(suite: str) -> dict[str, pd.DataFrame]:
    """Each protocol's committed rows of one suite ("b2n" or "dg"); prints who made them and the wall
    time bench_meta.json records (printed as a plain number, so nbval compares it with the stored output)."""
    frames = {p: read_results(results_dir(p) / f"{suite}.csv") for p in PROTOCOLS}
    for protocol, frame in frames.items():
        meta = json.loads((results_dir(protocol) / "bench_meta.json").read_text())
        minutes = meta["wall_minutes_by_suite"]
        assert abs(sum(minutes.values()) - meta["wall_minutes"]) < 1e-9, "the total is not the suites' sum"
        stated = re.search(rf"{SUITE_IN_NOTE[suite]} \((\d+) rows, ([\d.]+) min\)", meta["note"])
        if stated:  # the note restates the suite's rows and minutes: they must be the file's
            rows = int((frame.code == meta["code"]).sum())
            assert (int(stated[1]), float(stated[2])) == (rows, round(minutes[suite], 1)), (stated[0], rows, minutes)
        codes = ", ".join(f"{n} by {code}" for code, n in frame.groupby("code").size().items())
        print(f"{protocol:8s} {suite}: {len(frame)} rows ({codes}), seeds {sorted(set(frame.seed))}; "
              f"bench_meta.json wall minutes: {suite} {minutes[suite]:.1f} of {meta['wall_minutes']:.1f} in all")
    return frames


b2n = committed("b2n")

# %% [markdown]
# ## Base-to-new: ours (pocket CLIP, offline suite) beside the papers (ViT-B/16, 11 datasets)
# Per seed: the mean over the suite's datasets, the HM of the mean base and new; then the mean over seeds.
# Compare the *pattern* (which method wins on new classes and on HM), not the level.

# %%
ours = {p: b2n_average(frame).loc[list(ORDER)] for p, frame in b2n.items()}
paper = pd.DataFrame(PAPER_B2N, index=["paper base", "paper new", "paper HM"]).T
table = pd.concat({p: o[["base", "new", "hm"]] for p, o in ours.items()}, axis=1).round(2)
for p, o in ours.items():
    learned = o.drop(index=ZERO_SHOT)
    print(f"{p:8s}: best HM {o.hm.idxmax()} ({o.hm.max():.2f}); best new {o.new.idxmax()} ({o.new.max():.2f}), "
          f"best learned new {learned.new.idxmax()} ({learned.new.max():.2f})")
print(f"paper   : best HM {paper['paper HM'].idxmax()}, best new {paper['paper new'].idxmax()}")
table.join(pd.concat({"paper": paper}, axis=1), how="left")

# %% [markdown]
# ## Zero-shot CLIP: the bar on new classes (notebook 01)
# A prompt learner trains on base classes only; zero-shot CLIP (hand template) never trains, so its
# new-class accuracy is the bar a learner should not fall under.

# %%
for p, o in ours.items():
    learned = o.drop(index=ZERO_SHOT)
    below = learned[learned.new < o.loc["zsclip", "new"]]
    print(f"{p:8s}: {len(below)} of {len(learned)} learned methods end below zero-shot's new "
          f"{o.loc['zsclip', 'new']:.2f}" + (f"; above it: {', '.join(learned.index.difference(below.index))}"
                                              if len(below) < len(learned) else ""))

# %% [markdown]
# ## CoOp (notebook 02), per dataset
# The papers' picture: CoOp at its official budget lifts base accuracy over zero-shot and loses on
# new classes. Each dataset, mean over seeds:

# %%
per_dataset = {p: f.groupby(["method", "dataset"])[["base", "new"]].mean() for p, f in b2n.items()}
zs, official, tuned = (per_dataset["official"].loc["zsclip"], per_dataset["official"].loc["coop"],
                       per_dataset["tuned"].loc["coop"])
coop = pd.concat({"zero-shot": zs, "CoOp tuned": tuned, "CoOp official": official}, axis=1)
for label, frame in (("tuned", tuned), ("official", official)):
    print(f"CoOp {label:8s}: base > zero-shot on {int((frame.base > zs.base).sum())} of {len(zs)}, "
          f"new < zero-shot on {int((frame.new < zs.new).sum())} of {len(zs)}; mean Δ base "
          f"{frame.base.mean() - zs.base.mean():+.1f}, Δ new {frame.new.mean() - zs.new.mean():+.1f}")
coop.round(1)

# %% [markdown]
# How much base accuracy a prompt can gain is bounded by what the frozen image features separate. A
# linear probe on them measures that (`metaprompt_lite.headroom`): headroom = probe − zero-shot, on
# base classes. The suite has three kinds of dataset (data/README.md): **familiar** concepts the pocket
# CLIP was pretrained on with their names, **unseen concepts** (names only as text) and an **unseen
# look** (pixel art).

# %%
backbone = load_clip(*default_model())
room = pd.DataFrame(headroom_rows(backbone, [load_dataset(n) for n in zs.index])).set_index("dataset")
room.insert(0, "kind", [B2N_KINDS[n] for n in room.index])
room["CoOp base gain"] = official.base - zs.base
room["CoOp new loss"] = zs.new - official.new
r = room.headroom.corr(room["CoOp base gain"])
top = room["CoOp base gain"].idxmax()
print(f"headroom vs CoOp's official base gain over the datasets: correlation {r:+.2f}; CoOp gains most on {top} "
      f"({room.loc[top, 'CoOp base gain']:+.1f}; {room.loc[top, 'kind']}, headroom "
      f"{room.loc[top, 'headroom']:+.1f}); mean gain per kind: " + ", ".join(
          f"{k} {g:+.1f}" for k, g in room.groupby("kind")["CoOp base gain"].mean().items()))
room[["kind", "zeroshot", "probe", "headroom", "CoOp base gain", "CoOp new loss"]].round(1)

# %% [markdown]
# ## MetaPrompt (notebook 06) against the deep prompts of notebook 03
# MetaPrompt's paper reports it above MaPLe on new classes (`report.PAPER_B2N`, asserted; that table has
# no IVLP row). Ours against the better of IVLP and MaPLe:

# %%
paper_gap = paper.loc["metaprompt", "paper new"] - paper.loc["maple", "paper new"]
assert paper_gap > 0, f"the paper table has MetaPrompt {paper_gap:+.2f} below MaPLe on new"
print(f"paper   : MetaPrompt new − MaPLe new = {paper_gap:+.2f}")
for p, o in ours.items():
    gap = o.loc["metaprompt", "new"] - o.loc[["ivlp", "maple"], "new"].max()
    spread = o.loc[["metaprompt", "ivlp", "maple"], "new_std"].max()
    print(f"{p:8s}: MetaPrompt new − best of IVLP, MaPLe new = {gap:+.2f}, "
          f"{'beyond' if abs(gap) > spread else 'within'} the largest seed spread of the three ({spread:.2f})")

# %% [markdown]
# ## Each claim with its interval
# A claim compares methods: a margin on the mean over seeds (e.g. MetaPrompt's HM minus the best of CoOp,
# CoCoOp, IVLP and MaPLe) against a bar (+1 there). A few seeds and datasets are a small sample, so
# each margin comes with a 95 % interval from a paired bootstrap: redraw seeds and datasets with
# replacement, the same draw for every method, and recompute the margin (`docs/intervals.md`). The
# verdict is read from the interval: **holds** when all of it clears the bar, **within noise** when it
# straddles the bar, **fails** when all of it is on the wrong side. Rows follow the course: CoOp,
# CoCoOp, the deep prompts, MetaPrompt, ProMetaR, GRAM, then the claim over five methods.
# `results/FINDINGS.md` discusses each claim.

# %%
def course_order(checked: list) -> list:
    """Claims sorted by the course's order of their first method (a claim over several methods last)."""
    return sorted(checked, key=lambda c: ORDER.index(c.claim.left[0]) if len(c.claim.left) == 1 else len(ORDER))


def claims_table(checked: dict[str, list]) -> pd.DataFrame:
    """Each claim under each protocol: 'margin [95 % interval] verdict'; prints each protocol's count of
    verdicts and the claims that fail."""
    for p, claims in checked.items():
        named = {v: [c.name for c in course_order(claims) if c.verdict == v] for v in ("holds", "within noise", "fails")}
        print(f"{p:8s}: " + ", ".join(f"{len(names)} {v}" for v, names in named.items())
              + (f" ({'; '.join(named['fails'])})" if named["fails"] else ""))
    return pd.DataFrame({p: {c.name: cell(c) for c in course_order(claims)} for p, claims in checked.items()})


b2n_claims = {p: check_all(frame, None) for p, frame in b2n.items()}
claims_table(b2n_claims)

# %% [markdown]
# The ProMetaR and GRAM rows compare each wrapper with the learner it wraps (notebook 07). `prometar-base`
# is ProMetaR's learner trained with CE alone (no regulariser, no meta-learning), so ProMetaR's Δ mixes
# the two. The official protocol gives GRAM its learner's budget; the tuned one tunes each method's own.
# Each wrapper against its learner, Δ of the table at the top, with the epochs each row records (the
# claims table above gives the HM rows' intervals):

# %%
pairs = (("prometar", "prometar-base"), ("gram-coop", "coop"), ("gram-ivlp", "prometar-base"))
for p, frame in b2n.items():
    epochs, o = frame.groupby("method").epochs.first(), ours[p]
    for wrapped, learner in pairs:
        d = o.loc[wrapped, ["base", "new", "hm"]] - o.loc[learner, ["base", "new", "hm"]]
        noise = o.loc[[learner, wrapped], "hm_std"].max()
        budget_note = ("same epochs" if epochs[wrapped] == epochs[learner] else
                       f"{wrapped} {epochs[wrapped]} epochs, {learner} {epochs[learner]}: the Δ mixes the wrapper "
                       "with the schedule")
        print(f"{p:8s}: {wrapped} − {learner}: Δ base {d.base:+.2f}, new {d.new:+.2f}, HM {d.hm:+.2f}, "
              f"{'beyond' if abs(d.hm) > noise else 'within'} the larger seed spread of HM ({noise:.2f}); {budget_note}")

# %% [markdown]
# One claim in full: its margin (the same HM difference the table at the top shows), its margin on
# each seed, its interval, and the verdict rule applied by hand.

# %%
for protocol, claims in b2n_claims.items():
    c = next(c for c in claims if c.claim.text.startswith("MetaPrompt HM − best baseline"))
    i, bar, o = c.interval, c.claim.bar, ours[protocol]
    print(f"{protocol:8s} {c.name}: margin {i.margin:+.2f}, per seed {', '.join(f'{m:+.2f}' for m in i.per_seed)}, "
          f"95 % interval [{i.low:+.2f}, {i.high:+.2f}], seeds alone [{c.seeds_alone.low:+.2f}, "
          f"{c.seeds_alone.high:+.2f}] -> {c.verdict}")
    from_table = o.loc["metaprompt", "hm"] - o.loc[list(BASELINES), "hm"].max()
    assert abs(i.margin - from_table) < 1e-9, f"margin {i.margin} is not the table's HM difference {from_table}"
    by_hand = "holds" if i.low > bar else "fails" if i.high < bar else "within noise"
    assert c.verdict == by_hand, f"{protocol}: verdict {c.verdict!r}, but [{i.low:+.2f}, {i.high:+.2f}] vs bar " \
                                 f"{bar:+.1f} reads {by_hand!r}"

# %% [markdown]
# Where does the width come from? Redrawing only the seeds (datasets fixed) or only the datasets
# splits it. For each headline claim: the smallest margin this grid would call "holds" at the same
# spread, and the two half-widths. Where the datasets' part is the larger, the margin varies more from
# dataset to dataset than from seed to seed, so more seeds would narrow the interval little.

# %%
def half_width(c, frame: pd.DataFrame, axis: str) -> float:
    """The interval's half-width on the bar's side when only ``axis`` ('seeds' or 'datasets') is redrawn."""
    alone = check(c.claim, frame, c.scope, resample=(axis,)).interval
    return abs(smallest_holding_margin(alone, c.claim.bar, c.claim.below) - c.claim.bar)


larger = []
for protocol, claims in b2n_claims.items():
    for c in (c for c in course_order(claims) if c.claim.headline):
        h = {axis: half_width(c, b2n[protocol], axis) for axis in ("seeds", "datasets")}
        larger.append(max(h, key=h.get))
        print(f"{protocol:8s} {c.name}: {c.interval.margin:+.2f}, 'holds' from "
              f"{smallest_holding_margin(c.interval, c.claim.bar, c.claim.below):+.2f}; half-width "
              f"seeds alone {h['seeds']:.2f}, datasets alone {h['datasets']:.2f}")
print(f"the datasets' half-width is the larger on {larger.count('datasets')} of {len(larger)} headline readings")

# %% [markdown]
# ## Domain generalisation
# Leave one domain out: train on the other domains of a benchmark, test on the held-out one. Under
# the official protocol, per held-out target (mean over seeds; every method's row per target is in
# `results/official/README.md`):

# %%
dg = committed("dg")
dg_official = dg_table(dg["official"]).reindex([m for m in ORDER if m in set(dg["official"].method)], level="method")
for benchmark, rows in dg_official.groupby(level="benchmark"):
    rows = rows.droplevel("benchmark").dropna(axis=1, how="all").drop(columns=["mean", "mean_std"])
    gap = rows.drop(index=ZERO_SHOT).max() - rows.loc["zsclip-ens"]
    print(f"official {benchmark}: the best learned method minus zsclip-ens per target: "
          + ", ".join(f"{t} {g:+.1f}" for t, g in gap.items()))

# %% [markdown]
# What each method trained: one leave-one-domain-out run sees shots × classes × source domains. Its
# epochs and batch are the ones each row records; steps = epochs × (images ÷ batch) (`optim.steps_for`).

# %%
data = load_dataset("emoji-pacs")
shots = int(dg["official"].query("epochs > 0").shots.max())
sources = len(set(data.domain.tolist())) - 1
n_images = shots * len(data.classnames) * sources
learned_dg = [m for m in ORDER if m in set(dg["official"].query("epochs > 0").method)]
rows = []
for p, frame in dg.items():
    for method, settings in frame.query("epochs > 0").groupby("method")[["epochs", "batch_size"]].first().iterrows():
        optim = budget(method, "dg", p)
        assert (optim.epochs, optim.batch_size) == tuple(settings), f"{method} {p}: preset {optim} vs rows {settings}"
        steps = steps_for(n_images, optim)[0]
        rows.append({"method": method, "protocol": p, "epochs": optim.epochs, "batch": optim.batch_size,
                     "steps": steps, "views": steps * min(optim.batch_size, n_images)})
dg_budget = pd.DataFrame(rows).set_index(["method", "protocol"]).unstack("protocol").loc[learned_dg]
steps = dg_budget["steps"]
print(f"one run: {shots} shots × {len(data.classnames)} classes × {sources} source domains = {n_images} images; "
      "the presets' epochs and batch are the rows' (asserted)")
dg_budget

# %% [markdown]
# The paper's DG table (mean over targets, ViT-B/16; its "CLIP" row prompts with the bare class name):

# %%
paper_dg = pd.DataFrame(PAPER_DG).T
paper_lead = paper_dg.loc["metaprompt"] - paper_dg.loc["cocoop"]
print(f"paper: MetaPrompt − CoCoOp {', '.join(f'{v:+.1f} on {b}' for b, v in paper_lead.items())}; "
      f"MetaPrompt − best zero-shot row {', '.join(f'{v:+.1f}' for v in paper_dg.loc['metaprompt'] - paper_dg.loc[ZERO_SHOT[:2]].max())}")
paper_dg

# %% [markdown]
# Ours: each benchmark's mean over its targets, official beside tuned (`_std`: the seed spread):

# %%
mean = {p: dg_table(frame)["mean"].unstack("benchmark") for p, frame in dg.items()}
above = {p: (mean[p].loc[learned_dg] > mean[p].loc["zsclip-ens"]) for p in dg}
best = {p: mean[p].loc[learned_dg].idxmax().to_dict() for p in dg}
lead = {p: mean[p].loc["metaprompt"] - mean[p].loc["cocoop"] for p in dg}
for p in dg:
    print(f"{p:8s}: {int(above[p].values.sum())} of {above[p].size} learned means above the zero-shot ensemble; "
          f"best learned: " + ", ".join(f"{m} on {b}" for b, m in best[p].items()) + "; MetaPrompt − CoCoOp "
          + ", ".join(f"{lead[p][b]:+.2f} on {b}" for b in lead[p].index)
          + f" (one run: CoCoOp {steps.loc['cocoop', p]} steps, MetaPrompt {steps.loc['metaprompt', p]})")
assert above["official"].values.all()  # at the papers' budgets, every learned mean on both benchmarks
assert best["official"] != best["tuned"]  # the protocol decides which method is first
order = [m for m in ORDER if m in set(dg["official"].method)]
pd.concat({p: dg_table(frame)[["mean", "mean_std"]] for p, frame in dg.items()}, axis=1).reindex(order, level="method").round(2)

# %% [markdown]
# At the papers' budgets every learned method's mean is above the zero-shot ensemble's on both
# benchmarks (asserted), and which learned method comes first differs between the protocols (asserted).
# Neither paper gives CoCoOp a DG recipe, so the official protocol trains it on its base-to-new one.
# `experiments/dg-budget/` reran MetaPrompt at ten times its official DG epochs (seed 1, every target)
# against CoCoOp's official seed-1 rows; from its `summary.json`:

# %%
dg_budget_runs = pd.DataFrame(json.loads((results_dir().parent / "experiments" / "dg-budget" / "summary.json")
                                         .read_text())["per_target"])
ahead = {ep: int((dg_budget_runs[f"metaprompt {ep}"] > dg_budget_runs["committed cocoop"]).sum()) for ep in ("6 ep", "60 ep")}
on_means = dg_budget_runs.groupby("benchmark")[["metaprompt 60 ep", "committed cocoop"]].mean()
print(f"seed 1: MetaPrompt is ahead of CoCoOp on {ahead['6 ep']} of {len(dg_budget_runs)} targets at 6 epochs and "
      f"{ahead['60 ep']} of {len(dg_budget_runs)} at 60 ("
      + ", ".join(f"{b} {r['metaprompt 60 ep'] - r['committed cocoop']:+.1f}" for b, r in on_means.iterrows())
      + " on the means): " + ("the short official budget can account for MetaPrompt trailing CoCoOp there."
                             if ahead["60 ep"] > ahead["6 ep"] else "more steps do not close the gap."))

# %% [markdown]
# The DG claims, per benchmark, with their intervals (the bootstrap redraws seeds and targets):

# %%
dg_claims = {p: check_all(None, frame) for p, frame in dg.items()}
for c in (c for c in dg_claims["official"] if "every learned method" in c.name):
    print(f"official {c.name}: {c.interval.margin:+.2f} [{c.interval.low:+.2f}, {c.interval.high:+.2f}] -> {c.verdict}")
claims_table(dg_claims)

# %% [markdown]
# ## A small live re-run that matches the committed rows
# Same seed, same preset: a re-run on this checkout gives the accuracies of `results/official/b2n.csv`
# (within half a point, asserted), whose rows were made by the code version they record.

# %%
dataset = load_dataset("fashion")
rows = b2n["official"]
for name in ("zsclip", "metaprompt"):
    config = preset_run(name, dataset="fashion", model=backbone.name, pretrained=backbone.pretrained, seed=1,
                        progress=False)
    live = run_base_to_new(config, dataset, backbone)
    row = rows[(rows.method == name) & (rows.dataset == "fashion") & (rows.seed == 1)].iloc[0]
    print(f"{name:10s} live base {live['base']:.2f} new {live['new']:.2f} | committed base {row.base:.2f} "
          f"new {row.new:.2f} ({row.code})")
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
# - The committed numbers are means over seeds; the live re-run reproduces two of its rows.
# - Each claim carries its interval and a verdict (holds, within noise, fails), read by a rule checked
#   by hand above; `results/FINDINGS.md` discusses each one.
# - The official protocol is the headline; the tuned one tunes every method the same way (on base-class
#   validation). The two side by side, from the tables above:

# %%
for p, o in ours.items():
    learned = o.drop(index=ZERO_SHOT)
    above_zs = learned.index[learned.new > o.loc["zsclip", "new"]].tolist()
    verdicts = [c.verdict for c in b2n_claims[p]]
    print(f"{p:8s}: best HM {o.hm.idxmax()} {o.hm.max():.2f}; learned methods above zero-shot on new: "
          f"{', '.join(above_zs) or 'none'}; base-to-new claims " + ", ".join(
              f"{verdicts.count(v)} {v}" for v in ("holds", "within noise", "fails")))

# %% [markdown]
# ## Exercises
# 1. Add a method variant (e.g. `metaprompt-clean` with `meta_order=2`) to the benchmark and compare.
# 2. Which dataset has the largest seed-to-seed standard deviation, and why?
# 3. Run the DG benchmark with 1 shot per class and domain: does MetaPrompt's gap to CoCoOp change?
