"""How coarse can the pixel-art look be? Zero-shot and linear-probe accuracy (base classes) of the
pocket CLIP on two datasets rendered at several pixel grids, before suite v3 was built.

Run from the repository root:  python experiments/suite-v3-design/look_grid.py
"""

import json
import sys
from pathlib import Path

import torch

from metaprompt_lite.backbone import load_clip
from metaprompt_lite.data import load_dataset
from metaprompt_lite.data.render import pixelate
from metaprompt_lite.headroom import base_headroom
from metaprompt_lite.paths import default_model

GRIDS = (None, 16, 8)


def main() -> None:
    torch.manual_seed(0)
    backbone = load_clip(*default_model())
    rows = []
    for name in sys.argv[1:] or ["emoji-novel-places", "flags-pixel"]:
        dataset = load_dataset(name)
        for grid in GRIDS:
            look = None if grid is None else (lambda x, g=grid: torch.from_numpy(pixelate(x.numpy(), g)))
            row = {**base_headroom(backbone, dataset, look), "grid": grid or "plain"}
            rows.append(row)
            print(f"{name:14s} grid {str(row['grid']):5s} zero-shot {row['zeroshot']:5.1f}  probe {row['probe']:5.1f}  "
                  f"headroom {row['headroom']:+5.1f}  (chance {row['chance']:.1f})", flush=True)
    Path(__file__).with_name("look_grid.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
