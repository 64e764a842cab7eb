"""Every input the command line reads, damaged: one line `error: what — what to do`, exit code 2, and
nothing else on disk changed. Runs in-process on a clone-like folder (data/ linked to the real files)."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import pytest

import metaprompt_lite.bench as bench_module
from metaprompt_lite.cli import main
from metaprompt_lite.paths import data_dir
from metaprompt_lite.results_table import B2N_COLUMNS

DATA = data_dir()
POCKET_FIX = ("restore it with `git checkout data/pocket-clip`, rebuild it with `metaprompt-lite pretrain`, or pass "
              "`--pretrained none` for random weights")
TINY = ["--model", "tiny-clip", "--pretrained", "none"]
HEADER = ",".join(B2N_COLUMNS) + "\r\n"
S = ",official,tiny-clip,random,2,16,0.002,6,,0.2.0+abc"  # what made a row (run.row_settings), as CSV cells


class Payload:
    """A pickle that runs code when loaded: creates ``marker`` (harmless, and visible if it ran)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def snapshot(*roots: Path) -> dict:
    """Every file under ``roots``: its sha256, or for a link its target and the target's size and mtime."""
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_symlink():
                target = path.resolve()
                out[str(path)] = ("link", str(target), target.stat().st_size, target.stat().st_mtime_ns)
            elif path.is_file():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[str(path)] = "dir"
    return out


@pytest.fixture
def clone(tmp_path, monkeypatch):
    """A working directory ``work/`` and a data directory ``data/`` whose files link to the real ones
    (replace a link by a damaged copy to damage one file). Returns (work, data)."""
    data = tmp_path / "data"
    for sub in ("suite", "pocket-clip", "gram"):
        (data / sub).mkdir(parents=True)
        for f in (DATA / sub).iterdir():
            if f.is_file():
                (data / sub / f.name).symlink_to(f)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("METAPROMPT_LITE_DATA", str(data))
    monkeypatch.delenv("METAPROMPT_LITE_DEBUG", raising=False)
    monkeypatch.chdir(work)
    return work, data


def damage(path: Path, content: bytes) -> None:
    path.unlink()
    path.write_bytes(content)


def run_cli(argv, capsys, *roots, only_line=True):
    """Run the CLI; return its error line after checking exit code 2, no traceback, no file touched."""
    before = snapshot(*roots)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    if only_line:
        assert len(lines) == 1, err
    assert snapshot(*roots) == before
    return lines[-1]


def test_missing_default_checkpoint_is_an_error_not_random_weights(clone, capsys):
    work, data = clone
    (data / "pocket-clip" / "pocket-clip.safetensors").unlink()
    line = run_cli(["zeroshot", "--suite", "probe"], capsys, work, data)
    assert line == (f"error: the pocket CLIP checkpoint {data}/pocket-clip/pocket-clip.safetensors is missing — "
                    + POCKET_FIX)


def test_missing_data_directory(clone, capsys, tmp_path, monkeypatch):
    work, _ = clone
    nowhere = tmp_path / "nowhere"
    monkeypatch.setenv("METAPROMPT_LITE_DATA", str(nowhere))
    assert run_cli(["zeroshot"], capsys, work) == (
        f"error: the pocket CLIP checkpoint {nowhere}/pocket-clip/pocket-clip.safetensors is missing — " + POCKET_FIX)
    assert run_cli(["data", "list"], capsys, work) == (
        f"error: no suite store at {nowhere}/suite (MANIFEST.json missing) — restore it with `git checkout data/suite` "
        "or rebuild it with `metaprompt-lite data build` (see data/README.md)")
    assert not nowhere.exists()


@pytest.mark.parametrize("cut", [0, 100, 5000])
def test_truncated_checkpoint_names_the_file_and_the_fix(clone, capsys, cut):
    work, data = clone
    path = data / "pocket-clip" / "pocket-clip.safetensors"
    damage(path, path.resolve().read_bytes()[:cut] if cut else b"")
    assert run_cli(["zeroshot", "--suite", "probe"], capsys, work, data) == (
        f"error: checkpoint {path} is cut short or not a checkpoint — " + POCKET_FIX)


def test_explicit_missing_checkpoint_uses_the_cli_spelling(clone, capsys):
    work, data = clone
    assert run_cli(["zeroshot", "--pretrained", "nothing.safetensors"], capsys, work, data) == (
        "error: checkpoint file nothing.safetensors for model pocket-clip does not exist — " + POCKET_FIX)
    for command in (["zeroshot"], ["data", "headroom"]):  # every command that loads a model resolves it one way
        assert run_cli([*command, "--model", "tiny-clip"], capsys, work, data) == (
            "error: --model tiny-clip needs --pretrained — give an open_clip tag (e.g. openai), a checkpoint file, "
            "or none for random weights")
    assert run_cli(["data", "headroom", "--pretrained", "nothing.safetensors"], capsys, work, data) == (
        "error: checkpoint file nothing.safetensors for model pocket-clip does not exist — " + POCKET_FIX)


