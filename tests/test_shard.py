"""`bench --shard K/N` runs a fixed part of the grid into its own file; `merge` joins the parts into the
file an unsharded run writes, and refuses duplicates, gaps and mixed plans in one line."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import metaprompt_lite.bench as bench_module
from conftest import synthetic_dataset
from metaprompt_lite.bench import BenchConfig, bench, plan
from metaprompt_lite.cli import main
from metaprompt_lite.shard import select, split

METHODS = {"b2n": ("zsclip", "coop"), "dg": ("zsclip", "metaprompt")}
DATASETS = {"b2n": ("syn-a", "syn-b"), "dg": ("syn-dg",)}


def _loader(name):
    """Two B2N datasets of different class counts (so different cost estimates), one DG benchmark."""
    if name == "syn-dg":
        dataset = synthetic_dataset(n_domains=3, per_class=4)
    else:
        dataset = synthetic_dataset(n_classes={"syn-a": 6, "syn-b": 4}[name], seed={"syn-a": 0, "syn-b": 1}[name])
    dataset.name = name
    return dataset


def _config(out_dir, suite, shard=None, seeds=(1, 2)):
    return BenchConfig(suite=suite, methods=METHODS[suite], datasets=DATASETS[suite], seeds=seeds, model="tiny-clip",
                       out_dir=str(out_dir), progress=False, loader=_loader, workers=1, max_steps=2, shard=shard)


def _rows(path, without=("train_s",)):
    return [{k: v for k, v in row.items() if k not in without} for row in csv.DictReader(Path(path).open())]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each suite run once unsharded (``full/``) and as shards 1/2 and 2/2 into one folder (``shards/``)."""
    root = tmp_path_factory.mktemp("shard")
    for suite in ("b2n", "dg"):
        bench(_config(root / "full", suite))
        for k in (1, 2):
            bench(_config(root / "shards", suite, shard=(k, 2)))
    return root


@pytest.fixture
def shards(runs, tmp_path):
    """A copy of the shard folder, to damage."""
    return Path(shutil.copytree(runs / "shards", tmp_path / "shards"))


def _merge_error(capsys, out_dir, *files):
    """Run `merge`; return its error line after checking exit code 2, one line, and no merged file."""
    assert main(["merge", "--out-dir", str(out_dir), *map(str, files)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert not (out_dir / "b2n.csv").exists() and not (out_dir / "dg.csv").exists()
    return lines[0]


@pytest.mark.parametrize("suite", ["b2n", "dg"])
def test_two_shards_merged_are_the_unsharded_rows(runs, tmp_path, capsys, suite):
    out = Path(shutil.copytree(runs / "shards", tmp_path / "shards"))
    one, two = (_rows(out / f"{suite}.shard-{k}-of-2.csv") for k in (1, 2))
    assert one and two  # both shards ran something
    assert main(["merge", "--out-dir", str(out)]) == 0
    assert f"wrote {out / suite}.csv: {len(one) + len(two)} rows from 2 shard files" in capsys.readouterr().err
    full = _rows(runs / "full" / f"{suite}.csv")
    assert _rows(out / f"{suite}.csv") == full  # every column but train_s, in the benchmark's order
    curves = [sorted(p.name for p in (folder / "curves").iterdir()) for folder in (out, runs / "full")]
    assert curves[0] == curves[1]
    assert main(["merge", "--out-dir", str(out)]) == 0  # again: the same file, left as it is


def test_shards_are_disjoint_cover_the_grid_and_balance_the_cost_estimate(tmp_path):
    datasets = {name: _loader(name) for name in ("syn-a", "syn-b", "syn-dg")}
    for suite, targets_of in (("b2n", {"syn-a": [None], "syn-b": [None]}),
                              ("dg", {"syn-dg": list(datasets["syn-dg"].domains)})):
        grid = plan(_config(tmp_path, suite, seeds=(1, 2, 3)), targets_of, set())
        cells = list(dict.fromkeys((g.dataset, g.target, g.seed) for g in grid))  # the unit: a cell's groups
        for n in range(1, len(cells) + 2):  # up to one shard more than cells: an empty shard is fine
            parts = [select(_config(tmp_path / f"{suite}{n}", suite, (k, n), seeds=(1, 2, 3)), METHODS[suite],
                            targets_of, datasets, grid, grid, tmp_path / f"{suite}{n}" / f"{k}.csv")
                     for k in range(1, n + 1)]
            assert sorted(grid.index(g) for part in parts for g in part) == list(range(len(grid)))  # each once
            assert all(part for part in parts[:len(cells)])
            for part in parts:  # a cell's groups stay in one shard
                assert not {(g.dataset, g.target, g.seed) for part2 in parts if part2 is not part for g in part2} & {
                    (g.dataset, g.target, g.seed) for g in part}
    # greedy largest-first: a group of cost 10 alone, the ten of cost 1 on the other shard
    assert split(list(range(11)), 2, [1] * 5 + [10] + [1] * 5) == [2] * 5 + [1] + [2] * 5
    assert split(list(range(5)), 2, [1] * 5) == [1, 2, 1, 2, 1]  # equal costs: round-robin in grid order
    assert split(list(range(5)), 2, [1] * 5) == split(list(range(5)), 2, [1] * 5)


def test_a_resumed_shard_is_the_same_shard_and_runs_only_its_missing_rows(runs, shards, monkeypatch):
    path = shards / "b2n.shard-1-of-2.csv"
    plan_text, rows = path.with_suffix(".json").read_text(), _rows(path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]))  # only the first row done
    calls = []
    original = bench_module.run_base_to_new
    monkeypatch.setattr(bench_module, "run_base_to_new", lambda run, *a: calls.append(run.method) or original(run, *a))
    (shards / "b2n.csv").write_bytes((runs / "full" / "b2n.csv").read_bytes())  # other files do not count as done
    bench(_config(shards, "b2n", shard=(1, 2)))
    assert len(calls) == len(rows) - 1
    assert _rows(path) == rows and path.with_suffix(".json").read_text() == plan_text
    calls.clear()
    bench(_config(shards, "b2n", shard=(1, 2)))  # nothing left
    assert calls == []


