"""The path a reader follows through one ``train`` call: the package functions it enters, in order.

    python scripts/reading_path.py [--depth 2] [train arguments ...]

Runs ``metaprompt-lite train --method coop --dataset cards --max-steps 1`` (or the given arguments;
checkpoints go to a fresh temporary folder, so nothing resumes) in this process under ``sys.setprofile`` and lists every function of ``metaprompt_lite``
entered at most ``--depth`` package calls below ``cli._run_train``, at its first call (a reader
reads a function once). From that list it counts the stops and, per module, the visits: the number
of separate stretches of the list spent in that module (returning to a module already left is a new
visit). The README's reading order follows this list.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRAIN = ["train", "--method", "coop", "--dataset", "cards", "--max-steps", "1"]
PACKAGE = "metaprompt_lite"


def _name(frame) -> tuple[str, str] | None:
    """(module, qualified function) of a frame of the package, or None for any other code."""
    module = frame.f_globals.get("__name__", "")
    if not (module == PACKAGE or module.startswith(PACKAGE + ".")):
        return None
    return module.removeprefix(PACKAGE + "."), frame.f_code.co_qualname


def trace(argv: list[str], depth: int = 3) -> list[tuple[str, str, str]]:
    """The (module, function, caller's module) stops of ``metaprompt-lite ARGV`` below
    ``cli._run_train``, first calls only, to ``depth`` package frames below it."""
    from metaprompt_lite import cli

    stops: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()

    def level(frame) -> int | None:
        """Package frames between ``frame`` and cli._run_train (0 for _run_train), None outside it."""
        n = 0
        while frame is not None:
            if frame.f_code.co_name == "<module>":  # a module being imported (the command line imports late)
                return None
            name = _name(frame)
            if name == ("cli", "_run_train"):
                return n
            if name is not None and "<" not in name[1]:
                n += 1
            frame = frame.f_back
        return None

    def profile(frame, event, arg):
        if event != "call":
            return
        name = _name(frame)
        if name is None or "<" in name[1] or name in seen:  # comprehensions, lambdas, generated __init__: part of their caller
            return
        n = level(frame)
        if n is not None and n <= depth:
            caller = frame.f_back  # the nearest package function that is not generated code (a dataclass's __init__)
            while caller is not None and (_name(caller) is None or "<" in _name(caller)[1]):
                caller = caller.f_back
            seen.add(name)
            stops.append((*name, _name(caller)[0] if caller is not None else ""))

    with tempfile.TemporaryDirectory() as out_dir:
        argv = [*argv, "--out-dir", out_dir] if "--out-dir" not in argv else list(argv)
        sys.setprofile(profile)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                cli.main(argv)
        finally:
            sys.setprofile(None)
    return stops


def visits(stops: list[tuple[str, str, str]]) -> Counter:
    """Per module, the number of separate stretches of ``stops`` spent in it (a reader who comes
    back to a module after reading another, even to go on with a function begun there, opens it again)."""
    count: Counter = Counter()
    previous = None
    for module, _, _ in stops:
        if module != previous:
            count[module] += 1
        previous = module
    return count


def entries(stops: list[tuple[str, str, str]]) -> Counter:
    """Per module, the functions entered from another module's code: the calls that send a reader
    into the module (a call within the module, or a return to a caller, does not)."""
    return Counter(module for module, _, caller in stops if caller != module)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=2,
                        help="package calls below cli._run_train to follow (default: %(default)s: the functions "
                        "it calls and theirs)")
    parser.add_argument("train", nargs="*", help="the command's arguments (default: %(default)s)",
                        default=DEFAULT_TRAIN)
    args = parser.parse_args(argv)
    stops = trace(args.train, args.depth)
    for i, (module, function, caller) in enumerate(stops, 1):
        print(f"{i:3d}  {module}.{function}" + (f"   (from {caller})" if caller and caller != module else ""))
    count = visits(stops)
    print(f"\n{len(stops)} stops in {len(count)} modules")
    print("stretches per module:", ", ".join(f"{m} {n}" for m, n in count.most_common()))
    print("entries per module (calls from another module):",
          ", ".join(f"{m} {n}" for m, n in entries(stops).most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
