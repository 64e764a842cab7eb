"""scripts/reading_path.py: the path a reader follows through one `train` call stays short (the
README's reading order). A run that sends the reader back into a module through a third call from
elsewhere, or past 30 functions, fails here."""

from conftest import import_script


def test_one_train_call_reads_in_at_most_30_stops_entering_each_module_at_most_twice(pocket):
    script = import_script("scripts/reading_path.py")
    stops = script.trace(script.DEFAULT_TRAIN, depth=2)
    names = [f"{module}.{function}" for module, function, _ in stops]
    assert names[0] == "cli._run_train"
    # the five functions of the README's reading order that this depth reaches are on the path
    assert {"run.run_base_to_new", "methods.preset", "methods.prompted_clip", "run._fit"} <= set(names)
    assert len(stops) <= 30, names
    entries = script.entries(stops)
    assert max(entries.values()) <= 2, entries


def test_entries_count_calls_from_other_modules_only():
    script = import_script("scripts/reading_path.py")
    stops = [("cli", "main", ""), ("run", "a", "cli"), ("run", "b", "run"), ("engine", "c", "run"),
             ("run", "d", "cli")]
    assert script.entries(stops) == {"run": 2, "engine": 1, "cli": 1}
    assert script.visits(stops) == {"cli": 1, "run": 2, "engine": 1}
