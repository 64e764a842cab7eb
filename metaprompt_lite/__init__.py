"""metaprompt-lite: prompt learning for CLIP (CoOp, CoCoOp, IVLP, MaPLe, MetaPrompt, ProMetaR, GRAM).

The package implements; the notebooks in ``notebooks/`` explain. Its modules, lowest layer first
(imports point down only; ``tests/test_layers.py`` checks it, and that every module is listed here):

The maths (read this first)
- ``core``           every method's maths, imports nothing else of the package: a frozen CLIP run layer by
                     layer, the losses, the prompt learners, the training loop, meta-gradients and
                     MetaPrompt's update, ProMetaR, GRAM, each method's step (its own docstring: the order)

No model
- ``paths``          where the committed data and results live; the default checkpoint
- ``provenance``     what made a result: code version, weights' sha256, the machine
- ``pretrain_config`` the pocket CLIP's pretraining settings (read by the command line without torch)
- ``faults``         fault points for the kill-and-resume tests
- ``results_table``  the benchmark's CSVs: append, validate, repair
- ``intervals``      a margin's paired bootstrap interval over seeds and datasets; the verdict rule
- ``claims``         the papers' claims that compare methods, read with their intervals
- ``splits``         base/new class split, few-shot draws
- ``optim``          SGD, warm-up and Dassl's cosine schedule; a budget's step count
- ``teacher``        the text teacher of the pocket CLIP's pretraining
- ``data``           the offline benchmark suite and the pretraining corpus
- ``research``       the papers' datasets (research tier)

Around the core: loading, speed, runs
- ``backbone``       load any open_clip ``CLIP`` (configs, conv stem, verified checkpoints), freeze it
- ``fastpath``       the fast encoder the recipes hand the model (shared-prefix text pass, pooled last
                     blocks), and the batch and feature caches
- ``checkpoints``    checkpoint files, written atomically, read back safely; a run's state in and out
- ``engine``         seeding, metrics, a run's batches, checkpoints and Ctrl-C around the core's loop

Zero-shot
- ``zeroshot``       templates, ensembles, the base/new evaluation
- ``headroom``       a dataset's linear-probe headroom over zero-shot

Methods
- ``gram_artifacts`` GRAM's meta-learned init and regulator on disk
- ``methods``        each method's recipe, the presets (official and tuned budgets), a recipe's step

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
- ``cli``            ``metaprompt-lite``: the entry point; train, pretrain, zeroshot, gram; one-line errors
- ``cli_args``       the command line's argument types and checks, in one place
- ``cli_bench``      ``metaprompt-lite bench|merge|report``
- ``cli_data``       ``metaprompt-lite data``
"""

__version__ = "0.2.0"
