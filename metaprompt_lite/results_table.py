"""The benchmark's results files (``results/b2n.csv``, ``results/dg.csv``): append, validate, repair.

A results file is a small database that must not lie. Three rules keep it honest:

1. **A row is a complete line or nothing.** The first row arrives together with the header through a
   temporary file and ``os.replace``; every later row is one ``write`` of the whole line on an
   ``O_APPEND`` descriptor, then ``fsync``. A line that was cut anyway (the machine died inside that
   ``write``) is the only damage a crash can leave, and it is easy to see: the file does not end in a
   newline.
2. **Every reader validates.** Header, number of fields, types (``seed`` a non-negative integer, names
   non-empty, accuracies in % from 0 to 100, other numbers finite), no run twice. Anything else is a
   :class:`ResultsError` whose one-line message says what is wrong and what to do.
3. **Only the cut last line is repaired**, by the benchmark on start (:func:`prepare_resume`), with a
   warning that quotes the dropped fragment; its run is simply run again. ``report`` repairs nothing:
   it refuses a damaged file and marks a partial method × dataset × seed grid (:func:`missing_runs`).

Why CSV and not SQLite (which has atomic transactions and unique keys built in): the results are
committed to git and read by people, pandas and the notebooks; a CSV diffs line by line and the three
rules above give it the two properties that matter here (atomic rows, one row per run key).
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from metaprompt_lite import faults

# What made a row, besides its key (``run.row_settings``): a results file holds one setting per run
# key, and a resumed benchmark skips a row only when all of these match.
SETTING_COLUMNS = ("protocol", "model", "weights", "epochs", "batch_size", "lr", "shots", "max_steps", "code")
# the columns of each results file; the first three (B2N) or four (DG) are a row's run key
B2N_COLUMNS = ("method", "dataset", "seed", "base", "new", "hm", "train_s", *SETTING_COLUMNS)
DG_COLUMNS = ("method", "benchmark", "target", "seed", "acc", "train_s", *SETTING_COLUMNS)
ACCURACY_COLUMNS = ("base", "new", "hm", "acc")  # percentages: 0 <= x <= 100

TEXT_COLUMNS = ("method", "dataset", "benchmark", "target", "protocol", "model", "weights", "code")
INT_COLUMNS = ("seed", "epochs", "batch_size", "shots")
OPTIONAL_INT_COLUMNS = ("max_steps",)  # empty when not set
LINE_END = "\r\n"  # what csv.writer writes, and what the committed files use


class ResultsError(ValueError):
    """A results file is damaged or is not a results file: the message says what to do."""


@dataclass
class Table:
    """A validated results file: its rows as strings (as in the file), and the cut last line if any."""

    path: Path
    columns: tuple[str, ...]
    rows: list[dict[str, str]]
    partial: str | None = None  # the fragment after the last newline, when the last line was cut
    complete_bytes: int = 0  # length of the file up to and including its last newline


def _fix(path: Path) -> str:
    return f"fix or delete that line in {path} (`metaprompt-lite bench` re-runs missing rows)"


def _check_value(path: Path, line: int, column: str, value: str) -> None:
    if column in TEXT_COLUMNS:
        if not value.strip():
            raise ResultsError(f"{path} line {line}: empty {column} — {_fix(path)}")
    elif column in INT_COLUMNS or column in OPTIONAL_INT_COLUMNS:
        if column in OPTIONAL_INT_COLUMNS and value == "":
            return
        if not value.isdigit():
            raise ResultsError(f"{path} line {line}: {column} {value!r} is not a non-negative integer — {_fix(path)}")
    else:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ResultsError(f"{path} line {line}: {column} {value!r} is not a finite number — {_fix(path)}")
        if column in ACCURACY_COLUMNS and not 0 <= number <= 100:
            raise ResultsError(f"{path} line {line}: {column} {value!r} is not an accuracy in % (0 to 100) — "
                               f"{_fix(path)}")


def read_table(path: str | os.PathLike, columns: Sequence[str], key_columns: Sequence[str]) -> Table:
    """Read and validate ``path``; a cut last line is returned in ``Table.partial``, not as a row.
    Raises :class:`ResultsError` for anything else: unreadable, empty, wrong header, wrong number of
    fields, a bad value, a blank line, the same run key twice."""
    path, columns = Path(path), tuple(columns)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ResultsError(f"cannot read {path} ({error.strerror}) — check the path and its permissions") from error
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ResultsError(f"{path} is not a text file (byte {error.start} is not UTF-8) — move it away and run "
                           "`metaprompt-lite bench` again to write it afresh") from error
    end = text.rfind("\n") + 1
    complete, partial = text[:end], (text[end:] or None)
    if not complete:
        what = "is empty" if partial is None else f"holds no complete line, only {partial[:60]!r}"
        raise ResultsError(f"{path} {what} — delete it and run `metaprompt-lite bench` again to write it afresh")
    stray = complete.find("\r\r\n")  # e.g. a \r\n file saved again by an editor that adds \r: not blank lines
    if stray >= 0:
        raise ResultsError(f"{path} line {complete.count(chr(10), 0, stray) + 1} ends in \\r\\r\\n (a carriage return too "
                           f"many, as some editors and copies add) — make every line end in \\r\\n, e.g. `sed -i "
                           f"'s/\\r\\r$/\\r/' {path}`")
    reader = csv.reader(io.StringIO(complete, newline=""))
    header = next(reader)
    if tuple(header) != columns:
        raise ResultsError(f"{path} has the header {','.join(header)!r}, expected {','.join(columns)!r} — "
                           "is it another suite's file? Move it away and run `metaprompt-lite bench` again")
    rows, seen = [], {}
    for fields in reader:
        line = reader.line_num
        if not fields:
            raise ResultsError(f"{path} line {line} is blank — delete that line")
        if len(fields) != len(columns):
            raise ResultsError(f"{path} line {line} has {len(fields)} fields, expected {len(columns)}: "
                               f"{','.join(fields)[:80]!r} — {_fix(path)}")
        row = dict(zip(columns, fields))
        for column, value in row.items():
            _check_value(path, line, column, value)
        key = tuple(row[c] for c in key_columns)
        if key in seen:
            raise ResultsError(f"{path} line {line} repeats the run {','.join(key)} of line {seen[key]} — "
                               "delete one of the two lines")
        seen[key] = line
        rows.append(row)
    return Table(path, columns, rows, partial, len(complete.encode("utf-8")))


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def prepare_resume(path: str | os.PathLike, columns: Sequence[str], key_columns: Sequence[str],
                   warn: Callable[[str], None] = _warn) -> dict[tuple[str, ...], dict[str, str]]:
    """The rows already in ``path`` by run key (none if it does not exist), after validating it. A
    cut last line (a killed write) is dropped from the file, with a warning quoting it; its run is
    re-run."""
    path = Path(path)
    if not path.exists():
        return {}
    table = read_table(path, columns, key_columns)
    if table.partial is not None:
        with path.open("r+b") as f:
            f.truncate(table.complete_bytes)
            f.flush()
            os.fsync(f.fileno())
        warn(f"warning: {path} ended in a cut line (an interrupted write); dropped it: {table.partial!r}. "
             "Its run will be run again.")
    return {tuple(row[c] for c in key_columns): row for row in table.rows}


def cell(value) -> str:
    """A value as its CSV cell: floats with 4 decimals, everything else as ``str``."""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_row(row: dict, columns: Sequence[str]) -> str:
    """One CSV line: floats with 4 decimals, everything else as ``str``."""
    out = io.StringIO()
    csv.writer(out, lineterminator=LINE_END).writerow([cell(row[c]) for c in columns])
    return out.getvalue()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_row(path: str | os.PathLike, row: dict, columns: Sequence[str]) -> None:
    """Append one row as one complete line and force it to disk. A new file gets the header and the
    row at once (temporary file + ``os.replace``). Refuses to write after a cut last line (that
    would glue two rows into one): :func:`prepare_resume` drops it first."""
    path = Path(path)
    line = format_row(row, columns).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            f.write((",".join(columns) + LINE_END).encode("utf-8") + line)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        return
    fd = os.open(path, os.O_RDWR | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        if size and os.lseek(fd, size - 1, os.SEEK_SET) >= 0 and os.read(fd, 1) != b"\n":
            raise ResultsError(f"{path} ends in a cut line — run the same `metaprompt-lite bench` command: it "
                               "drops that line and runs its row again")
        if faults.armed("mid-append"):  # tests: the machine dies inside the write
            os.write(fd, line[: len(line) // 2])
            os.fsync(fd)
            faults.die()
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def count_rows(path: str | os.PathLike) -> int:
    """Complete data lines in ``path`` (0 if absent or unreadable): for the 'interrupted' message."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return 0
    return max(0, data.count(b"\n") - 1)


