"""Compare a text phase run from step 0 with the committed checkpoint's text tower.

    metaprompt-lite pretrain --work-dir /tmp/pt0 --out /tmp/pt0/pocket-clip.safetensors --image-steps 0
    python experiments/text-from-step-0/compare_text.py /tmp/pt0/text.pt

Prints, over the text tower's tensors (everything but ``visual.*`` and ``logit_scale``), how many are equal
to the committed ones after the same fp16 cast, the largest absolute difference and the relative L2
difference ‖a − b‖ / ‖a‖ (max and mean), with b the new weights cast to fp16 like the committed a, so that
fp16 rounding alone (≈ 0.03 % relative) does not count as a difference.
"""

import sys

from safetensors.torch import load_file

from metaprompt_lite.checkpoints import load_checkpoint
from metaprompt_lite.paths import data_dir

committed = load_file(str(data_dir() / "pocket-clip" / "pocket-clip.safetensors"))
state = load_checkpoint(sys.argv[1])["model"]
keys = [k for k in committed if not k.startswith("visual.") and k != "logit_scale"]
equal, worst, relative = 0, 0.0, []
for key in keys:
    a, b = committed[key].float(), state[key].half().float()
    equal += int(committed[key].equal(state[key].half()))
    worst = max(worst, float((a - b).abs().max()))
    relative.append(float((a - b).norm() / a.norm().clamp_min(1e-12)))
print(f"{len(keys)} text tensors; equal after the fp16 cast: {equal}; max |diff| {worst:.3g}; "
      f"relative L2 difference max {max(relative):.3g}, mean {sum(relative) / len(relative):.3g}")
