# %% [markdown]
# # 07 · ProMetaR and GRAM: meta-learning *how* to regularise
#
# Both wrap an ordinary prompt learner and meta-learn something that shapes its gradients.
#
# **ProMetaR** (CVPR 2024) starts from a 4 + 4-token IVLP-style learner with PromptSRC's regulariser
# (an L1 pull of prompted features to frozen ones) and, instead of adding the regulariser's gradient
# with a fixed weight, learns a **gradient-modulation net** per prompt layer:
# $g_l = g^{ce}_l + \gamma_l \odot g^{reg}_l$ with $\gamma_l = \sigma(W_2W_1[g^{ce}_l; g^{reg}_l])$, one
# γ per 8 consecutive prompt entries (`DIM_RATE`). The net is meta-trained each batch on an episode
# (one class = query, the rest = support) whose query is *virtual*: a mixup of query and support
# image features, its loss scaled by `lr_ratio`.
#
# **GRAM** (ICCV 2023) meta-learns, *before* any downstream tuning and on unlabeled image–text pairs,
# an initialisation θ₀ of the prompts and a gradient-regulating function r; downstream tuning then
# starts from θ₀ and steps along r(∇L): `gram-coop` wraps CoOp, `gram-ivlp` ProMetaR's 4 + 4 learner
# (`prometar-base`, ProMetaR's learner trained with CE alone; notebook 09 compares them), not the
# course's `ivlp` recipe.
#
# | equation | where |
# |---|---|
# | ProMetaR's regularisers R_text, R_image (L1 pull to the frozen features) | `core.prometar._losses` with `core.losses.feature_consistency_l1` |
# | γ_l = σ(W₂W₁[g_ce,l ; g_reg,l]) | `core.prometar.GradientModulator.gamma` |
# | g_l = g_ce,l + γ_l ⊙ g_reg,l | `core.prometar.GradientModulator.forward` |
# | the modulated update, then the episode: θ' = θ − α g on the support, the mixup query loss at θ' times `lr_ratio`, its gradient into prompts and net | `core.prometar.prometar_step`, `core.prometar._virtual_query_loss`, `core.meta.inner_step` |
# | GRAM's regulator r(g) = g ⊙ 2σ(a ⊙ ĝ + b) | `core.gram.GradientRegulator.regulate` |
# | GRAM's meta-training: θ' = θ − α r(∇L_s) on image–caption pairs, ∇L_q(θ') into θ₀ and r | `core.gram.meta_train` with `core.gram.matching_loss`, `core.meta.inner_step` |
# | downstream tuning along r(∇L) from θ₀ | `core.steps.regulated_step`, θ₀ and r loaded by `gram_artifacts.load_gram` |

# %%
import json
import math

import matplotlib.pyplot as plt
import pandas as pd
import torch

from metaprompt_lite.backbone import load_clip
from metaprompt_lite.core.loop import Batch, make_generator
from metaprompt_lite.core.prometar import GradientModulator, prompt_layers
from metaprompt_lite.data import load_dataset
from metaprompt_lite.gram_artifacts import artifact_path, load_gram
from metaprompt_lite.methods import get_method, preset, prompted_clip, start_training
from metaprompt_lite.optim import OptimConfig
from metaprompt_lite.paths import default_model, results_dir
from metaprompt_lite.report import b2n_average

torch.manual_seed(0)
backbone = load_clip(*default_model())
dataset = load_dataset("emoji-objects")
method = get_method("prometar")
print(method.prometar)

# %% [markdown]
# ## ProMetaR's modulation net
# One net per prompt layer: W₁ maps the layer's CE and regulariser gradients (2 · n · d entries) to
# n · d / 8, W₂ keeps that width, and each output γ covers 8 consecutive prompt entries.

# %%
model = prompted_clip(backbone, method, dataset.classnames[:50], dataset.templates, dataset.name)
for (name, index, modality), net in zip(prompt_layers(model.prompts), GradientModulator(model.prompts).nets):
    print(f"{name}[{index}] ({modality}): {net[0].in_features} -> {net[0].out_features} -> {net[1].out_features}")

