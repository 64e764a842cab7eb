"""Layer-wise encoders against open_clip's own forward passes, and bad-input errors."""

from __future__ import annotations

import pytest
import torch

from metaprompt_lite import provenance
from metaprompt_lite.backbone import load_clip
from metaprompt_lite.core.clip import encode_image_layers, encode_text_layers
from tolerances import assert_reorder_close, clip_terms


def test_layerwise_text_without_prompts_equals_encode_text(backbone):
    tokens = backbone.tokenizer(["a photo of a cat.", "dog", "the queen of hearts, a playing card."])
    expected = backbone.model.encode_text(tokens)
    # equal up to float rounding: the layer-wise encoder truncates after the last EOT (exact under the
    # causal mask, but the matmuls have other shapes)
    assert_reorder_close(encode_text_layers(backbone.model, tokens), expected, clip_terms(backbone, 1, ("text",)))


def test_truncation_after_eot_is_exact_under_the_causal_mask(backbone):
    """Padding after the last EOT cannot reach the pooled token: garbage written there into open_clip's
    own full-length forward (a hook on ``token_embedding``) leaves its features unchanged, and the
    layer-wise encoder, which never runs those positions, agrees with it."""
    model = backbone.model
    tokens = backbone.tokenizer(["a cat.", "a red dog."])
    eot = int(tokens.argmax(-1).max())
    g = torch.Generator().manual_seed(0)

    def garbage_after_eot(module, inputs, out):
        out = out.clone()
        out[:, eot + 1:] = torch.randn(out[:, eot + 1:].shape, generator=g) * 10
        return out

    clean = model.encode_text(tokens)
    handle = model.token_embedding.register_forward_hook(garbage_after_eot)
    try:
        noisy = model.encode_text(tokens)
        full_changed = model.token_embedding(tokens)[:, eot + 1:].abs().mean()  # the hook did write garbage
    finally:
        handle.remove()
    assert full_changed > 1
    assert_reorder_close(noisy, clean, clip_terms(backbone, 1, ("text",)))
    assert_reorder_close(encode_text_layers(model, tokens), noisy, clip_terms(backbone, 1, ("text",)))


@pytest.mark.parametrize("which", ["backbone", "pocket"])
def test_layerwise_image_without_prompts_equals_encode_image(which, request):
    backbone = request.getfixturevalue(which)
    images = torch.randn(3, 3, backbone.image_size, backbone.image_size)
    assert torch.equal(encode_image_layers(backbone.model, images), backbone.model.encode_image(images))


def _hooked_text_reference(model, tokens, prompts, start=1):
    """Deep text prompts via forward hooks on open_clip's own ``encode_text``: an independent path."""
    n = prompts[0].shape[0]
    handles = [model.token_embedding.register_forward_hook(
        lambda m, i, out: torch.cat([out[:, :start], prompts[0].expand(out.shape[0], -1, -1),
                                     out[:, start + n:]], 1))]
    for layer in range(1, len(prompts)):
        def pre(module, args, kwargs, p=prompts[layer]):
            x = args[0]
            x = torch.cat([x[:, :start], p.expand(x.shape[0], -1, -1), x[:, start + n:]], 1)
            return (x,) + args[1:], kwargs
        handles.append(model.transformer.resblocks[layer].register_forward_pre_hook(pre, with_kwargs=True))
    try:
        return model.encode_text(tokens)
    finally:
        for h in handles:
            h.remove()


def test_deep_text_prompts_match_hooked_open_clip(backbone):
    model = backbone.model
    tokens = backbone.tokenizer(["X X X cat.", "X X X red apple."])
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randn(3, backbone.text_width, generator=g) for _ in range(backbone.text_layers)]
    ours = encode_text_layers(model, tokens, prompts=prompts)
    reference = _hooked_text_reference(model, tokens, prompts)
    assert_reorder_close(ours, reference, clip_terms(backbone, 1, ("text",)))  # truncation after EOT: other matmul shapes
    assert not torch.allclose(ours, model.encode_text(tokens))  # the prompts did something


