"""SIGKILL a small `bench` slice at named points (mid-row, mid-append, after-append, mid-checkpoint,
after-checkpoint), resume each time, and get the CSV of an uninterrupted run, row for row.

Each bench runs in a forked child process (the parent has already imported torch, so a child starts in
milliseconds) that ``metaprompt_lite.faults`` kills with SIGKILL at the point ``METAPROMPT_LITE_FAULT``
names: no handler runs, as after a power cut or the out-of-memory killer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch

import metaprompt_lite.bench as bench_module
import metaprompt_lite.checkpoints as checkpoints
import metaprompt_lite.engine as engine
import metaprompt_lite.run as run_module
from metaprompt_lite import faults
from metaprompt_lite.cli import main
from metaprompt_lite.data import load_dataset
from metaprompt_lite.optim import OptimConfig
from metaprompt_lite.methods import get_method
from metaprompt_lite.results_table import read_table

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
ROOT = Path(__file__).resolve().parents[1]


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


def _preset_of(steps: int):
    def fast_preset(name, tier="pocket", suite="b2n", protocol="official", dataset=""):
        return get_method(name), OptimConfig(lr=0.01, batch_size=4, max_steps=steps, warmup_epochs=0), 2
    return fast_preset


def test_a_kill_after_a_mid_run_checkpoint_resumes_that_run_to_the_uninterrupted_row(tmp_path, monkeypatch):
    """coop trains 6 steps with a checkpoint every 2; SIGKILL right after its first checkpoint (step 2).
    The resumed benchmark, on its ordinary path, starts that run at step 2 (not afresh) and ends with the
    uninterrupted benchmark's rows. Each call of the training loop logs the step it starts from."""
    monkeypatch.setattr(bench_module, "preset", _preset_of(6))
    monkeypatch.setattr(run_module, "preset", _preset_of(6))
    every_two = lambda *args, **fields: run_module.preset_run(*args, **fields, checkpoint_every=2)  # noqa: E731
    monkeypatch.setattr(bench_module, "preset_run", every_two)
    starts = tmp_path / "starts.txt"

    def logged_train(state, *args, **kwargs):
        with open(starts, "a") as f:
            f.write(f"{state.step}\n")
        return engine.train(state, *args, **kwargs)

    monkeypatch.setattr(run_module, "train", logged_train)
    load_dataset("cards")
    log = tmp_path / "log.txt"
    reference = tmp_path / "reference"
    assert _bench(reference, None, log) == 0, log.read_text()
    expected, _ = _rows(reference / "b2n.csv")
    starts.unlink()

    out = tmp_path / "killed"
    status = _bench(out, "after-checkpoint:1", log)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, log.read_text()
    (checkpoint,) = (out / "runs").glob("coop-cards-b2n-s1-*.pt")
    assert checkpoints.load_checkpoint(checkpoint)["step"] == 2  # a mid-run checkpoint of 6 steps
    assert starts.read_text().split() == ["0"]
    starts.unlink()
    assert _bench(out, None, log) == 0, log.read_text()
    assert starts.read_text().split() == ["2", "0"]  # coop s1 resumed at step 2, coop s2 from the start
    rows, partial = _rows(out / "b2n.csv")
    assert rows == expected and partial is None


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    """Running or sleeping (a zombie is dead: it only waits for its new parent to reap it)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start_bench(tmp_path, name: str) -> tuple[subprocess.Popen, Path, Path]:
    """A 2-worker bench in its own process group (as from a terminal), with SIGINT handled as Python does
    by default even if this test runs with SIGINT ignored; returns it once both workers are set up."""
    pids, log = tmp_path / f"{name}-workers.txt", tmp_path / f"{name}-log.txt"
    # CoCoOp's paper preset trains batch 1 for 10 epochs: each worker's group runs for minutes
    argv = ["bench", "--suite", "b2n", "--tier", "paper", "--methods", "cocoop", "--datasets", "cards", "--seeds",
            "1", "2", "--model", "tiny-clip", "--pretrained", "none", "--out-dir", str(tmp_path / "out"),
            "--no-report", "--workers", "2"]
    code = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            f"sys.argv = ['metaprompt-lite', *{argv!r}]; runpy.run_module('metaprompt_lite', run_name='__main__')")
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{bench_module.WORKER_PIDS_ENV: str(pids)})
    env.pop(faults.ENV, None)
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while not (pids.is_file() and len(pids.read_text().split()) == 2):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    time.sleep(3)  # the workers load their backbone and start training
    return process, pids, log


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@pytest.mark.skipif(not os.path.isdir("/proc") or sys.platform != "linux", reason="reads /proc")
def test_workers_die_with_a_killed_bench_and_ctrl_c_is_quiet(tmp_path):
    """SIGKILL of the benchmark process (no handler runs): its workers and the resource tracker must not
    run on as orphans (they used to, for about a minute). Ctrl-C (SIGINT to the whole process group, as a
    terminal sends it): one 'interrupted' line, no worker traceback, no leaked-semaphore warning."""
    process, pids, log = _start_bench(tmp_path, "kill")
    workers = [int(p) for p in pids.read_text().split()]
    children = _children(process.pid)
    assert set(workers) <= set(children)
    try:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        assert _gone_within(children, 5) == [], log.read_text()
    finally:
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    process, pids, log = _start_bench(tmp_path, "interrupt")
    children = _children(process.pid)
    try:
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) == 2
        assert _gone_within(children, 5) == []
    finally:
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    assert "Traceback" not in text and "SpawnPoolWorker" not in text and "leaked" not in text, text
    assert text.replace("\r", "\n").strip().splitlines()[-1].startswith("interrupted: "), text


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_without_prctl_a_worker_polls_for_its_parent_and_ends_with_it(tmp_path, monkeypatch):
    """The fallback where the kernel cannot be asked (not Linux): a thread polls os.getppid()."""
    monkeypatch.setattr(sys, "platform", "darwin")
    armed = tmp_path / "armed"
    middle = os.fork()
    if middle == 0:  # the "benchmark process": starts a "worker", then dies
        worker = os.fork()
        if worker == 0:
            try:
                bench_module._die_with_parent(os.getppid())
                armed.write_text(str(os.getpid()))
                time.sleep(60)
            finally:
                os._exit(0)
        while not armed.exists():
            time.sleep(0.05)
        os._exit(0)
    os.waitpid(middle, 0)
    worker = int(armed.read_text())
    try:
        assert _gone_within([worker], 5) == []
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)
