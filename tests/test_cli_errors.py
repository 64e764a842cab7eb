"""Every input the command line reads, damaged: one line `error: what — what to do`, exit code 2, and
nothing else on disk changed. Runs in-process on a clone-like folder (data/ linked to the real files)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

import metaprompt_lite.bench as bench_module
from metaprompt_lite.cli import main
from metaprompt_lite.paths import data_dir
from metaprompt_lite.results_table import B2N_COLUMNS

DATA = data_dir()
POCKET_FIX = ("restore it with `git checkout data/pocket-clip`, rebuild it with `metaprompt-lite pretrain`, or pass "
              "`--pretrained none` for random weights")
USER_FIX = ("check the path, pass a checkpoint `metaprompt-lite pretrain` wrote, leave out --pretrained for the committed "
            "pocket CLIP, or pass `--pretrained none` for random weights")  # a file the user passed: no `git checkout`
TINY = ["--model", "tiny-clip", "--pretrained", "none"]
RECORDED = json.loads((DATA / "pocket-clip" / "pocket-clip.json").read_text())["sha256"]  # the checkpoint's record
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


@pytest.mark.parametrize("kind", ["missing", "file", "empty"])
def test_a_bad_data_variable_is_named_with_its_fix(clone, capsys, tmp_path, monkeypatch, kind):
    """METAPROMPT_LITE_DATA naming no folder, a file, or an empty folder: before, each command said a
    committed file was missing and to `git checkout` it, never naming the variable."""
    work, _ = clone
    bad = tmp_path / "nowhere"
    if kind == "file":
        bad.write_text("not a folder")
    elif kind == "empty":
        bad.mkdir()
    problem = {"missing": "does not exist", "file": "is a file, not a folder",
               "empty": "holds neither suite/ nor pocket-clip/"}[kind]
    monkeypatch.setenv("METAPROMPT_LITE_DATA", str(bad))
    line = (f"error: METAPROMPT_LITE_DATA={bad} {problem} — point METAPROMPT_LITE_DATA at a data folder like the "
            "repository's data/ (with suite/ and pocket-clip/), or unset it")
    for command in (["zeroshot"], ["data", "list"], ["train", "--dataset", "cards", *TINY]):
        assert run_cli(command, capsys, work, tmp_path) == line
    assert kind != "missing" or not bad.exists()


def _checksum_line(path: Path, content: bytes) -> str:
    actual = hashlib.sha256(content).hexdigest()[:12]
    return (f"error: checksum mismatch for {path}: sha256 {actual}… but {path.with_suffix('.json')} records "
            f"{RECORDED[:12]}… (the file was changed or cut short) — ")


@pytest.mark.parametrize("cut", [0, 100, 5000])
def test_truncated_checkpoint_names_the_file_and_the_fix(clone, capsys, cut):
    """The committed checkpoint cut short fails its recorded sha256 (fix: `git checkout`); a copy the user
    passes, which has no record, is read and found cut short (fix: not `git checkout`)."""
    work, data = clone
    path = data / "pocket-clip" / "pocket-clip.safetensors"
    content = path.resolve().read_bytes()[:cut] if cut else b""
    damage(path, content)
    assert run_cli(["zeroshot", "--suite", "probe"], capsys, work, data) == _checksum_line(path, content) + POCKET_FIX
    copy = work / "copy.safetensors"
    copy.write_bytes(content)
    assert run_cli(["zeroshot", "--suite", "probe", "--pretrained", str(copy)], capsys, work, data) == (
        f"error: checkpoint {copy} is cut short or not a checkpoint — " + USER_FIX)


def test_explicit_missing_checkpoint_uses_the_cli_spelling(clone, capsys):
    work, data = clone
    assert run_cli(["zeroshot", "--pretrained", "nothing.safetensors"], capsys, work, data) == (
        "error: checkpoint file nothing.safetensors for model pocket-clip does not exist — " + USER_FIX)
    for command in (["zeroshot"], ["data", "headroom"]):  # every command that loads a model resolves it one way
        assert run_cli([*command, "--model", "tiny-clip"], capsys, work, data) == (
            "error: --model tiny-clip needs --pretrained — give an open_clip tag (e.g. openai), a checkpoint file, "
            "or none for random weights")
    assert run_cli(["data", "headroom", "--pretrained", "nothing.safetensors"], capsys, work, data) == (
        "error: checkpoint file nothing.safetensors for model pocket-clip does not exist — " + USER_FIX)


def test_unknown_dataset_and_method(clone, capsys):
    work, data = clone
    assert run_cli(["train", "--dataset", "nope", *TINY], capsys, work, data) == (
        "error: unknown dataset 'nope' — use one of emoji-objects, cards, fashion, emoji-novel-objects, "
        "emoji-novel-mixed, emoji-novel-animals, emoji-novel-food, emoji-novel-places, flags-pixel, emoji-pixel, "
        "emoji-pacs, flags-dg, emoji-unseen")
    assert run_cli(["train", "--dataset", "flags-pixel", "--method", "nope", *TINY], capsys, work, data) == (
        "error: unknown method 'nope' — use one of cocoop, coop, gram-coop, gram-ivlp, ivlp, maple, metaprompt, "
        "metaprompt-clean, prometar, prometar-base, prometar-netlr, zsclip, zsclip-bare, zsclip-ens")
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
    (HEADER, "results/b2n.csv holds the header but no rows — run `metaprompt-lite bench` to fill it, or delete it"),
    (HEADER + "coop,cards,1,0.5,100.5,0.99,0.5" + S + "\r\n",
     "results/b2n.csv line 2: new '100.5' is not an accuracy in % (0 to 100) — fix or delete that line in "
     "results/b2n.csv (`metaprompt-lite bench` re-runs missing rows)"),
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
    assert sorted(p.name for p in (work / "results").iterdir()) == ["b2n.csv", "bench_meta.json"]  # + its time
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


def usage_error(argv, capsys, *roots) -> str:
    """Parse ``argv``: a usage error exits 2 with one line on stderr and changes nothing on disk."""
    before = snapshot(*roots)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert snapshot(*roots) == before
    return err.strip()


TRAIN_CARDS = ["train", "--dataset", "cards", *TINY]
TRAIN_HELP = " — see `metaprompt-lite train --help`"


@pytest.mark.parametrize("argv, line", [
    ([*TRAIN_CARDS, "--lr", "0"], "error: argument --lr: must be a number > 0, got 0" + TRAIN_HELP),
    ([*TRAIN_CARDS, "--lr", "-0.01"], "error: argument --lr: must be a number > 0, got -0.01" + TRAIN_HELP),
    ([*TRAIN_CARDS, "--lr", "nan"], "error: argument --lr: 'nan' is not a finite number" + TRAIN_HELP),
    ([*TRAIN_CARDS, "--batch-size", "0"], "error: argument --batch-size: must be a whole number >= 1, got 0" + TRAIN_HELP),
    ([*TRAIN_CARDS, "--batch-size", "-1"],
     "error: argument --batch-size: must be a whole number >= 1, got -1" + TRAIN_HELP),
    ([*TRAIN_CARDS, "--epochs", "-1"], "error: argument --epochs: must be a whole number >= 1, got -1" + TRAIN_HELP),
    ([*TRAIN_CARDS, "--epochs", "0"], "error: argument --epochs: must be a whole number >= 1, got 0" + TRAIN_HELP),
    ([*TRAIN_CARDS, "--max-steps", "0"], "error: argument --max-steps: must be a whole number >= 1, got 0" + TRAIN_HELP),
    ([*TRAIN_CARDS, "--shots", "0"], "error: argument --shots: must be a whole number >= 1, got 0" + TRAIN_HELP),
    ([*TRAIN_CARDS, "--threads", "0"], "error: argument --threads: must be a whole number >= 1, got 0" + TRAIN_HELP),
    ([*TRAIN_CARDS, "--shots", "2.5"], "error: argument --shots: '2.5' is not a whole number" + TRAIN_HELP),
    (["bench", "--workers", "-1", *TINY],
     "error: argument --workers: must be a whole number >= 0, got -1 — see `metaprompt-lite bench --help`"),
    (["bench", "--max-steps", "0", *TINY],
     "error: argument --max-steps: must be a whole number >= 1, got 0 — see `metaprompt-lite bench --help`"),
    ([*TRAIN_CARDS, "--device", "foo"],
     "error: argument --device: unknown device 'foo' (use cpu, cuda or cuda:N)" + TRAIN_HELP),
    (["bench", "--device", "foo", *TINY],
     "error: argument --device: unknown device 'foo' (use cpu, cuda or cuda:N) — see `metaprompt-lite bench --help`"),
])
def test_bad_numbers_and_devices_are_usage_errors(clone, capsys, argv, line):
    """Before this, --lr 0 ended in a ZeroDivisionError in the scheduler, --shots 0 silently ran the preset's
    shots, --workers -1 and the other counts failed late or oddly."""
    work, data = clone
    assert usage_error(argv, capsys, work, data) == line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", [["train", "--dataset", "cards"], ["zeroshot"], ["bench"]])
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_a_usage_error(clone, capsys, command, device):
    work, data = clone
    assert usage_error([*command, *TINY, "--device", device], capsys, work, data) == (
        f"error: argument --device: {device!r} needs a CUDA GPU and this machine has none (or torch was built "
        "without CUDA) — use --device cpu")


@pytest.mark.parametrize("argv, line", [
    ([*TRAIN_CARDS, "--target", "photo"],
     "error: --target is for DG benchmarks; cards is a base-to-new dataset — drop --target photo, or use a DG "
     "benchmark (emoji-pacs, flags-dg)"),
    (["train", "--dataset", "emoji-pacs", "--target", "clipart", *TINY],
     "error: emoji-pacs has no domain 'clipart' — use --target with one of photo, art, cartoon, sketch"),
    ([*TRAIN_CARDS, "--shots", "9"],
     "error: --shots 9 is more than cards has: 8 images per base class in its train pool — use --shots 8 or fewer"),
    (["train", "--dataset", "emoji-pacs", "--target", "photo", "--shots", "5", *TINY],
     "error: --shots 5 is more than emoji-pacs has: 4 images per class and source domain — use --shots 4 or fewer"),
    (["bench", "--suite", "b2n", "--datasets", "emoji-pacs", *TINY],
     "error: emoji-pacs is a DG benchmark, not part of the b2n suite — use --suite dg (or all) for it, or one of "
     "emoji-objects, cards, fashion, emoji-novel-objects, emoji-novel-mixed, emoji-novel-animals, emoji-novel-food, "
     "emoji-novel-places, flags-pixel, emoji-pixel"),
    (["bench", "--suite", "dg", "--datasets", "flags-dg", "cards", *TINY],
     "error: cards is a base-to-new dataset, not part of the dg suite — use --suite b2n (or all) for it, or one of "
     "emoji-pacs, flags-dg"),
])
def test_arguments_that_do_not_fit_the_dataset_are_refused_before_any_work(clone, capsys, monkeypatch, argv, line):
    """A --target on a base-to-new dataset used to be ignored, and typed --shots above what a class has were
    capped without a word: both ran another run than the one asked for."""
    work, data = clone
    monkeypatch.setattr(bench_module, "bench", lambda config: pytest.fail("bench started"))
    assert run_cli(argv, capsys, work, data) == line


def test_shots_up_to_the_pool_run_and_the_preset_default_is_capped_silently(clone, capsys):
    work, data = clone
    for extra in (["--shots", "8"], []):  # the pool's 8, and the preset's 16 (capped at 8 by design)
        assert main([*TRAIN_CARDS, "--method", "coop", "--max-steps", "1", "--out-dir", "", *extra]) == 0
        err = capsys.readouterr().err
        assert "error" not in err and "shots" in err


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint", "is cut short or not a checkpoint"),
    (None, "holds no weights of an open_clip pocket-clip (none of its tensor names)"),
])
def test_a_file_that_is_not_a_model_checkpoint(clone, capsys, content, message):
    """Before, a file that is no checkpoint (or a safe but foreign one) gave open_clip's AssertionError or
    AttributeError traceback."""
    work, data = clone
    path = work / "tiny.pt"
    if content is None:
        torch.save({"a": 1}, path)
    else:
        path.write_bytes(content)
    assert run_cli(["zeroshot", "--pretrained", "tiny.pt"], capsys, work, data) == (
        f"error: checkpoint tiny.pt {message} — " + USER_FIX)
    torch.save([torch.zeros(2)], path)  # a list, not a dict: open_clip's AttributeError before
    assert run_cli(["zeroshot", "--pretrained", "tiny.pt"], capsys, work, data) == (
        "error: checkpoint tiny.pt is cut short or not a checkpoint — " + USER_FIX)


def test_a_corrupt_default_checkpoint_fails_its_recorded_sha256(clone, capsys):
    """1 MB of 0xFF in the middle of the committed checkpoint: the file still parses (every weight there
    becomes NaN), and is refused by its record before any weight is used."""
    work, data = clone
    path = data / "pocket-clip" / "pocket-clip.safetensors"
    content = bytearray(path.resolve().read_bytes())
    content[4 << 20 : 5 << 20] = b"\xff" * (1 << 20)
    damage(path, bytes(content))
    assert run_cli(["zeroshot", "--suite", "probe"], capsys, work, data) == (
        _checksum_line(path, bytes(content)) + POCKET_FIX)


def test_a_changed_user_checkpoint_with_a_record_is_refused_without_git_checkout(clone, capsys):
    work, data = clone
    copy = work / "mine.safetensors"
    content = bytearray((data / "pocket-clip" / "pocket-clip.safetensors").resolve().read_bytes())
    content[-10:] = b"\x00" * 10
    copy.write_bytes(bytes(content))
    (work / "mine.json").write_text(json.dumps({"sha256": RECORDED}))  # as `metaprompt-lite pretrain` writes it
    line = run_cli(["zeroshot", "--pretrained", "mine.safetensors"], capsys, work, data)
    assert line == (f"error: checksum mismatch for mine.safetensors: sha256 "
                    f"{hashlib.sha256(bytes(content)).hexdigest()[:12]}… but mine.json records {RECORDED[:12]}… (the "
                    "file was changed or cut short) — pass the file that mine.json describes (or delete that record "
                    "if you changed the file on purpose), or `--pretrained none` for random weights")
    assert "git checkout" not in line


def test_weights_with_nan_or_inf_are_refused(clone, capsys):
    from safetensors.torch import load_file, save_file

    work, data = clone
    state = load_file(str(data / "pocket-clip" / "pocket-clip.safetensors"))
    for value in (float("nan"), float("inf")):
        bad = dict(state)
        bad["text_projection"] = bad["text_projection"].clone()
        bad["text_projection"][0, 0] = value
        save_file(bad, str(work / "bad.safetensors"))
        assert run_cli(["zeroshot", "--pretrained", "bad.safetensors"], capsys, work, data) == (
            "error: checkpoint bad.safetensors holds NaN or Inf in 1 tensors (e.g. text_projection), a damaged or "
            "diverged checkpoint — pass another checkpoint, or `--pretrained none` for random weights")


@pytest.mark.parametrize("model, detail", [
    ("tiny-clip", "ln_final.bias is [192] there, [40] in tiny-clip"),
    ("ViT-B-16", "ln_final.bias is [192] there, [512] in ViT-B-16"),
])
def test_a_checkpoint_of_another_architecture_is_named_as_such(clone, capsys, model, detail):
    """Before: "cut short or not a checkpoint" (ViT-B-16) or open_clip's AssertionError (tiny-clip)."""
    work, data = clone
    path = data / "pocket-clip" / "pocket-clip.safetensors"
    assert run_cli(["zeroshot", "--model", model, "--pretrained", str(path)], capsys, work, data) == (
        f"error: checkpoint {path} holds weights for another architecture than {model} ({detail}) — pass the "
        "--model it was trained as")