def test_a_shard_refuses_to_resume_under_another_plan(shards):
    before = (shards / "b2n.shard-1-of-2.csv").read_bytes()
    with pytest.raises(ValueError) as error:
        bench(_config(shards, "b2n", shard=(1, 2), seeds=(1,)))
    plan_path = shards / "b2n.shard-1-of-2.json"
    assert str(error.value) == (f"{plan_path} holds another plan for this shard (seeds: [1, 2] there, [1] now) — run "
                                "every shard with the same arguments, or delete b2n.shard-1-of-2.csv and "
                                "b2n.shard-1-of-2.json to start this shard afresh")
    assert (shards / "b2n.shard-1-of-2.csv").read_bytes() == before


@pytest.mark.parametrize("value, message", [
    ("3/2", "shard 3/2 is out of range — use K/N with 1 <= K <= N, e.g. --shard 1/2"),
    ("0/4", "shard 0/4 is out of range — use K/N with 1 <= K <= N, e.g. --shard 1/4"),
    ("2", "'2' is not K/N — use two integers, e.g. --shard 1/4"),
    ("a/b", "'a/b' is not K/N — use two integers, e.g. --shard 1/4"),
])
def test_bench_shard_must_be_k_of_n(capsys, tmp_path, value, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--shard", value, "--out-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: argument --shard: {message}\n"
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="out of range"):  # the same check without the command line
        bench(BenchConfig(shard=(3, 2), out_dir=str(tmp_path)))


def test_merge_refuses_a_run_in_two_files_even_with_equal_values(shards, capsys):
    one, two = shards / "b2n.shard-1-of-2.csv", shards / "b2n.shard-2-of-2.csv"
    first = one.read_bytes().splitlines(keepends=True)[1]
    key = ",".join(first.decode().split(",")[:3])
    two.write_bytes(two.read_bytes() + first)
    assert _merge_error(capsys, shards) == (
        f"error: 1 b2n run(s) are in more than one shard file: {key} (b2n.shard-1-of-2.csv and b2n.shard-2-of-2.csv, "
        "equal values) — keep each run in one file: delete the extra lines")
    fields = first.decode().split(",")
    fields[3] = "99.0000"
    two.write_bytes(two.read_bytes()[: -len(first)] + ",".join(fields).encode())
    assert "(b2n.shard-1-of-2.csv and b2n.shard-2-of-2.csv, different values)" in _merge_error(capsys, shards)


def test_merge_refuses_gaps_naming_the_runs_and_their_shard(shards, capsys):
    path = shards / "b2n.shard-2-of-2.csv"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))  # its last row lost
    key = ",".join(lines[-1].decode().split(",")[:3])
    assert _merge_error(capsys, shards) == (
        f"error: 1 of 8 b2n runs are missing: {key} (shard 2/2) — run shard(s) 2/2 (`metaprompt-lite bench "
        "--shard K/N` with the same arguments; it resumes), then merge")
    line = _merge_error(capsys, shards, shards / "b2n.shard-1-of-2.csv")  # shard 2 not given at all
    assert line.startswith("error: 4 of 8 b2n runs are missing: ") and ", …" in line
    assert line.count("(shard 2/2)") == 3 and "run shard(s) 2/2 (" in line