def missing_runs(rows: Sequence[dict], key_columns: Sequence[str]) -> list[tuple[str, ...]]:
    """The runs of the grid that ``rows`` lack. The grid: every method × every cell × every seed seen
    in ``rows``, where a cell is the key between method and seed (a dataset; a benchmark and target)."""
    keys = {tuple(str(r[c]) for c in key_columns) for r in rows}
    methods = {k[0] for k in keys}
    cells = {k[1:-1] for k in keys}
    seeds = {k[-1] for k in keys}
    grid = {(m, *c, s) for m in methods for c in cells for s in seeds}
    return sorted(grid - keys, key=lambda k: (k[0], k[1:-1], int(k[-1]) if k[-1].isdigit() else k[-1]))


def describe_missing(missing: Sequence[tuple[str, ...]]) -> str:
    """``coop: emoji-food s2, flags s1; maple: ...`` (one group per method)."""
    by_method: dict[str, list[str]] = {}
    for key in missing:
        by_method.setdefault(key[0], []).append(" ".join(key[1:-1]) + f" s{key[-1]}")
    return "; ".join(f"{m}: " + ", ".join(cells) for m, cells in by_method.items())


def setting_differences(expected: dict, row: dict[str, str]) -> list[str]:
    """``name: found → expected`` for every setting in which a row on disk differs from ``expected``
    (a run's :func:`run.row_settings`), compared as CSV cells."""
    return [f"{c} {row.get(c, '')!r} → {cell(expected[c])!r}" for c in SETTING_COLUMNS
            if c in expected and row.get(c, "") != cell(expected[c])]


