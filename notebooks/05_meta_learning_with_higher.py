# %% [markdown]
# # 05 · Meta-learning with `higher`: inner loop, outer loop, first vs second order
#
# MetaPrompt, ProMetaR and GRAM all use a MAML-style step. With support loss L_s, query loss L_q,
# prompt parameters θ and inner learning rate α:
#
# $$\theta' = \theta - \alpha\,\nabla_\theta L_s(\theta) \qquad g = \nabla_\theta\, L_q(\theta'(\theta))$$
#
# The **second-order** meta-gradient differentiates *through* the inner step:
# $g = (I - \alpha \nabla^2 L_s)\,\nabla L_q(\theta')$. The **first-order** approximation drops the
# Hessian term, $g \approx \nabla L_q(\theta')$ — what MetaPrompt's official code does.
# `metaprompt_lite.core.meta.meta_gradients` builds both, in the style ProMetaR's and GRAM's meta-steps
# share (`core.prometar`, `core.gram`): `higher`'s monkeypatch runs the prompt learner on an explicit list of
# parameters (`core.meta.functional_learner`), and the inner step $\theta' = \theta - \alpha g$ is written
# out (`core.meta.inner_step`), so ProMetaR and GRAM can put their modulated or regulated gradient for $g$.
# The benchmark's official `metaprompt` meta-step, `core.meta.official_quirks_meta_update` (notebook 06's
# appendix), is the exception: it takes its inner step with the optimizer, without `higher`.
#
# | equation | where |
# |---|---|
# | the learner run on an explicit parameter list θ | `core.meta.functional_learner` (`higher.patch.monkeypatch`) |
# | θ' = θ − α ∇L_s(θ), kept differentiable for second order | `core.meta.inner_step`, inside `core.meta.meta_gradients` |
# | g = ∇L_q(θ') (first order) or ∇_θ L_q(θ'(θ)) (second order) | `core.meta.meta_gradients` (`first_order=`) |
# | θ ← θ − β Σ_i g_i over episodes | `core.meta.apply_update`, called by `core.meta.episodic_meta_update` |

# %%
import time

import torch
from torch.nn import functional as F

from metaprompt_lite.backbone import load_clip
from metaprompt_lite.data import load_dataset
from metaprompt_lite.core.losses import clip_logits
from metaprompt_lite.core.meta import double_backward_attention, meta_gradients
from metaprompt_lite.methods import get_method, prompted_clip
from metaprompt_lite.paths import default_model
from metaprompt_lite.splits import relabel

torch.manual_seed(0)
backbone = load_clip(*default_model())
dataset = load_dataset("emoji-novel-places")
method = get_method("ivlp")  # deep text + vision prompts: the meta-gradient goes through both encoders
model = prompted_clip(backbone, method, dataset.classnames[:8], dataset.templates, dataset.name)
encoder = model.encoder.second_order()  # full last blocks: these passes are differentiated twice
pool = (dataset.split == 0) & (dataset.labels < 8)
images, labels = dataset.images[pool], dataset.labels[pool]
support_classes, query_classes = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])
support = torch.isin(labels, support_classes)
alpha = 0.1


def episode_loss(module, mask, classes):
    """CE of prompted logits on the images of ``mask`` over ``classes`` (relabelled 0..k-1)."""
    prompts = module()
    logits = clip_logits(model.image_features(images[mask], prompts, encoder=encoder),
                         model.text_features(prompts, classes, encoder=encoder), model.logit_scale)
    return F.cross_entropy(logits, relabel(labels[mask], classes))


support_loss = lambda m: episode_loss(m, support, support_classes)
query_loss = lambda m: episode_loss(m, ~support, query_classes)
names = [n for n, _ in model.prompts.named_parameters()]
theta = [p for _, p in model.prompts.named_parameters()]
print(f"support: {int(support.sum())} images of classes {support_classes.tolist()}; "
      f"query: {int((~support).sum())} images of classes {query_classes.tolist()}; "
      f"prompts θ: {', '.join(names)} ({sum(p.numel() for p in theta)} numbers)")

# %% [markdown]
# ## First against second order
# Both from `core.meta.meta_gradients`, on the same episode and the same encoder passes (the model
# encoder's `second_order()` twin, which `core.steps.domain_split` asks for when `meta_order=2`; it
# runs every block in full, since second derivatives through the benchmark's pooled last block round
# differently). Second order wraps its passes in `core.meta.double_backward_attention`, which routes
# attention to torch's math kernel (the fused CPU kernels have no double backward).
# Two gradients count as equal here when `torch.allclose(atol=1e-5, rtol=1e-4)` holds: the bound at
# which the next section matches the package against a hand-written step.

