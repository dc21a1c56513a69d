"""PickScore v1 (Kirstain et al. 2023): a CLIP-H/14 fine-tuned on Pick-a-Pic preferences; score =
``logit_scale.exp() * cos(E_image, E_text)`` as in the authors' inference snippet (before their softmax over
images, which only matters when comparing images of one prompt, and is monotone there).

Loaded through transformers: ``CLIPModel.from_pretrained("yuvalkirstain/PickScore_v1")`` and the processor of
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (its tokenizer; its image settings: resize shortest side to 224
bicubic, centre crop 224, CLIP mean/std, applied here on tensors). The image and text embeddings are computed
from the towers and projections (``get_image_features`` returns an output object under transformers 5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lightning_search.verifiers.base import Verifier
from lightning_search.verifiers.clip_models import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    TINY,
    Preprocess,
    missing_weights_error,
    model_dtype_device,
    unique_texts,
)

DEFAULT_MODEL = "yuvalkirstain/PickScore_v1"
DEFAULT_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


def clip_bpe_tokenizer():
    """transformers' ``CLIPTokenizer`` with CLIP's real vocabulary and merges, built from the BPE file that
    open_clip bundles (no download): the same ids as ``openai/clip-vit-*``'s tokenizer."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    simple = SimpleTokenizer()
    merges = [pair for pair, _ in sorted(simple.bpe_ranks.items(), key=lambda kv: kv[1])]
    # open_clip names the specials <start_of_text>/<end_of_text>; CLIP's tokenizer, <|startoftext|>/<|endoftext|>
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(token, token): i for token, i in simple.encoder.items()}
    return CLIPTokenizer(vocab=vocab, merges=merges)


def tiny_clip_model(seed: int = 0, logit_scale: float = math.log(100.0)):
    """A small random transformers ``CLIPModel`` (2 layers, width 32, 32 px) with CLIP's vocabulary; the
    logit scale is set to PickScore's trained value (exp = 100) so the scale is visible in tests."""
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config={
            "vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": 49406, "eos_token_id": 49407,
            "pad_token_id": 49407,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": 32, "patch_size": 8,
        },
        projection_dim=16,
        logit_scale_init_value=logit_scale,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPModel(config)


class PickScoreVerifier(Verifier):
    """PickScore of each image for its prompt (about 18-23 for real models; higher is better).

    Args:
        model: hub id or local folder of the CLIPModel weights; ``"tiny"`` for a small random twin (seeded).
        processor: hub id or local folder of the processor (tokenizer + image settings).
    """

    channels = 3

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        processor: str = DEFAULT_PROCESSOR,
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if model == TINY:
            self.clip = tiny_clip_model(seed)
            self.tokenizer = clip_bpe_tokenizer()
            self.preprocess = Preprocess(size=32)
        else:
            from transformers import AutoProcessor, CLIPModel

            how = "save it elsewhere with save_pretrained(DIR) and pass the folder DIR instead of the hub id"
            try:
                proc = AutoProcessor.from_pretrained(processor, cache_dir=cache_dir)
            except Exception as err:
                raise missing_weights_error(f"the PickScore processor {processor!r}", how, err) from err
            try:
                self.clip = CLIPModel.from_pretrained(model, cache_dir=cache_dir)
            except Exception as err:
                raise missing_weights_error(f"the PickScore model {model!r}", how, err) from err
            self.tokenizer = proc.tokenizer
            ip = proc.image_processor
            # crop_size is a dict or a SizeDict (transformers 5), both indexable by "height"
            crop = int(ip.crop_size) if isinstance(ip.crop_size, int) else int(ip.crop_size["height"])
            self.preprocess = Preprocess(
                size=crop,
                mean=tuple(ip.image_mean or OPENAI_CLIP_MEAN),
                std=tuple(ip.image_std or OPENAI_CLIP_STD),
            )
        self.clip.requires_grad_(False).eval()

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1] -> normalised projected image embeddings (B, D), float32."""
        dtype, _ = model_dtype_device(self.clip)
        pooled = self.clip.vision_model(pixel_values=self.preprocess(images.float()).to(dtype)).pooler_output
        return F.normalize(self.clip.visual_projection(pooled).float(), dim=-1)

    def text_features(self, texts: list[str]) -> torch.Tensor:
        """texts -> normalised projected text embeddings (T, D), float32."""
        _, device = model_dtype_device(self.clip)
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        pooled = self.clip.text_model(
            input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
        ).pooler_output
        return F.normalize(self.clip.text_projection(pooled).float(), dim=-1)

    def score(
        self, images: torch.Tensor, conditions: Sequence[Any], x0_images: torch.Tensor | None = None
    ) -> torch.Tensor:
        texts, inverse = unique_texts(conditions)
        text = self.text_features(texts)[inverse.to(images.device)]
        return self.clip.logit_scale.exp().float() * (self.image_features(images) * text).sum(-1)
