# %% [markdown]
# # 03 · Vision prompts, MaPLe coupling and MetaPrompt's dual-modality network
#
# Text prompts change only how classes are *described*. Vision prompts change how images are
# *seen*: **VPT-deep / IVLP** append `n_vision` learnable tokens to the patch sequence of the ViT and
# replace them at every layer up to `vision_depth` (they carry no position and are dropped before
# pooling). Three ways to combine the modalities:
#
# | method | text prompts | vision prompts |
# |---|---|---|
# | IVLP | deep, independent | deep, independent |
# | MaPLe | deep | *projected from the text prompts* by a linear coupling per layer |
# | MetaPrompt | deep, independent | deep, independent — and each prompted encoder is paired with its **frozen twin** |
#
# MetaPrompt's network has four encoders: prompted f̃_I, f̃_T and frozen f_I, f_T. The frozen twins
# are CLIP itself; they supervise the prompted branches across modalities (notebook 04).

# %%
import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle

from metaprompt_lite.backbone import load_clip
from metaprompt_lite.core.clip import Encoder, encode_image_layers, encode_text_layers
from metaprompt_lite.data import load_dataset
from metaprompt_lite.methods import get_method, prompted_clip
from metaprompt_lite.paths import default_model

torch.manual_seed(0)
backbone = load_clip(*default_model())
dataset = load_dataset("emoji-novel-mixed")
classes = dataset.classnames[:5]
images = dataset.images[:4]
grid = backbone.image_size // backbone.model.visual.patch_size[0]
print(f"ViT: {backbone.vision_layers} layers, {grid}x{grid} patch tokens + CLS; text: {backbone.text_layers} layers")

# %%
counts = {}
for name in ("coop", "ivlp", "maple", "metaprompt"):
    method = get_method(name)
    model = prompted_clip(backbone, method, classes, dataset.templates, dataset.name)
    shapes = {n: tuple(p.shape) for n, p in model.prompts.named_parameters()}
    counts[name] = n = sum(p.numel() for p in model.prompts.parameters())
    print(f"{name:10s} {n:7d} params  {shapes}")
print(f"MetaPrompt learns {counts['metaprompt']} numbers, "
      f"{'as many as' if counts['metaprompt'] == counts['ivlp'] else 'against'} IVLP's {counts['ivlp']} (the same "
      f"tensor shapes); MaPLe's coupling layers make it {counts['maple'] / counts['ivlp']:.0f} times as many.")

# %% [markdown]
# ## The token sequences, layer by layer
# Grey: frozen tokens (CLS, patches; SOS, class name, EOS). Colour: prompts. In MaPLe the vision
# prompts (orange, hatched) are computed from the text prompts of the same layer.

# %%
def draw(ax, method_name):
    method = get_method(method_name)
    learner = prompted_clip(backbone, method, classes, dataset.templates, dataset.name).prompts
    n_ctx, n_vis = method.prompt.n_ctx, method.prompt.n_vision
    for layer in range(backbone.vision_layers):
        y = -layer
        ax.add_patch(Rectangle((0, y), 1 + grid * grid, 0.8, color="0.85"))
        if layer < learner.vision_depth:
            ax.add_patch(Rectangle((1 + grid * grid, y), n_vis, 0.8, color="tab:orange",
                                   hatch="//" if method.prompt.coupled else None, alpha=0.9))
        x0 = 1 + grid * grid + max(n_vis, 4) + 2
        ax.add_patch(Rectangle((x0, y), 1, 0.8, color="0.85"))
        if layer < learner.text_depth:
            ax.add_patch(Rectangle((x0 + 1, y), n_ctx, 0.8, color="tab:blue"))
        ax.add_patch(Rectangle((x0 + 1 + n_ctx, y), 4, 0.8, color="0.85"))
    ax.set_xlim(0, 1 + grid * grid + 16 + n_ctx)
    ax.set_ylim(-backbone.vision_layers, 1)
    ax.set_yticks([-i + 0.4 for i in range(backbone.vision_layers)],
                  [f"layer {i}" for i in range(backbone.vision_layers)])
    ax.set_xticks([])
    ax.set_title(method_name)


fig, axes = plt.subplots(1, 3, figsize=(13, 3))
for ax, name in zip(axes, ("coop", "maple", "metaprompt")):
    draw(ax, name)
