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
# `metaprompt_lite.core.meta.meta_gradients` builds both in the style of every meta-step in the package
# (ProMetaR's and GRAM's too): `higher`'s monkeypatch runs the prompt learner on an explicit list of
# parameters (`core.meta.functional_learner`), and the inner step $\theta' = \theta - \alpha g$ is written
# out (`core.meta.inner_step`), so ProMetaR and GRAM can put their modulated or regulated gradient for $g$.
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
pool = (dataset.split == 0) & (dataset.labels < 8)
images, labels = dataset.images[pool], dataset.labels[pool]
support_classes, query_classes = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])
support = torch.isin(labels, support_classes)
alpha = 0.1


def episode_loss(module, mask, classes):
    """CE of prompted logits on the images of ``mask`` over ``classes`` (relabelled 0..k-1)."""
    prompts = module()
    logits = clip_logits(model.image_features(images[mask], prompts),
                         model.text_features(prompts, classes), model.logit_scale)
    return F.cross_entropy(logits, relabel(labels[mask], classes))


support_loss = lambda m: episode_loss(m, support, support_classes)
query_loss = lambda m: episode_loss(m, ~support, query_classes)
print(f"support: {int(support.sum())} images of classes {support_classes.tolist()}; "
      f"query: {int((~support).sum())} images of classes {query_classes.tolist()}")

# %% [markdown]
# ## Second order: `higher` against a manual `create_graph=True` step
# The manual version writes the inner step with `torch.autograd.grad(..., create_graph=True)` and
# calls the learner with the adapted parameters through `torch.func.functional_call`.

# %%
grads_higher, loss_q = meta_gradients(model.prompts, support_loss, query_loss, inner_lr=alpha, first_order=False)

names = [n for n, _ in model.prompts.named_parameters()]
theta = [p for _, p in model.prompts.named_parameters()]
with double_backward_attention():
    ls = support_loss(model.prompts)
    inner = torch.autograd.grad(ls, theta, create_graph=True)
    adapted = {n: p - alpha * g for n, p, g in zip(names, theta, inner)}
    adapted_module = lambda: torch.func.functional_call(model.prompts, adapted, ())
    lq = episode_loss(adapted_module, ~support, query_classes)
    grads_manual = dict(zip(names, torch.autograd.grad(lq, theta)))

for n in names:
    diff = (grads_higher[n] - grads_manual[n]).abs().max().item()
    # 4 significant digits and a bound: the last digits differ between CPUs (AVX2 vs AVX-512 kernels)
    gap = "< 1e-6" if diff < 1e-6 else f"= {diff:.1e}"
    print(f"{n:12s} |g| = {grads_manual[n].norm().item():.4g}   max |higher − manual| {gap}")
    assert torch.allclose(grads_higher[n], grads_manual[n], atol=1e-5, rtol=1e-4)
assert torch.allclose(loss_q, lq.detach(), atol=1e-6)

# %% [markdown]
# ## First order: the gradient at θ', no Hessian
# It equals the plain gradient of the query loss evaluated at the adapted parameters.

# %%
grads_first, _ = meta_gradients(model.prompts, support_loss, query_loss, inner_lr=alpha, first_order=True)
with torch.no_grad():
    adapted_plain = {n: p - alpha * g for n, p, g in zip(names, theta, inner)}
at_adapted = {k: v.clone().requires_grad_(True) for k, v in adapted_plain.items()}
lq_plain = episode_loss(lambda: torch.func.functional_call(model.prompts, at_adapted, ()), ~support, query_classes)
reference = dict(zip(names, torch.autograd.grad(lq_plain, list(at_adapted.values()))))
for n in names:
    assert torch.allclose(grads_first[n], reference[n], atol=1e-5, rtol=1e-4)
    cos = F.cosine_similarity(grads_first[n].flatten(), grads_higher[n].flatten(), dim=0).item()
    print(f"{n:12s} cos(first-order, second-order) = {cos:.4f}")

# %% [markdown]
# ## What each costs
# Second order keeps the inner step's graph and back-propagates through a gradient (a
# Hessian-vector product), using the math attention kernel (the fused CPU kernels have no double
# backward). `benchmarks/step_cost.py` measures whole training steps; here, one meta-gradient:

# %%
# NBVAL_IGNORE_OUTPUT
for first_order in (True, False):
    t0 = time.perf_counter()
    for _ in range(3):
        meta_gradients(model.prompts, support_loss, query_loss, inner_lr=alpha, first_order=first_order)
    print(f"{'first' if first_order else 'second'}-order meta-gradient: {(time.perf_counter() - t0) / 3 * 1000:.0f} ms")

# %% [markdown]
# ## Summary
# - `higher`'s monkeypatch turns the prompt learner into a functional module, run on the adapted
#   parameters θ − α∇L_s written out by hand; the package's second-order meta-gradient equals a
#   hand-written `create_graph=True` step to 1e-5.
# - First order = the query gradient at θ'; the cosines above show how far it is from second order on this model.
# - MetaPrompt's official code is first order, takes its inner step with the training optimizer (the
#   support gradient stays in the momentum) and restores only the first episode: `metaprompt` runs that
#   loop (`metaprompt_lite.core.meta.official_quirks_meta_update`), `metaprompt-clean` the exact update.
#
# ## Exercises
# 1. Use two inner steps (`inner_steps=2`): does the first/second-order cosine drop?
# 2. Vary α from 0.01 to 1: when does the Hessian term matter?
# 3. Time second order without `double_backward_attention`: what error does PyTorch raise, and why?
