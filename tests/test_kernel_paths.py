"""The float comparisons pass under every CPU kernel path this project meets, not only this machine's.

torch picks its vectorised kernels by the CPU (``torch.backends.cpu.get_cpu_capability()``: AVX512,
AVX2 or the scalar ``default``) and MKL its GEMM code likewise, and each rounds in its own order.
``ATEN_CPU_CAPABILITY`` and ``MKL_ENABLE_INSTRUCTIONS`` select a lower path on this machine, so one
machine exercises them all: each run below is a fresh process of the tests that compare two float
computations (tests/tolerances.py gives their bounds), under one path. The machine's own path is the
suite's own run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOAT_TESTS = ("test_step_references.py", "test_meta.py", "test_backbone.py", "test_prompts.py",
               "test_analysis.py", "test_zeroshot.py", "test_losses.py")
# the fast paths' exactness and reordering tests, without the ones that run the benchmark or the CLI
THROUGHPUT = "test_throughput.py"
THROUGHPUT_FLOAT = "shared_prefix or pooled_last_block or second_order_region or precomputed_stem or batch_cache"
PATHS = {
    "torch AVX2 kernels": {"ATEN_CPU_CAPABILITY": "avx2"},
    "torch scalar kernels": {"ATEN_CPU_CAPABILITY": "default"},
    "MKL AVX2 GEMMs": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}


def _pytest(env: dict, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=ROOT / "tests", env={**os.environ, **env}, capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("path", list(PATHS))
def test_float_comparisons_hold_under_another_kernel_path(path):
    env = PATHS[path]
    runs = [_pytest(env, *FLOAT_TESTS), _pytest(env, THROUGHPUT, "-k", THROUGHPUT_FLOAT)]
    for run in runs:
        tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-25:])
        assert run.returncode == 0, f"under {path} ({env}):\n{tail}"
        assert " passed" in run.stdout and " failed" not in run.stdout, tail