# %% [markdown]
# Two training steps through the benchmark's step function. `prometar_step` calls the prompts'
# optimizer twice per batch: first with the modulated gradient, then with the gradient of the
# episode's query loss (scaled by `lr_ratio`). The cell records the gradient each call receives and
# every γ the net computes, without changing the step.

# %%
pool = ((dataset.split == 0) & (dataset.labels < 50)).nonzero().flatten()
index = pool[torch.randperm(len(pool), generator=make_generator(0))[:16]]
batch = Batch(dataset.images[index], dataset.labels[index], torch.zeros(16, dtype=torch.long))
state, step = start_training(model, method, OptimConfig(lr=0.0025, epochs=1, batch_size=16), total_steps=10)
modulator, prompts = state.extras["modulator"], list(model.prompts.parameters())
grad_norms, gammas = [], []
optimizer_step, gamma = state.optimizer.step, modulator.gamma


def recording_optimizer_step(*args, **kwargs):
    grad_norms.append(torch.cat([p.grad.flatten() for p in prompts if p.grad is not None]).norm().item())
    return optimizer_step(*args, **kwargs)


def recording_gamma(layer, g_ce, g_reg):
    out = gamma(layer, g_ce, g_reg)
    gammas.append(out.detach().flatten())
    return out


state.optimizer.step, modulator.gamma = recording_optimizer_step, recording_gamma
net_before = torch.cat([p.detach().flatten() for p in modulator.parameters()]).clone()
logs = [step(state, batch) for _ in range(2)]
net_moved = ((torch.cat([p.detach().flatten() for p in modulator.parameters()]) - net_before).norm()
             / net_before.norm()).item()
print(pd.DataFrame(logs).round(4))
share = max(m / u for u, m in zip(grad_norms[0::2], grad_norms[1::2]))  # (update, meta) per step
gammas = torch.cat(gammas)
print(f"gradient norms per optimizer call (update, meta, update, meta): {', '.join(f'{g:.2e}' for g in grad_norms)}")
print(f"The meta-update's gradient is at most {share:.2%} of the modulated update's; γ over both steps spans "
      f"{gammas.min():.3f} to {gammas.max():.3f} (mean {gammas.mean():.3f}), so the regulariser's gradient enters at "
      + ("about half weight, σ(0)" if abs(gammas.mean() - 0.5) < 0.05 else "a weight away from σ(0) = 0.5")
      + f"; the net's weights moved by {net_moved:.1e} of their norm.")
assert share < 0.01, f"meta-gradient {share:.1%} of the modulated update"  # lr_ratio makes the meta-update a nudge: the modulated update does the work
assert net_moved < 1e-4, f"modulation net moved {net_moved:.1e}"  # and the modulation net hardly trains

# %% [markdown]
# In these steps ProMetaR's meta-learning barely acts: the net trains at a constant lr of 10⁻⁶ (the
# official run's) on a loss `lr_ratio` scales down. The ablation `prometar-netlr` trains the net at the
# lr its yaml names (2.5·10⁻⁴ on a cosine) over whole runs. `experiments/prometar-netlr/` ran both on
# suite v3 (10 datasets × 3 seeds) at 2 epochs (its README); the line compares that with the epochs
# `prometar`'s presets train:

# %%
netlr = json.loads((results_dir().parent / "experiments" / "prometar-netlr" / "summary.json").read_text())
NETLR_EPOCHS = 2  # experiments/prometar-netlr/README.md
presets = {p: preset("prometar", protocol=p)[1].epochs for p in ("official", "tuned")}
print(f"prometar-netlr vs prometar at {NETLR_EPOCHS} epochs, {netlr['rows']} rows: largest difference in base, new "
      f"or HM {netlr['max_abs_difference']}: at that budget the net's lr "
      + ("changes nothing" if netlr["max_abs_difference"] == 0 else "changes the results")
      + f"; the presets train {presets['official']} (official) and {presets['tuned']} (tuned) epochs, "
      + ("a budget the ablation did not run." if NETLR_EPOCHS not in presets.values() else "one of them the ablation's."))

# %% [markdown]
# ## GRAM's meta-learned initialisation and regulator
# Meta-trained once per backbone by `metaprompt-lite gram` on the pretraining corpus (no benchmark
# image), committed in `data/gram/`. The artifact keeps the meta-training's query losses: image–caption
# matching among up to `pairs` distinct concepts, where chance is at most ln(pairs).

