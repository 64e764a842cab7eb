"""The core: the maths of every method, in the order a reader meets it. It imports nothing from the
rest of the package (``tests/test_core.py``); the benchmark around it is the rest of the package.

- ``clip``      a frozen CLIP run layer by layer; the plain :class:`~.clip.Encoder`
- ``losses``    CLIP logits, CE, MetaPrompt's asymmetric contrastive loss, the L1 consistency term
- ``prompts``   the prompt learners and :class:`~.prompts.PromptedCLIP`
- ``loop``      the training loop, its batch and its state
- ``meta``      episodes, meta-gradients (``higher``), MetaPrompt's clean and official updates
- ``prometar``  ProMetaR's gradient modulation and meta-regularised step
- ``gram``      GRAM's gradient regulator and its meta-training
- ``steps``     each method as a recipe, and its training step (MetaPrompt: :func:`~.steps.metaprompt_step`)
"""