def test_a_foreign_run_checkpoint_is_refused_by_name(clone, capsys):
    """A safe file of another kind where a run checkpoint belongs: a KeyError traceback before."""
    work, data = clone
    argv = ["train", "--method", "coop", "--dataset", "cards", "--max-steps", "1", "--batch-size", "4", *TINY]
    assert main(argv) == 0
    capsys.readouterr()
    (checkpoint,) = (work / "runs").glob("*.pt")
    torch.save({"a": 1}, checkpoint)
    relative = Path("runs") / checkpoint.name
    assert run_cli(argv, capsys, work, data, only_line=False) == (
        f"error: {relative} is not a run checkpoint (it lacks prompts, optimizer, scheduler, generator, torch_rng, "
        f"step, history) — delete {relative} to start that run afresh")


def test_a_foreign_gram_artifact_is_refused_by_name(clone, capsys):
    work, data = clone
    path = data / "gram" / "tiny-clip-gram-coop.pt"
    torch.save({"a": 1}, path)
    line = run_cli(["train", "--method", "gram-coop", "--dataset", "cards", "--max-steps", "1", "--out-dir", "",
                    *TINY], capsys, work, data, only_line=False)
    assert line == (f"error: {path} is not a GRAM artifact (it lacks init, regulator) — `git checkout data/gram` "
                    "restores the committed ones, `metaprompt-lite gram` meta-trains them again (it needs the corpus: "
                    "`metaprompt-lite data build --corpus`)")


