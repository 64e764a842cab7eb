"""The path a reader follows through one ``train`` call: the package functions it enters, in order.

    python scripts/reading_path.py --method metaprompt     # one MetaPrompt step, to the loss
    python scripts/reading_path.py [--depth 2] [train arguments ...]

Runs ``metaprompt-lite train --method METHOD --dataset cards --max-steps 1`` (or the given arguments;
checkpoints go to a fresh temporary folder, so nothing resumes) in this process under
``sys.setprofile`` and lists every function of ``metaprompt_lite`` entered below ``cli._run_train``
(to ``--depth`` package calls; with ``--method``, at full depth), at its first call (a reader reads a
function once). From that list it counts, per module, the visits: the separate stretches of the list
spent in it. With ``--method`` it then splits the path into the maths (``metaprompt_lite.core``,
the training loop apart), the speed object the recipe hands the model (``fastpath``) and the
benchmark around them. The README's reading order follows this list.
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
# functions that only run the callable their caller hands them: the call is the caller's
PASS_THROUGH = {("core.clip", "memo")}


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
            while caller is not None and (_name(caller) is None or "<" in _name(caller)[1]
                                          or _name(caller) in PASS_THROUGH):
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


FULL_DEPTH = 10_000
LOOP = "core.loop"  # the training loop: in the core, but not the maths


def method_train(method: str) -> list[str]:
    """The ``train`` arguments of one step of ``method`` on the cards dataset."""
    return ["train", "--method", method, "--dataset", "cards", "--max-steps", "1"]


def layers(stops: list[tuple[str, str, str]]) -> dict[str, list[str]]:
    """The stops split into the maths (core modules but the loop), the loop, the speed object
    (``fastpath``) and the benchmark around them (every other module), in order of first visit."""
    out: dict[str, list[str]] = {"maths": [], "loop": [], "speed": [], "benchmark": []}
    for module, _, _ in stops:
        part = ("loop" if module == LOOP else "maths" if module.startswith("core.") else
                "speed" if module == "fastpath" else "benchmark")
        if module not in out[part]:
            out[part].append(module)
    return out


def maths_callers_outside(stops: list[tuple[str, str, str]]) -> list[str]:
    """Functions outside the core entered from the maths (core modules but the loop): only the speed
    object's methods may be, as the model's encoder."""
    return [f"{m}.{f}" for m, f, caller in stops
            if not m.startswith("core.") and caller.startswith("core.") and caller != LOOP]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=2,
                        help="package calls below cli._run_train to follow (default: %(default)s: the functions "
                        "it calls and theirs)")
    parser.add_argument("--method", help="trace one training step of this method at full depth, to the loss "
                        "(e.g. metaprompt)")
    parser.add_argument("train", nargs="*", help="the command's arguments (default: %(default)s)",
                        default=DEFAULT_TRAIN)
    args = parser.parse_args(argv)
    train = method_train(args.method) if args.method else args.train
    stops = trace(train, FULL_DEPTH if args.method else args.depth)
    for i, (module, function, caller) in enumerate(stops, 1):
        print(f"{i:3d}  {module}.{function}" + (f"   (from {caller})" if caller and caller != module else ""))
    count = visits(stops)
    print(f"\n{len(stops)} stops in {len(count)} modules")
    print("stretches per module:", ", ".join(f"{m} {n}" for m, n in count.most_common()))
    print("entries per module (calls from another module):",
          ", ".join(f"{m} {n}" for m, n in entries(stops).most_common()))
    if args.method:
        parts = layers(stops)
        print(f"\nthe maths: {len(parts['maths'])} core modules ({', '.join(parts['maths'])}), "
              f"beside the loop ({LOOP})")
        print(f"the speed object: {', '.join(parts['speed']) or 'none'}; entered from the maths: "
              f"{', '.join(maths_callers_outside(stops)) or 'nothing'}")
        print(f"the benchmark around them: {', '.join(parts['benchmark'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
