# %% [markdown]
# # 06 · MetaPrompt end to end
#
# MetaPrompt ("Learning Domain Invariant Prompt for Vision-Language Models", IEEE TIP 2024) trains
# the dual-modality prompts of notebook 03 with the asymmetric loss of notebook 04 and, after every
# ordinary step, takes a **domain-split meta step**: episodes cut from the batch (below), each with the
# first-order meta-gradient of notebook 05.
# `core.steps.metaprompt_step` runs one batch:
#
# | step | what it does | where |
# |---|---|---|
# | 1 | in-domain update: one optimizer step on the batch's asymmetric loss | `core.steps.supervised_step` with `core.losses.asymmetric_contrastive_loss` |
# | 2 | split the batch into episodes: **cross-class** for base-to-new (the classes cut into `n_groups` groups; query = one group's images and classes, support = the others; the text prompts adapt) or **cross-domain** for DG (query = one source domain; the vision prompts adapt) | `core.steps.domain_split` → `core.meta.cross_class_episodes`, `core.meta.cross_domain_episodes` |
# | 3 | per episode i, from the same θ: an inner step θ'ᵢ = θ − lr·∇L_support,i(θ), then gᵢ = ∇L_query,i(θ'ᵢ) (first order) | `core.meta.episodic_meta_update` → `core.meta.meta_gradients` |
# | 4 | θ ← θ − lr · meta_step · Σᵢ gᵢ (the paper's meta_step is 0.2) | `core.meta.apply_update` |
#
# lr is the current scheduled learning rate, for the inner step too. This is the recipe
# `metaprompt-clean`. The benchmark's `metaprompt` runs step 3 as the official code does, which
# changes where gᵢ is taken and what else moves: the appendix at the end.

# %%
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from metaprompt_lite.backbone import load_clip
from metaprompt_lite.core.meta import (cross_class_episodes, cross_domain_episodes, episodic_meta_update,
                                       meta_gradients, official_quirks_meta_update)
from metaprompt_lite.core.loop import make_generator
from metaprompt_lite.core.steps import domain_split, supervised_step
from metaprompt_lite.data import load_dataset
from metaprompt_lite.engine import training_batch
from metaprompt_lite.methods import prompted_clip, start_training
from metaprompt_lite.paths import default_model, results_dir
from metaprompt_lite.report import b2n_average
from metaprompt_lite.run import preset_run, run_base_to_new, training_set
from metaprompt_lite.splits import base_new_split

torch.manual_seed(0)
backbone = load_clip(*default_model())
dataset = load_dataset("emoji-novel-mixed")
config = preset_run("metaprompt-clean", dataset=dataset.name, model=backbone.name, pretrained=backbone.pretrained,
                    seed=1, progress=False)  # the official budget (the official Meta_B2N config)
method = config.recipe
print(method)
print(config.optim)

# %% [markdown]
# ## The two splits
# A batch of 16 images from 50 classes cut into `n_groups` class groups, and a DG batch from three
# source domains. By construction (`core.meta`) an episode's support holds no image of its query
# classes (cross-class) or of its query domain (cross-domain).

# %%
labels = torch.tensor([3, 7, 12, 18, 21, 25, 30, 33, 36, 40, 41, 44, 47, 2, 9, 15])
domains = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2])
fig, axes = plt.subplots(1, 2, figsize=(12, 3.2))
for ax, eps, title, key in ((axes[0], cross_class_episodes(labels, 50, make_generator(0), method.n_groups),
                             "cross-class (base-to-new)", labels),
                            (axes[1], cross_domain_episodes(domains, 40), "cross-domain (DG)", domains)):
    grid = np.zeros((len(eps), len(key)))
    for i, e in enumerate(eps):
        grid[i, e.support.numpy()] = 1
        grid[i, e.query.numpy()] = 2
    ax.imshow(grid, cmap=plt.matplotlib.colors.ListedColormap(["white", "tab:blue", "tab:orange"]), vmin=0, vmax=2)
    ax.set_xticks(range(len(key)), key.tolist(), fontsize=7)
    ax.set_yticks(range(len(eps)), [f"episode {i}" for i in range(len(eps))])
    ax.set_xlabel("batch images (class id)" if key is labels else "batch images (domain id)")
    ax.set_title(title + ": blue = support, orange = query")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## One step by hand