# %%
g2, loss_q = meta_gradients(model.prompts, support_loss, query_loss, inner_lr=alpha, first_order=False)
g1, _ = meta_gradients(model.prompts, support_loss, query_loss, inner_lr=alpha, first_order=True)
rel = {}
for n in names:
    rel[n] = ((g2[n] - g1[n]).norm() / g2[n].norm()).item()
    cos = F.cosine_similarity(g1[n].flatten(), g2[n].flatten(), dim=0).item()
    print(f"{n:12s} |g₂| = {g2[n].norm().item():.4g}   |g₂ − g₁| / |g₂| = {rel[n]:.2f}   cos(g₁, g₂) = {cos:.3f}")
for n in names:  # central claim: second order differs from first order by far more than the float bound
    assert not torch.allclose(g1[n], g2[n], atol=1e-5, rtol=1e-4), f"{n}: second order equals first order"
print(f"On this model and α = {alpha}, dropping the Hessian term changes each prompt's meta-gradient by "
      f"{min(rel.values()):.0%} to {max(rel.values()):.0%} of its norm: first order is "
      f"{'a poor' if min(rel.values()) > 0.5 else 'a rough' if max(rel.values()) > 0.1 else 'a close'} "
      "approximation of second order here.")

# %% [markdown]
# ## The difference is the Hessian term
# With one inner step, θ' = θ − α∇L_s(θ) has the Jacobian I − α∇²L_s(θ), so g₂ = g₁ − α∇²L_s(θ)·g₁.
# Written by hand: the inner step with `torch.autograd.grad(..., create_graph=True)`, the learner called
# on the adapted parameters with `torch.func.functional_call`, and the Hessian-vector product
# ∇²L_s·g₁ as the gradient of ⟨∇L_s, g₁⟩.

# %%
with double_backward_attention():
    inner = torch.autograd.grad(support_loss(model.prompts), theta, create_graph=True)
    adapted = {n: p - alpha * g for n, p, g in zip(names, theta, inner)}
    lq = episode_loss(lambda: torch.func.functional_call(model.prompts, adapted, ()), ~support, query_classes)
    manual = dict(zip(names, torch.autograd.grad(lq, theta, retain_graph=True)))
    hvp = dict(zip(names, torch.autograd.grad(inner, theta, grad_outputs=[g1[n] for n in names])))
at_adapted = {n: v.detach().requires_grad_(True) for n, v in adapted.items()}
lq_plain = episode_loss(lambda: torch.func.functional_call(model.prompts, at_adapted, ()), ~support, query_classes)
plain = dict(zip(names, torch.autograd.grad(lq_plain, list(at_adapted.values()))))
for n in names:
    assert torch.allclose(g2[n], manual[n], atol=1e-5, rtol=1e-4), n
    assert torch.allclose(g1[n], plain[n], atol=1e-5, rtol=1e-4), n
    assert torch.allclose(g2[n], g1[n] - alpha * hvp[n], atol=1e-5, rtol=1e-4), n
assert torch.allclose(loss_q, lq.detach(), atol=1e-6)
hessian_term = max((alpha * hvp[n]).abs().max().item() for n in names)
# the bound, not the digits: the last digits differ between CPUs (AVX2 vs AVX-512 kernels)
print("Within atol 1e-5 + rtol 1e-4: the package's second order equals the hand-written step, its first order "
      f"the plain gradient at θ', and g₂ − g₁ equals −α∇²L_s·g₁, whose largest entry is {hessian_term:.3g}. "
      "All that second order adds to first order is the Hessian-vector product of the support loss.")

# %% [markdown]
# ## What each costs
# Second order keeps the inner step's graph and back-propagates through a gradient (a
# Hessian-vector product). `benchmarks/step_cost.py` measures whole training steps; here, one
# meta-gradient, three times each:

# %%
# NBVAL_IGNORE_OUTPUT
cost = {}
for first_order in (True, False):
    t0 = time.perf_counter()
    for _ in range(3):
        meta_gradients(model.prompts, support_loss, query_loss, inner_lr=alpha, first_order=first_order)
    cost[first_order] = (time.perf_counter() - t0) / 3
print(f"One meta-gradient took {cost[True] * 1000:.0f} ms in first order and {cost[False] * 1000:.0f} ms in second "
      f"order on this machine: second order costs {cost[False] / cost[True]:.1f} times first order here.")

# %% [markdown]
# ## Summary
# - `higher`'s monkeypatch turns the prompt learner into a functional module, run on the adapted
#   parameters θ − α∇L_s written out by hand; the package's second-order meta-gradient equals a
#   hand-written `create_graph=True` step, and differs from first order by exactly the Hessian term
#   −α∇²L_s·g₁ (both asserted above to atol 1e-5, rtol 1e-4).
# - MetaPrompt's official code is first order, takes its inner step with the training optimizer (the
#   support gradient stays in the momentum) and restores only the first episode: `metaprompt` runs that
#   loop (`core.meta.official_quirks_meta_update`), `metaprompt-clean` the exact update.
#
# ## Exercises
# 1. Use two inner steps (`inner_steps=2`): does the first/second-order cosine drop?
# 2. Vary α from 0.01 to 1: when does the Hessian term matter?
# 3. Run the hand-written cell without `double_backward_attention`: what error does PyTorch raise, and why?
