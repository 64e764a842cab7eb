"""Prompt learners: shapes, where the gradients go, a frozen backbone, CoOp's token layout."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from conftest import state_hash
from metaprompt_lite.methods import METHODS
from metaprompt_lite.core.prompts import PromptConfig, PromptedCLIP
from tolerances import assert_reorder_close, clip_terms

NAMES = ["cat", "dog", "red apple", "queen of hearts"]
CONFIGS = {
    "coop": PromptConfig(n_ctx=4, ctx_init="a photo of a"),
    "coop_random": PromptConfig(n_ctx=3, ctx_init=None),
    "cocoop": PromptConfig(n_ctx=4, conditional=True),
    "deep_text": PromptConfig(n_ctx=2, ctx_init=None, text_depth=-1),
    "ivlp": PromptConfig(n_ctx=4, text_depth=2, n_vision=3, vision_depth=2),
    "maple": PromptConfig(n_ctx=4, text_depth=3, n_vision=4, vision_depth=2, coupled=True),
    "metaprompt": PromptConfig(n_ctx=2, ctx_init=None, text_depth=-1, n_vision=2, vision_depth=-1),
}
EXPECTED_PARAMS = {
    "coop": {"ctx"}, "coop_random": {"ctx"},
    "cocoop": {"ctx", "meta_net.0.weight", "meta_net.0.bias", "meta_net.2.weight", "meta_net.2.bias"},
    "deep_text": {"ctx", "deep_ctx"},
    "ivlp": {"ctx", "deep_ctx", "vision_ctx"},
    "maple": {"ctx", "deep_ctx", "coupling.0.weight", "coupling.0.bias", "coupling.1.weight", "coupling.1.bias"},
    "metaprompt": {"ctx", "deep_ctx", "vision_ctx"},
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shapes_gradients_and_frozen_backbone(backbone, name):
    torch.manual_seed(0)
    model = PromptedCLIP(backbone, CONFIGS[name], NAMES)
    images = torch.randint(0, 256, (3, 3, 48, 48), dtype=torch.uint8)
    backbone_hash = state_hash(backbone.model)
    learnable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert learnable == {f"prompts.{n}" for n in EXPECTED_PARAMS[name]}

    logits = model(images)
    assert logits.shape == (3, len(NAMES))
    prompts = model.learner(model.frozen_image_features(images))
    text = model.text_features(prompts)
    assert text.shape == ((3, len(NAMES), backbone.embed_dim) if CONFIGS[name].conditional
                          else (len(NAMES), backbone.embed_dim))
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(text.shape[:-1]))

    optimizer = torch.optim.SGD(model.prompts.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    before = {n: p.detach().clone() for n, p in model.prompts.named_parameters()}
    F.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads == {f"prompts.{n}" for n in EXPECTED_PARAMS[name]}
    optimizer.step()
    assert all(not torch.equal(before[n], p) for n, p in model.prompts.named_parameters())
    assert state_hash(backbone.model) == backbone_hash


def test_coop_with_word_init_reproduces_the_hand_prompt(backbone):
    """ctx initialised from "a photo of a" gives exactly CLIP's features of "a photo of a {name}."."""
    model = PromptedCLIP(backbone, CONFIGS["coop"], NAMES)
    with torch.no_grad():
        ours = model.text_features(model.learner())
        tokens = backbone.tokenizer([f"a photo of a {n}." for n in NAMES])
        reference = F.normalize(backbone.model.encode_text(tokens), dim=-1)
    assert_reorder_close(ours, reference, clip_terms(backbone, 1, ("text",)))  # our layer-wise pass against open_clip's


def test_frozen_text_is_the_template_ensemble(backbone):
    templates = ["a photo of a {}.", "a drawing of a {}."]
    model = PromptedCLIP(backbone, CONFIGS["coop"], NAMES, templates)
    with torch.no_grad():
        per_template = [F.normalize(backbone.model.encode_text(backbone.tokenizer([t.format(n) for n in NAMES])), dim=-1)
                        for t in templates]
    torch.testing.assert_close(model.frozen_text_features(), F.normalize(sum(per_template), dim=-1))
    torch.testing.assert_close(model.frozen_text_features(torch.tensor([2])), model.frozen_text[2:3])