# The run's first batch (16 augmented training images of the base classes), the prompts at their
# initialisation, and the preset's lr held constant (the run itself warms up at a lower lr first).
# Steps 1 and 2:

# %%
base_classes, _ = base_new_split(len(dataset.classnames))
train_index, train_labels, _ = training_set(config, dataset)
batch = training_batch(dataset.images[train_index], train_labels, torch.zeros_like(train_labels), seed=1, step=0,
                       batch_size=config.optim.batch_size)


def fresh_state(recipe):
    """The prompts at their seed-1 initialisation and an SGD optimizer at the preset's lr, held constant."""
    model = prompted_clip(backbone, recipe, [dataset.classnames[i] for i in base_classes], dataset.templates,
                          dataset.name, seed=1)
    return start_training(model, recipe, replace(config.optim, schedule="constant"), total_steps=1, seed=1)[0]


state = fresh_state(method)
prompts = state.model.prompts
loss = supervised_step(state, batch, method)["loss"]  # 1. in-domain
in_domain = torch.cat([p.grad.flatten() for p in prompts.parameters() if p.grad is not None])
episodes, adapt, support_loss, query_loss = domain_split(state, batch, method, cross_domain=False)  # 2.
print(f"asymmetric loss {loss:.3f}; {len(episodes)} episodes with {[len(e.support) for e in episodes]} support "
      f"and {[len(e.query) for e in episodes]} query images; the episodes adapt {adapt}")

# %% [markdown]
# Steps 3 and 4, and what the meta step is for. Let Q(θ) = Σᵢ L_query,i(θ − lr·∇L_support,i(θ)) be the
# query loss *after* adapting on the support. Σᵢ gᵢ is Q's gradient without the term through the
# inner step, so the meta step θ ← θ − lr·meta_step·Σᵢ gᵢ should lower Q by about
# lr · meta_step · ‖Σᵢ gᵢ‖².

# %%
def meta_objective():
    """Q(θ) and Σᵢ gᵢ at the prompts' current θ, each episode as episodic_meta_update takes it."""
    per_episode = [meta_gradients(prompts, lambda m, e=e: support_loss(m, e), lambda m, e=e: query_loss(m, e),
                                  inner_lr=state.lr, adapt=adapt) for e in episodes]
    g_sum = torch.cat([sum(g[n] for g, _ in per_episode).flatten() for n in per_episode[0][0]])
    return sum(q for _, q in per_episode).item(), g_sum


q_before, g_sum = meta_objective()
theta_step = {n: p.detach().clone() for n, p in prompts.named_parameters()}  # θ where the meta step takes its gᵢ
episodic_meta_update(prompts, episodes, support_loss, query_loss, state.lr, method.meta_step, adapt=adapt)  # 3., 4.
q_after, _ = meta_objective()
predicted = state.lr * method.meta_step * g_sum.norm().item() ** 2
drop = q_before - q_after
print(f"Q: {q_before:.4f} → {q_after:.4f}; the meta step lowers it by {drop:.2e}, "
      f"{drop / predicted:.2f} times the first-order prediction lr·meta_step·‖Σᵢ gᵢ‖² = {predicted:.2e}.")
assert 0.5 < drop / predicted < 1.5, f"the meta step lowered Q by {drop:.2e}, not about the predicted {predicted:.2e}"

# %% [markdown]
# The term first order leaves out is −lr·∇²L_support·∇L_query (notebook 05). Its size in this step, for
# the first episode: the prompts are put back to the θ where the meta step above took its gᵢ (after the
# in-domain step, before the meta step), and `meta_order=2` passes the losses through the encoder's
# double-backward twin:

