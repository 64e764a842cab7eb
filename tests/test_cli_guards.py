"""Refusals that come before any work, so nothing is lost or damaged: one results file holds one
setting, a checkpoint's every tensor has the architecture's shape, a build never drops datasets from
the store's manifest, unwritable folders fail before training, a repeated seed is refused; and the
messages of the command line (each `error: what — what to do`, exit code 2, nothing on disk changed,
checked by checksums before and after)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_cli_errors import TINY, clone, run_cli, snapshot, usage_error  # noqa: F401 -- clone is a fixture

import metaprompt_lite.bench as bench_module
import metaprompt_lite.run as run_module
from metaprompt_lite.cli import PROTOCOLS, main
from metaprompt_lite.results_table import B2N_COLUMNS

HEADER = ",".join(B2N_COLUMNS) + "\r\n"
S = ",official,tiny-clip,random,2,16,0.002,6,,0.2.0+abc"  # what made a row (run.row_settings), as CSV cells
SLICE = ["bench", "--suite", "b2n", "--methods", "zsclip", "--datasets", "fashion", "--seeds", "1", "--no-report",
         "--workers", "1"]


def test_the_command_lines_protocols_are_the_methods():
    from metaprompt_lite.cli_data import CORPUS_VARIANTS
    from metaprompt_lite.data.build import CORPUS_VARIANTS as BUILD_VARIANTS
    from metaprompt_lite.methods import PROTOCOLS as METHOD_PROTOCOLS

    assert PROTOCOLS == METHOD_PROTOCOLS and CORPUS_VARIANTS == BUILD_VARIANTS


def test_a_capped_slice_never_lands_in_the_main_jobs_file(clone, capsys):
    """`bench ... --max-steps 5` without --out-dir used to append a max_steps=5 row to the main job's
    runs/bench/official/b2n.csv, after which its report and its resume failed until rows were deleted."""
    work, data = clone
    main_row = [*SLICE]
    main_row[main_row.index("zsclip")] = "zsclip-ens"
    assert main(main_row) == 0  # the main job's file, with one row of another run than the slice's
    main_job = work / "runs" / "bench" / "official"
    before = snapshot(main_job)
    assert main([*SLICE, "--max-steps", "5"]) == 0
    assert "results go to runs/bench/official-max-steps-5/" in capsys.readouterr().err
    assert snapshot(main_job) == before
    assert (work / "runs" / "bench" / "official-max-steps-5" / "b2n.csv").is_file()


def test_rows_of_other_settings_are_refused_for_the_whole_file(clone, capsys):
    """Another method (no run in common) with another max_steps into the same file: refused before any
    run, naming the difference; before, only runs that overlapped were checked, and the row was added."""
    work, data = clone
    assert main([*SLICE, "--out-dir", "out"]) == 0
    capsys.readouterr()
    argv = [*SLICE, "--out-dir", "out", "--max-steps", "5"]
    argv[argv.index("zsclip")] = "zsclip-ens"
    line = run_cli(argv, capsys, work, data)  # the only line: refused before anything is printed
    assert line == ("error: out/b2n.csv holds rows made with other settings than this run's (max_steps '' → '5', "
                    "found → this run) and a results file holds one setting — use another --out-dir for these "
                    "settings, or the settings of the rows there")


@pytest.mark.parametrize("what, value", [("seeds", ["1", "1"]), ("methods", ["zsclip", "zsclip"]),
                                         ("datasets", ["cards", "cards"])])
def test_a_seed_method_or_dataset_named_twice_is_refused(clone, capsys, monkeypatch, what, value):
    """`bench --seeds 1 1` wrote two rows of one run, which its own reader then refused."""
    work, data = clone
    monkeypatch.setattr(run_module, "run_base_to_new", lambda *a, **k: pytest.fail("trained"))
    argv = ["bench", "--suite", "b2n", "--methods", "zsclip", "--datasets", "cards", "--seeds", "1", "--no-report",
            *TINY]
    at = argv.index("--" + what)
    argv[at + 1: at + 2] = value
    assert run_cli(argv, capsys, work, data) == f"error: --{what} names {value[0]} more than once — give each once"


def test_options_of_no_value_are_usage_errors(clone, capsys):
    """`bench --seeds` with no value ran 0 runs, then said to run `metaprompt-lite bench` first."""
    work, data = clone
    for option in ("--seeds", "--methods", "--datasets"):
        assert usage_error(["bench", option, *TINY], capsys, work, data) == (
            f"error: argument {option}: expected at least one argument — see `metaprompt-lite bench --help`")


def test_a_text_position_embedding_of_another_length_is_refused_not_resized(clone, capsys):
    """33 rows where the pocket CLIP has 32: open_clip resized it and the run went on with other accuracies."""
    from safetensors.torch import load_file, save_file

    work, data = clone
    state = load_file(str(data / "pocket-clip" / "pocket-clip.safetensors"))
    state["positional_embedding"] = torch.cat([state["positional_embedding"], state["positional_embedding"][-1:]])
    save_file(state, str(work / "long.safetensors"))
    assert run_cli(["zeroshot", "--suite", "probe", "--pretrained", "long.safetensors"], capsys, work, data) == (
        "error: checkpoint long.safetensors holds weights for another architecture than pocket-clip "
        "(positional_embedding is [33, 192] there, [32, 192] in pocket-clip) — pass the --model it was trained as")


def _own_copy(path: Path) -> None:
    """Replace a link into the real data/ by a copy (a write must never reach the committed file)."""
    content = path.resolve().read_bytes()
    path.unlink()
    path.write_bytes(content)


def test_a_build_of_fewer_datasets_keeps_the_manifest(clone, capsys, tmp_path):
    """`data build --no-install` without sources built 0 datasets and rewrote the default store's
    MANIFEST.json, after which every dataset was 'not in the store'."""
    work, data = clone
    for name in ("MANIFEST.json", "manifest.csv"):
        _own_copy(data / "suite" / name)
    sources = tmp_path / "no-sources"
    sources.mkdir()
    line = run_cli(["data", "build", "--no-install", "--sources", str(sources)], capsys, work, data)
    assert line.startswith(f"error: this build would write 0 datasets into {data}/suite and drop 13 that its "
                           "MANIFEST.json lists (emoji-objects, cards, fashion, emoji-novel-objects, ...)")
    assert line.endswith("leaving them unreadable — provide their sources (without --no-install, or --sources DIR), "
                         "build into another --store, or pass --allow-fewer to replace the manifest anyway")


def test_a_failed_build_exits_2_with_an_error_line(clone, capsys, tmp_path):
    work, data = clone
    sources = tmp_path / "no-sources"
    sources.mkdir()
    assert main(["data", "build", "--no-install", "--sources", str(sources), "--store", "new"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(r"error: \d+ datasets could not be built \(cards, ", last) and last.endswith(
        " — install their sources as the INCOMPLETE lines above say, then run the same command")


@pytest.fixture
def locked(clone):
    """An existing folder nobody can write to, root included (the immutable attribute)."""
    work, _ = clone
    folder = work / "locked"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not possible here")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.parametrize("argv, option", [
    (["train", "--method", "coop", "--dataset", "cards", "--max-steps", "1", "--out-dir", "locked", *TINY], "--out-dir"),
    (["bench", "--suite", "b2n", "--methods", "coop", "--datasets", "cards", "--seeds", "1", "--no-report",
      "--max-steps", "1", "--checkpoint-dir", "locked", *TINY], "--checkpoint-dir"),
])
def test_an_unwritable_checkpoint_folder_fails_before_training(clone, capsys, monkeypatch, locked, argv, option):
    """It used to train to the end, then exit 1 with torch.save's traceback: the result was lost."""
    work, data = clone
    monkeypatch.setattr(run_module, "run_base_to_new", lambda *a, **k: pytest.fail("trained"))
    monkeypatch.setattr(bench_module, "run_base_to_new", lambda *a, **k: pytest.fail("trained"))
    assert run_cli(argv, capsys, work, data) == (
        f"error: cannot write to {option} locked: {locked} is not writable (Operation not permitted) — pass a "
        "folder you can write to")


