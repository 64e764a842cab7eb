"""A benchmark worker that dies (SIGKILL, as the out-of-memory killer sends it) is an error within
seconds, not a hang: the other worker is stopped, the finished rows are kept, one line names the run
and the signal, exit code 2; the same command then resumes to the rows of an uninterrupted run. And
SIGTERM ends a benchmark like Ctrl-C: one 'interrupted' line, exit code 2, no leaked-semaphore warning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_fault_injection import _alive, _children, _gone_within

import metaprompt_lite.bench as bench_module
from metaprompt_lite import faults
from metaprompt_lite.results_table import B2N_COLUMNS, read_table

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc") or sys.platform != "linux", reason="reads /proc")
ROOT = Path(__file__).resolve().parents[1]
SLICE = ["bench", "--suite", "b2n", "--methods", "zsclip", "coop", "--datasets", "cards", "flags-pixel", "--seeds",
         "1", "2", "--max-steps", "40", "--model", "tiny-clip", "--pretrained", "none", "--no-report", "--workers", "2"]


def _start(out: Path, name: str) -> tuple[subprocess.Popen, Path, Path]:
    """The slice in its own process (and session), writing each worker's pid to a file."""
    pids, log = out.parent / f"{name}-workers.txt", out.parent / f"{name}-log.txt"
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{bench_module.WORKER_PIDS_ENV: str(pids)})
    env.pop(faults.ENV, None)
    process = subprocess.Popen([sys.executable, "-m", "metaprompt_lite", *SLICE, "--out-dir", str(out)], env=env,
                               stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    return process, pids, log


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [{k: v for k, v in row.items() if k != "train_s"}
            for row in read_table(path, B2N_COLUMNS, B2N_COLUMNS[:3]).rows]


def _first_row(process: subprocess.Popen, pids: Path, csv: Path, log: Path) -> list[int]:
    """Wait until both workers are up and a row is on disk; their pids."""
    deadline = time.monotonic() + 180
    while not (pids.is_file() and len(pids.read_text().split()) == 2 and _rows(csv)):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return [int(p) for p in pids.read_text().split()]


def _finish(out: Path, name: str) -> list[dict]:
    process, _, log = _start(out, name)
    assert process.wait(timeout=600) == 0, log.read_text()
    return _rows(out / "b2n.csv")


def test_a_killed_worker_is_an_error_within_seconds_and_the_resume_is_exact(tmp_path):
    out = tmp_path / "out"
    process, pids, log = _start(out, "killed")
    children = []
    try:
        victim, other = _first_row(process, pids, out / "b2n.csv", log)
        children = _children(process.pid)
        kept = _rows(out / "b2n.csv")
        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()
        assert process.wait(timeout=30) == 2, log.read_text()
        assert time.monotonic() - t0 < 30
        assert _gone_within([other], 5) == []
    finally:
        for pid in [process.pid, *children]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    last = log.read_text().replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith(f"error: a benchmark worker (pid {victim}) died by SIGKILL (signal 9) while running "), last
    assert last.endswith("the finished rows are kept — run the same command to resume (with fewer --workers if "
                         "memory is short)"), last
    after = _rows(out / "b2n.csv")
    assert len(after) < 8 and all(row in after for row in kept)  # cut short, and no finished row lost
    assert _finish(out, "resumed") == _finish(tmp_path / "whole", "whole")  # rows identical, in one order


def test_sigterm_ends_a_bench_like_ctrl_c(tmp_path):
    """SIGTERM used to end it silently, with a leaked-semaphore warning."""
    out = tmp_path / "out"
    process, pids, log = _start(out, "term")
    children = []
    try:
        _first_row(process, pids, out / "b2n.csv", log)
        children = _children(process.pid)
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=60) == 2
        assert _gone_within(children, 5) == []
    finally:
        for pid in [process.pid, *children]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    assert "Traceback" not in text and "leaked" not in text, text
    last = text.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("interrupted: ") and last.endswith(f"rows kept in {out / 'b2n.csv'}; run the same command "
                                                              "to resume"), last