def test_unknown_dataset_and_method(clone, capsys):
    work, data = clone
    assert run_cli(["train", "--dataset", "nope", *TINY], capsys, work, data) == (
        "error: unknown dataset 'nope' — use one of emoji-objects, cards, fashion, emoji-novel-objects, "
        "emoji-novel-mixed, emoji-novel-animals, emoji-novel-food, emoji-novel-places, flags-pixel, emoji-pixel, "
        "emoji-pacs, flags-dg, emoji-unseen")
    assert run_cli(["train", "--dataset", "flags-pixel", "--method", "nope", *TINY], capsys, work, data) == (
        "error: unknown method 'nope' — use one of cocoop, coop, gram-coop, gram-ivlp, ivlp, maple, metaprompt, "
        "metaprompt-clean, prometar, prometar-base, prometar-netlr, zsclip, zsclip-ens")
    assert run_cli(["bench", "--suite", "b2n", "--methods", "nope", *TINY], capsys, work, data,
                   only_line=False).startswith("error: unknown method 'nope' — use one of cocoop")
    assert run_cli(["bench", "--suite", "b2n", "--methods", "zsclip", "--datasets", "nope", *TINY], capsys, work,
                   data, only_line=False).startswith("error: unknown dataset 'nope' — use one of emoji-objects")
    assert run_cli(["train", "--dataset", "flags-dg", "--method", "zsclip", *TINY], capsys, work, data,
                   only_line=False) == ("error: --target is required for the DG benchmark flags-dg — use one of rectangle, "
                                        "circle, pixel, emoji")


@pytest.mark.parametrize("argv, message", [
    (["train", "--dataset", "flags-pixel", "--seed", "18446744073709551616"],
     "error: argument --seed: seed 18446744073709551616 is out of range — use 0 <= seed < 2**32 (4294967296)"),
    (["bench", "--seeds", "1", "-1"], "error: argument --seeds: seed -1 is out of range — use 0 <= seed < 2**32 "
                                      "(4294967296)"),
    (["train", "--dataset", "flags-pixel", "--seed", "x"],
     "error: argument --seed: seed 'x' is not an integer — use 0 <= seed < 2**32"),
    (["zeroshot", "--suite", "imagenet"], "error: argument --suite: invalid choice: 'imagenet' (choose from {choices}) "
                                          "— see `metaprompt-lite zeroshot --help`"),
])
def test_bad_values_are_one_line_usage_errors(clone, capsys, argv, message):
    work, data = clone
    before = snapshot(work, data)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    quoted = ", ".join(f"'{c}'" for c in ("b2n", "dg", "probe"))  # Python >= 3.12.8 quotes argparse's choices
    assert err in (message.format(choices="b2n, dg, probe") + "\n", message.format(choices=quoted) + "\n")
    assert snapshot(work, data) == before


def test_store_checksum_mismatch(clone, capsys):
    work, data = clone
    path = data / "suite" / "flags-pixel.json"
    original = path.resolve().read_bytes()
    damage(path, original + b" ")
    expected = hashlib.sha256(original).hexdigest()[:12]
    actual = hashlib.sha256(original + b" ").hexdigest()[:12]
    assert run_cli(["train", "--dataset", "flags-pixel", *TINY], capsys, work, data) == (
        f"error: checksum mismatch for {path}: sha256 {actual}… but the manifest says {expected}… (the file was changed "
        "or cut short) — restore it with `git checkout data/suite` or rebuild it with `metaprompt-lite data build` "
        "(see data/README.md)")


EMPTY_CSV = ("", "results/b2n.csv is empty — delete it and run `metaprompt-lite bench` again to write it afresh")
GLUED_CSV = (HEADER + "cocoop,emoji-nozsclip,fashion,1,2.0,1.0,1.3,0.5" + S + "\r\n",
             "results/b2n.csv line 2 has 17 fields, expected 16: 'cocoop,emoji-nozsclip,fashion,1,2.0,1.0,1.3,0.5,"
             "official,tiny-clip,random,2,16,0' — fix or delete that line in results/b2n.csv (`metaprompt-lite bench` "
             "re-runs missing rows)")


