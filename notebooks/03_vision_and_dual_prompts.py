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
from metaprompt_lite.core.clip import encode_image_layers
from metaprompt_lite.data import load_dataset
from metaprompt_lite.methods import get_method, prompted_clip
from metaprompt_lite.paths import default_model
from metaprompt_lite.core.steps import compute_logits

torch.manual_seed(0)
backbone = load_clip(*default_model())
dataset = load_dataset("emoji-novel-mixed")
classes = dataset.classnames[:5]
images = dataset.images[:4]
grid = backbone.image_size // backbone.model.visual.patch_size[0]
print(f"ViT: {backbone.vision_layers} layers, {grid}x{grid} patch tokens + CLS; text: {backbone.text_layers} layers")

# %%
for name in ("coop", "ivlp", "maple", "metaprompt"):
    method = get_method(name)
    model = prompted_clip(backbone, method, classes, dataset.templates, dataset.name)
    shapes = {n: tuple(p.shape) for n, p in model.prompts.named_parameters()}
    n = sum(p.numel() for p in model.prompts.parameters())
    print(f"{name:10s} {n:7d} params  {shapes}")

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
# ## Checks you can see
# 1. With no vision prompts, the layer-wise encoder is exactly `model.encode_image`.
# 2. Vision prompts change the image features, but the frozen twin does not move.
# 3. MaPLe's vision prompts are a function of its text prompts: change `ctx`, the vision prompts change.

# %%
pixels = backbone.preprocess(images)
with torch.no_grad():
    plain = encode_image_layers(backbone.model, pixels)
    reference = backbone.model.encode_image(pixels)
print("max |layer-wise − encode_image| =", f"{(plain - reference).abs().max().item():.1e}")
assert torch.allclose(plain, reference, atol=1e-5)

metaprompt = get_method("metaprompt")
model = prompted_clip(backbone, metaprompt, classes, dataset.templates, dataset.name)
with torch.no_grad():
    out = compute_logits(model, metaprompt, images)
    prompted = model.image_features(images, model.learner())
    frozen = model.frozen_image_features(images)
print("cos(prompted f̃_I, frozen f_I) per image:", [round(v, 3) for v in (prompted * frozen).sum(-1).tolist()])
assert torch.allclose(frozen, torch.nn.functional.normalize(reference, dim=-1), atol=1e-5)
assert out.logits_i.shape == out.logits_t.shape == (len(images), len(classes))

maple = prompted_clip(backbone, get_method("maple"), classes, dataset.templates, dataset.name)
before = maple.learner().vision[0].detach().clone()
with torch.no_grad():
    maple.prompts.ctx.add_(0.1)
after = maple.learner().vision[0]
assert not torch.allclose(before, after)
print("MaPLe: shifting the text context moved the vision prompt by", f"{(after - before).norm().item():.3f}")

# %% [markdown]
# ## Summary
# - Deep prompts are tokens replaced at each layer; the backbone is never modified (open_clip's own
#   `transformer.resblocks` are called one by one).
# - MaPLe ties the two modalities; MetaPrompt keeps them independent and adds frozen twins.
# - The frozen twins are what make MetaPrompt's asymmetric loss possible (next notebook).
#
# ## Exercises
# 1. Count the FLOPs added by `n_vision` prompt tokens at 4×4 patches vs ViT-B/16's 14×14.
# 2. Make IVLP shallow (`vision_depth=1`): what changes in the figure and in the parameter count?
# 3. Why are vision prompts dropped before pooling, rather than averaged in?