def test_too_many_threads_is_a_usage_error(clone, capsys):
    work, data = clone
    cores = os.cpu_count()
    assert usage_error(["train", "--dataset", "cards", "--threads", "999", *TINY], capsys, work, data) == (
        f"error: argument --threads: 999 is more than this machine's {cores} cores — use 1 to {cores}")


def test_a_negative_shard_gets_the_shards_own_message(clone, capsys):
    work, data = clone
    assert usage_error(["bench", "--shard", "-1/2", *TINY], capsys, work, data) == (
        "error: argument --shard: shard -1/2 is out of range — use K/N with 1 <= K <= N, e.g. --shard 1/2")


def test_a_folder_given_as_checkpoint_is_named_a_folder(clone, capsys):
    work, data = clone
    (work / "weights").mkdir()
    assert run_cli(["zeroshot", "--pretrained", "weights"], capsys, work, data) == (
        "error: --pretrained weights is a folder, not a checkpoint file — name the checkpoint file in it (e.g. a "
        ".safetensors file that `metaprompt-lite pretrain` wrote), or pass `--pretrained none` for random weights")


def test_merge_of_a_missing_file_says_it_is_missing(clone, capsys):
    work, data = clone
    assert run_cli(["merge", "b2n.shard-1-of-2.csv"], capsys, work, data) == (
        "error: b2n.shard-1-of-2.csv does not exist — name the <suite>.shard-K-of-N.csv files that `metaprompt-lite "
        "bench --shard K/N` wrote, or give none to merge every shard file in --out-dir")