def test_maple_learns_a_photo_and_keeps_of_a_as_fixed_suffix_words(backbone):
    """MaPLe (and IVLP): n_ctx = 2 from "a photo of a": ctx starts as the embeddings of "a photo",
    "of a" are frozen words of the suffix, and the initial prompt is exactly CLIP's
    "a photo of a {name}." (multimodal-prompt-learning, trainers/maple.py lines 84-131)."""
    for name in ("maple", "ivlp"):
        model = PromptedCLIP(backbone, METHODS[name].prompt, NAMES)
        assert model.prompts.ctx.shape[0] == 2
        with torch.no_grad():
            words = backbone.model.token_embedding(backbone.tokenizer(["a photo of a"]))[0]
            torch.testing.assert_close(model.prompts.ctx, words[1:3])  # "a photo": learned
            for c, n in enumerate(NAMES):  # the suffix starts with "of a", then the class name
                tokens = backbone.tokenizer([f"of a {n}."])[0]
                length = int(tokens.argmax()) - 1  # "of a {n}." without SOS/EOT
                expected = backbone.model.token_embedding(tokens[None])[0, 1:1 + length]
                torch.testing.assert_close(model.token_suffix[c, :length], expected)
            # only the text positions 1..2 are learned: at init, the prompted text is the hand prompt
            # (shallow text check: layer 0 only, so compare with one text layer of prompts)
            reference = F.normalize(backbone.model.encode_text(backbone.tokenizer([f"a photo of a {n}." for n in NAMES])), dim=-1)
            shallow = PromptedCLIP(backbone, PromptConfig(n_ctx=2, ctx_init="a photo of a"), NAMES)
            assert_reorder_close(shallow.text_features(shallow.learner()), reference, clip_terms(backbone, 1, ("text",)))
        # and training moves "a photo" only: the gradient reaches ctx, the buffers hold "of a"
        assert not any("suffix" in n for n, _ in model.named_parameters())


def test_maple_deep_coupling_layers_start_as_copies_of_one_layer(backbone):
    """MaPLe's compound_prompt_projections = _get_clones(one Linear): layers 1.. start equal (and are
    separate parameters); layer 0's projection is its own."""
    from types import SimpleNamespace

    from metaprompt_lite.core.prompts import PromptLearner

    torch.manual_seed(0)
    widths = SimpleNamespace(text_width=8, vision_width=12, embed_dim=8, text_layers=12, vision_layers=12)
    coupling = PromptLearner(METHODS["maple"].prompt, widths).coupling  # a 12-layer shape: depth 9
    assert len(coupling) == 9
    for layer in coupling[2:]:
        torch.testing.assert_close(layer.weight, coupling[1].weight, rtol=0, atol=0)
        assert layer.weight.data_ptr() != coupling[1].weight.data_ptr()
    assert not torch.equal(coupling[0].weight, coupling[1].weight)


def test_prometar_frozen_text_is_the_raw_mean_of_clips_60_imagenet_templates(backbone):
    """ProMetaR's L1 target (mlvlab/ProMetaR, trainers/prometar.py lines 226-233 and 312-313): the mean
    of the *raw* text features of CLIP's 60 ImageNet templates, normalised after averaging, whatever
    the dataset's own templates."""
    from metaprompt_lite.methods import get_method, prompted_clip

    names = ["cat", "red apple"]
    model = prompted_clip(backbone, get_method("prometar"), names, ["a photo of a {}, a type of pet."], "OxfordPets")
    assert len(model.templates) == 60 == len(set(model.templates))
    assert {"a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
            "a photo of the hard to see {}.", "a drawing of a {}."} <= set(model.templates)
    with torch.no_grad():
        raw = torch.stack([backbone.model.encode_text(backbone.tokenizer([t.format(n) for t in model.templates]))
                           .mean(0) for n in names])
        normalized_mean = torch.stack([F.normalize(backbone.model.encode_text(
            backbone.tokenizer([t.format(n) for t in model.templates])), dim=-1).mean(0) for n in names])
    assert_reorder_close(model.frozen_text_features(), F.normalize(raw, dim=-1), clip_terms(backbone, 1, ("text",)))
    # not the same as CLIP's ensemble of normalised features (the choice is visible)
    assert (F.normalize(normalized_mean, dim=-1) - model.frozen_text_features()).abs().max() > 1e-5


def test_metaprompt_frozen_text_drops_the_final_period(backbone):
    """MetaPrompt's f_T (trainers/meta.py lines 189-219): the hand template without its final period;
    on ImageNet its 8 templates, also without periods."""
    from metaprompt_lite.methods import get_method, prompt_templates

    method = get_method("metaprompt")
    assert prompt_templates(method, ["a photo of a {}, a type of pet.", "x {}."], "OxfordPets") == [
        "a photo of a {}, a type of pet"]
    from metaprompt_lite.research.catalog import get_spec

    imagenet = prompt_templates(method, get_spec("ImageNet").templates, "ImageNet")
    assert len(imagenet) == 8 and "a photo of a {}" in imagenet and "itap of a {}" in imagenet
    assert not any(t.endswith(".") for t in imagenet)


def test_class_subset_and_new_classes(backbone):
    model = PromptedCLIP(backbone, CONFIGS["metaprompt"], NAMES)
    prompts = model.learner()
    full = model.text_features(prompts)
    subset = model.text_features(prompts, torch.tensor([1, 3]))
    torch.testing.assert_close(subset, full[[1, 3]])
    model.set_classes(["zebra", "tram"])
    assert model.text_features(model.learner()).shape[0] == 2


def test_maple_vision_prompts_are_projections_of_text_prompts(backbone):
    model = PromptedCLIP(backbone, CONFIGS["maple"], NAMES)
    prompts = model.learner()
    for i, projection in enumerate(model.prompts.coupling):
        torch.testing.assert_close(prompts.vision[i], projection(prompts.text[i]))


