"""How long the command line takes to answer without doing any work: `--help` and argument errors.

They load no torch (the command line imports each command's modules when it runs), so they should
answer well under the 1.5 s goal; before, every argument error took 5-6 s. Prints the median and the
slowest of a few runs of each command, wall time of the whole process as a user sees it. A shared
machine adds its load to these times: run it on an idle one to compare with the goal.

    python benchmarks/cli_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

GOAL_S = 1.5
COMMANDS = (
    ["train", "--lr", "0"],
    ["train", "--dataset", "cards", "--lr", "0"],
    ["bench", "--seeds"],
    ["--help"],
    ["train", "--help"],
    ["pretrain", "--help"],
)


def command_line() -> list[str]:
    """The installed ``metaprompt-lite`` script, else ``python -m metaprompt_lite``."""
    script = shutil.which("metaprompt-lite")
    return [script] if script else [sys.executable, "-m", "metaprompt_lite"]


def seconds(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([*command_line(), *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    print(f"{' '.join(command_line())}: median and slowest of {runs} runs (goal: under {GOAL_S} s)")
    worst = 0.0
    for argv in COMMANDS:
        times = [seconds(argv) for _ in range(runs)]
        worst = max(worst, statistics.median(times))
        print(f"  {' '.join(argv):<40} {statistics.median(times):.2f} s  (slowest {max(times):.2f} s)")
    print(f"slowest median {worst:.2f} s: {'within' if worst < GOAL_S else 'above'} the goal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
