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
from metaprompt_lite.core.clip import text_classifier
from metaprompt_lite.zeroshot import chance, image_features, zero_shot_suite

torch.manual_seed(0)
backbone = load_clip(*default_model())
places = load_dataset("emoji-novel-places")
print(places)
print("templates:", places.templates)

# %% [markdown]
# ## One template
# The text classifier is a matrix W ∈ R^{C×E}: one normalised text embedding per class.

# %%
test = (places.split == 1).nonzero().flatten()
features = image_features(backbone, places.images[test])
labels = places.labels[test]
single = text_classifier(backbone, places.classnames, places.templates[:1])
scale = backbone.model.logit_scale.exp().item()
logits = scale * features @ single.t()
acc_single = (logits.argmax(1) == labels).float().mean().item() * 100
print(f"W: {tuple(single.shape)}, logit scale s = {scale:.1f}")
print(f"emoji-novel-places, {len(places.classnames)}-way, single template: {acc_single:.1f}%, "
      f"{acc_single / chance(places):.1f} times chance ({chance(places):.1f}%)")

# %% [markdown]
# ## The logit scale does not change the prediction, only the confidence
# argmax is invariant to s; the softmax entropy is not. CLIP learns s so that its probabilities are
# calibrated for contrastive training; prompt learners keep it frozen.

# %%
measured = {}
for s in (1.0, scale, 100.0):
    p = (s * features @ single.t()).softmax(-1)
    top1 = (p.argmax(1) == labels).float().mean().item() * 100
    measured[s] = entropy = -(p * p.clamp_min(1e-12).log()).sum(1).mean().item()
    print(f"s={s:6.1f}: accuracy {top1:.1f}%, mean entropy {entropy:.2f} nats")
print(f"From s=1 to s=100 the accuracy stays put and the entropy falls from {measured[1.0]:.2f} to "
      f"{measured[100.0]:.2f} nats (uniform over {len(places.classnames)} classes: {torch.tensor(len(places.classnames)).log():.2f}).")

# %% [markdown]
# ## Template ensembles
# CLIP's ensemble averages the normalised embeddings of several templates per class, then
# re-normalises. It is free (no training), and it is no free gain: on this suite it helps some
# datasets and hurts others (asserted below). The table is zero-shot CLIP on every base-to-new
# dataset, both ways.

# %%
rows = zero_shot_suite(backbone, "b2n")
frame = pd.DataFrame(rows)
frame.pivot(index="dataset", columns="templates", values=["all", "base", "new"]).round(1)

# %%
one = frame[frame.templates == "single"].set_index("dataset")
ratio = one["all"] / one["chance"]
print(f"single template: all-class accuracy {ratio.min():.1f} ({ratio.idxmin()}) to {ratio.max():.1f} "
      f"({ratio.idxmax()}) times chance, median {ratio.median():.1f}")
by_template = frame.pivot(index="dataset", columns="templates", values="all")
gain = (by_template["ensemble"] - by_template["single"]).round(1)
assert (gain > 0).any() and (gain < 0).any(), gain.to_dict()  # it helps some datasets and hurts others
print(f"the ensemble is better on {(gain > 0).sum()}, equal on {(gain == 0).sum()} and worse on {(gain < 0).sum()} "
      f"of {len(gain)} datasets (all-class accuracy)")
# the lesson: a frozen CLIP names the classes of every dataset above chance, most far above it
assert (ratio > 1).all() and ratio.median() > 5, ratio.round(1).to_dict()

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
# them is a property of the classes, not of training. Prompt learning will change that: it trains on
# the base half only, and the zero-shot *new*-class accuracy becomes the bar a prompt learner should
# not fall under. The committed benchmark (`results/official/b2n.csv`, shown in notebook 09) holds
# zero-shot CLIP as its `zsclip` rows; the cell reads them back.

# %%
from metaprompt_lite.paths import results_dir
from metaprompt_lite.report import b2n_average, read_results

new_gap = one["new"] - one["base"]
print(f"new − base: {new_gap.min():+.1f} to {new_gap.max():+.1f} points; new above base on {(new_gap > 0).sum()} of {len(one)} datasets")
committed = b2n_average(read_results(results_dir("official") / "b2n.csv")).loc["zsclip"]
print(f"the bar, zero-shot new-class accuracy averaged over the datasets: {one['new'].mean():.2f}% in this run, "
      f"{committed['new']:.2f}% in the committed benchmark's zero-shot row (base {one['base'].mean():.2f} / {committed['base']:.2f})")
assert abs(committed["new"] - one["new"].mean()) < 0.01 and abs(committed["base"] - one["base"].mean()) < 0.01

# %% [markdown]
#
# ## Summary
# - Zero-shot CLIP = cosine similarity with embedded class sentences, times a temperature; the
#   frozen pocket CLIP is above chance on every dataset, far above on most (asserted).
# - Templates matter: an ensemble of templates costs no training, and on this suite it helps some
#   datasets and hurts others (asserted above; the counts are printed there).
# - The zero-shot *new*-class accuracy is the bar a prompt learner should not fall under.
#
# ## Exercises
# 1. Write three templates of your own for `cards` and measure them with `text_classifier`.
# 2. Which dataset has the largest gap between single template and ensemble? Why might that be?
# 3. Plot the confusion matrix of `fashion`: which classes does CLIP mix up?