@pytest.mark.parametrize("text, message", [
    (HEADER + "zsclip,flags,1,2.0,1.0,1.3,0.5" + S + "\r\ncocoop,emoji-no",
     "results/b2n.csv ends in a cut line 'cocoop,emoji-no' (an interrupted write) — run the same `metaprompt-lite "
     "bench` command: it drops that line and runs its row again"),
    EMPTY_CSV,
    ("garbage\r\n", f"results/b2n.csv has the header 'garbage', expected '{HEADER.strip()}' — "
                    "is it another suite's file? Move it away and run `metaprompt-lite bench` again"),
    GLUED_CSV,
])
def test_report_refuses_a_damaged_csv_and_writes_nothing(clone, capsys, text, message):
    work, data = clone
    (work / "results").mkdir()
    (work / "results" / "b2n.csv").write_bytes(text.encode())
    (work / "results" / "README.md").write_text("the previous report")
    assert run_cli(["report"], capsys, work, data) == "error: " + message


@pytest.mark.parametrize("text, message", [
    EMPTY_CSV,
    GLUED_CSV,
])
def test_bench_refuses_a_damaged_csv_before_any_work(clone, capsys, text, message):
    work, data = clone
    (work / "results").mkdir()
    (work / "results" / "b2n.csv").write_bytes(text.encode())
    line = run_cli(["bench", "--suite", "b2n", "--methods", "zsclip", "--datasets", "flags-pixel", "--seeds", "1",
                    "--no-report", "--out-dir", "results", *TINY], capsys, work, data, only_line=False)
    assert line == "error: " + message


def test_ctrl_c_in_bench_names_the_rows_kept(clone, capsys, monkeypatch):
    work, data = clone
    calls, interrupt_at = [], [2]
    original = bench_module.run_base_to_new

    def interrupted_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == interrupt_at[0]:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(bench_module, "run_base_to_new", interrupted_second)
    argv = ["bench", "--suite", "b2n", "--methods", "zsclip", "--datasets", "cards", "--seeds", "1", "2",
            "--no-report", "--workers", "1", "--out-dir", "results", *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == ("interrupted: 1 rows kept in results/b2n.csv; run the same command "
                                            "to resume") and "Traceback" not in err
    assert sorted(p.name for p in (work / "results").iterdir()) == ["b2n.csv"]
    calls.clear()
    interrupt_at[0] = 1
    with pytest.raises(KeyboardInterrupt):  # --debug: the traceback
        main(["--debug", *argv])


def test_debug_shows_the_traceback(clone, monkeypatch):
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        main(["--debug", "train", "--dataset", "nope", *TINY])
    monkeypatch.setenv("METAPROMPT_LITE_DEBUG", "1")
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        main(["train", "--dataset", "nope", *TINY])


def test_damaged_run_checkpoint_and_a_pickle_payload_are_refused(clone, capsys, tmp_path):
    import torch

    work, data = clone
    argv = ["train", "--method", "coop", "--dataset", "cards", "--max-steps", "1", "--batch-size", "4", *TINY]
    assert main(argv) == 0
    capsys.readouterr()
    (checkpoint,) = (work / "runs").glob("*.pt")
    relative = Path("runs") / checkpoint.name
    fix = f"delete {relative} to start that run afresh"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    assert run_cli(argv, capsys, work, data, only_line=False) == (
        f"error: {relative} is cut short or not a checkpoint — {fix}")
    marker = tmp_path / "code-ran"
    torch.save({"prompts": Payload(marker)}, checkpoint)
    assert run_cli(argv, capsys, work, data, only_line=False) == (
        f"error: {relative} holds pickled code (exec), refused without running it: a checkpoint holds "
        f"tensors and plain values only — {fix}")
    checkpoint.write_bytes(pickle.dumps({"prompts": Payload(marker)}))  # a plain pickle, not torch's format
    assert run_cli(argv, capsys, work, data, only_line=False) == (
        f"error: {relative} is cut short or not a checkpoint — {fix}")
    assert not marker.exists()


def test_a_crafted_gram_artifact_is_refused_without_running_its_code(clone, capsys, tmp_path):
    import torch

    work, data = clone
    marker = tmp_path / "code-ran"
    path = data / "gram" / "tiny-clip-gram-coop.pt"
    torch.save({"init": Payload(marker)}, path)
    line = run_cli(["train", "--method", "gram-coop", "--dataset", "cards", "--max-steps", "1", "--out-dir", "",
                    *TINY], capsys, work, data, only_line=False)
    assert line == (f"error: {path} holds pickled code (exec), refused without running it: a checkpoint "
                    "holds tensors and plain values only — `git checkout data/gram` restores the committed ones, "
                    "`metaprompt-lite gram` meta-trains them again (it needs the corpus: `metaprompt-lite data build "
                    "--corpus`)")
    assert not marker.exists()
    pickle.loads(pickle.dumps(Payload(marker)))  # the payload is live: a plain unpickling runs it, and we would see it
    assert marker.exists()
