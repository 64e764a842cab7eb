"""metaprompt-lite: prompt learning for CLIP (CoOp, CoCoOp, IVLP, MaPLe, MetaPrompt, ProMetaR, GRAM).

The package implements; the notebooks in ``notebooks/`` explain. Modules:

- ``backbone``  load any open_clip ``CLIP``, freeze it, encode text/images layer by layer
- ``prompts``   prompt learners (text context, conditional context, deep vision prompts, coupling)
- ``losses``    cross-entropy on CLIP logits, MetaPrompt's asymmetric contrastive loss, L1 consistency
- ``meta``      episodic splits and the ``higher``-based meta-gradient step
- ``splits``    base/new class split, few-shot draws, relabelling
- ``engine``    config, seeding, metrics, the training loop, checkpoints
- ``data``      the offline benchmark suite and the pretraining corpus
"""

__version__ = "0.2.0"
