"""SIGKILL a small `bench` slice at named points (mid-row, mid-append, after-append, mid-checkpoint,
after-checkpoint), resume each time, and get the CSV of an uninterrupted run, row for row.

Each bench runs in a forked child process (the parent has already imported torch, so a child starts in
milliseconds) that ``metaprompt_lite.faults`` kills with SIGKILL at the point ``METAPROMPT_LITE_FAULT``
names: no handler runs, as after a power cut or the out-of-memory killer.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback

import pytest
import torch

import metaprompt_lite.bench as bench_module
import metaprompt_lite.run as run_module
from metaprompt_lite import faults
from metaprompt_lite.cli import main
from metaprompt_lite.data import load_dataset
from metaprompt_lite.engine import OptimConfig
from metaprompt_lite.methods import get_method
from metaprompt_lite.results_table import read_table

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _fast_preset(name, tier="pocket", suite="b2n", protocol="official", dataset=""):
    return get_method(name), OptimConfig(lr=0.01, batch_size=4, max_steps=2, warmup_epochs=0), 2


def _bench(out, fault: str | None, log) -> int:
    """Run the slice in a child process with ``fault`` armed; returns its wait status."""
    argv = ["bench", "--suite", "b2n", "--methods", "zsclip", "coop", "--datasets", "cards", "--seeds", "1", "2",
            "--model", "tiny-clip", "--pretrained", "none", "--out-dir", str(out), "--no-report",
            "--checkpoint-dir", str(out / "runs"), "--workers", "1"]
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 3
        try:
            sys.stdout = sys.stderr = open(log, "a", buffering=1)  # pytest's capture is not fd 1/2 here
            if fault:
                os.environ[faults.ENV] = fault
            else:
                os.environ.pop(faults.ENV, None)
            faults._seen.clear()
            torch.set_num_threads(1)
            torch.manual_seed(0)  # the tiny CLIP's random weights: the same in every process
            code = main(argv)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def _rows(path):
    table = read_table(path, bench_module.B2N_COLUMNS, bench_module.B2N_COLUMNS[:3])
    return [{k: v for k, v in row.items() if k != "train_s"} for row in table.rows], table.partial


def test_sigkill_at_five_points_then_resume_gives_the_uninterrupted_csv(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_module, "preset", _fast_preset)
    monkeypatch.setattr(run_module, "preset", _fast_preset)  # bench's runs come from run.preset_run
    load_dataset("cards")  # cached before the forks: every child starts with it
    log = tmp_path / "log.txt"
    reference = tmp_path / "reference"
    assert _bench(reference, None, log) == 0, log.read_text()
    expected, _ = _rows(reference / "b2n.csv")
    assert [(r["method"], r["seed"]) for r in expected] == [("zsclip", "1"), ("zsclip", "2"), ("coop", "1"), ("coop", "2")]

    out = tmp_path / "killed"
    csv = out / "b2n.csv"
    runs = out / "runs"
    # (fault, rows on disk afterwards, a cut last line afterwards?) -- the runs go largest first: coop
    # s1, coop s2, zsclip s1, zsclip s2 (the file is put in the fixed order at the end)
    order = [expected[2], expected[3], expected[0], expected[1]]
    steps = [
        ("mid-checkpoint:1", 0, False),  # coop s1 trained, its checkpoint half written, not renamed
        ("after-checkpoint:1", 0, False),  # coop s1 trained afresh, its checkpoint in place, no row
        ("mid-row:1", 0, False),  # coop s1 resumed from its checkpoint and evaluated, never written
        ("after-append:1", 1, False),  # coop s1 written (a new file: header and row at once)
        ("mid-append:1", 1, True),  # coop s2 trained, half its line on disk
        ("after-append:1", 2, False),  # the cut line dropped, coop s2 written
        ("mid-append:1", 2, True),  # zsclip s1 evaluated, half its line on disk
        ("mid-row:2", 3, False),  # the cut line dropped, zsclip s1 written; zsclip s2 evaluated, never written
    ]
    for fault, n_rows, cut in steps:
        status = _bench(out, fault, log)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (fault, log.read_text())
        rows, partial = _rows(csv) if csv.exists() else ([], None)
        assert (len(rows), partial is not None) == (n_rows, cut), fault
        assert rows == order[:n_rows], fault
        if fault == "mid-checkpoint:1":
            assert list(runs.glob("*.tmp")) and not list(runs.glob("*.pt"))  # the half-written temp only
        if fault == "after-checkpoint:1":
            assert len(list(runs.glob("*.pt"))) == 1
    assert _bench(out, None, log) == 0, log.read_text()
    rows, partial = _rows(csv)
    assert rows == expected and partial is None
    text = log.read_text()
    assert text.count("ended in a cut line (an interrupted write); dropped it: 'zsclip,cards,1,") == 1
    assert text.count("ended in a cut line (an interrupted write); dropped it: 'coop,cards,2,") == 1
    assert sorted(p.name for p in (out / "curves").iterdir()) == sorted(p.name for p in (reference / "curves").iterdir())
