"""scripts/reading_path.py: the path a reader follows through one `train` call stays short (the
README's reading order), and one MetaPrompt step, traced at full depth, keeps its maths inside the
core: at most 5 core modules besides the loop, in the order of the paper's algorithm, leaving the
core only through the encoder object the recipe hands the model."""

from conftest import import_script

METAPROMPT_ORDER = [  # the paper's algorithm, as the trace meets it
    "core.loop.train",
    "core.steps.metaprompt_step",
    "core.steps.supervised_step",  # 1. the in-domain step ...
    "core.prompts.PromptedCLIP.text_features",
    "core.losses.asymmetric_contrastive_loss",  # ... on the asymmetric loss
    "core.steps.domain_split",  # 2. the domain-split meta step: episodes ...
    "core.meta.cross_class_episodes",
    "core.meta.official_quirks_meta_update",  # ... and the update, as the official code runs it
    "core.losses.cross_entropy",
]


def test_one_train_call_reads_in_at_most_30_stops_entering_each_module_at_most_twice(pocket):
    script = import_script("scripts/reading_path.py")
    stops = script.trace(script.DEFAULT_TRAIN, depth=2)
    names = [f"{module}.{function}" for module, function, _ in stops]
    assert names[0] == "cli._run_train"
    assert {"run.run_base_to_new", "methods.preset", "methods.prompted_clip", "run._fit"} <= set(names)
    assert len(stops) <= 30, names
    entries = script.entries(stops)
    assert max(entries.values()) <= 2, entries


def test_one_metaprompt_step_keeps_its_maths_in_at_most_5_core_modules(pocket):
    script = import_script("scripts/reading_path.py")
    stops = script.trace(script.method_train("metaprompt"), depth=script.FULL_DEPTH)
    names = [f"{module}.{function}" for module, function, _ in stops]
    positions = [names.index(name) for name in METAPROMPT_ORDER]  # each on the path ...
    assert positions == sorted(positions), [n for _, n in sorted(zip(positions, METAPROMPT_ORDER))]  # ... in order
    parts = script.layers(stops)
    assert set(parts["maths"]) == {"core.steps", "core.meta", "core.prompts", "core.clip", "core.losses"}
    assert parts["loop"] == ["core.loop"] and parts["speed"] == ["fastpath"]
    assert set(script.maths_callers_outside(stops)) == {"fastpath.FastEncoder.text", "fastpath.FastEncoder.image"}


def test_entries_count_calls_from_other_modules_only():
    script = import_script("scripts/reading_path.py")
    stops = [("cli", "main", ""), ("run", "a", "cli"), ("run", "b", "run"), ("engine", "c", "run"),
             ("run", "d", "cli")]
    assert script.entries(stops) == {"run": 2, "engine": 1, "cli": 1}
    assert script.visits(stops) == {"cli": 1, "run": 2, "engine": 1}


def test_the_layers_split_the_maths_from_the_speed_object_and_the_benchmark():
    script = import_script("scripts/reading_path.py")
    stops = [("core.loop", "train", "engine"), ("core.steps", "s", "core.loop"), ("fastpath", "FastEncoder.text",
             "core.prompts"), ("engine", "training_batch", "core.steps"), ("run", "r", "cli")]
    assert script.layers(stops) == {"maths": ["core.steps"], "loop": ["core.loop"], "speed": ["fastpath"],
                                    "benchmark": ["engine", "run"]}
    assert script.maths_callers_outside(stops) == ["fastpath.FastEncoder.text", "engine.training_batch"]
