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
assert backbone.name == "pocket-clip"
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
print(f"emoji-novel-places, {len(places.classnames)}-way, single template: {acc_single:.1f}% (chance {chance(places):.1f}%)")
assert acc_single > 5 * chance(places)

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
# re-normalises. It is free (no training); whether it helps depends on the templates and the
# classes, so the cell after the table counts the datasets where it does.

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
by_template = frame.pivot(index="dataset", columns="templates", values="all")
gain = (by_template["ensemble"] - by_template["single"]).round(1)
print(f"the ensemble is better on {(gain > 0).sum()}, equal on {(gain == 0).sum()} and worse on {(gain < 0).sum()} "
      f"of {len(gain)} datasets (all-class accuracy)")

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
# The zero-shot *new*-class accuracy printed above is the bar a prompt learner should not fall
# under. In the papers (ViT-B/16) the meta-learners clear it and CoOp falls far below it. The next
# cell reads the committed benchmark of both protocols (`results/official/`: each method at its
# paper's budget, GRAM at its learner's; `results/tuned/`: budgets tuned on base-class validation) and counts the learned
# methods that end below the bar on new classes. If most do, a few shots of 64-px drawings give a
# prompt little that transfers to unseen classes, and new-class accuracy is where tuning a prompt
# costs most on this tier.

# %%
from metaprompt_lite.paths import results_dir
from metaprompt_lite.report import b2n_average, read_results

for protocol in ("official", "tuned"):
    averages = b2n_average(read_results(results_dir(protocol) / "b2n.csv"))
    learned = averages.drop(index=[m for m in averages.index if m.startswith("zsclip")])  # the zero-shot rows
    below = learned[learned["new"] < averages.loc["zsclip", "new"]]
    print(f"{protocol:8s}: zero-shot new (benchmark, single template) {averages.loc['zsclip', 'new']:.2f}; "
          f"{len(below)} of {len(learned)} learned methods end below it: {', '.join(below.index)}")

# %% [markdown]
#
# ## Summary
# - Zero-shot CLIP = cosine similarity with embedded class sentences, times a temperature.
# - Templates matter; an ensemble of templates is free, and the count above says on how many of
#   these datasets it helps.
# - The zero-shot *new*-class accuracy is the bar a prompt learner should not fall under.
#
# ## Exercises
# 1. Write three templates of your own for `cards` and measure them with `text_classifier`.
# 2. Which dataset has the largest gap between single template and ensemble? Why might that be?
# 3. Plot the confusion matrix of `fashion`: which classes does CLIP mix up?