# %%
with torch.no_grad():
    for n, p in prompts.named_parameters():
        p.copy_(theta_step[n])
_, _, support_2, query_2 = domain_split(state, batch, replace(method, meta_order=2), cross_domain=False)
e = episodes[0]
g1, g2 = (torch.cat([g.flatten() for g in meta_gradients(
    prompts, lambda m: support_2(m, e), lambda m: query_2(m, e), inner_lr=state.lr, first_order=first, adapt=adapt
)[0].values()]) for first in (True, False))
share = method.meta_step * (g2 - g1).norm().item() / in_domain.norm().item()
print(f"‖g₂ − g₁‖ / ‖g₁‖ = {((g2 - g1).norm() / g1.norm()).item():.2f}; the second-order part of this "
      f"episode's meta step, lr·meta_step·‖g₂ − g₁‖, is {share:.1%} of the in-domain step lr·‖∇L_asym‖.")

# %% [markdown]
# ## Training
# Live, one seed, at the official budget: `metaprompt-clean` against zero-shot CLIP (notebook 01) on
# the same test images (`cache` shares their frozen features between the runs).

# %%
cache = {}
zero_shot = run_base_to_new(preset_run("zsclip", dataset=dataset.name, model=backbone.name,
                                       pretrained=backbone.pretrained, seed=1, progress=False), dataset, backbone, cache)
clean = run_base_to_new(config, dataset, backbone, cache)
for label, r in (("zero-shot CLIP", zero_shot), ("metaprompt-clean", clean)):
    print(f"{label:22s} base {r['base']:5.1f}  new {r['new']:5.1f}  HM {r['hm']:5.1f}  ({r['train_s']:.0f} s)")


def versus(gap: float) -> str:
    """'1.5 HM below' / 'the same HM as' (to the printed decimal)."""
    return "the same HM as" if abs(gap) < 0.05 else f"{abs(gap):.1f} HM {'above' if gap > 0 else 'below'}"


print(f"On this seed training moves base by {clean['base'] - zero_shot['base']:+.1f} and new by "
      f"{clean['new'] - zero_shot['new']:+.1f} from zero-shot, and ends {versus(clean['hm'] - zero_shot['hm'])} it.")

# %% [markdown]
# ## Summary
# - MetaPrompt = dual-modality prompts + asymmetric loss + an episodic meta step per batch; each step
#   of the algorithm is one function (the table at the top), and `core.steps.metaprompt_step` calls them in order.
# - The meta step lowers the query loss after adaptation by about lr·meta_step·‖Σᵢ gᵢ‖² (asserted on one batch).
#
# ## Appendix: the official loop (`metaprompt`, the benchmark's default)
# `core.meta.official_quirks_meta_update` runs steps 3 and 4 as the official code
# (Vill-Lab/2024-TIP-MetaPrompt, `trainers/meta.py`) does. Step 4 is the same line; step 3 is not:
# - **The inner step is a step of the training optimizer** (SGD with the preset's momentum μ and
#   weight decay λ, printed at the top) on the support loss: θ'ᵢ = θ − lr·(μ·b + ∇L_support,i + λθ) with b the momentum buffer.
#   So gᵢ is taken at a point also moved by momentum and weight decay, and the support gradient stays
#   in b, which keeps moving the prompts over the following steps. The vision prompts, frozen for the
#   episodes, get a zero gradient and still move by their momentum and weight decay.
# - **The restore aliases.** θ is saved once before the episodes and "restored" after each; in the
#   official code only the first restore copies θ back, so the later episodes' inner steps are kept.
# - **The skip rule.** `core.steps.metaprompt_step` drops an episode whose query group has fewer than
#   2 classes, as the official loop does; with `n_groups` = 2 each group holds half the base classes.
#
# On the batch of "One step by hand", from the state after the in-domain step, how far each update
# moves the prompts, and the momentum buffer it leaves:

# %%
official_method = replace(method, meta_update="official")