# settings that every row of one results file shares: a table compares methods on one backbone and
# one protocol; the budget columns differ between methods by design. The code version is one per
# method: a method added later (e.g. a zero-shot prompt, which trains nothing) can join a finished
# file without re-running the others, and every average still comes from one version's rows.
FILE_SETTINGS = ("protocol", "model", "weights", "max_steps")
METHOD_SETTINGS = ("code",)
RUN_SETTINGS = ("epochs", "batch_size", "lr", "shots")


def check_settings(path: str | os.PathLike, rows: Sequence[dict], key_columns: Sequence[str]) -> None:
    """Refuse rows that must not be averaged together: two values of a :data:`FILE_SETTINGS` column in
    one file, of a :data:`METHOD_SETTINGS` column in one method's rows, or two budgets
    (:data:`RUN_SETTINGS`) for one method and dataset (DG: target) across seeds."""
    for column in FILE_SETTINGS:
        values = sorted({str(r[column]) for r in rows})
        if len(values) > 1:
            raise ResultsError(f"{path} mixes rows of {column} {' and '.join(repr(v) for v in values[:3])}, which "
                               "cannot be averaged together — keep one setting per results file (re-run the "
                               "others into another --out-dir)")
    for column in METHOD_SETTINGS:
        by_method: dict[str, set[str]] = {}
        for r in rows:
            by_method.setdefault(str(r["method"]), set()).add(str(r[column]))
        for method, values in by_method.items():
            if len(values) > 1:
                shown = " and ".join(repr(v) for v in sorted(values)[:3])
                raise ResultsError(f"{path} mixes {method} rows of {column} {shown}, which cannot be averaged "
                                   f"together — re-run every {method} row with one {column} (or into another "
                                   "--out-dir)")
    budgets: dict[tuple, tuple] = {}
    for r in rows:
        cell_key = tuple(str(r[c]) for c in key_columns[:-1])
        budget = tuple(str(r[c]) for c in RUN_SETTINGS)
        if budgets.setdefault(cell_key, budget) != budget:
            raise ResultsError(f"{path} holds two budgets for {' '.join(cell_key)} across seeds "
                               f"({dict(zip(RUN_SETTINGS, budgets[cell_key]))} and {dict(zip(RUN_SETTINGS, budget))}) "
                               "— keep one setting per results file (re-run the others into another --out-dir)")


def run_key(method: str, name: str, target: str | None, seed) -> tuple[str, ...]:
    """A run's key as its CSV cells: (method, dataset, seed), or (method, benchmark, target, seed)."""
    return (method, name, str(seed)) if target is None else (method, name, target, str(seed))


def sort_rows(path: str | os.PathLike, columns: Sequence[str], order: list[tuple]) -> None:
    """Rewrite ``path`` with its rows in the benchmark's fixed order (rows outside it keep their
    place at the end), atomically (temporary file, then ``os.replace``)."""
    key_columns = columns[:3] if "dataset" in columns else columns[:4]
    path = Path(path)
    rows = read_table(path, columns, key_columns).rows
    rank = {run_key(m, n, t, s): i for i, (m, n, t, s) in enumerate(order)}
    rows.sort(key=lambda r: rank.get(tuple(r[c] for c in key_columns), len(rank)))
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        f.write(",".join(columns) + LINE_END)
        f.writelines(format_row(row, columns) for row in rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
