"""Engine: splits, sampling, metrics, schedule, determinism, resume, bad input."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import pytest
import torch

from conftest import is_share_of
from metaprompt_lite.checkpoints import RUN_CHECKPOINT_KEYS, CheckpointError, load_checkpoint, resume, run_state, save_checkpoint
from metaprompt_lite.core.loop import TrainState, make_generator
from metaprompt_lite.optim import OptimConfig, build_optimizer, build_scheduler
from metaprompt_lite.engine import TrainingInterrupted, accuracy, augment, harmonic_mean, train
from metaprompt_lite.methods import get_method
from metaprompt_lite.core.prompts import PromptedCLIP
from metaprompt_lite.run import RunConfig, base_new_gain, run_base_to_new, run_domain_generalization
from metaprompt_lite.splits import base_new_split, few_shot_indices, select_classes
from metaprompt_lite.methods import make_step


@pytest.mark.parametrize("n,base", [(2, 1), (5, 3), (10, 5), (11, 6), (101, 51)])
def test_base_new_split_is_ceil_half(n, base):
    b, nw = base_new_split(n)
    assert torch.equal(b, torch.arange(base)) and torch.equal(nw, torch.arange(base, n))


def test_base_new_split_rejects_tiny():
    with pytest.raises(ValueError, match="at least 2 classes"):
        base_new_split(1)


def test_select_classes_relabels():
    labels = torch.tensor([5, 3, 4, 3, 6])
    index, new = select_classes(labels, torch.tensor([3, 4]))
    assert index.tolist() == [1, 2, 3] and new.tolist() == [0, 1, 0]


def test_few_shot_draw_is_per_seed_and_per_class():
    labels = torch.arange(5).repeat_interleave(20)
    a, b, c = (few_shot_indices(labels, 4, seed) for seed in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.bincount(labels[a]).tolist() == [4] * 5
    groups = torch.arange(100) % 2
    d = few_shot_indices(labels, 3, 1, groups=groups)
    assert len(d) == 5 * 2 * 3
    assert few_shot_indices(torch.tensor([0, 0, 1]), 16, 1).tolist() == [0, 1, 2]  # fewer than k: all
    with pytest.raises(ValueError, match="shots"):
        few_shot_indices(labels, 0, 1)


def test_metrics():
    assert accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1])) == 50.0
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0


def _dassl_lrs(base_lr, warmup_lr, max_epoch):
    """Dassl's schedule for cosine + constant warm-up of 1 epoch (KaiyangZhou/Dassl.pytorch,
    dassl/optim/lr_scheduler.py lines 10-54 and 128-141), re-enacted with torch's own schedulers:
    a CosineAnnealingLR(T_max=MAX_EPOCH) that the warm-up wrapper steps only once the warm-up epoch
    is over; ``update_lr()`` once per epoch. Returns the lr of each epoch."""
    p = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([p], lr=base_lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(max_epoch))
    for group in optimizer.param_groups:  # ConstantWarmupScheduler.__init__: lr = WARMUP_CONS_LR
        group["lr"] = warmup_lr
    lrs, last_epoch = [], 0
    for _ in range(max_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if last_epoch >= 1:  # _BaseWarmupScheduler.step: the successor steps after the warm-up
            cosine.step()
        else:  # the warm-up ends: the successor's current lr (base_lr) is set
            last_epoch += 1
            for group, lr in zip(optimizer.param_groups, cosine.get_last_lr()):
                group["lr"] = lr
    return lrs


def _lr_sequence(config: OptimConfig, total_steps: int, warmup_steps: int) -> list[float]:
    """The lr of each step of an optimizer driven by ``build_scheduler``."""
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], config)
    sched = build_scheduler(opt, total_steps=total_steps, warmup_steps=warmup_steps, config=config)
    lrs = []
    for _ in range(total_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_epoch_schedule_is_dassls():
    """The paper presets' "epoch" schedule equals Dassl's per-epoch lr sequence (8 epochs, 3 steps
    each): 1e-5 for the warm-up epoch, then the cosine at (e − 1)/8, last epoch ≈ 0.15 · lr."""
    config = OptimConfig(lr=0.0015, warmup_lr=1e-5, epochs=8)
    expected = _dassl_lrs(0.0015, 1e-5, 8)
    lrs = _lr_sequence(config, total_steps=24, warmup_steps=3)
    assert lrs == pytest.approx([lr for lr in expected for _ in range(3)], rel=1e-9)
    assert lrs[-1] == pytest.approx(0.0015 * 0.5 * (1 + math.cos(6 * math.pi / 8)))  # ≈ 0.146 · lr
    assert lrs[-1] > 0.14 * 0.0015


@pytest.mark.parametrize("field, value", [("lr", 0.0), ("lr", -0.1), ("lr", float("nan")), ("epochs", 0),
                                          ("batch_size", 0), ("max_steps", -1)])
def test_optim_config_refuses_values_that_cannot_train(field, value):
    """lr 0 used to divide by zero in build_scheduler's warm-up factor; the counts must be at least 1."""
    with pytest.raises(ValueError, match="must be"):
        OptimConfig(**{field: value})