def test_bench_refuses_an_unwritable_out_dir_before_training(clone, capsys, monkeypatch):
    work, data = clone
    monkeypatch.setattr(bench_module, "run_base_to_new", lambda *a, **k: pytest.fail("trained"))
    (work / "notes.txt").write_text("a file where a folder should be")
    argv = ["bench", "--suite", "b2n", "--methods", "coop", "--datasets", "cards", "--seeds", "1", "--no-report", *TINY]
    assert run_cli([*argv, "--out-dir", "notes.txt/results"], capsys, work, data) == (
        f"error: cannot write to --out-dir notes.txt/results: {work}/notes.txt is a file, not a folder — pass a folder")
    if os.geteuid() != 0:  # root writes anywhere: the permission case only for other users
        locked = work / "locked"
        locked.mkdir(mode=0o555)
        assert run_cli([*argv, "--out-dir", "locked/results"], capsys, work, data).startswith(
            f"error: cannot write to --out-dir locked/results: {locked} is not writable")


def test_ctrl_c_in_train_before_the_first_checkpoint_says_nothing_was_kept(clone, capsys, monkeypatch):
    """Ctrl-C at step 4 of a run that checkpoints every 50 steps: no checkpoint exists, and the line says
    so (it used to say the run's last checkpoint was kept), on its own line after the progress bar."""
    import metaprompt_lite.engine as engine

    work, data = clone
    original = engine.training_batch

    def interrupted_at_step_4(*args):
        if args[4] == 4:  # the step
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(engine, "training_batch", interrupted_at_step_4)
    assert main(["train", "--method", "coop", "--dataset", "cards", "--max-steps", "10", "--batch-size", "4",
                 *TINY]) == 2
    err = capsys.readouterr().err
    assert "train:" in err  # the bar was drawn
    assert err.splitlines()[-1] == ("interrupted at step 4: no checkpoint yet (one is written every 50 steps), "
                                    "nothing was kept; run the same command to start again")
    assert not list((work / "runs").glob("*.pt")) if (work / "runs").exists() else True