def test_merge_refuses_runs_outside_the_grid(shards, capsys):
    path = shards / "b2n.shard-1-of-2.csv"
    fields = path.read_bytes().splitlines(keepends=True)[1].decode().split(",")
    fields[2] = "7"  # a seed the plan does not have
    path.write_bytes(path.read_bytes() + ",".join(fields).encode())
    assert _merge_error(capsys, shards) == (
        f"error: 1 b2n run(s) are outside the grid the shards were planned from: {','.join(fields[:3])} "
        "(b2n.shard-1-of-2.csv) — delete those lines")


def test_merge_refuses_shards_of_different_plans_or_without_one(shards, tmp_path, capsys):
    bench(_config(tmp_path / "other", "b2n", shard=(2, 3)))
    other = tmp_path / "other" / "b2n.shard-2-of-3.csv"
    assert _merge_error(capsys, shards, shards / "b2n.shard-1-of-2.csv", other) == (
        "error: b2n.shard-1-of-2.csv and b2n.shard-2-of-3.csv come from different plans (N: 2 vs 3) — merge the "
        "shards of one plan: name their files, or run the odd shard again with the others' arguments")
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(shards / "b2n.shard-1-of-2.csv", copy)
    assert _merge_error(capsys, copy, shards / "b2n.shard-1-of-2.csv", copy / "b2n.shard-1-of-2.csv") == (
        f"error: {copy / 'b2n.shard-1-of-2.csv'} has no plan b2n.shard-1-of-2.json beside it — copy the .json with "
        "the .csv (`bench --shard` writes both)")
    shutil.copy(shards / "b2n.shard-1-of-2.json", copy)
    assert _merge_error(capsys, copy, shards / "b2n.shard-1-of-2.csv", copy / "b2n.shard-1-of-2.csv") == (
        f"error: shard 1/2 is given twice ({shards / 'b2n.shard-1-of-2.csv'} and {copy / 'b2n.shard-1-of-2.csv'}) — "
        "name each shard's file once")
    assert _merge_error(capsys, tmp_path / "empty") == (
        f"error: no shard files (<suite>.shard-K-of-N.csv) in {tmp_path / 'empty'} — run `metaprompt-lite bench "
        f"--shard K/N --out-dir {tmp_path / 'empty'}` first, or name the files")


def test_merge_does_not_overwrite_another_results_file(shards, capsys):
    header = b"method,benchmark,target,seed,acc,train_s\r\n"
    (shards / "dg.csv").write_bytes(header)
    assert main(["merge", "--out-dir", str(shards)]) == 2
    assert capsys.readouterr().err == (f"error: {shards / 'dg.csv'} exists and differs from the merge of the "
                                       "shards — move it away (merge writes it afresh from the shard files)\n")
    assert (shards / "dg.csv").read_bytes() == header
    assert not (shards / "b2n.csv").exists()  # checked before b2n.csv would be written: no suite is written
    assert not list(shards.glob("*.merge*"))


def test_select_keeps_the_missing_rows_of_its_own_groups_only(tmp_path):
    """The split is of the whole grid; ``todo`` (what is not done yet) only filters the shard's groups."""
    config = _config(tmp_path, "b2n", shard=(1, 2))
    targets_of = {"syn-a": [None], "syn-b": [None]}
    datasets = {name: SimpleNamespace(classnames=["x"] * 3, domains=[]) for name in targets_of}
    grid = plan(config, targets_of, set())
    mine = select(config, METHODS["b2n"], targets_of, datasets, grid, grid, tmp_path / "b2n.shard-1-of-2.csv")
    done = {("zsclip", g.dataset, str(g.seed)) for g in grid} | {("coop", grid[0].dataset, str(grid[0].seed))}
    todo = plan(config, targets_of, done)
    again = select(config, METHODS["b2n"], targets_of, datasets, grid, todo, tmp_path / "b2n.shard-1-of-2.csv")
    first = (grid[0].dataset, grid[0].seed)  # its coop row is done, and every zsclip row
    assert [(g.dataset, g.seed) for g in again] == [(g.dataset, g.seed) for g in mine
                                                     if g.methods == ("coop",) and (g.dataset, g.seed) != first]
    assert all(g.methods == ("coop",) for g in again)