def test_bad_prompt_inputs(backbone):
    with pytest.raises(ValueError, match="class list is empty"):
        PromptedCLIP(backbone, CONFIGS["coop"], [])
    with pytest.raises(ValueError, match="has 4 tokens but n_ctx=5"):
        PromptedCLIP(backbone, PromptConfig(n_ctx=5, ctx_init="a photo of a"), NAMES)
    with pytest.raises(ValueError, match="frozen_mean"):
        PromptedCLIP(backbone, CONFIGS["coop"], NAMES, frozen_mean="median")
    with pytest.raises(ValueError, match="needs a '\\{\\}'"):
        PromptedCLIP(backbone, CONFIGS["coop"], NAMES, templates=["a photo"])
    with pytest.raises(ValueError, match="too long"):
        PromptedCLIP(backbone, CONFIGS["coop"], ["very " * 40 + "long name"])
    with pytest.raises(ValueError, match="coupled"):
        PromptedCLIP(backbone, PromptConfig(n_ctx=4, n_vision=2, vision_depth=1, coupled=True), NAMES)


def test_every_method_recipe_builds(backbone):
    for method in METHODS.values():
        model = PromptedCLIP(backbone, method.prompt, NAMES)
        assert model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).shape == (1, len(NAMES))


def test_prompted_pocket_clip_in_train_mode_leaves_its_batchnorm_alone(pocket):
    """The pocket CLIP's conv stem has BatchNorm: ``PromptedCLIP.train()`` must keep the frozen CLIP
    in eval mode, or a training forward pass would update the stem's running statistics. A training
    step moves the prompts and leaves every backbone tensor (buffers included) as it was."""
    import copy

    torch.manual_seed(0)
    model = PromptedCLIP(pocket, CONFIGS["ivlp"], NAMES)
    batchnorms = [m for m in model.clip.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batchnorms, "the pocket CLIP should have a BatchNorm conv stem"
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    backbone_hash = state_hash(pocket.model)
    model.train()
    assert model.prompts.training and not model.clip.training and not any(m.training for m in batchnorms)
    optimizer = torch.optim.SGD(model.prompts.parameters(), lr=0.1)
    before = model.prompts.ctx.detach().clone()
    F.cross_entropy(model(images), torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    assert not torch.equal(model.prompts.ctx, before)
    assert state_hash(pocket.model) == backbone_hash
    # the check has teeth: a CLIP left in train mode does change the statistics
    careless = copy.deepcopy(pocket.model).train()
    careless.encode_image(pocket.preprocess(images))
    assert state_hash(careless) != backbone_hash


def test_cocoop_text_features_are_those_of_each_image_own_context(backbone):
    """CoCoOp batches B·C prompts image-major; row b must be the features of the classes under image
    b's context ctx + π(x_b), computed here one image at a time as a non-conditional prompt."""
    from metaprompt_lite.core.prompts import Prompts

    torch.manual_seed(0)
    model = PromptedCLIP(backbone, CONFIGS["cocoop"], NAMES)
    with torch.no_grad():  # the tiny meta-net's few ReLU units are often all off at init: switch them on
        model.prompts.meta_net[0].bias.fill_(1.0)
    images = torch.randint(0, 256, (3, 3, 48, 48), dtype=torch.uint8)
    prompts = model.learner(model.frozen_image_features(images))
    batched = model.text_features(prompts)
    for b in range(3):
        one = Prompts(text=[prompts.text[0][b]] + prompts.text[1:], vision=prompts.vision)
        assert_reorder_close(batched[b], model.text_features(one), clip_terms(backbone, 1, ("text",)))
    assert (batched[0] - batched[1]).abs().max() > 1e-4  # the images' contexts do differ


@pytest.mark.parametrize("name", ["coop", "cocoop", "maple"])
def test_set_classes_equals_a_model_built_on_the_new_classes(backbone, name):
    """Evaluating new classes after ``set_classes`` must be the same as building the model on them
    with the same prompt state: token buffers, frozen (template-ensemble) text and logits."""
    torch.manual_seed(0)
    templates = ["a photo of a {}.", "a drawing of a {}."]
    model = PromptedCLIP(backbone, CONFIGS[name], NAMES, templates)
    with torch.no_grad():
        for p in model.prompts.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # a trained-looking prompt state
    new = ["zebra", "tram", "ace of spades"]
    model.set_classes(new)
    fresh = PromptedCLIP(backbone, CONFIGS[name], new, templates)
    fresh.prompts.load_state_dict(model.prompts.state_dict())
    images = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8)
    torch.testing.assert_close(model.frozen_text_features(), fresh.frozen_text_features())
    assert torch.equal(model.tokenized, fresh.tokenized)
    with torch.no_grad():
        torch.testing.assert_close(model(images), fresh(images))
    assert model(images).shape == (2, len(new))
