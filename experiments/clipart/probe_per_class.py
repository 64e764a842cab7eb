"""Probe accuracy (emoji-unseen, 50-way, single template) of the committed checkpoint and another one:
overall, per source style and the classes one gets more images of right than the other.

    python experiments/clipart/probe_per_class.py <checkpoint.safetensors> > probe_per_class.txt
"""
import sys, torch
from metaprompt_lite.backbone import load_clip
from metaprompt_lite.data import load_dataset
from metaprompt_lite.core.clip import text_classifier
from metaprompt_lite.zeroshot import image_features
ds = load_dataset("emoji-unseen")
res = {}
for tag, ckpt in (("committed", "data/pocket-clip/pocket-clip.safetensors"), ("other", sys.argv[1])):
    b = load_clip("pocket-clip", ckpt)
    with torch.no_grad():
        clf = text_classifier(b, ds.classnames, ds.templates[:1])
        f = image_features(b, torch.as_tensor(ds.images))
        pred = (f @ clf.t()).argmax(-1)
    res[tag] = (pred == torch.as_tensor(ds.labels)).float()
labels = torch.as_tensor(ds.labels)
for tag, ok in res.items():
    print(tag, f"{100*ok.mean():.1f}")
import numpy as np
doms = np.array([d.split(":")[0] for d in ds.drawing])
for d in sorted(set(doms)):
    m = torch.as_tensor(doms == d)
    print(d, " ".join(f"{tag} {100*ok[m].mean():.1f}" for tag, ok in res.items()))
rows = []
for c, name in enumerate(ds.classnames):
    m = labels == c
    rows.append((name, int(res["committed"][m].sum()), int(res["other"][m].sum())))
print("gained:", [r for r in rows if r[2] > r[1]])
print("lost:", [r for r in rows if r[2] < r[1]])