fig.suptitle("image tokens (CLS + patches | vision prompts)      text tokens (SOS | context | name . EOS)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The encoders, checked
# The passes live in `metaprompt_lite/core/clip.py`: `encode_text_layers` and `encode_image_layers`
# rebuild open_clip's towers from its pieces (`token_embedding`, `transformer.resblocks`, `ln_final`,
# `visual.conv1`, ...) so prompts can enter between the blocks; the plain `Encoder` calls them. The
# benchmark hands the model `metaprompt_lite.fastpath.FastEncoder` instead (`methods.prompted_clip`):
# it computes the same features in fewer operations. Three checks that could fail:
# 1. with no prompts, the layer-by-layer passes are open_clip's own `encode_image` and `encode_text`;
# 2. the frozen twin f_I (the model's `FastEncoder`, no prompts) is CLIP's image feature, and MetaPrompt's
#    prompts move f̃_I away from it;
# 3. MaPLe's vision prompts are a function of its text prompts.

# %%
pixels = backbone.preprocess(images)
tokens = backbone.tokenizer([f"a photo of a {c}." for c in classes])
with torch.no_grad():
    image_gap = (encode_image_layers(backbone.model, pixels) - backbone.model.encode_image(pixels)).abs().max().item()
    text_gap = (encode_text_layers(backbone.model, tokens) - backbone.model.encode_text(tokens)).abs().max().item()
assert image_gap < 1e-5 and text_gap < 1e-5, (image_gap, text_gap)
# the bound, not the digits: the last digits differ between CPUs (AVX2 vs AVX-512 kernels)
print(f"With no prompts the layer-by-layer passes are open_clip's encoders: max |difference| below 1e-5 on "
      f"{len(images)} images and {len(classes)} sentences, though the text pass stops at the last EOT token "
      f"(position {int(tokens.argmax(-1).max())} of {tokens.shape[1]}: causal attention lets nothing after it in).")

# %%
metaprompt = get_method("metaprompt")
model = prompted_clip(backbone, metaprompt, classes, dataset.templates, dataset.name)
with torch.no_grad():
    stem = model.image_stem(images)
    twin = model.frozen_image_features(images, stem=stem)  # the model's FastEncoder, no prompts
    clip_own = torch.nn.functional.normalize(backbone.model.encode_image(pixels), dim=-1)
    prompted = model.image_features(images, model.learner(), stem=stem)
    plain = torch.nn.functional.normalize(Encoder().image(backbone.model, stem, model.learner().vision), dim=-1)
twin_gap, fast_gap = (twin - clip_own).abs().max().item(), (prompted - plain).abs().max().item()
cos = (prompted * twin).sum(-1)
assert twin_gap < 1e-5 and fast_gap < 1e-5, (twin_gap, fast_gap)
assert (1 - cos).min() > 1e-3, cos  # far beyond rounding: the vision prompts do enter the image tower
print(f"The frozen twin f_I is CLIP's encode_image, and the model's FastEncoder gives the plain Encoder's f̃_I "
      f"(both within 1e-5). MetaPrompt's initial random vision prompts already turn f̃_I away from f_I: "
      f"cos {cos.min():.3f} to {cos.max():.3f} over {len(images)} images.")

# %%
maple = prompted_clip(backbone, get_method("maple"), classes, dataset.templates, dataset.name)
before = maple.learner().vision[0].detach().clone()
with torch.no_grad():
    maple.prompts.ctx.add_(0.1)
moved = (maple.learner().vision[0] - before).norm().item()
assert moved > 1e-3, moved
print(f"MaPLe: adding 0.1 to every entry of the text context moved the layer-0 vision prompt by {moved:.3f} "
      f"(its norm: {before.norm().item():.3f}); MaPLe has no vision prompt parameter of its own.")

# %% [markdown]
# ## Summary
# - Deep prompts are tokens replaced before each block; the backbone's weights are never modified.
#   `core.clip` runs the blocks one by one and, with no prompts, gives open_clip's features (asserted above).
# - MaPLe ties the two modalities; MetaPrompt keeps them independent and adds frozen twins.
# - The frozen twins are what make MetaPrompt's asymmetric loss possible (next notebook).
#
# ## Exercises
# 1. Count the FLOPs added by `n_vision` prompt tokens at this model's patch grid (printed above) vs
#    ViT-B/16's 14×14.
# 2. Make IVLP shallow (`vision_depth=1`): what changes in the figure and in the parameter count?
# 3. Why are vision prompts dropped before pooling, rather than averaged in?
