"""The benchmark's speed-ups change no result: the shared-prefix text pass equals the per-class pass,
a batch is a pure function of (data, seed, step), cached batches and frozen features equal fresh
ones, and the rows are the same with one worker process or two."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch.nn import functional as F

from conftest import import_script, state_hash, synthetic_dataset
from tolerances import assert_reorder_close, clip_terms
from metaprompt_lite.core.clip import Encoder, encode_image_layers, encode_text_layers
from metaprompt_lite.core.loop import Batch
from metaprompt_lite.optim import OptimConfig
from metaprompt_lite.engine import keyed_generator, train, training_batch
from metaprompt_lite.fastpath import FastEncoder, common_prefix_length, encode_text_shared_prefix
from metaprompt_lite.methods import get_method
from metaprompt_lite.core.prompts import PLACEHOLDER, PromptConfig, PromptedCLIP
from metaprompt_lite.methods import start_training

NAMES = ["cat", "dog", "red apple", "queen of hearts", "hot dog"]


def _perturbed(backbone, config: PromptConfig, names=NAMES) -> PromptedCLIP:
    torch.manual_seed(0)
    model = PromptedCLIP(backbone, config, names)
    with torch.no_grad():
        for p in model.prompts.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # prompts away from their init: every position matters
    return model


def _text_and_grads(model: PromptedCLIP, share: bool, image_features=None, monkeypatch=None):
    prompts = model.learner(image_features)
    if share:  # the shortcut must be taken, not fall back to the per-class pass
        import metaprompt_lite.core.clip as clip_module

        def refuse(*args, **kwargs):
            raise AssertionError("the per-class text pass ran although the prefix is shared")

        monkeypatch.setattr(clip_module, "encode_text_layers", refuse)
    features = model.text_features(prompts, encoder=FastEncoder() if share else Encoder())
    if share:
        monkeypatch.undo()
    weights = torch.linspace(-1, 1, features.numel()).view_as(features)
    params = [p for p in model.prompts.parameters()]
    grads = torch.autograd.grad((features * weights).sum(), params, allow_unused=True)
    return features.detach(), [g for g in grads if g is not None]


@pytest.mark.parametrize("config", [
    PromptConfig(n_ctx=4, ctx_init="a photo of a"),  # CoOp
    PromptConfig(n_ctx=2, ctx_init=None, text_depth=-1),  # deep text prompts (MetaPrompt, IVLP)
    PromptConfig(n_ctx=4, text_depth=3, n_vision=4, vision_depth=2, coupled=True),  # MaPLe
], ids=["shallow", "deep", "coupled"])
def test_shared_prefix_text_pass_equals_the_per_class_pass(backbone, config, monkeypatch):
    model = _perturbed(backbone, config)
    full, full_grads = _text_and_grads(model, share=False)
    shared, shared_grads = _text_and_grads(model, share=True, monkeypatch=monkeypatch)
    assert full.shape == shared.shape == (len(NAMES), backbone.embed_dim)
    # the same sums over the shared positions, taken as one row instead of one per class: equal up to
    # the order of the text tower's additions (tests/tolerances.py), forward and backward
    assert_reorder_close(shared, full, clip_terms(backbone, 1, ("text",)))
    for a, b in zip(shared_grads, full_grads, strict=True):
        assert_reorder_close(a, b, clip_terms(backbone, 2, ("text",)))


def test_shared_prefix_runs_one_prefix_per_image_for_cocoop(backbone, monkeypatch):
    model = _perturbed(backbone, PromptConfig(n_ctx=4, conditional=True))
    image_features = torch.randn(3, backbone.embed_dim)
    full, full_grads = _text_and_grads(model, False, image_features)
    shared, shared_grads = _text_and_grads(model, True, image_features, monkeypatch)
    assert shared.shape == (3, len(NAMES), backbone.embed_dim)
    assert_reorder_close(shared, full, clip_terms(backbone, 1, ("text",)))
    for a, b in zip(shared_grads, full_grads, strict=True):
        assert_reorder_close(a, b, clip_terms(backbone, 2, ("text",)))


def test_shared_prefix_covers_fixed_words_after_the_context(backbone):
    """[SOS] X X of a {name}: the shared positions run to the end of "of a", and the result still
    equals the per-class pass."""
    model = backbone.model
    tokens = backbone.tokenizer([f"{PLACEHOLDER} {PLACEHOLDER} of a {n}." for n in NAMES])
    assert common_prefix_length(tokens) == 5  # SOS, X, X, of, a
    torch.manual_seed(1)
    embeddings = model.token_embedding(tokens)
    prompts = [torch.randn(2, backbone.text_width) * 0.1 for _ in range(backbone.text_layers)]
    expected = encode_text_layers(model, tokens, embeddings, prompts)
    got = encode_text_shared_prefix(model, tokens, embeddings, prompts)
    assert_reorder_close(got, expected, clip_terms(backbone, 1, ("text",)))


def test_shared_prefix_declines_when_the_context_is_not_shared(backbone):
    """Prompts placed where the classes' tokens already differ cannot be shared: the caller gets None
    and runs the per-class pass."""
    tokens = backbone.tokenizer(["cat is here", "dog is here"])
    assert common_prefix_length(tokens) == 1  # only SOS
    embeddings = backbone.model.token_embedding(tokens)
    assert encode_text_shared_prefix(backbone.model, tokens, embeddings, [torch.zeros(2, backbone.text_width)]) is None


def test_common_prefix_stops_before_the_first_eot(backbone):
    tokens = backbone.tokenizer(["a photo of a cat.", "a photo of a cat."])  # identical rows
    assert common_prefix_length(tokens) == int(tokens[0].argmax())


def test_a_batch_is_a_pure_function_of_seed_and_step(dataset):
    images, labels, domains = dataset.images[:24], dataset.labels[:24], torch.zeros(24, dtype=torch.long)
    a = training_batch(images, labels, domains, seed=3, step=5, batch_size=8)
    torch.rand(100)  # the global stream does not matter
    b = training_batch(images, labels, domains, seed=3, step=5, batch_size=8)
    c = training_batch(images, labels, domains, seed=3, step=6, batch_size=8)
    d = training_batch(images, labels, domains, seed=4, step=5, batch_size=8)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images) and not torch.equal(a.images, d.images)
    # keyed generators are independent of each other and of the key's spelling order
    assert not torch.equal(torch.rand(4, generator=keyed_generator("augment", 3, 5)),
                           torch.rand(4, generator=keyed_generator("augment", 5, 3)))


def _run(backbone, dataset, name: str, cache: dict | None, seed: int = 2):
    index = (dataset.labels < 3).nonzero().flatten()
    method = get_method(name)
    torch.manual_seed(0)  # the same initial prompts in every run
    model = PromptedCLIP(backbone, method.prompt, dataset.classnames[:3], encoder=FastEncoder())
    optim = OptimConfig(lr=0.01, batch_size=4, warmup_epochs=0)
    state, step = start_training(model, method, optim, 5, 0, seed)
    seen = []

    def recording(state, batch: Batch):
        seen.append(batch.images.clone())
        return step(state, batch)

    train(state, recording, dataset.images[index], dataset.labels[index], None, optim, 5, progress=False,
          batch_cache=cache)
    return state, seen


def test_episodes_do_not_change_the_batches(backbone, dataset):
    """MetaPrompt draws episode splits from the run's generator; the batches are CoOp's all the same."""
    _, coop = _run(backbone, dataset, "coop", None)
    _, metaprompt = _run(backbone, dataset, "metaprompt", None)
    assert all(torch.equal(a, b) for a, b in zip(coop, metaprompt, strict=True))


@pytest.mark.parametrize("name", ["coop", "cocoop", "metaprompt", "prometar"])
def test_a_shared_batch_cache_changes_nothing(backbone, dataset, name):
    """Batches and frozen features filled in by another method's run give the same training, bit for
    bit, as a run that computes its own."""
    alone, _ = _run(backbone, dataset, name, None)
    cache: dict = {}
    _run(backbone, dataset, "coop", cache)  # fills the cache (with frozen features)
    assert cache and all({"frozen", "stem"} <= set(batch.store) for batch in cache.values())
    shared, _ = _run(backbone, dataset, name, cache)
    assert state_hash(shared.model.prompts) == state_hash(alone.model.prompts)
    assert [h["loss"] for h in shared.history] == [h["loss"] for h in alone.history]


def test_a_batch_cache_keeps_batch_sizes_apart(backbone, dataset):
    """Runs with another batch size share the cache dict but never each other's batches."""
    cache: dict = {}
    _run(backbone, dataset, "coop", cache)  # batch 4
    index = (dataset.labels < 3).nonzero().flatten()
    method = get_method("coop")
    torch.manual_seed(0)
    model = PromptedCLIP(backbone, method.prompt, dataset.classnames[:3])
    optim = OptimConfig(lr=0.01, batch_size=3, warmup_epochs=0)
    state, step = start_training(model, method, optim, 5, 0, 2)
    sizes = []
    train(state, lambda st, b: sizes.append(len(b.labels)) or step(st, b), dataset.images[index],
          dataset.labels[index], None, optim, 5, progress=False, batch_cache=cache)
    assert sizes == [3] * 5 and sorted({key[2] for key in cache}) == [3, 4]  # key: (seed, step, batch size, ...)