def test_a_non_finite_loss_names_the_command_and_the_fix(clone, capsys, monkeypatch):
    """The line ended in a literal `metaprompt-lite COMMAND --help`."""
    from metaprompt_lite.core.loop import check_finite

    work, data = clone
    monkeypatch.setattr(run_module, "run_base_to_new", lambda *a, **k: check_finite({"loss": float("nan")}, 3))
    line = run_cli(["train", "--method", "coop", "--dataset", "cards", "--out-dir", "", *TINY], capsys, work, data,
                   only_line=False)
    assert line == ("error: non-finite loss at step 3: {'loss': nan} — lower the learning rate (--lr), check the "
                    "inputs for NaN, or resume from the last checkpoint")


@pytest.mark.parametrize("text, message", [
    (HEADER + "nope,cards,1,50.0,40.0,44.4,1.0" + S + "\r\n",
     "results/b2n.csv line 2: unknown method 'nope' — fix or delete that line (the methods: "),
    (HEADER + "coop,cards,1,50.0,40.0,44.4,1.0" + S + "\r\r\n",
     "results/b2n.csv line 2 ends in \\r\\r\\n (a carriage return too many, as some editors and copies add) — make "
     "every line end in \\r\\n, e.g. `sed -i 's/\\r\\r$/\\r/' results/b2n.csv`"),
])
def test_report_names_unknown_methods_and_stray_carriage_returns(clone, capsys, text, message):
    """A row of an unknown method was shown in the tables; a \\r\\r\\n file was 'line 2 is blank'."""
    work, data = clone
    (work / "results").mkdir()
    (work / "results" / "b2n.csv").write_bytes(text.encode())
    assert run_cli(["report"], capsys, work, data).startswith("error: " + message)