# %%
path = artifact_path(backbone.name, "gram-coop")
meta = torch.load(path, weights_only=True)["meta"]  # tensors and plain values only
first, last = (sum(meta[k]) / len(meta[k]) for k in ("query_loss_first", "query_loss_last"))
chance = math.log(meta["config"]["pairs"])
print(f"query loss, mean of the first 10 meta-steps {first:.2f}, of the last 10 {last:.2f}; chance at most {chance:.2f}: "
      + ("matching is almost solved from the start (the first steps' loss under a tenth of chance)."
         if first < 0.1 * chance else "matching is not solved at the start."))

# %% [markdown]
# What that leaves in the two things GRAM learns: the regulator's gates r(g)/g (1 = plain SGD) and how
# far θ₀ moved from its start, "a photo of a".

# %%
coop = prompted_clip(backbone, get_method("gram-coop"), dataset.classnames[:50], dataset.templates, dataset.name)
regulator = load_gram(coop, path)
g = torch.randn_like(coop.prompts.ctx)
gate = (regulator.regulate("ctx", g) / g).flatten().detach()
plt.figure(figsize=(5, 2.8))
plt.hist(gate.numpy(), bins=30)
plt.xlabel("r(g) / g  (per entry of ctx, random g)")
plt.ylabel("count")
plt.title("GRAM regulator gates (1 = plain SGD)")
plt.show()
start = prompted_clip(backbone, get_method("coop"), dataset.classnames[:50], dataset.templates, dataset.name)
moved = ((coop.prompts.ctx - start.prompts.ctx).norm() / start.prompts.ctx.norm()).item()
near_sgd = float(((gate - 1).abs() <= 0.05).float().mean())
print(f"gates: median {gate.median():.3f}, 5-95 % range {gate.quantile(0.05):.3f} to {gate.quantile(0.95):.3f}; "
      f"{near_sgd:.0%} within 5 % of 1, while θ₀ moved {moved:.0%} of the norm of 'a photo of a': "
      + ("GRAM-CoOp differs from CoOp mostly by where it starts." if moved > 0.1
         else "GRAM-CoOp starts close to CoOp too."))
assert near_sgd >= 0.9, f"{near_sgd:.0%} of the gates within 5 % of 1"  # the meta-learned regulator is close to plain SGD

# %% [markdown]
# In the committed benchmark (`report.b2n_average`: the HM of base and new averaged over datasets,
# mean over seeds, as notebook 09's table), each wrapper's HM against the learner it wraps; notebook
# 09 gives base and new and the intervals:

# %%
pairs = (("prometar", "prometar-base"), ("gram-coop", "coop"), ("gram-ivlp", "prometar-base"))
for p in ("official", "tuned"):
    table = b2n_average(pd.read_csv(results_dir(p) / "b2n.csv"))
    gains = [table.hm[wrapped] - table.hm[learner] for wrapped, learner in pairs]
    spreads = [table.hm_std[[wrapped, learner]].max() for wrapped, learner in pairs]
    print(f"{p}: " + ", ".join(f"{w} {g:+.2f} HM over {l}" for (w, l), g in zip(pairs, gains))
          + f"; {sum(g > s for g, s in zip(gains, spreads))} of {len(pairs)} wrappers end above their learner by "
          f"more than the larger seed spread, {sum(g < -s for g, s in zip(gains, spreads))} below it.")

# %% [markdown]
# ## Summary
# - ProMetaR learns how strongly to apply a regulariser, one γ per 8 entries of each prompt layer,
#   with a mixup-augmented meta-episode each batch whose loss `lr_ratio` scales down.
# - GRAM front-loads meta-learning onto unlabeled image–text pairs: a prompt initialisation and a
#   gradient gate, then ordinary few-shot tuning.
#
# ## Exercises
# 1. Set ProMetaR's `first_order=True`: how much faster is a step, and how does HM change?
# 2. Re-run the two steps with `lr_ratio=1.0`: how large is the meta-gradient's share now?
# 3. Re-run `metaprompt-lite gram --meta-steps 50`: does GRAM's effect depend on meta-training length?
