"""The DG zero-shot ensemble with CLIP's generic templates against the suite's domain-describing ones.

`zsclip-ens` averages each DG benchmark's templates (`metaprompt_lite/data/plan.py`, TEMPLATES):
on emoji-pacs the hand template and "a drawing of", "an emoji of", "a picture of", "an icon of",
which describe the benchmark's domains. This scores, on every target domain of both DG benchmarks
(all its images, as a DG row is scored), the prompts below; zero-shot, so no seed changes a number.

    python experiments/dg-templates/dg_templates.py   # ~1 min on 2 cores; writes results.json
"""

from __future__ import annotations

import json
from pathlib import Path

from metaprompt_lite.backbone import image_features
from metaprompt_lite.data import DG_BENCHMARKS, load_dataset
from metaprompt_lite.data.plan import TEMPLATES
from metaprompt_lite.paths import default_model
from metaprompt_lite.research.catalog import ENSEMBLE_TEMPLATES
from metaprompt_lite.run import load_backbone
from metaprompt_lite.core.clip import text_classifier
from metaprompt_lite.zeroshot import domain_scores

OUT = Path(__file__).with_name("results.json")


def prompt_sets(benchmark: str) -> dict[str, list[str]]:
    """The prompts compared on one benchmark: bare names, the hand template, the committed ensemble,
    the hand template with CLIP's seven generic ImageNet templates (CoOp's ensemble for a dataset with
    a custom template), and the seven alone (CoOp's ImageNet ensemble)."""
    hand = TEMPLATES[benchmark][0]
    return {"bare": ["{}"], "hand": [hand], "suite ensemble (committed)": list(TEMPLATES[benchmark]),
            "hand + CLIP's 7": [hand, *ENSEMBLE_TEMPLATES], "CLIP's 7": list(ENSEMBLE_TEMPLATES)}


def main() -> None:
    backbone = load_backbone(*default_model())
    results = {}
    for benchmark in DG_BENCHMARKS:
        dataset = load_dataset(benchmark)
        features = image_features(backbone, dataset.images)
        results[benchmark] = {}
        for name, templates in prompt_sets(benchmark).items():
            per_target = domain_scores(features, dataset, text_classifier(backbone, dataset.classnames, templates))
            results[benchmark][name] = {"templates": templates, "per_target": per_target,
                                        "mean": sum(per_target.values()) / len(per_target)}
            print(f"{benchmark:11s} {name:28s} mean {results[benchmark][name]['mean']:.2f}  "
                  + "  ".join(f"{t} {a:.2f}" for t, a in per_target.items()))
    OUT.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
