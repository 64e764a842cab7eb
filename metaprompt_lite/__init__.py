"""metaprompt-lite: prompt learning for CLIP (CoOp, CoCoOp, IVLP, MaPLe, MetaPrompt, ProMetaR, GRAM).

The package implements; the notebooks in ``notebooks/`` explain. Its modules, lowest layer first
(imports point down only; ``tests/test_layers.py`` checks it, and that every module is listed here):

No model
- ``paths``          where the committed data and results live; the default checkpoint
- ``provenance``     what made a result: code version, weights' sha256, the machine
- ``pretrain_config`` the pocket CLIP's pretraining settings (read by the command line without torch)
- ``faults``         fault points for the kill-and-resume tests
- ``results_table``  the benchmark's CSVs: append, validate, repair
- ``intervals``      a margin's paired bootstrap interval over seeds and datasets; the verdict rule
- ``claims``         the papers' claims that compare methods, read with their intervals
- ``splits``         base/new class split, few-shot draws, relabelling
- ``losses``         CE on CLIP logits, MetaPrompt's asymmetric contrastive loss, L1 consistency
- ``teacher``        the text teacher of the pocket CLIP's pretraining
- ``data``           the offline benchmark suite and the pretraining corpus
- ``research``       the papers' datasets (research tier)

A frozen CLIP and the training loop
- ``backbone``       load any open_clip ``CLIP``, freeze it, encode text/images layer by layer
- ``fastpath``       exact shortcuts and caches (shared-prefix text pass, batch and feature caches)
- ``engine``         config, seeding, metrics, the training loop, checkpoints

Zero-shot
- ``zeroshot``       templates, ensembles, the base/new evaluation
- ``headroom``       a dataset's linear-probe headroom over zero-shot

Prompts and meta-learning
- ``prompts``        prompt learners (text context, conditional context, deep vision prompts, coupling)
- ``meta``           episodic splits and the ``higher``-based meta-gradient step
- ``prometar``       ProMetaR's gradient modulation and meta-regularised step
- ``gram``           GRAM's meta-learned init and gradient regulator

Methods
- ``methods``        each method's recipe, and the presets (official and tuned budgets)
- ``steps``          each method's training step

Jobs
- ``run``            one run: a method on a dataset (or DG target) and seed
- ``analysis``       gradient alignment along training
- ``pretrain``       pretraining the pocket CLIP
- ``model_card``     the pocket CLIP's model card figures
- ``gram_build``     meta-training GRAM's artifacts
- ``bench``          the benchmark grid, resumable
- ``shard``          a 1/N part of the grid, and the merge of the parts
- ``report``         tables and figures
- ``compare``        a benchmark's rows beside the committed ones: how much, and whether settings or machines differ

The command line
- ``cli``            ``metaprompt-lite``
- ``cli_data``       ``metaprompt-lite data``
"""

__version__ = "0.2.0"
