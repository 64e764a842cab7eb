"""Turn ``results/b2n.csv`` and ``results/dg.csv`` into ``results/README.md`` and figures.

Explained in ``notebooks/09_benchmark_reproduction``. Averages follow the papers: per seed, the
mean over datasets of base and new accuracy; HM = harmonic mean of the average base and new;
mean ± std over seeds.

The CSVs are validated first (:mod:`metaprompt_lite.results_table`): a damaged file is refused
before anything is written. A partial method × dataset × seed grid is reported as partial, naming
the missing runs, and every average over datasets (or DG targets) uses only the seeds that cover all
of them: a method averaged over other datasets than its neighbours would make a wrong table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from metaprompt_lite.claims import cell, check_all, markdown_table, resolution_lines
from metaprompt_lite.optim import steps_for
from metaprompt_lite.engine import harmonic_mean
from metaprompt_lite.results_table import (
    B2N_COLUMNS, DG_COLUMNS, INT_COLUMNS, OPTIONAL_INT_COLUMNS, TEXT_COLUMNS, ResultsError, check_settings,
    describe_missing, missing_runs, read_table)
from metaprompt_lite.data.plan import TEMPLATES
from metaprompt_lite.methods import B2N_METHODS, DG_METHODS, METHODS, budget

# docs/methods.md: 11-dataset averages, ViT-B/16, 16 shots, 3 seeds
PAPER_B2N = {
    "zsclip": (69.34, 74.22, 71.70), "coop": (82.69, 63.22, 71.66), "cocoop": (80.47, 71.69, 75.83),
    "maple": (82.28, 75.14, 78.55), "metaprompt": (83.38, 76.09, 79.57), "prometar": (84.39, 76.93, 80.49),
}
# MetaPrompt README: DG mean over targets, each row beside the method that prompts as it did. Its
# "CLIP" row is its own zero-shot CLIP, which prompts with the bare class names (trainers/zsclip.py,
# line 49): zsclip-bare. Its "CLIP (template)" row links to the CoOp paper (hand templates): zsclip.
# zsclip-ens, this project's ensemble of each dataset's templates, is in no paper.
PAPER_DG = {
    "zsclip-bare": {"PACS": 95.7, "VLCS": 75.9, "OfficeHome": 79.4, "DomainNet": 56.8},
    "zsclip": {"PACS": 96.1, "VLCS": 82.3, "OfficeHome": 82.1, "DomainNet": 56.9},
    "cocoop": {"PACS": 96.7, "VLCS": 78.3, "OfficeHome": 84.1, "DomainNet": 61.1},
    "metaprompt": {"PACS": 97.0, "VLCS": 82.6, "OfficeHome": 85.2, "DomainNet": 61.8},
}
PAPER_DG_ROWS = {"zsclip-bare": "CLIP", "zsclip": "CLIP (template)", "cocoop": "CoCoOp (5-shot)",
                 "metaprompt": "MetaPrompt (5-shot)"}  # the rows' names in MetaPrompt's README


def paper_dg_note() -> str:
    """One paragraph: which row of MetaPrompt's DG table each method is set against, and why."""
    return ("Paper rows (MetaPrompt's README, mean over targets): each zero-shot row is set against the row that "
            "prompted as it does. `zsclip-bare` prompts with the bare class name, as MetaPrompt's own zero-shot "
            "CLIP does: its \"CLIP\" row. `zsclip` prompts with the dataset's hand template: the \"CLIP (template)\" "
            "row, the CoOp paper's numbers as MetaPrompt's README links them. `zsclip-ens` is this project's own "
            "row, the normalised mean over each dataset's templates; no paper reports it.")


def ensemble_templates(benchmarks) -> list[str]:
    """Markdown lines naming the templates ``zsclip-ens`` averages on each benchmark of the offline
    suite (a benchmark it does not know, e.g. on the research tier, is left out)."""
    return [f"- {b}: " + ", ".join(f"\"{t}\"" for t in TEMPLATES[b]) for b in benchmarks if b in TEMPLATES]


