"""Deterministic fault injection: die by SIGKILL at a named point, for the crash-safety tests.

``METAPROMPT_LITE_FAULT=NAME`` (or ``NAME:K``) makes the K-th call (default 1st) of
``fault_point(NAME)`` in this process kill the process with SIGKILL, which no handler can catch, as
a power cut or the out-of-memory killer would. Unset (always, outside the tests), a point costs a
dictionary lookup. The named points:

- ``mid-row``: a run has trained but its row is not written yet;
- ``mid-append``: half of a results-CSV line is on disk, the rest is not;
- ``after-append``: a row is on disk, the next run has not started;
- ``mid-checkpoint``: a run checkpoint's temporary file is half written, not yet renamed;
- ``after-checkpoint``: a run checkpoint is in place, the run has not finished.
"""

from __future__ import annotations

import os
import signal

ENV = "METAPROMPT_LITE_FAULT"
_seen: dict[str, int] = {}


def armed(name: str) -> bool:
    """True when this call of ``name`` is the one ``METAPROMPT_LITE_FAULT`` asks to kill at (counts calls)."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    wanted, _, nth = spec.partition(":")
    if wanted != name:
        return False
    _seen[name] = _seen.get(name, 0) + 1
    return _seen[name] == int(nth or 1)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def fault_point(name: str) -> None:
    """SIGKILL this process here if ``METAPROMPT_LITE_FAULT`` names this point (and this call)."""
    if armed(name):
        die()
