"""ImageReward (Xu et al. 2023): a BLIP ViT-L/16 image encoder, a BERT text encoder cross-attending to it, and
an MLP head on the [CLS] state, standardised by the training set's mean and std. One of the paper's
text-to-image verifiers (Ma et al. 2025, Sec. 5).

**Route: transformers' BLIP classes + the released checkpoint, not the ``image-reward`` package.** Tried here
(``pip install --no-deps --target`` into a scratch folder, image-reward 1.5): a plain install would pin
``timm==0.6.13`` (downgrading the timm open_clip uses) and add ``fairscale``; the package then fails to import
with this stack: it imports OpenAI's ``clip`` package (not on PyPI under that name) and, past that,
``transformers.modeling_utils.apply_chunking_to_forward``, which transformers 5 removed. Its BLIP code is also
a copy of Salesforce's; transformers ships the same architecture as ``BlipVisionModel`` + ``BlipTextModel``
(the text encoder with cross-attention), so the released ``ImageReward.pt`` (a plain state dict, loaded with
``weights_only=True``) is renamed onto those classes by :func:`convert_image_reward_state_dict`.

What is reproduced from ``ImageReward.ImageReward.score``: Resize(224, bicubic) + CenterCrop(224) + CLIP
mean/std; the prompt tokenised by ``bert-base-uncased`` with BLIP's two extra tokens ([DEC], [ENC]), padded to
35 tokens; the first token stays [CLS] (ImageReward does not swap in [ENC]); the text encoder runs
bidirectionally with cross-attention to all image tokens; reward = (mlp(h_cls) - 0.16717) / 1.03334.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import torch

from lightning_search.errors import CheckpointError
from lightning_search.verifiers.aesthetic import LinearStackMLP
from lightning_search.verifiers.base import Verifier
from lightning_search.verifiers.clip_models import (
    TINY,
    Preprocess,
    condition_text,
    hub_file,
    load_state_dict_file,
    missing_weights_error,
    model_dtype_device,
)

DEFAULT_MODEL = "THUDM/ImageReward"
# ImageReward.ImageReward: rewards = (rewards - self.mean) / self.std
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
MAX_TEXT_TOKENS = 35

_VISION_RENAMES = [
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"^norm\.", "post_layernorm."),
]


def convert_image_reward_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a released ImageReward state dict (Salesforce BLIP names) to this module's names.

    ``blip.visual_encoder.*`` (timm-style ViT) -> ``vision_model.*`` (transformers ``BlipVisionModel``);
    ``blip.text_encoder.*`` (BLIP's med.py BERT) -> ``text_encoder.*`` (``BlipTextModel``, same names);
    ``mlp.layers.*`` -> ``head.layers.*``. The contrastive projections (``vision_proj``, ``text_proj``) and
    the ``position_ids`` buffer are not used by the reward and are dropped.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        if key.startswith("mlp."):
            out["head." + key.removeprefix("mlp.")] = value
        elif key.startswith("blip.text_encoder."):
            out["text_encoder." + key.removeprefix("blip.text_encoder.")] = value
        elif key.startswith("blip.visual_encoder."):
            name = key.removeprefix("blip.visual_encoder.")
            for pattern, repl in _VISION_RENAMES:
                name, n = re.subn(pattern, repl, name)
                if n:
                    break
            else:
                raise CheckpointError(f"unexpected ImageReward vision key {key!r}")
            out["vision_model." + name] = value
    return out


def blip_tokenizer(source: str, cache_dir: str | None = None):
    """BLIP's tokenizer: BERT uncased + ``[DEC]`` as bos + ``[ENC]`` (ids 30522, 30523 for bert-base-uncased),
    exactly as ``BLIP.blip.init_tokenizer`` builds it."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, cache_dir=cache_dir)
    except Exception as err:
        raise missing_weights_error(
            f"the BERT tokenizer {source!r}",
            "save it elsewhere (`AutoTokenizer.from_pretrained('bert-base-uncased').save_pretrained(DIR)`) "
            "and pass tokenizer=DIR",
            err,
        ) from err
    return _add_blip_tokens(tokenizer)


