"""Results files: whole-line appends, validation, repair of a cut last line, the grid check of report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from metaprompt_lite import results_table as rt
from metaprompt_lite.report import b2n_average, dg_table, markdown, read_results, report
from metaprompt_lite.results_table import B2N_COLUMNS, DG_COLUMNS

KEY = B2N_COLUMNS[:3]
HEADER = ",".join(B2N_COLUMNS) + "\r\n"
DG_HEADER = ",".join(DG_COLUMNS) + "\r\n"
# the settings of every row below (run.row_settings): protocol, model, weights, epochs, batch, lr,
# shots, max_steps, code
SETTINGS = {"protocol": "official", "model": "tiny-clip", "weights": "random", "epochs": 2, "batch_size": 16,
            "lr": "0.002", "shots": 6, "max_steps": "", "code": "0.2.0+abc"}
S = ",official,tiny-clip,random,2,16,0.002,6,,0.2.0+abc"  # the same, as CSV cells


def _row(method, dataset, seed, base=50.0, new=40.0, **settings):
    return {"method": method, "dataset": dataset, "seed": seed, "base": base, "new": new,
            "hm": 2 * base * new / (base + new), "train_s": 1.5, **SETTINGS, **settings}


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


def test_append_writes_header_once_and_whole_lines(tmp_path):
    path = tmp_path / "b2n.csv"
    rt.append_row(path, _row("coop", "flags", 1), B2N_COLUMNS)
    rt.append_row(path, _row("coop", "flags", 2, 60.0, 30.0), B2N_COLUMNS)
    assert path.read_bytes().decode() == (HEADER + "coop,flags,1,50.0000,40.0000,44.4444,1.5000" + S + "\r\n"
                                          "coop,flags,2,60.0000,30.0000,40.0000,1.5000" + S + "\r\n")
    assert set(rt.prepare_resume(path, B2N_COLUMNS, KEY)) == {("coop", "flags", "1"), ("coop", "flags", "2")}
    assert not list(tmp_path.glob("*.tmp"))
    assert rt.count_rows(path) == 2 and rt.count_rows(tmp_path / "absent.csv") == 0


def test_a_cut_last_line_is_dropped_on_resume_with_a_warning_naming_it(tmp_path):
    path = _write(tmp_path / "b2n.csv", HEADER + "zsclip,flags,1,2.0000,1.0000,1.3333,0.5" + S + "\r\ncocoop,emoji-no")
    warnings = []
    assert set(rt.prepare_resume(path, B2N_COLUMNS, KEY, warn=warnings.append)) == {("zsclip", "flags", "1")}
    assert warnings == [f"warning: {path} ended in a cut line (an interrupted write); dropped it: 'cocoop,emoji-no'. "
                        "Its run will be run again."]
    assert path.read_bytes().decode() == HEADER + "zsclip,flags,1,2.0000,1.0000,1.3333,0.5" + S + "\r\n"
    rt.append_row(path, _row("cocoop", "emoji-novel-objects", 1), B2N_COLUMNS)  # no glued line
    assert [r["method"] for r in rt.read_table(path, B2N_COLUMNS, KEY).rows] == ["zsclip", "cocoop"]


def test_append_refuses_to_glue_onto_a_cut_line(tmp_path):
    text = HEADER + "cocoop,emoji-no"
    path = _write(tmp_path / "b2n.csv", text)
    with pytest.raises(rt.ResultsError, match="ends in a cut line — run the same `metaprompt-lite bench` command"):
        rt.append_row(path, _row("zsclip", "fashion", 1), B2N_COLUMNS)
    assert path.read_bytes().decode() == text


FIX = " — fix or delete that line in {p} (`metaprompt-lite bench` re-runs missing rows)"


@pytest.mark.parametrize("text, message", [
    ("", "{p} is empty — delete it and run `metaprompt-lite bench` again to write it afresh"),
    ("method,dat", "{p} holds no complete line, only 'method,dat' — delete it and run `metaprompt-lite bench` "
                   "again to write it afresh"),
    ("method,benchmark,target,seed,acc,train_s\r\n",
     "{p} has the header 'method,benchmark,target,seed,acc,train_s', expected "
     f"'{','.join(B2N_COLUMNS)}' — is it another suite's file? Move it away and run "
     "`metaprompt-lite bench` again"),
    (HEADER + "cocoop,emoji-nozsclip,fashion,1,2.0,1.0,1.3,0.5" + S + "\r\n",
     "{p} line 2 has 17 fields, expected 16: 'cocoop,emoji-nozsclip,fashion,1,2.0,1.0,1.3,0.5,official,tiny-clip,"
     "random,2,16,0'" + FIX),
    (HEADER + "coop,flags,one,2.0,1.0,1.3,0.5" + S + "\r\n",
     "{p} line 2: seed 'one' is not a non-negative integer" + FIX),
    (HEADER + "coop,flags,1,2.0,nan,1.3,0.5" + S + "\r\n",
     "{p} line 2: new 'nan' is not a finite number" + FIX),
    (HEADER + "coop,flags,1,101.0,1.0,2.0,0.5" + S + "\r\n",
     "{p} line 2: base '101.0' is not an accuracy in % (0 to 100)" + FIX),
    (HEADER + "coop,flags,1,2.0,1.0,-1.3,0.5" + S + "\r\n",
     "{p} line 2: hm '-1.3' is not an accuracy in % (0 to 100)" + FIX),
    (HEADER + ",flags,1,2.0,1.0,1.3,0.5" + S + "\r\n",
     "{p} line 2: empty method" + FIX),
    (HEADER + "coop,flags,1,2.0,1.0,1.3,0.5" + S + "\r\n\r\n", "{p} line 3 is blank — delete that line"),
    (HEADER + "coop,flags,1,2.0,1.0,1.3,0.5" + S + "\r\ncoop,flags,1,3.0,1.0,1.5,0.5" + S + "\r\n",
     "{p} line 3 repeats the run coop,flags,1 of line 2 — delete one of the two lines"),
    ("\x89PNG\r\n", "{p} is not a text file (byte 0 is not UTF-8) — move it away and run `metaprompt-lite bench` "
                    "again to write it afresh"),
])
def test_damaged_files_are_refused_in_one_line_and_left_alone(tmp_path, text, message):
    path = tmp_path / "b2n.csv"
    path.write_bytes(text.encode("latin-1") if text.startswith("\x89") else text.encode())
    before = path.read_bytes()
    with pytest.raises(rt.ResultsError) as error:
        rt.prepare_resume(path, B2N_COLUMNS, KEY)
    assert str(error.value) == message.format(p=path)
    with pytest.raises(rt.ResultsError):
        read_results(path)
    assert path.read_bytes() == before


def test_missing_runs_of_the_grid():
    rows = [_row("coop", d, s) for d in ("a", "b") for s in (1, 2)] + [_row("maple", "a", 1), _row("maple", "b", 2)]
    missing = rt.missing_runs(rows, KEY)
    assert missing == [("maple", "a", "2"), ("maple", "b", "1")]
    assert rt.describe_missing(missing) == "maple: a s2, b s1"
    dg = [{"method": m, "benchmark": "pacs", "target": t, "seed": 1} for m in ("coop", "maple") for t in ("x", "y")]
    assert rt.missing_runs(dg[:-1], DG_COLUMNS[:4]) == [("maple", "pacs", "y", "1")]


def test_averages_use_only_seeds_that_cover_every_dataset():
    """The phantom-average case: a method missing a dataset in a seed is not averaged over fewer datasets."""
    frame = pd.DataFrame([_row("coop", "a", 1, 90.0, 40.0), _row("coop", "b", 1, 70.0, 60.0),
                          _row("coop", "a", 2, 80.0, 50.0),  # seed 2 lacks b
                          _row("maple", "a", 1, 10.0, 10.0)])  # no seed with both datasets
    avg = b2n_average(frame)
    assert avg.loc["coop", "base"] == pytest.approx(80.0) and avg.loc["coop", "new"] == pytest.approx(50.0)
    assert avg.loc["coop", "seeds"] == 1 and "maple" not in avg.index
    dg = pd.DataFrame([("m", "pacs", "x", 1, 50.0, 1.0), ("m", "pacs", "y", 1, 70.0, 1.0), ("m", "pacs", "x", 2, 90.0, 1.0)],
                      columns=list(DG_COLUMNS[:6]))
    table = dg_table(dg)
    assert table.loc[("pacs", "m"), "x"] == pytest.approx(70.0)  # per target: every seed that ran it
    assert table.loc[("pacs", "m"), "mean"] == pytest.approx(60.0)  # seed 2 lacks y: only seed 1's mean


def test_report_marks_a_partial_grid_and_names_what_is_missing(tmp_path):
    rows = [_row("coop", d, s, 60.0 + s, 40.0) for d in ("a", "b") for s in (1, 2)] + [_row("maple", "a", 1)]
    for row in rows:
        rt.append_row(tmp_path / "b2n.csv", row, B2N_COLUMNS)
    text = report(tmp_path).read_text()
    assert ("**Partial results.** Base-to-new lacks 3 run(s) of its method × dataset × seed grid: maple: a s2, "
            "b s1, b s2. Averages over datasets (DG: over targets) use only the seeds that cover all of them; — marks "
            "a method with no such seed. Run the same `metaprompt-lite bench` command to fill the grid.") in text
    assert "| coop | 61.50 ± 0.71 | 40.00 ± 0.00 |" in text
    assert "| maple | — | — | — | 0 |" in text
    complete = tmp_path / "complete"
    complete.mkdir()
    for row in rows[:4]:
        rt.append_row(complete / "b2n.csv", row, B2N_COLUMNS)
    assert "Partial" not in markdown(complete)


def test_report_writes_nothing_from_a_damaged_file(tmp_path):
    _write(tmp_path / "b2n.csv", HEADER + "zsclip,flags,1,2.0000,1.0000,1.3333,0.5" + S + "\r\ncocoop,emoji-no")
    (tmp_path / "README.md").write_text("the previous report")
    with pytest.raises(rt.ResultsError) as error:
        report(tmp_path)
    assert str(error.value) == (f"{tmp_path / 'b2n.csv'} ends in a cut line 'cocoop,emoji-no' (an interrupted write) — "
                                "run the same `metaprompt-lite bench` command: it drops that line and runs its row again")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "b2n.csv"]
    assert (tmp_path / "README.md").read_text() == "the previous report"


def test_a_dg_accuracy_above_100_is_refused(tmp_path):
    path = _write(tmp_path / "dg.csv", DG_HEADER + "coop,flags-dg,pixel,1,250.0,1.0" + S + "\r\n")
    with pytest.raises(rt.ResultsError, match="acc '250.0' is not an accuracy in % \\(0 to 100\\)"):
        read_results(path)


def test_report_refuses_a_file_with_a_header_and_no_rows(tmp_path):
    _write(tmp_path / "b2n.csv", HEADER)
    with pytest.raises(rt.ResultsError, match="holds the header but no rows"):
        report(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b2n.csv"]


def test_summary_of_one_seed_and_of_two_dg_benchmarks_has_no_nan(tmp_path):
    """A std over one seed is not a number (pandas' NaN): the summary shows '–'; each DG benchmark lists
    its own targets (one shared table had a NaN column for every other benchmark's target)."""
    from metaprompt_lite.report import summary_text

    _write(tmp_path / "b2n.csv", HEADER + f"coop,cards,1,50.0,40.0,44.4444,1.0{S}\r\nzsclip,cards,1,45.0,41.0,42.9,0.0{S}\r\n")
    _write(tmp_path / "dg.csv", DG_HEADER + f"coop,flags-dg,pixel,1,50.0,1.0{S}\r\ncoop,flags-dg,emoji,1,40.0,1.0{S}\r\n"
           f"coop,emoji-pacs,photo,1,30.0,1.0{S}\r\ncoop,emoji-pacs,photo,2,34.0,1.0{S}\r\n")
    text = summary_text(tmp_path)
    assert "NaN" not in text and "accuracy in %" in text
    b2n, dg = text.split("\n\nDomain generalisation")
    assert b2n.splitlines()[-1].split() == ["coop", "50.00", "40.00", "44.44", "–", "1"]
    pacs, flags = dg.split("\n\n")
    assert [line.split() for line in pacs.splitlines()[1:]] == [
        ["emoji-pacs"], ["target", "photo", "mean", "mean_std"], ["method"], ["coop", "32.00", "32.00", "2.83"]]
    assert flags.splitlines()[1].split() == ["target", "emoji", "pixel", "mean", "mean_std"]
    assert flags.splitlines()[-1].split() == ["coop", "40.00", "50.00", "45.00", "–"]


def test_the_overview_puts_both_protocols_side_by_side_and_says_what_is_partial(tmp_path):
    """results/README.md: per method, each protocol's average (or how many rows a partial run has),
    the papers' numbers, and the budget table."""
    from metaprompt_lite.report import report_all

    for protocol, rows in (("tuned", [_row(m, d, s, protocol="tuned") for m in ("zsclip", "coop") for d in "ab"
                                      for s in (1, 2)]),
                           ("official", [_row("zsclip", d, s) for d in "ab" for s in (1, 2)] + [_row("coop", "a", 1)])):
        for row in rows:
            rt.append_row(tmp_path / protocol / "b2n.csv", row, B2N_COLUMNS)
    written = report_all(tmp_path)
    assert tmp_path / "README.md" in written and tmp_path / "official" / "README.md" in written
    text = (tmp_path / "README.md").read_text()
    assert "| coop | partial: 1 of 4 rows | 50.00 / 40.00 / 44.44 | 82.69 / 63.22 / 71.66 |" in text
    assert "| zsclip | 50.00 / 40.00 / 44.44 | 50.00 / 40.00 / 44.44 |" in text
    assert "| coop | official | 200 | 32 | 0.002 | 800 | 25600 |" in text  # 150 images, 4 steps an epoch


def test_the_overview_puts_both_protocols_dg_side_by_side(tmp_path):
    """results/README.md's DG table: per method and benchmark, each protocol's mean over targets
    (seeds that cover every target of the benchmark, in either protocol), 'partial' where no seed does."""
    from metaprompt_lite.report import report_all

    def dg_row(method, target, seed, acc, protocol):
        return {"method": method, "benchmark": "pacs", "target": target, "seed": seed, "acc": acc,
                "train_s": 1.0, **SETTINGS, "protocol": protocol}

    official = [dg_row("metaprompt", t, s, acc, "official") for s in (1, 2) for t, acc in (("x", 60.0 + s), ("y", 80.0))]
    official += [dg_row("cocoop", "x", 1, 50.0, "official")]  # y not run: no complete seed
    tuned = [dg_row(m, t, 1, 40.0, "tuned") for m in ("metaprompt", "cocoop") for t in "xy"]
    for protocol, rows in (("official", official), ("tuned", tuned)):
        for row in rows:
            rt.append_row(tmp_path / protocol / "dg.csv", row, DG_COLUMNS)
        rt.append_row(tmp_path / protocol / "b2n.csv", _row("zsclip", "a", 1, protocol=protocol), B2N_COLUMNS)
    report_all(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "| method | pacs (official / tuned) | paper (ViT-B/16) |" in text
    # seeds (61+80)/2 and (62+80)/2
    assert "| metaprompt | 70.75 / 40.00 | MetaPrompt (5-shot): 97.0 / 82.6 / 85.2 / 61.8 |" in text
    assert "| cocoop | partial: 1 of 4 rows / 40.00 | CoCoOp (5-shot): 96.7 / 78.3 / 84.1 / 61.1 |" in text
    assert "| metaprompt | official | 6 | 32 | 0.0015 | 90 | 2880 |" in text  # MetaPrompt's Meta_DG budget, 480 images


def test_each_zero_shot_dg_row_is_set_against_the_paper_row_that_prompted_as_it_does(tmp_path):
    """MetaPrompt's "CLIP" row is its own zero-shot CLIP, prompted with bare class names: zsclip-bare.
    "CLIP (template)" (the CoOp paper's numbers): zsclip, the hand template. The ensemble is this
    project's own row, with its templates printed."""
    from metaprompt_lite.data.plan import TEMPLATES
    from metaprompt_lite.report import report_all

    for protocol in ("official", "tuned"):
        for method in ("zsclip-bare", "zsclip", "zsclip-ens"):
            for target in ("photo", "art"):
                rt.append_row(tmp_path / protocol / "dg.csv",
                              {"method": method, "benchmark": "emoji-pacs", "target": target, "seed": 1, "acc": 40.0,
                               "train_s": 0.0, **SETTINGS, "protocol": protocol}, DG_COLUMNS)
    report_all(tmp_path)
    overview, official = (tmp_path / "README.md").read_text(), (tmp_path / "official" / "README.md").read_text()
    assert "| zsclip-bare | 40.00 / 40.00 | CLIP: 95.7 / 75.9 / 79.4 / 56.8 |" in overview
    assert "| zsclip | 40.00 / 40.00 | CLIP (template): 96.1 / 82.3 / 82.1 / 56.9 |" in overview
    assert "| zsclip-ens | 40.00 / 40.00 | — |" in overview
    listed = "- emoji-pacs: " + ", ".join(f'"{t}"' for t in TEMPLATES["emoji-pacs"])
    assert listed in overview and listed in official
    assert 'zsclip-bare ("CLIP"): PACS 95.7' in official and 'zsclip ("CLIP (template)"): PACS 96.1' in official
