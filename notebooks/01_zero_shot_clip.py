# %% [markdown]
# # 01 · Zero-shot CLIP: templates, ensembles, logit scale, base vs new
#
# CLIP classifies an image by comparing its embedding with the embeddings of *sentences* naming
# each class. With normalised features f_I(x), f_T(t_c) and the learned temperature s = exp(logit_scale):
#
# $$p(y=c\mid x) = \frac{\exp(s\,\langle f_I(x), f_T(t_c)\rangle)}{\sum_{c'} \exp(s\,\langle f_I(x), f_T(t_{c'})\rangle)}$$
#
# The sentence $t_c$ is a hand-written **template** ("a photo of {}, a type of food."). Zero-shot
# CLIP is the baseline every prompt learner must beat — and, on *new* classes, often fails to.

# %%
import matplotlib.pyplot as plt
import pandas as pd
import torch

from metaprompt_lite.backbone import load_clip
from metaprompt_lite.data import list_datasets, load_dataset
from metaprompt_lite.paths import default_model
from metaprompt_lite.zeroshot import chance, image_features, text_classifier, zero_shot_suite

torch.manual_seed(0)
backbone = load_clip(*default_model())
assert backbone.name == "pocket-clip"
food = load_dataset("emoji-novel-places")
print(food)
print("templates:", food.templates)

# %% [markdown]
# ## One template
# The text classifier is a matrix W ∈ R^{C×E}: one normalised text embedding per class.

# %%
test = (food.split == 1).nonzero().flatten()
features = image_features(backbone, food.images[test])
labels = food.labels[test]
single = text_classifier(backbone, food.classnames, food.templates[:1])
scale = backbone.model.logit_scale.exp().item()
logits = scale * features @ single.t()
acc_single = (logits.argmax(1) == labels).float().mean().item() * 100
print(f"W: {tuple(single.shape)}, logit scale s = {scale:.1f}")
print(f"emoji-novel-places, {len(food.classnames)}-way, single template: {acc_single:.1f}% (chance {chance(food):.1f}%)")
assert acc_single > 5 * chance(food)

# %% [markdown]
# ## The logit scale does not change the prediction, only the confidence
# argmax is invariant to s; the softmax entropy is not. CLIP learns s so that its probabilities are
# calibrated for contrastive training; prompt learners keep it frozen.

# %%
for s in (1.0, scale, 100.0):
    p = (s * features @ single.t()).softmax(-1)
    top1 = (p.argmax(1) == labels).float().mean().item() * 100
    entropy = -(p * p.clamp_min(1e-12).log()).sum(1).mean().item()
    print(f"s={s:6.1f}: accuracy {top1:.1f}%, mean entropy {entropy:.2f} nats")

# %% [markdown]
# ## Template ensembles
# CLIP's ensemble averages the normalised embeddings of several templates per class, then
# re-normalises. It usually helps, and it is free: no training.

# %%
rows = zero_shot_suite(backbone, "b2n")
frame = pd.DataFrame(rows)
frame.pivot(index="dataset", columns="templates", values=["all", "base", "new"]).round(1)

# %%
for row in rows:
    if row["templates"] == "single":
        print(f"{row['dataset']:20s} all-class accuracy {row['all'] / row['chance']:4.1f}x chance")
single_new = frame[frame.templates == "single"]["new"].mean()
print(f"zero-shot new-class accuracy, mean over datasets (single template): {single_new:.1f}%")

# %%
fig, ax = plt.subplots(figsize=(9, 3.5))
pivot = frame[frame.templates == "single"].set_index("dataset")[["base", "new"]]
pivot.plot.bar(ax=ax, rot=20)
ax.set_ylabel("top-1 accuracy (%)")
ax.set_title("Zero-shot pocket CLIP: base vs new classes (single template)")
plt.tight_layout()
plt.show()

# %% [markdown]
# Zero-shot CLIP has no notion of "base" and "new": it treats both halves alike, so any gap between
# them is a property of the classes, not of training. Prompt learning will change that.
#
# ## Summary
# - Zero-shot CLIP = cosine similarity with embedded class sentences, times a temperature.
# - Templates matter; ensembles of templates are a free improvement on most datasets.
# - The zero-shot *new*-class accuracy is the bar a prompt learner must not fall under.
#
# ## Exercises
# 1. Write three templates of your own for `cards` and measure them with `text_classifier`.
# 2. Which dataset has the largest gap between single template and ensemble? Why might that be?
# 3. Plot the confusion matrix of `fashion`: which classes does CLIP mix up?