def _pm(mean: float, std: float) -> str:
    return f"{mean:.2f} ± {std:.2f}" if pd.notna(std) else f"{mean:.2f}"


def _schema(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(columns, run-key columns) of ``b2n.csv`` or ``dg.csv``."""
    return (B2N_COLUMNS, B2N_COLUMNS[:3]) if name == "b2n" else (DG_COLUMNS, DG_COLUMNS[:4])


def read_results(path: str | Path) -> pd.DataFrame:
    """``b2n.csv`` or ``dg.csv`` (by its name) as a frame, validated: a damaged file (including a line
    cut by an interrupted write), one with no rows, or one whose rows were made with settings that
    cannot be averaged together (:func:`~metaprompt_lite.results_table.check_settings`) raises
    :class:`ResultsError` with what to do."""
    path = Path(path)
    columns, key = _schema(path.stem)
    table = read_table(path, columns, key)
    if table.partial is not None:
        raise ResultsError(f"{path} ends in a cut line {table.partial[:60]!r} (an interrupted write) — run the same "
                           "`metaprompt-lite bench` command: it drops that line and runs its row again")
    if not table.rows:  # a report of nothing: empty tables and figures that say nothing
        raise ResultsError(f"{path} holds the header but no rows — run `metaprompt-lite bench` to fill it, or "
                           "delete it")
    check_settings(path, table.rows, key)
    unknown = next((i for i, row in enumerate(table.rows) if row["method"] not in METHODS), None)
    if unknown is not None:  # a table would show a row no method made (a typo, or a file of other code)
        raise ResultsError(f"{path} line {unknown + 2}: unknown method {table.rows[unknown]['method']!r} — fix or "
                           f"delete that line (the methods: {', '.join(sorted(METHODS))})")
    frame = pd.DataFrame(table.rows, columns=list(columns))
    for column in columns:
        if column in INT_COLUMNS:
            frame[column] = frame[column].astype(int)
        elif column in OPTIONAL_INT_COLUMNS:
            frame[column] = pd.to_numeric(frame[column]).astype("Int64")
        elif column not in TEXT_COLUMNS:
            frame[column] = frame[column].astype(float)
    return frame


def missing(frame: pd.DataFrame) -> list[tuple[str, ...]]:
    """The runs the method × dataset (benchmark, target) × seed grid of ``frame`` lacks."""
    key = ["method", "dataset", "seed"] if "dataset" in frame else ["method", "benchmark", "target", "seed"]
    return missing_runs(frame[key].to_dict("records"), key)


def _complete_seeds(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the (method, seed) pairs that cover every dataset of ``frame``."""
    covered = frame.groupby(["method", "seed"])["dataset"].nunique()
    keep = covered[covered == frame["dataset"].nunique()].index
    return frame[frame.set_index(["method", "seed"]).index.isin(keep)]


def b2n_average(frame: pd.DataFrame) -> pd.DataFrame:
    """Per method: average base/new over datasets per seed, HM of those; mean and std over seeds.
    Only seeds with every dataset count (a method missing a dataset in a seed has no average for it)."""
    per_seed = _complete_seeds(frame).groupby(["method", "seed"])[["base", "new"]].mean().reset_index()
    per_seed["hm"] = [harmonic_mean(b, n) for b, n in zip(per_seed["base"], per_seed["new"])]
    grouped = per_seed.groupby("method")[["base", "new", "hm"]]
    out = grouped.mean().join(grouped.std().add_suffix("_std"))
    out["seeds"] = per_seed.groupby("method")["seed"].nunique()
    return out


def b2n_per_dataset(frame: pd.DataFrame) -> pd.DataFrame:
    grouped = frame.groupby(["dataset", "method"])[["base", "new", "hm"]]
    return grouped.mean().join(grouped.std().add_suffix("_std"))


def dg_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per method and benchmark: accuracy per target (mean over seeds) and the mean over targets
    (per seed, over seeds with every target of the benchmark)."""
    per_target = frame.groupby(["benchmark", "method", "target"])["acc"].mean().unstack("target")
    per_seed = frame.groupby(["benchmark", "method", "seed"])["acc"]
    targets = frame.groupby("benchmark")["target"].nunique()
    complete = per_seed.count().values == targets.reindex(per_seed.count().index.get_level_values(0)).values
    per_seed_mean = per_seed.mean()[complete]  # the mean over targets only where every target ran
    per_target["mean"] = per_seed_mean.groupby(["benchmark", "method"]).mean()
    per_target["mean_std"] = per_seed_mean.groupby(["benchmark", "method"]).std()
    return per_target


def _method_order(methods) -> list[str]:
    known = [m for m in B2N_METHODS if m in set(methods)]
    return known + sorted(set(methods) - set(known))


def _frames(results_dir: Path) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(b2n rows, dg rows) of a results folder, None for a file it lacks."""
    return tuple(read_results(results_dir / f"{suite}.csv") if (results_dir / f"{suite}.csv").is_file() else None
                 for suite in ("b2n", "dg"))


def _claims_lines(results_dir: Path) -> list[str]:
    """The claims section of a protocol's README: each comparison's margin, 95 % interval (paired
    bootstrap over seeds and datasets), per-seed margins and verdict, and what the grid can resolve."""
    b2n, dg = _frames(results_dir)
    checked = check_all(b2n, dg)
    if not checked:
        return []
    resolved = resolution_lines(checked, b2n, dg)
    return ["## Claims, with 95 % intervals", "",
            "Margin on the mean; interval from a paired bootstrap that redraws seeds and datasets (DG: targets) "
            "together; verdict: **holds** when the whole interval clears the claim's bar, **within noise** when it "
            "straddles it, **fails** when it is on the wrong side (the method: `docs/intervals.md`). Seeds alone: "
            "the same with the datasets fixed, the part more seeds could narrow.", "",
            *markdown_table(checked), "",
            *(["What the grid can resolve (headline claims):", "", *(f"- {line}" for line in resolved), ""]
              if resolved else [])]


def markdown(results_dir: Path) -> str:
    lines = ["# Results: the embedded tier", ""]
    meta_path = results_dir / "bench_meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        by_suite = ", ".join(f"{k} {v:.1f}" for k, v in meta.get("wall_minutes_by_suite", {}).items())
        lines += [f"Backbone `{meta.get('model')}` (`{meta.get('pretrained')}`), seeds {meta.get('seeds')}, "
                  f"wall time {meta.get('wall_minutes', float('nan')):.1f} min"
                  + (f" ({by_suite})" if by_suite else "") + f" on {meta.get('machine', 'CPU')}.", ""]
        if meta.get("note"):
            lines += [meta["note"], ""]
    b2n_path, dg_path = results_dir / "b2n.csv", results_dir / "dg.csv"
    gaps = {name: missing(read_results(path)) for name, path in (("Base-to-new", b2n_path), ("DG", dg_path))
            if path.is_file()}
    if any(gaps.values()):
        lines += ["**Partial results.** " + " ".join(
            f"{name} lacks {len(runs)} run(s) of its method × dataset × seed grid: {describe_missing(runs)}."
            for name, runs in gaps.items() if runs)
            + " Averages over datasets (DG: over targets) use only the seeds that cover all of them; "
            "— marks a method with no such seed. Run the same `metaprompt-lite bench` command to fill the grid.", ""]
    if b2n_path.is_file():
        frame = read_results(b2n_path)
        avg = b2n_average(frame)
        lines += ["## Base-to-new, average over datasets", "",
                  "| method | base | new | HM | seeds | paper base | paper new | paper HM |",
                  "|---|---|---|---|---|---|---|---|"]
        for m in _method_order(frame["method"].unique()):
            paper = PAPER_B2N.get(m, ("—", "—", "—"))
            if m not in avg.index:
                lines.append(f"| {m} | — | — | — | 0 | {paper[0]} | {paper[1]} | {paper[2]} |")
                continue
            r = avg.loc[m]
            lines.append(f"| {m} | {_pm(r.base, r.base_std)} | {_pm(r.new, r.new_std)} | "
                         f"{_pm(r.hm, r.hm_std)} | {int(r.seeds)} | {paper[0]} | {paper[1]} | {paper[2]} |")
        lines += ["", "Paper columns: 11-dataset averages with ViT-B/16 (docs/methods.md); ours: the "
                  "offline suite with the pocket CLIP. Compare the *pattern*, not the level.", ""]
        per = b2n_per_dataset(frame)
        lines += ["## Base-to-new, per dataset (HM, mean ± std over seeds)", ""]
        datasets = sorted(frame["dataset"].unique())
        lines += ["| method | " + " | ".join(datasets) + " |", "|---" * (len(datasets) + 1) + "|"]
        for m in _method_order(frame["method"].unique()):
            cells = [(_pm(per.loc[(d, m)].hm, per.loc[(d, m)].hm_std) if (d, m) in per.index else "—")
                     for d in datasets]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines += ["", "![base vs new](base_vs_new.png)", "", "![HM per dataset](hm_per_dataset.png)", ""]
    if dg_path.is_file():
        table = dg_table(read_results(dg_path))
        lines += ["## Domain generalisation (leave one domain out)", ""]
        for benchmark in table.index.get_level_values(0).unique():
            sub = table.loc[benchmark]
            # this benchmark's targets (the table's columns are every benchmark's); the mean columns stay
            # even when empty (one seed has no std)
            targets = [c for c in sub.columns if c not in ("mean", "mean_std") and sub[c].notna().any()]
            lines += [f"### {benchmark}", "", "| method | " + " | ".join(targets) + " | mean |",
                      "|---" * (len(targets) + 2) + "|"]
            for m in _method_order(sub.index):
                r = sub.loc[m]
                mean = _pm(r["mean"], r["mean_std"]) if pd.notna(r["mean"]) else "—"
                lines.append(f"| {m} | " + " | ".join(f"{r[t]:.2f}" if pd.notna(r[t]) else "—" for t in targets)
                             + f" | {mean} |")
            lines.append("")
        lines += ["Paper (mean over targets, ViT-B/16): " + "; ".join(
            f"{m} (\"{PAPER_DG_ROWS[m]}\"): " + ", ".join(f"{k} {v}" for k, v in d.items())
            for m, d in PAPER_DG.items()),
            "", paper_dg_note(), ""]
        templates = ensemble_templates(table.index.get_level_values(0).unique())
        if templates:
            lines += ["The templates `zsclip-ens` averages (the first is `zsclip`'s hand template):", "",
                      *templates, ""]
        lines += ["![DG per target](dg_targets.png)", ""]
    lines += _claims_lines(results_dir)
    for findings in (results_dir / "FINDINGS.md", results_dir.parent / "FINDINGS.md"):
        if findings.is_file():  # hand-written analysis of the committed runs: linked, not pasted
            link = "FINDINGS.md" if findings.parent == results_dir else "../FINDINGS.md"
            lines += [f"What holds and what does not, claim by claim, and why: [FINDINGS.md]({link}).", ""]
            break
    if (results_dir / "curves.png").is_file():
        lines += ["## Training curves", "", "![curves](curves.png)", ""]
    return "\n".join(lines)


# the ablations, each beside the method it ablates (figures draw them in a panel of their own)
ABLATIONS = {"metaprompt-clean": "metaprompt", "prometar-base": "prometar", "prometar-netlr": "prometar"}
# one colour and one marker per method, the same in every figure (tab20's 20 colours)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def method_style(method: str) -> tuple:
    """(colour, marker) of a method: fixed by its place in the benchmark's method order."""
    import matplotlib

    known = list(dict.fromkeys([*B2N_METHODS, *DG_METHODS, *ABLATIONS]))
    i = known.index(method) if method in known else len(known) + sum(map(ord, method)) % 8
    return matplotlib.colormaps["tab20"](i % 20), _MARKERS[i % len(_MARKERS)]


def figures(results_dir: Path) -> list[Path]:
    """base_vs_new.png, hm_per_dataset.png, dg_targets.png, curves.png (those with data)."""
    # here, not at the top: importing report (e.g. in a notebook) must not switch matplotlib's backend
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    written = []
    b2n_path = results_dir / "b2n.csv"
    if b2n_path.is_file():
        frame = read_results(b2n_path)
        avg = b2n_average(frame)
        per = frame.groupby(["method", "dataset"])[["base", "new"]].mean().reset_index()
        order = _method_order(frame["method"].unique())
        panels = [("methods", [m for m in order if m not in ABLATIONS]),
                  ("ablations, beside the methods they ablate",
                   [m for m in order if m in ABLATIONS or m in set(ABLATIONS.values())])]
        panels = [(title, ms) for title, ms in panels if any(m in ABLATIONS for m in ms) or title == "methods"]
        fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.5), squeeze=False, sharex=True,
                                 sharey=True)
        lo = min(per["base"].min(), per["new"].min()) - 5
        for ax, (title, methods) in zip(axes[0], panels):
            for m in methods:
                color, marker = method_style(m)
                dots = per[per["method"] == m]
                ax.scatter(dots["base"], dots["new"], s=18, marker=marker, color=color, alpha=0.3)
                if m in avg.index:  # no seed covers every dataset: no average to draw
                    ax.scatter(avg.loc[m, "base"], avg.loc[m, "new"], s=140, marker=marker, color=color,
                               edgecolor="k", label=m)
            ax.plot([lo, 100], [lo, 100], "k--", lw=0.7)
            ax.set(xlabel="base accuracy (%)", ylabel="new accuracy (%)", title=title)
            ax.legend(fontsize=8, loc="lower right")
        fig.suptitle("Base vs new (large: average over datasets; small: per dataset)")
        fig.tight_layout()
        fig.savefig(results_dir / "base_vs_new.png", dpi=120)
        plt.close(fig)
        written.append(results_dir / "base_vs_new.png")

        datasets = sorted(frame["dataset"].unique())
        fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 1.1 * len(datasets)), 4.2 * len(panels)),
                                 squeeze=False)
        for ax, (title, methods) in zip(axes[:, 0], panels):
            sub = frame[frame["method"].isin(methods)]
            sns.barplot(data=sub, x="dataset", y="hm", hue="method", hue_order=methods, order=datasets,
                        palette={m: method_style(m)[0] for m in methods}, errorbar="sd", ax=ax)
            ax.set(ylabel="harmonic mean (%)", xlabel="", title=f"HM per dataset, {title} (mean ± sd over seeds)")
            ax.tick_params(axis="x", labelrotation=30)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
            ax.legend(fontsize=7, ncol=4, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        fig.savefig(results_dir / "hm_per_dataset.png", dpi=120)
        plt.close(fig)
        written.append(results_dir / "hm_per_dataset.png")
    dg_path = results_dir / "dg.csv"
    if dg_path.is_file():
        frame = read_results(dg_path)
        benchmarks = sorted(frame["benchmark"].unique())
        fig, axes = plt.subplots(1, len(benchmarks), figsize=(6 * len(benchmarks), 4.5), squeeze=False)
        for ax, b in zip(axes[0], benchmarks):
            sub = frame[frame["benchmark"] == b]
            sns.barplot(data=sub, x="target", y="acc", hue="method",
                        hue_order=_method_order(sub["method"].unique()), errorbar="sd", ax=ax)
            ax.set(title=f"{b}: accuracy on the held-out domain", ylabel="accuracy (%)", xlabel="target domain")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(results_dir / "dg_targets.png", dpi=120)
        plt.close(fig)
        written.append(results_dir / "dg_targets.png")
    b2n_curves = sorted((results_dir / "curves").glob("*-s1.json"))
    if b2n_path.is_file() and b2n_curves:
        frame = read_results(b2n_path)
        dataset = sorted(frame["dataset"].unique())[0]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for method in _method_order(frame["method"].unique()):
            curve = results_dir / "curves" / f"{method}-{dataset}-s1.json"
            if curve.is_file():
                history = json.loads(curve.read_text())
                ax.plot([h["step"] for h in history], [h["loss"] for h in history], label=method)
        ax.set(xlabel="step", ylabel="training loss", title=f"Training curves on {dataset} (seed 1)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(results_dir / "curves.png", dpi=120)
        plt.close(fig)
        written.append(results_dir / "curves.png")
    return written


def report(results_dir: str | Path = "results") -> Path:
    """Write ``README.md`` and the figures into ``results_dir``; a damaged CSV writes nothing."""
    results_dir = Path(results_dir)
    if not (results_dir / "b2n.csv").is_file() and not (results_dir / "dg.csv").is_file():
        raise FileNotFoundError(f"no b2n.csv or dg.csv in {results_dir} — run `metaprompt-lite bench` first")
    for name in ("b2n.csv", "dg.csv"):
        if (results_dir / name).is_file():
            read_results(results_dir / name)  # refuse a damaged file before writing anything
    figures(results_dir)
    text = markdown(results_dir)
    path = results_dir / "README.md"
    path.write_text(text)
    return path


def _plain_table(frame: pd.DataFrame) -> str:
    """A frame as text with 2 decimals, and '–' where there is no number (a std over one seed, a target
    that is not in this benchmark) instead of NaN."""
    return frame.to_string(na_rep="–", float_format=lambda value: f"{value:.2f}")


def summary_text(results_dir: str | Path = "results") -> str:
    """The summary the bench prints: B2N averages per method and DG accuracy per target and benchmark,
    each benchmark with its own targets (accuracies in %)."""
    results_dir = Path(results_dir)
    parts = []
    if (results_dir / "b2n.csv").is_file():
        avg = b2n_average(read_results(results_dir / "b2n.csv"))
        parts.append("Base-to-new (accuracy in %: average over datasets, mean over seeds; hm_std over seeds)\n"
                     + _plain_table(avg.loc[_method_order(avg.index), ["base", "new", "hm", "hm_std", "seeds"]]))
    if (results_dir / "dg.csv").is_file():
        table = dg_table(read_results(results_dir / "dg.csv"))
        benchmarks = []
        for benchmark in table.index.get_level_values(0).unique():
            sub = table.loc[benchmark]
            sub = sub[[c for c in sub.columns if c in ("mean", "mean_std") or sub[c].notna().any()]]  # its targets
            benchmarks.append(f"{benchmark}\n" + _plain_table(sub.loc[_method_order(sub.index)]))
        parts.append("Domain generalisation (accuracy in % on the held-out target, mean over seeds; mean over "
                     "targets and its std over seeds)\n" + "\n\n".join(benchmarks))
    b2n, dg = _frames(results_dir)
    checked = check_all(b2n, dg)
    if checked:
        resolved = resolution_lines(checked, b2n, dg)
        parts.append("Claims (margin, 95 % interval over seeds and datasets, per seed, verdict)\n"
                     + "\n".join(markdown_table(checked))
                     + ("\n\nWhat the grid can resolve:\n" + "\n".join(resolved) if resolved else ""))
    return "\n\n".join(parts) or f"no results in {results_dir}"


PROTOCOL_DIRS = ("official", "tuned")


def budget_rows(n_images: int, suite: str = "b2n") -> list[dict]:
    """Per method and protocol: epochs, batch, optimizer steps and image views of one run on a
    training set of ``n_images`` (``engine.steps_for``; views = steps × batch)."""
    rows = []
    for name in B2N_METHODS if suite == "b2n" else DG_METHODS:
        for protocol in PROTOCOL_DIRS:
            if not METHODS[name].trainable:
                continue
            optim = budget(name, suite, protocol)
            steps, _ = steps_for(n_images, optim)
            rows.append({"method": name, "protocol": protocol, "epochs": optim.epochs, "batch": optim.batch_size,
                         "lr": optim.lr, "steps": steps, "views": steps * min(optim.batch_size, n_images)})
    return rows


def _average_cells(frame: pd.DataFrame, datasets: set[str]) -> dict[str, str]:
    """method -> 'base / new / HM' of a protocol's base-to-new rows (seed means over the seeds that
    cover every dataset of ``datasets``), or 'partial: k of n rows' for a method without such a seed:
    an average over fewer datasets would not compare with the other protocol's."""
    grid = len(datasets) * frame["seed"].nunique()
    cells = {}
    for method, rows in frame.groupby("method"):
        complete = rows.groupby("seed")["dataset"].agg(lambda d: datasets <= set(d))
        if complete.any():
            r = b2n_average(rows[rows["seed"].isin(complete[complete].index)]).loc[method]
            cells[method] = f"{r.base:.2f} / {r.new:.2f} / {r.hm:.2f}"
        else:
            cells[method] = f"partial: {len(rows)} of {grid} rows"
    return cells


def _dg_cells(frame: pd.DataFrame, targets: dict[str, set[str]]) -> dict[tuple[str, str], str]:
    """(method, benchmark) -> mean target accuracy of a protocol's DG rows (per seed the mean over the
    benchmark's ``targets``, then the mean over the seeds that cover all of them), or 'partial: k of n
    rows' where no seed does."""
    cells = {}
    for (method, benchmark), rows in frame.groupby(["method", "benchmark"]):
        wanted = targets[benchmark]
        per_seed = rows.groupby("seed")
        complete = [seed for seed, r in per_seed if wanted <= set(r["target"])]
        if complete:
            kept = rows[rows["seed"].isin(complete)]
            cells[method, benchmark] = f"{kept.groupby('seed')['acc'].mean().mean():.2f}"
        else:
            cells[method, benchmark] = f"partial: {len(rows)} of {len(wanted) * frame['seed'].nunique()} rows"
    return cells


def _dg_overview(results_dir: Path) -> list[str]:
    """The DG part of :func:`overview`: each benchmark's mean target accuracy per protocol, and the
    papers' (other benchmarks: PACS, VLCS, OfficeHome, DomainNet), or no lines without DG rows."""
    frames = {p: read_results(results_dir / p / "dg.csv") for p in PROTOCOL_DIRS
              if (results_dir / p / "dg.csv").is_file()}
    if not frames:
        return []
    targets: dict[str, set[str]] = {}
    for frame in frames.values():
        for benchmark, rows in frame.groupby("benchmark"):
            targets.setdefault(benchmark, set()).update(rows["target"])
    benchmarks = sorted(targets)
    cells = {p: _dg_cells(frames[p], targets) if p in frames else {} for p in PROTOCOL_DIRS}
    paper_names = list(next(iter(PAPER_DG.values())))
    lines = ["## Domain generalisation", "",
             "Leave one domain out, mean accuracy over a benchmark's targets (mean over seeds), in %; "
             "official / tuned. The papers' column is their own benchmarks (" + ", ".join(paper_names) + ").", "",
             "| method | " + " | ".join(f"{b} (official / tuned)" for b in benchmarks) + " | paper (ViT-B/16) |",
             "|---|" + "---|" * (len(benchmarks) + 1)]
    methods = _method_order({m for c in cells.values() for m, _ in c})
    for m in methods:
        row = [" / ".join(cells[p].get((m, b), "not run") for p in PROTOCOL_DIRS) for b in benchmarks]
        paper = (f"{PAPER_DG_ROWS[m]}: " + " / ".join(f"{PAPER_DG[m][name]:.1f}" for name in paper_names)
                 if m in PAPER_DG else "—")
        lines.append(f"| {m} | " + " | ".join(row) + f" | {paper} |")
    templates = ensemble_templates(benchmarks)
    return lines + ["", paper_dg_note()] + (
        ["", "The templates `zsclip-ens` averages (the first is `zsclip`'s hand template):", "", *templates]
        if templates else []) + [""]


def overview(results_dir: str | Path = "results") -> str:
    """``results/README.md``: both protocols side by side with the papers' numbers, and the budget
    table (each protocol's own tables are in its folder's README)."""
    results_dir = Path(results_dir)
    frames = {p: read_results(results_dir / p / "b2n.csv") for p in PROTOCOL_DIRS
              if (results_dir / p / "b2n.csv").is_file()}
    datasets = set().union(*(set(frame["dataset"]) for frame in frames.values()))
    cells = {p: _average_cells(frames[p], datasets) if p in frames else {} for p in PROTOCOL_DIRS}
    lines = ["# Results", "",
             "The embedded tier (pocket CLIP, offline suite) under two training protocols: **official**, each "
             "method on its paper's training budget (the headline), and **tuned**, every budget chosen on "
             "base-class validation (no paper reports this). Base-to-new, average over datasets, mean over "
             "seeds, base / new / HM in %. Full tables: " + ", ".join(
                 f"[{p}]({p}/README.md)" for p in PROTOCOL_DIRS if (results_dir / p / "README.md").is_file())
             + "; claim by claim: [FINDINGS.md](FINDINGS.md).", "",
             "| method | official | tuned | paper (ViT-B/16, 11 datasets) |", "|---|---|---|---|"]
    methods = _method_order(set(cells["official"]) | set(cells["tuned"]))
    for m in methods:
        paper = " / ".join(f"{v:.2f}" for v in PAPER_B2N[m]) if m in PAPER_B2N else "—"
        lines.append(f"| {m} | {cells['official'].get(m, 'not run')} | {cells['tuned'].get(m, 'not run')} | {paper} |")
    lines += ["", *_claims_overview(results_dir)]
    lines += ["## Training budgets", "",
              "One run on a 25-base-class emoji dataset (150 training images, 6 per class): optimizer steps and "
              "image views (steps × batch). The papers' runs see 16 images per class.", "", *_budget_table(150, "b2n")]
    dg = _dg_overview(results_dir)
    if dg:
        lines += ["", *dg, "One DG run on a 40-class benchmark, 3 source domains × 4 shots (480 training images):", "",
                  *_budget_table(480, "dg")]
    return "\n".join(lines) + "\n"


def _claims_overview(results_dir: Path) -> list[str]:
    """Each claim under both protocols: margin [95 % interval] verdict (each protocol's README adds the
    per-seed margins and what its grid can resolve)."""
    cells = {p: {c.name: cell(c) for c in check_all(*_frames(results_dir / p))} for p in PROTOCOL_DIRS}
    names = list(dict.fromkeys(name for p in PROTOCOL_DIRS for name in cells[p]))
    if not names:
        return []
    return ["## Claims, with 95 % intervals", "",
            "Margin on the mean [95 % interval from a paired bootstrap over seeds and datasets] and the verdict: "
            "**holds** when the whole interval clears the claim's bar, **within noise** when it straddles it, "
            "**fails** when it is on the wrong side ([docs/intervals.md](../docs/intervals.md)).", "",
            "| claim | official | tuned |", "|---|---|---|",
            *(f"| {name} | " + " | ".join(cells[p].get(name, "not run") for p in PROTOCOL_DIRS) + " |"
              for name in names), ""]


def _budget_table(n_images: int, suite: str) -> list[str]:
    """:func:`budget_rows` as a markdown table."""
    return ["| method | protocol | epochs | batch | lr | steps | image views |", "|---|---|---|---|---|---|---|",
            *(f"| {r['method']} | {r['protocol']} | {r['epochs']} | {r['batch']} | {r['lr']:g} | {r['steps']} | "
              f"{r['views']} |" for r in budget_rows(n_images, suite))]


def report_all(results_dir: str | Path = "results") -> list[Path]:
    """:func:`report` for each protocol's folder under ``results_dir`` that holds results, then the
    overview ``results_dir/README.md``; a folder of results files itself is reported as one run."""
    results_dir = Path(results_dir)
    if (results_dir / "b2n.csv").is_file() or (results_dir / "dg.csv").is_file():
        return [report(results_dir)]
    written = [report(results_dir / p) for p in PROTOCOL_DIRS
               if (results_dir / p / "b2n.csv").is_file() or (results_dir / p / "dg.csv").is_file()]
    if not written:
        raise FileNotFoundError(f"no b2n.csv or dg.csv in {results_dir} or its protocol folders — run "
                                "`metaprompt-lite bench` first")
    path = results_dir / "README.md"
    path.write_text(overview(results_dir))
    return [*written, path]