@pytest.mark.parametrize("which", ["backbone", "pocket"])
def test_deep_vision_prompts_match_hooked_open_clip(which, request):
    """Also on the pocket CLIP, whose conv stem replaces the patchify conv1."""
    backbone = request.getfixturevalue(which)
    model, visual = backbone.model, backbone.model.visual
    g = torch.Generator().manual_seed(1)
    n_pro = 2
    prompts = [torch.randn(n_pro, backbone.vision_width, generator=g) for _ in range(backbone.vision_layers)]
    images = torch.randn(2, 3, backbone.image_size, backbone.image_size, generator=g)
    n_tokens = visual.grid_size[0] * visual.grid_size[1] + 1
    handles = [
        # append layer-0 prompts right before ln_pre (after positional embedding)
        visual.ln_pre.register_forward_pre_hook(
            lambda m, args: (torch.cat([args[0], prompts[0].expand(args[0].shape[0], -1, -1)], 1),)),
        # drop prompt tokens before ln_post
        visual.ln_post.register_forward_pre_hook(lambda m, args: (args[0][:, :n_tokens],)),
    ]
    for layer in range(1, len(prompts)):
        def pre(module, args, kwargs, p=prompts[layer]):
            x = args[0]
            return (torch.cat([x[:, :-n_pro], p.expand(x.shape[0], -1, -1)], 1),) + args[1:], kwargs
        handles.append(visual.transformer.resblocks[layer].register_forward_pre_hook(pre, with_kwargs=True))
    try:
        reference = model.encode_image(images)
    finally:
        for h in handles:
            h.remove()
    ours = encode_image_layers(model, images, prompts)
    assert_reorder_close(ours, reference, clip_terms(backbone, 1, ("image",)))
    assert not torch.allclose(ours, model.encode_image(images))


def test_backbone_is_frozen(backbone):
    assert all(not p.requires_grad for p in backbone.model.parameters())
    assert not backbone.model.training


def test_preprocess_resizes_and_normalises(backbone):
    images = torch.full((1, 3, 64, 64), 255, dtype=torch.uint8)
    x = backbone.preprocess(images)
    assert x.shape == (1, 3, backbone.image_size, backbone.image_size)
    expected = (1 - torch.tensor(backbone.mean)) / torch.tensor(backbone.std)
    torch.testing.assert_close(x[0, :, 0, 0], expected)


def test_preprocess_takes_uint8_and_float_images_alike(backbone):
    """Training feeds floats in [0, 1] (the augmentation's output), evaluation uint8: one scale."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=g)
    torch.testing.assert_close(backbone.preprocess(images.float() / 255), backbone.preprocess(images))
    same_size = torch.randint(0, 256, (1, 3, backbone.image_size, backbone.image_size), dtype=torch.uint8, generator=g)
    expected = (same_size.float() / 255 - torch.tensor(backbone.mean).view(1, 3, 1, 1)) / torch.tensor(backbone.std).view(1, 3, 1, 1)
    torch.testing.assert_close(backbone.preprocess(same_size), expected)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model name 'ViT-Q-99' — .*Available"):
        load_clip("ViT-Q-99")


def test_missing_checkpoint_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nothing.safetensors"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clip("tiny-clip", missing)


def test_unknown_tag_is_a_clear_error():
    with pytest.raises(ValueError, match="neither a checkpoint file nor a pretrained tag"):
        load_clip("ViT-B-16", "not-a-tag")


def test_local_checkpoint_round_trip(tmp_path, backbone):
    path = tmp_path / "tiny.pt"
    torch.save(backbone.model.state_dict(), path)
    loaded = load_clip("tiny-clip", path)
    tokens = backbone.tokenizer(["a cat"])
    assert torch.equal(loaded.model.encode_text(tokens), backbone.model.encode_text(tokens))


def test_the_pocket_checkpoints_sha256_has_one_record_that_the_card_quotes_and_the_file_matches():
    """``pocket-clip.json`` (written by ``metaprompt-lite pretrain``) holds the sha256 that loading checks;
    the model card is generated from it and must quote the same value; the committed file must match."""
    from metaprompt_lite.paths import POCKET_CHECKPOINT, checkpoint_record, data_dir, recorded_sha256

    checkpoint = data_dir() / POCKET_CHECKPOINT
    recorded = recorded_sha256(checkpoint)
    assert checkpoint_record(checkpoint).name == "pocket-clip.json" and len(recorded) == 64
    card = (checkpoint.parent / "README.md").read_text()
    assert f"| sha256 | `{recorded}` |" in card and card.count("sha256") == 1
    assert provenance.file_sha256(checkpoint) == recorded


def test_a_checkpoint_is_hashed_once_per_process_until_it_changes(tmp_path, monkeypatch):
    import hashlib
    import os

    from metaprompt_lite import provenance as module

    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 100)
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(module.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    assert module.file_sha256(path) == module.file_sha256(path) == real(b"a" * 100).hexdigest()
    assert len(calls) == 1
    path.write_bytes(b"b" * 100)  # same size; a new modification time
    os.utime(path, ns=(1, 1))
    assert module.file_sha256(path) == real(b"b" * 100).hexdigest() and len(calls) == 2