def test_the_start_up_estimate_covers_the_whole_job(clone, capsys, monkeypatch):
    """`metaprompt-lite bench` estimated base-to-new only (178 of about 328 min) when it started."""
    work, data = clone
    ran = []
    monkeypatch.setattr(bench_module, "bench", lambda config, on_row=None: ran.append(config.suite))
    argv = ["bench", "--methods", "coop", "--datasets", "cards", "flags-dg", "--seeds", "1", "--no-report", *TINY]
    main(argv)
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("bench: "))
    b2n = bench_module.estimate(bench_module.BenchConfig(suite="b2n", methods=("coop",), datasets=("cards",),
                                                         seeds=(1,), model="tiny-clip", out_dir="x"))
    dg = bench_module.estimate(bench_module.BenchConfig(suite="dg", methods=("coop",), datasets=("flags-dg",),
                                                        seeds=(1,), model="tiny-clip", out_dir="x"))
    assert line.startswith(f"bench: {b2n[0] + dg[0]} runs to do in all, roughly {b2n[1] + dg[1]:.0f} min (b2n 1 runs, "
                           f"{b2n[1]:.0f} min, dg 4 runs, {dg[1]:.0f} min)")
    assert ran == ["b2n", "dg"] and err.index(line) < err.index("BenchConfig")


def _rows_file(folder: Path, rows: list[str], meta: dict) -> None:
    folder.mkdir()
    (folder / "b2n.csv").write_text(HEADER + "".join(rows))
    (folder / "bench_meta.json").write_text(json.dumps(meta))


def test_the_comparison_says_how_much_and_whether_settings_and_machines_differ(tmp_path):
    """A bare "differs" before: now the largest |Δ| in points and test images, the settings that differ
    (a --max-steps slice is not expected to match) and the machines (CPU, capability, MKL, oneDNN)."""
    from metaprompt_lite.compare import comparison_text, images_per_column
    from metaprompt_lite.data import load_dataset

    machine = {"cpu": "A", "cpu_capability": "AVX2", "mkl": "2024.2", "onednn": "3.12.0"}
    row = "coop,cards,1,{base},40.0,44.4,1.0,official,pocket-clip,sha256:0123,2,16,0.002,8,{steps},0.2.0+abc\r\n"
    _rows_file(tmp_path / "mine", [row.format(base="50.0", steps="5")], {**machine, "cpu": "B"})
    _rows_file(tmp_path / "ref", [row.format(base="46.0", steps="")], machine)
    text = comparison_text(tmp_path / "mine", tmp_path / "ref")
    base_images = images_per_column(load_dataset("cards"), None)["base"]
    assert (f"b2n: 0 of the 1 rows in both files are identical to {tmp_path / 'ref' / 'b2n.csv'} (every accuracy "
            f"column); the other 1 differ by at most 4.00 points ({round(4 * base_images / 100)} test images)") in text
    assert "  settings differ: max_steps '5' here, '' there (rows of other settings are not expected to match)" in text
    assert "  machines differ: cpu 'B' here, 'A' there" in text
    _rows_file(tmp_path / "same", [row.format(base="46.0", steps="")], machine)
    text = comparison_text(tmp_path / "same", tmp_path / "ref")
    assert "1 of the 1 rows in both files are identical" in text and "settings: the same in every row" in text
    assert "machines: the same (cpu A, cpu_capability AVX2, mkl 2024.2, onednn 3.12.0)" in text
    (tmp_path / "ref" / "bench_meta.json").write_text("{}")  # committed before the machine was recorded
    assert ("machines: unknown whether they differ (the reference records no cpu, cpu_capability, mkl, onednn; "
            "this run's: cpu A, cpu_capability AVX2, mkl 2024.2, onednn 3.12.0)") in comparison_text(
                tmp_path / "same", tmp_path / "ref")


def test_bench_meta_names_the_machine(clone, capsys):
    from metaprompt_lite.provenance import machine

    work, data = clone
    assert main([*SLICE, "--out-dir", "out", *TINY]) == 0
    meta = json.loads((work / "out" / "bench_meta.json").read_text())
    assert {k: meta[k] for k in ("cpu", "cpu_capability", "mkl", "onednn")} == machine()
    assert meta["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_argument_errors_load_no_torch():
    """Parsing, `--help` and a usage error import no torch (it took 5-6 s per argument error);
    benchmarks/cli_startup.py times them."""
    code = ("import sys\nfrom metaprompt_lite.cli import main\ntry:\n    main(['train', '--dataset', 'cards', "
            "'--lr', '0'])\nexcept SystemExit:\n    pass\nprint(sorted(m for m in ('torch', 'open_clip', 'numpy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