def test_frozen_text_features_are_computed_once_per_class_list(backbone):
    """The fast encoder's store keeps a class list's frozen text features for every model built on it;
    the plain encoder keeps nothing and computes the same bits again."""
    store: dict = {}
    templates = ["a photo of a {}.", "art of the {}."]
    model = PromptedCLIP(backbone, PromptConfig(), NAMES, templates, encoder=FastEncoder(store=store))
    first = model.frozen_text
    again = PromptedCLIP(backbone, PromptConfig(), NAMES, templates, encoder=FastEncoder(store=store))
    assert again.frozen_text is first and len(store) == 1  # served from the store
    plain = PromptedCLIP(backbone, PromptConfig(), NAMES, templates)
    assert plain.frozen_text is not first and torch.equal(plain.frozen_text, first)


def _loader(name):
    """Module-level, so that worker processes can unpickle it."""
    dataset = synthetic_dataset(seed={"syn-a": 0, "syn-b": 1}[name])
    dataset.name = name
    return dataset


def test_rows_do_not_depend_on_the_number_of_workers(tmp_path):
    from metaprompt_lite.bench import BenchConfig, bench

    rows, curves = {}, {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        path = bench(BenchConfig(suite="b2n", methods=("zsclip", "coop", "metaprompt", "prometar"),
                                 datasets=["syn-a", "syn-b"], seeds=(1, 2), model="tiny-clip", out_dir=str(out),
                                 progress=False, loader=_loader, workers=workers, max_steps=3))
        rows[workers] = [{k: v for k, v in r.items() if k != "train_s"} for r in csv.DictReader(path.open())]
        curves[workers] = {p.name: [{k: v for k, v in h.items() if k not in ("step_s", "train_s")}  # timings
                                    for h in json.loads(p.read_text())]
                           for p in (out / "curves").glob("*.json")}
    assert len(rows[1]) == 4 * 2 * 2
    assert [(r["dataset"], r["method"], r["seed"]) for r in rows[1]] == [
        (d, m, s) for d in ("syn-a", "syn-b") for m in ("zsclip", "coop", "metaprompt", "prometar") for s in "12"]
    assert rows[1] == rows[2]  # same rows, same order, same digits
    assert curves[1] == curves[2] and len(curves[1]) == 3 * 2 * 2


@pytest.mark.parametrize("which", ["backbone", "pocket"])
def test_a_precomputed_stem_gives_the_same_image_features(which, request):
    """The vision stem is frozen and comes before every prompt: a batch's stem computed once gives the
    frozen and the prompted image features of a fresh pass (the pocket CLIP's stem is convolutional)."""
    backbone = request.getfixturevalue(which)
    model = _perturbed(backbone, PromptConfig(n_ctx=2, ctx_init=None, text_depth=-1, n_vision=2, vision_depth=-1))
    torch.manual_seed(3)
    images = torch.randint(0, 256, (5, 3, backbone.image_size, backbone.image_size), dtype=torch.uint8)
    stem = model.image_stem(images)
    assert stem.shape[:2] == (5, backbone.vision_width) and not stem.requires_grad
    prompts = model.learner()
    pixels = backbone.preprocess(images)  # the reference: the encoder run from the pixels, its own stem inside
    reference = F.normalize(encode_image_layers(backbone.model, pixels, prompts.vision), dim=-1)
    # the same arithmetic, the stem's output kept instead of recomputed; the fast path may pool the
    # last block, so the bound is the image tower's reordering (tests/tolerances.py)
    terms = clip_terms(backbone, 1, ("image",))
    assert_reorder_close(model.image_features(images, prompts, stem=stem), reference, terms)
    assert_reorder_close(model.frozen_image_features(images, stem=stem), model.frozen_image_features(images), terms)
    subset = torch.tensor([4, 1])  # episodes index the batch's stem
    assert_reorder_close(model.image_features(images[subset], prompts, stem=stem[subset]), reference[subset], terms)


@pytest.mark.parametrize("method", ["coop", "ivlp"])
def test_train_runs_the_bench_preset_and_gives_the_bench_row(tmp_path, capsys, pocket, method):
    """`metaprompt-lite train` prints the preset it runs and gives the same numbers as the benchmark's
    row for that method, dataset and seed (both capped at 2 steps here): loading the backbone inside
    the run must not move the random draws that initialise the prompts (CoOp's context starts from
    words, IVLP's deep prompts at random)."""
    from metaprompt_lite.bench import BenchConfig, bench
    from metaprompt_lite.cli import main

    argv = ["train", "--method", method, "--dataset", "cards", "--seed", "1", "--max-steps", "2", "--json",
            "--out-dir", "", "--pretrained", pocket.pretrained]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert (f"preset: {method} on the pocket tier, b2n suite, official protocol (as `bench` runs it), overridden: "
            "max_steps") in captured.err
    assert "shots: 8 per class drawn (16 asked; the train pool has no more)" in captured.err  # cards: 8 a class
    trained = json.loads(captured.out.strip().splitlines()[-1])
    path = bench(BenchConfig(suite="b2n", methods=(method,), datasets=("cards",), seeds=(1,), model=pocket.name,
                             pretrained=pocket.pretrained, out_dir=str(tmp_path), progress=False, workers=1,
                             max_steps=2))
    row = next(csv.DictReader(path.open()))
    assert [f"{trained[k]:.4f}" for k in ("base", "new", "hm")] == [row["base"], row["new"], row["hm"]]


def test_the_official_side_by_side_gives_both_engines_the_official_budgets():
    """benchmarks/throughput_official.py hands the old engine each row's official budget, in fields the
    old OptimConfig has (it lacks only ``schedule``), and covers the slice the figure is quoted for."""
    from dataclasses import fields

    script = import_script("benchmarks/throughput_official.py")
    assert {"coop", "cocoop", "metaprompt", "prometar"} <= set(script.METHODS) and len(script.DATASETS) >= 2
    assert {f.name for f in fields(OptimConfig)} - set(script.OLD_OPTIM_FIELDS) == {"schedule"}
    plan = script.budgets()
    assert set(plan) == {f"{m}/{d}" for m in script.METHODS for d in script.DATASETS}
    # the papers' budgets (docs/methods.md, "Presets"): epochs and batch size of each official config
    official = {"coop": (200, 32), "cocoop": (10, 1), "metaprompt": (8, 16), "prometar": (10, 4)}
    for key, spec in plan.items():
        method = key.split("/")[0]
        assert (spec["optim"]["epochs"], spec["optim"]["batch_size"]) == official[method], key
        assert spec["optim"]["max_steps"] is None and spec["shots"] == 16
    assert {spec["optim"]["max_steps"] for spec in script.budgets(max_steps=3).values()} == {3}



def _encoder_outputs(model: PromptedCLIP, images: torch.Tensor, pool_last: bool, second_order: bool = False):
    """Frozen and prompted image features, text features and the prompts' gradients (first order, or
    second order by the encoder's second-order twin, inside ``double_backward_attention``), by a
    :class:`FastEncoder` with the last blocks pooled or full."""
    from metaprompt_lite.core.meta import double_backward_attention

    encoder = FastEncoder(pool_last=pool_last)
    encoder = encoder.second_order() if second_order else encoder
    params = list(model.prompts.parameters())
    with double_backward_attention(second_order):
        stem = model.image_stem(images)
        frozen = model.frozen_image_features(images, stem=stem, encoder=encoder)
        prompts = model.learner(frozen if model.config.conditional else None)
        image = model.image_features(images, prompts, stem=stem, encoder=encoder)
        text = model.text_features(prompts, encoder=encoder)
        loss = (image * torch.linspace(-1, 1, image.numel()).view_as(image)).sum() + \
            (text * torch.linspace(1, -1, text.numel()).view_as(text)).sum()
        grads = [g for g in torch.autograd.grad(loss, params, allow_unused=True, create_graph=second_order)
                 if g is not None]
        if second_order:
            grads = [g for g in torch.autograd.grad(sum((g * g).sum() for g in grads), params, allow_unused=True)
                     if g is not None]
    return [frozen, image.detach(), text.detach(), *grads]


def _count_pooled_blocks(monkeypatch) -> dict:
    """Count the last blocks run at pooled positions only (image: ``cls_block``; text: a prefix
    attention asked for pooled rows)."""
    import metaprompt_lite.fastpath as fastpath_module

    calls = {"image": 0, "text": 0}
    cls_block, prefix_attention = fastpath_module.cls_block, fastpath_module._prefix_attention

    def counted_cls_block(*args, **kwargs):
        calls["image"] += 1
        return cls_block(*args, **kwargs)

    def counted_prefix_attention(*args, **kwargs):
        calls["text"] += (len(args) > 4 and args[4] is not None) or kwargs.get("pooled") is not None
        return prefix_attention(*args, **kwargs)

    monkeypatch.setattr(fastpath_module, "cls_block", counted_cls_block)
    monkeypatch.setattr(fastpath_module, "_prefix_attention", counted_prefix_attention)
    return calls


def gemm_rows_independent(width: int, rows: int, tokens: int) -> bool:
    """Whether this machine's GEMM (the BLAS behind ``F.linear``, on one thread) gives ``rows`` rows
    picked one per ``tokens`` the same bits alone as inside the whole ``rows × tokens`` call, at the
    shapes of a block's output projection and MLP (D → D, D → 4D, 4D → D). That is the one condition
    under which a last block run on the pooled rows only is bit-exact: every other op of the block is
    row-wise. It holds for MKL on an AMD EPYC with AVX-512, and with MKL's AVX2 code there; an Intel
    Xeon with AMX gave the pooled block other bits, which this probe is there to detect (it was not
    run on such a machine)."""
    generator = torch.Generator().manual_seed(0)
    picked = torch.arange(rows) * tokens
    for fan_in, fan_out in ((width, width), (width, 4 * width), (4 * width, width)):
        x = torch.randn(rows * tokens, fan_in, generator=generator)
        weight, bias = torch.randn(fan_out, fan_in, generator=generator), torch.randn(fan_out, generator=generator)
        if not torch.equal(F.linear(x, weight, bias)[picked], F.linear(x[picked], weight, bias)):
            return False
    return True


@pytest.mark.parametrize("method", ["coop", "cocoop", "ivlp", "maple", "metaprompt"])
@pytest.mark.parametrize("classes,batch", [(5, 4), (6, 16), (3, 1)], ids=["5-classes-4-images", "6-16", "3-1"])
def test_the_pooled_last_block_gives_the_same_bits(backbone, monkeypatch, method, classes, batch):
    """The last block run at the pooled positions only (EOT, CLS) gives the features and gradients of
    the full block bit for bit, on one thread as the benchmark's workers run, wherever the GEMM's rows
    do not depend on the other rows of the call (:func:`gemm_rows_independent`); elsewhere they agree
    up to the order of the towers' additions (tests/tolerances.py). Passes over fewer than
    MIN_POOLED_ROWS rows run the full block."""
    from metaprompt_lite.fastpath import MIN_POOLED_ROWS

    torch.set_num_threads(1)  # the benchmark's arithmetic (the autouse fixture restores the count)
    torch.manual_seed(0)
    model = PromptedCLIP(backbone, get_method(method).prompt, (NAMES + ["owl"])[:classes])
    with torch.no_grad():
        for p in model.prompts.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    images = synthetic_dataset().images[:batch]
    full = _encoder_outputs(model, images, pool_last=False)
    calls = _count_pooled_blocks(monkeypatch)
    pooled = _encoder_outputs(model, images, pool_last=True)
    assert len(pooled) == len(full) > 3
    text_rows = classes * (batch if method == "cocoop" else 1)
    # exact where no block is pooled (the same code runs) or where the GEMM's rows are independent
    exact = ((text_rows < MIN_POOLED_ROWS
              or gemm_rows_independent(backbone.text_width, text_rows, backbone.model.context_length))
             and (batch < MIN_POOLED_ROWS
                  or gemm_rows_independent(backbone.vision_width, batch,
                                           backbone.model.visual.positional_embedding.shape[0])))
    for a, b in zip(pooled, full, strict=True):
        if exact:
            assert torch.equal(a, b)
        else:
            assert_reorder_close(a, b, clip_terms(backbone, 2))
    assert calls["text"] == (text_rows >= MIN_POOLED_ROWS)
    image_passes = 2  # the frozen pass, and the prompted one (the frozen encoder again without vision prompts)
    assert calls["image"] == (image_passes if batch >= MIN_POOLED_ROWS else 0)


def test_the_second_order_twin_runs_the_full_last_block(backbone, monkeypatch):
    """Second derivatives through a pooled block round differently, so the fast encoder's
    ``second_order()`` twin pools no block, and second-order gradients keep their bits."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = PromptedCLIP(backbone, get_method("ivlp").prompt, NAMES)
    images = synthetic_dataset().images[:8]
    full = _encoder_outputs(model, images, pool_last=False, second_order=True)
    calls = _count_pooled_blocks(monkeypatch)
    pooled = _encoder_outputs(model, images, pool_last=True, second_order=True)
    assert calls == {"image": 0, "text": 0}
    for a, b in zip(pooled, full, strict=True):
        assert torch.equal(a, b)
    _encoder_outputs(model, images, pool_last=True)  # the first-order encoder pools again
    assert calls == {"image": 2, "text": 1}


def test_the_throughput_scripts_key_bench_rows_by_their_identifying_columns(tmp_path):
    script = import_script("benchmarks/throughput.py")
    b2n, dg = tmp_path / "b2n.csv", tmp_path / "dg.csv"
    b2n.write_text("method,dataset,seed,base,new,hm,train_s\ncoop,cards,1,50,40,44.4,3.5\n")
    dg.write_text("method,benchmark,target,seed,acc,train_s\nmaple,emoji-pacs,art,2,41.2,7.0\n")
    assert [(k, r["hm"]) for k, r in script.bench_rows(b2n)] == [("coop/cards/1", "44.4")]
    assert [(k, r["acc"]) for k, r in script.bench_rows(dg)] == [("maple/emoji-pacs/art/2", "41.2")]
    (tmp_path / "curves").mkdir()
    (tmp_path / "curves" / "a.json").write_text('[{"step": 1}, {"step": 2}]')
    (tmp_path / "curves" / "b.json").write_text('[{"step": 1}]')
    assert script.curve_steps(tmp_path) == 3
