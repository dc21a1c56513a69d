"""ImageReward through transformers' BLIP classes: the reward by hand from the towers, and the renaming of a
released (Salesforce BLIP-named) state dict."""

from __future__ import annotations

import pytest
import torch

from lightning_search.errors import CheckpointError
from lightning_search.verifiers import ImageRewardVerifier
from lightning_search.verifiers.image_reward import (
    MAX_TEXT_TOKENS,
    REWARD_MEAN,
    REWARD_STD,
    convert_image_reward_state_dict,
)


def _reference(v: ImageRewardVerifier, images, prompts, clip_normalize) -> torch.Tensor:
    tokens = v.tokenizer(prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    with torch.no_grad():
        image_embeds = v.vision_model(pixel_values=clip_normalize(images)).last_hidden_state
        text = v.text_encoder(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            encoder_hidden_states=image_embeds,
        ).last_hidden_state[:, 0]
        x = text
        for i in (0, 2, 4, 6, 7):  # the MLP head, no activations, dropout off
            x = x @ v.head.layers[i].weight.T + v.head.layers[i].bias
    return (x.squeeze(-1) - 0.16717362830052426) / 1.0333394966054072


def test_score_is_standardised_head_of_cls_state(image_reward, images32, prompts, clip_normalize):
    assert (REWARD_MEAN, REWARD_STD) == (0.16717362830052426, 1.0333394966054072)
    torch.testing.assert_close(
        image_reward(images32, prompts),
        _reference(image_reward, images32, prompts, clip_normalize),
        atol=1e-5,
        rtol=1e-5,
    )


def test_tokenizer_is_blip_bert(image_reward):
    tok = image_reward.tokenizer
    ids = image_reward.tokenize(["a red cat"])["input_ids"]
    assert ids.shape == (1, MAX_TEXT_TOKENS)
    assert ids[0, 0].item() == tok.cls_token_id  # ImageReward keeps [CLS] first (no [ENC] swap)
    assert "[DEC]" in tok.get_vocab() and "[ENC]" in tok.get_vocab()
    assert tok.bos_token == "[DEC]"


def _to_released_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse renaming, written as a table: this module's names -> the released ImageReward.pt names."""
    table = [
        ("vision_model.embeddings.class_embedding", "blip.visual_encoder.cls_token"),
        ("vision_model.embeddings.position_embedding", "blip.visual_encoder.pos_embed"),
        ("vision_model.embeddings.patch_embedding.", "blip.visual_encoder.patch_embed.proj."),
        ("vision_model.post_layernorm.", "blip.visual_encoder.norm."),
        ("text_encoder.", "blip.text_encoder."),
        ("head.", "mlp."),
    ]
    layer = [(".layer_norm1.", ".norm1."), (".layer_norm2.", ".norm2."), (".self_attn.qkv.", ".attn.qkv."),
             (".self_attn.projection.", ".attn.proj."), (".mlp.", ".mlp.")]  # fmt: skip
    out = {}
    for key, value in state.items():
        if key.startswith("vision_model.encoder.layers."):
            rest = key.removeprefix("vision_model.encoder.layers.")
            idx, name = rest.split(".", 1)
            name = "." + name
            for ours, theirs in layer:
                if name.startswith(ours):
                    name = theirs + name.removeprefix(ours)
                    break
            out[f"blip.visual_encoder.blocks.{idx}{name}"] = value
            continue
        for ours, theirs in table:
            if key.startswith(ours):
                out[theirs + key.removeprefix(ours)] = value
                break
        else:
            raise AssertionError(key)
    # extras present in the release that the reward does not use
    out["blip.vision_proj.weight"] = torch.zeros(2, 2)
    out["blip.text_encoder.embeddings.position_ids"] = torch.arange(64)[None]
    return out


def test_released_state_dict_names_convert(image_reward, images32, prompts):
    released = _to_released_names(image_reward.state_dict())
    assert "blip.visual_encoder.blocks.1.attn.proj.weight" in released
    other = ImageRewardVerifier(model="tiny", seed=1)
    assert not torch.equal(other.head.layers[0].weight, image_reward.head.layers[0].weight)
    other.load_state_dict(convert_image_reward_state_dict(released), strict=True)
    torch.testing.assert_close(other(images32, prompts), image_reward(images32, prompts))


def test_unknown_vision_key_is_rejected():
    with pytest.raises(CheckpointError, match="unexpected ImageReward vision key"):
        convert_image_reward_state_dict({"blip.visual_encoder.mystery": torch.zeros(1)})


def test_follows_dtype(images32, prompts, image_reward):
    v = ImageRewardVerifier(model="tiny").to(torch.float64)
    torch.testing.assert_close(v(images32, prompts), image_reward(images32, prompts), atol=1e-5, rtol=1e-5)


def test_missing_weights_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="THUDM/ImageReward"):
        ImageRewardVerifier()
    with pytest.raises(CheckpointError, match="not found in folder"):
        ImageRewardVerifier(model=str(tmp_path))