def test_a_resumed_train_reports_the_whole_runs_training_time(clone, capsys, monkeypatch):
    """The second call finds the finished checkpoint and trains no step: it used to print train_s of its own
    part (a few ms); the checkpoint now carries the seconds the run trained."""
    import time as clock

    import metaprompt_lite.engine as engine

    work, data = clone
    original = engine.training_batch
    monkeypatch.setattr(engine, "training_batch", lambda *a: (clock.sleep(0.1), original(*a))[1])
    argv = ["train", "--method", "coop", "--dataset", "cards", "--max-steps", "3", "--batch-size", "4", "--json", *TINY]
    seconds = []
    for _ in range(2):
        assert main(argv) == 0
        seconds.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["train_s"])
    assert seconds[0] >= 0.3 and seconds[1] == seconds[0]


def test_a_model_checkpoint_with_a_pickle_payload_is_refused_without_running_it(clone, capsys, tmp_path):
    work, data = clone
    marker = tmp_path / "code-ran"
    torch.save({"text_projection": Payload(marker)}, work / "payload.pt")
    assert run_cli(["zeroshot", "--pretrained", "payload.pt"], capsys, work, data) == (
        "error: checkpoint payload.pt holds pickled code (exec), refused without running it — " + USER_FIX)
    assert not marker.exists()


def test_train_leaves_the_thread_count_as_it_was(clone, capsys):
    """`train --threads 1` runs on one thread; called in-process, it must not leave the caller on one
    (a test after it would compute on one thread, and some exact comparisons depend on that)."""
    work, data = clone
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main([*TRAIN_CARDS, "--method", "coop", "--max-steps", "1", "--out-dir", ""]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