def test_constant_schedule_and_unknown_schedule():
    config = OptimConfig(lr=1e-6, schedule="constant")
    assert _lr_sequence(config, total_steps=10, warmup_steps=2) == [1e-6] * 10
    with pytest.raises(ValueError, match="unknown schedule"):
        OptimConfig(schedule="linear")


def test_schedule_warmup_then_cosine():
    config = OptimConfig(lr=0.1, warmup_lr=1e-5, schedule="step")
    lrs = _lr_sequence(config, total_steps=12, warmup_steps=2)
    assert lrs[:2] == pytest.approx([1e-5, 1e-5])
    assert lrs[2] == pytest.approx(0.1)
    assert lrs[7] == pytest.approx(0.05 * (1 + math.cos(math.pi * 5 / 10)))
    assert all(x >= y for x, y in zip(lrs[2:], lrs[3:]))


def test_augment_is_driven_by_the_generator():
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    a = augment(images, make_generator(0), flip=True)
    b = augment(images, make_generator(0), flip=True)
    c = augment(images, make_generator(1), flip=True)
    assert a.shape == (3, 3, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    assert 0 <= a.min() and a.max() <= 1


def _state(backbone, dataset, method_name="metaprompt", seed=0):
    torch.manual_seed(seed)
    method = get_method(method_name)
    model = PromptedCLIP(backbone, method.prompt, dataset.classnames[:3])
    optim = OptimConfig(lr=0.01, batch_size=4, warmup_epochs=0)
    opt = build_optimizer(model.prompts.parameters(), optim)
    return TrainState(model, opt, build_scheduler(opt, 4, 1, optim), make_generator(7)), method, optim


@pytest.mark.parametrize("method_name", ["metaprompt", "prometar"])
def test_resume_is_bit_for_bit(backbone, dataset, tmp_path, method_name):
    index = (dataset.labels < 3).nonzero().flatten()
    images, labels = dataset.images[index], dataset.labels[index]
    straight, method, optim = _state(backbone, dataset, method_name)
    train(straight, make_step(method, straight, False, 4), images, labels, None, optim, 4, progress=False)

    path = tmp_path / "run.pt"
    first, _, _ = _state(backbone, dataset, method_name)
    train(first, make_step(method, first, False, 4), images, labels, None, optim, 4, checkpoint_path=path,
          progress=False, stop_after=2)
    assert first.step == 2
    resumed, _, _ = _state(backbone, dataset, method_name, seed=123)  # different init: the checkpoint must win
    step = make_step(method, resumed, False, 4)
    torch.manual_seed(999)  # and a different global RNG state
    resume(resumed, load_checkpoint(path))
    train(resumed, step, images, labels, None, optim, 4, progress=False)
    assert resumed.step == 4
    for (n, p), (_, q) in zip(straight.model.prompts.named_parameters(), resumed.model.prompts.named_parameters()):
        assert torch.equal(p, q), n
    assert [h["loss"] for h in straight.history] == [h["loss"] for h in resumed.history]
    for key in straight.extras:
        a, b = straight.extras[key].state_dict(), resumed.extras[key].state_dict()
        if isinstance(a, dict) and all(torch.is_tensor(v) for v in a.values()):
            assert all(torch.equal(a[k], b[k]) for k in a), key


def _slow(step_fn, seconds=0.05):
    def slow(state, batch):
        time.sleep(seconds)
        return step_fn(state, batch)
    return slow


def test_train_seconds_cover_the_whole_run_across_a_resume(backbone, dataset, tmp_path):
    """A resumed run's training time includes the part before the checkpoint (it is in the checkpoint),
    and each history entry records the seconds so far."""
    index = (dataset.labels < 3).nonzero().flatten()
    images, labels = dataset.images[index], dataset.labels[index]
    path = tmp_path / "run.pt"
    first, method, optim = _state(backbone, dataset, "coop")
    train(first, _slow(make_step(method, first, False, 4)), images, labels, None, optim, 4, checkpoint_path=path,
          progress=False, stop_after=2)
    assert first.train_s >= 0.1 and first.history[-1]["train_s"] == first.train_s
    resumed, _, _ = _state(backbone, dataset, "coop")
    resume(resumed, load_checkpoint(path))
    assert resumed.train_s == first.train_s
    train(resumed, _slow(make_step(method, resumed, False, 4)), images, labels, None, optim, 4, progress=False)
    assert resumed.train_s >= first.train_s + 0.1 and resumed.history[-1]["train_s"] == resumed.train_s
    assert [h["train_s"] for h in resumed.history] == sorted(h["train_s"] for h in resumed.history)


def test_a_checkpoint_from_before_train_seconds_still_loads(backbone, dataset, tmp_path):
    state, method, optim = _state(backbone, dataset, "coop")
    train(state, make_step(method, state, False, 4), dataset.images, dataset.labels % 3, None, optim, 2,
          progress=False)
    old = run_state(state)
    del old["train_s"]
    for entry in old["history"]:
        del entry["train_s"]
    save_checkpoint(tmp_path / "old.pt", old)
    again, _, _ = _state(backbone, dataset, "coop")
    resume(again, load_checkpoint(tmp_path / "old.pt"))
    assert again.step == 2 and again.train_s == pytest.approx(sum(h["step_s"] for h in state.history))


def test_ctrl_c_in_train_says_which_checkpoint_is_on_disk(backbone, dataset, tmp_path):
    index = (dataset.labels < 3).nonzero().flatten()
    images, labels = dataset.images[index], dataset.labels[index]
    path = tmp_path / "run.pt"
    for stop_at, saved in ((1, None), (3, 2)):  # before the first checkpoint (every 2 steps), and after it
        state, method, optim = _state(backbone, dataset, "coop")
        step_fn = make_step(method, state, False, 4)

        def interrupted(state, batch):
            if state.step == stop_at:
                raise KeyboardInterrupt
            return step_fn(state, batch)

        with pytest.raises(TrainingInterrupted) as interrupt:
            train(state, interrupted, images, labels, None, optim, 4, checkpoint_path=path, checkpoint_every=2,
                  progress=False)
        assert (interrupt.value.step, interrupt.value.checkpoint_step) == (stop_at, saved)
        assert path.is_file() == (saved is not None)
    assert interrupt.value.kept() == (f"interrupted at step 3: the run's checkpoint of step 2 is kept in {path}; run "
                                      "the same command to resume from it")
    assert load_checkpoint(path)["step"] == 2


def test_a_file_that_is_not_a_checkpoint_dict_is_refused_by_name(tmp_path):
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"list.pt is not a checkpoint \(it holds a list, not a dict\)"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({"a": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt is not a run checkpoint \\(it lacks prompts, optimizer"):
        load_checkpoint(tmp_path / "other.pt").require(RUN_CHECKPOINT_KEYS, "a run checkpoint")


def test_checkpoint_errors_and_atomic_save(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    save_checkpoint(tmp_path / "a" / "b.pt", {"x": 1})
    assert load_checkpoint(tmp_path / "a" / "b.pt") == {"x": 1}
    assert not list((tmp_path / "a").glob("*.tmp"))


def test_nan_loss_stops_with_a_clear_error(backbone, dataset):
    state, method, optim = _state(backbone, dataset, "coop")
    with pytest.raises(FloatingPointError, match="non-finite loss at step 0"):
        train(state, lambda s, b: {"loss": float("nan")}, dataset.images, dataset.labels % 3, None,
              optim, 2, progress=False)


def test_train_rejects_mismatched_inputs(backbone, dataset):
    state, method, optim = _state(backbone, dataset, "coop")
    with pytest.raises(ValueError, match="images but"):
        train(state, make_step(method, state, False, 1), dataset.images, dataset.labels[:3], None, optim, 1)
    with pytest.raises(ValueError, match="no training images"):
        train(state, make_step(method, state, False, 1), dataset.images[:0], dataset.labels[:0], None, optim, 1)


def _quick(method, seed=1, **kw):
    return RunConfig(method=method, seed=seed, shots=2, progress=False,
                     optim=OptimConfig(lr=0.01, batch_size=4, epochs=1), **kw)


def test_same_seed_same_metrics_different_seed_different_shots(backbone, dataset):
    a = run_base_to_new(_quick("metaprompt"), dataset, backbone)
    b = run_base_to_new(_quick("metaprompt"), dataset, backbone)
    assert {k: a[k] for k in ("base", "new")} == {k: b[k] for k in ("base", "new")}
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    c = run_base_to_new(_quick("metaprompt", seed=2), dataset, backbone)
    assert [h["loss"] for h in a["history"]] != [h["loss"] for h in c["history"]]


def test_base_new_gain_is_zero_shot_beside_one_run_per_seed(backbone, dataset):
    gain = base_new_gain(_quick("coop"), dataset, backbone, seeds=(1, 2))
    zero_shot = run_base_to_new(_quick("zsclip"), dataset, backbone)
    runs = [run_base_to_new(_quick("coop", seed=s), dataset, backbone) for s in (1, 2)]
    assert (gain["zs_base"], gain["zs_new"]) == (zero_shot["base"], zero_shot["new"])
    assert gain["base_per_seed"] == [r["base"] for r in runs] and gain["new_per_seed"] == [r["new"] for r in runs]
    assert gain["base"] == sum(r["base"] for r in runs) / 2 and gain["new"] == sum(r["new"] for r in runs) / 2


def test_run_resumes_from_its_checkpoint(backbone, dataset, tmp_path):
    config = _quick("coop", out_dir=str(tmp_path))
    first = run_base_to_new(config, dataset, backbone)
    checkpoints = list(tmp_path.glob("*.pt"))
    assert len(checkpoints) == 1
    again = run_base_to_new(config, dataset, backbone)  # finished checkpoint: no more steps
    assert again["history"] == first["history"] and again["base"] == first["base"]


def test_dg_run_and_unknown_target(backbone, dg_dataset):
    result = run_domain_generalization(_quick("metaprompt", dataset="syn", target="domain2"), dg_dataset, backbone)
    assert is_share_of(result["acc"], 24)  # 6 classes x 4 target images
    assert result["history"]
    assert any("query_loss" in h for h in result["history"])
    with pytest.raises(ValueError, match="unknown target domain 'domain9'"):
        run_domain_generalization(_quick("coop", target="domain9"), dg_dataset, backbone)


def _row_of(dataset, images: torch.Tensor) -> list[int]:
    """The dataset index of each image (the synthetic images are random noise, so each is unique)."""
    flat = dataset.images.flatten(1)
    rows = [int((flat == image.flatten()).all(1).nonzero().flatten()[0]) for image in images.cpu()]
    assert len(set(rows)) == len(rows)
    return rows


def _spy(monkeypatch):
    """Record what run.py hands to training (_fit) and to evaluation (evaluate)."""
    from metaprompt_lite import run

    seen = {"fit": [], "evaluate": []}
    real_fit, real_evaluate = run._fit, run.evaluate

    def fit(config, model, method, images, labels, domains, cross_domain, **kwargs):
        seen["fit"].append((images.clone(), labels.clone(), None if domains is None else domains.clone(),
                            list(model.classnames)))
        return real_fit(config, model, method, images, labels, domains, cross_domain, **kwargs)

    def evaluate(model, method, images, labels, classnames, *args, **kwargs):
        seen["evaluate"].append((images.clone(), labels.clone(), list(classnames)))
        return real_evaluate(model, method, images, labels, classnames, *args, **kwargs)

    monkeypatch.setattr(run, "_fit", fit)
    monkeypatch.setattr(run, "evaluate", evaluate)
    return seen


def test_base_to_new_trains_on_base_pool_shots_and_tests_on_the_test_split(backbone, dataset, monkeypatch):
    """The CoCoOp protocol: training sees only train-pool (split 0) images of base classes, `shots` per
    class, labelled among the base classes; base and new accuracy are measured on test-split images,
    each among its own classes."""
    seen = _spy(monkeypatch)
    run_base_to_new(replace(_quick("coop"), shots=3), dataset, backbone)
    base, new = base_new_split(len(dataset.classnames))
    (images, labels, domains, classnames), = seen["fit"]
    assert classnames == [dataset.classnames[c] for c in base] and domains is None
    rows = _row_of(dataset, images)
    assert all(int(dataset.split[r]) == 0 for r in rows)
    assert [base[int(label)] for label in labels] == [int(dataset.labels[r]) for r in rows]
    assert sorted(labels.tolist()) == sorted(list(range(len(base))) * 3)  # 3 shots of each base class
    for (images, labels, classnames), classes in zip(seen["evaluate"], (base, new)):
        rows = _row_of(dataset, images)
        assert classnames == [dataset.classnames[c] for c in classes]
        assert all(int(dataset.split[r]) == 1 for r in rows)
        assert [classes[int(label)] for label in labels] == [int(dataset.labels[r]) for r in rows]
        assert sorted(rows) == [r for r in range(len(dataset.labels))
                                if dataset.split[r] == 1 and int(dataset.labels[r]) in classes]


def test_domain_generalization_never_trains_on_the_target_domain(backbone, dg_dataset, monkeypatch):
    """DG: `shots` per class from each source domain's train pool (domain ids renumbered 0..n-1), none
    from the target; the test is the target domain's test pool (the synthetic set has both pools)."""
    seen = _spy(monkeypatch)
    run_domain_generalization(_quick("coop", dataset="syn", target="domain1"), dg_dataset, backbone)  # 2 shots
    (images, labels, domains, _), = seen["fit"]
    rows = _row_of(dg_dataset, images)
    source_domains = [int(dg_dataset.domain[r]) for r in rows]
    assert 1 not in source_domains and sorted(set(source_domains)) == [0, 2]
    assert domains.tolist() == [{0: 0, 2: 1}[d] for d in source_domains]
    assert labels.tolist() == [int(dg_dataset.labels[r]) for r in rows]
    assert len(rows) == 2 * len(dg_dataset.classnames) * 2  # 2 shots x classes x 2 sources
    assert all(int(dg_dataset.split[r]) == 0 for r in rows)
    (images, labels, classnames), = seen["evaluate"]
    target_test = ((dg_dataset.domain == 1) & (dg_dataset.split == 1)).nonzero().flatten().tolist()
    assert sorted(_row_of(dg_dataset, images)) == target_test