def moved(update, meta_step):
    """From a fresh state after the in-domain step: ‖Δθ‖ of the text and the vision prompts after one meta
    update, and the momentum buffer's norm after it."""
    state = fresh_state(official_method)
    prompts = state.model.prompts
    supervised_step(state, batch, official_method)
    episodes, adapt, support_loss, query_loss = domain_split(state, batch, official_method, cross_domain=False)
    start = {n: p.detach().clone() for n, p in prompts.named_parameters()}
    if update == "clean":
        episodic_meta_update(prompts, episodes, support_loss, query_loss, state.lr, meta_step, adapt=adapt)
    else:
        official_quirks_meta_update(prompts, state.optimizer, episodes, support_loss, query_loss, state.lr, meta_step,
                                    adapt=adapt)
    delta = {n: (p.detach() - start[n]).flatten() for n, p in prompts.named_parameters()}
    return {"text ‖Δθ‖": torch.cat([delta[n] for n in adapt]).norm().item(),
            "vision ‖Δθ‖": torch.cat([d for n, d in delta.items() if n not in adapt]).norm().item(),
            "‖b‖ after": torch.cat([s["momentum_buffer"].flatten() for s in state.optimizer.state.values()]).norm().item()}


moves = pd.DataFrame({"clean": moved("clean", method.meta_step), "official": moved("official", method.meta_step),
                      "official, meta_step = 0": moved("official", 0.0)}).T
print(moves.to_string(float_format=lambda v: f"{v:.2e}"))
by_clean, by_official, by_inner = (moves.loc[k] for k in moves.index)
print(f"The official update moves the text prompts {by_official['text ‖Δθ‖'] / by_clean['text ‖Δθ‖']:.1f} times as "
      f"far as the clean one; with meta_step = 0 it still moves them {by_inner['text ‖Δθ‖'] / by_clean['text ‖Δθ‖']:.1f} "
      f"times as far (the kept inner step) and the vision prompts by {by_inner['vision ‖Δθ‖']:.1e}; it leaves the "
      f"momentum buffer {by_official['‖b‖ after'] / by_clean['‖b‖ after']:.1f} times its size after the in-domain step.")

# %% [markdown]
# The official loop at the official budget, live on the same dataset and seed as the run above, and
# the benchmark's mean over datasets and seeds:

# %%
r = run_base_to_new(preset_run("metaprompt", dataset=dataset.name, model=backbone.name,
                               pretrained=backbone.pretrained, seed=1, progress=False), dataset, backbone, cache)
live_gap = r["hm"] - clean["hm"]
rows = pd.read_csv(results_dir("official") / "b2n.csv")
average = b2n_average(rows)
bench_gap = average.loc["metaprompt", "hm"] - average.loc["metaprompt-clean", "hm"]
n_datasets, n_seeds = rows.loc[rows.method == "metaprompt", "dataset"].nunique(), average.loc["metaprompt", "seeds"]
print(f"official loop          base {r['base']:5.1f}  new {r['new']:5.1f}  HM {r['hm']:5.1f}  ({r['train_s']:.0f} s)")
print(f"Live, the official loop ends {versus(live_gap)} the clean update ({live_gap:+.1f}); in "
      f"results/official/b2n.csv ({n_datasets} datasets × {n_seeds} seeds) the official − clean HM gap is "
      f"{bench_gap:+.2f}: " + ("the same sign." if np.sign(live_gap) == np.sign(bench_gap) else
                              "the opposite sign, so one dataset and seed does not give the benchmark's sign."))

# %% [markdown]
# ## Exercises
# 1. Set `n_groups` to 2 and 8 (`replace(config, recipe=replace(method, n_groups=...))`): how do base
#    and new move?
# 2. Train without the meta step (`replace(method, episodic=False)`, the asymmetric loss alone): how
#    much of the change from zero-shot remains?
# 3. In "One step by hand", replace `episodic_meta_update` by `official_quirks_meta_update` (it also takes
#    `state.optimizer`): does Q still drop by about the first-order prediction?