def _add_blip_tokens(tokenizer):
    if "[DEC]" not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    if "[ENC]" not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def tiny_blip_tokenizer():
    """A WordPiece tokenizer with a 70-token vocabulary (specials, letters, a few words) + BLIP's tokens."""
    from transformers import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "the", "of", "photo", "cat", "dog", "red", "blue"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = words + [c for c in letters if c not in words] + [f"##{c}" for c in letters]
    return _add_blip_tokens(BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}))


class ImageRewardVerifier(Verifier):
    """ImageReward of each image for its prompt (about N(0, 1) over the training set; higher is better).

    Args:
        model: hub repo id (``THUDM/ImageReward``) or local folder holding ``ImageReward.pt`` and
            ``med_config.json``; ``"tiny"`` builds a small random twin (seeded) with a tiny tokenizer.
        tokenizer: BERT tokenizer source (hub id or folder), ``bert-base-uncased`` as released.
    """

    channels = 3

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        tokenizer: str = "bert-base-uncased",
        checkpoint_file: str = "ImageReward.pt",
        config_file: str = "med_config.json",
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

        if model == TINY:
            self.tokenizer = tiny_blip_tokenizer()
            vision = BlipVisionConfig(
                hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                image_size=32, patch_size=8, layer_norm_eps=1e-6,
            )  # fmt: skip
            text = BlipTextConfig(
                vocab_size=len(self.tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=64, encoder_hidden_size=32, is_decoder=True,
                bos_token_id=self.tokenizer.bos_token_id, sep_token_id=self.tokenizer.sep_token_id,
                eos_token_id=self.tokenizer.sep_token_id,
            )  # fmt: skip
            state = None
        else:
            # Fail on the missing checkpoint before the (slow) tokenizer and model construction.
            ckpt_path = hub_file(model, checkpoint_file, cache_dir=cache_dir)
            med = json.loads(hub_file(model, config_file, cache_dir=cache_dir).read_text())
            self.tokenizer = blip_tokenizer(tokenizer, cache_dir=cache_dir)
            # BLIP_Pretrain(image_size=224, vit="large"): ViT-L/16, LayerNorm eps 1e-6 (timm's ViT in BLIP).
            vision = BlipVisionConfig(
                hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                image_size=224, patch_size=16, layer_norm_eps=1e-6, hidden_act="gelu",
            )  # fmt: skip
            # med_config.json is BERT-base with cross-attention; encoder_width is set to the ViT width by BLIP.
            text = BlipTextConfig(
                vocab_size=med["vocab_size"], hidden_size=med["hidden_size"],
                intermediate_size=med["intermediate_size"], num_hidden_layers=med["num_hidden_layers"],
                num_attention_heads=med["num_attention_heads"],
                max_position_embeddings=med["max_position_embeddings"], layer_norm_eps=med["layer_norm_eps"],
                hidden_act=med.get("hidden_act", "gelu"), encoder_hidden_size=vision.hidden_size,
                pad_token_id=med.get("pad_token_id", 0), is_decoder=True,  # is_decoder builds the cross-attention
            )  # fmt: skip
            state = convert_image_reward_state_dict(load_state_dict_file(ckpt_path))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.vision_model = BlipVisionModel(vision)
            self.text_encoder = BlipTextModel(text, add_pooling_layer=False)
            self.head = LinearStackMLP(text.hidden_size)
        if state is not None:
            missing, unexpected = self.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise CheckpointError(
                    f"ImageReward checkpoint does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}"
                )
        self.preprocess = Preprocess(size=vision.image_size)
        self.requires_grad_(False).eval()

    def tokenize(self, conditions: Sequence[Any]) -> dict[str, torch.Tensor]:
        texts = [condition_text(c) for c in conditions]
        return self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=MAX_TEXT_TOKENS, return_tensors="pt"
        )

    def score(
        self, images: torch.Tensor, conditions: Sequence[Any], x0_images: torch.Tensor | None = None
    ) -> torch.Tensor:
        dtype, device = model_dtype_device(self.vision_model)
        image_embeds = self.vision_model(pixel_values=self.preprocess(images.float()).to(dtype)).last_hidden_state
        tokens = self.tokenize(conditions)
        text = self.text_encoder(
            input_ids=tokens["input_ids"].to(device),
            attention_mask=tokens["attention_mask"].to(device),
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=device),
            is_decoder=False,
        ).last_hidden_state
        reward = self.head(text[:, 0]).squeeze(-1)
        return (reward.float() - REWARD_MEAN) / REWARD_STD
