"""CLIPScore (Hessel et al. 2021): ``w * max(cos(E_image, E_text), 0)``, one of the paper's text-to-image
verifiers (Ma et al. 2025, Sec. 5).

The scale ``w`` defaults to Hessel's 2.5, the one behind the paper's values near 0.7-0.8 (torchmetrics'
``CLIPScore`` uses 100 and calls ``get_image_features``, which returns an output object under transformers 5,
so the score is computed here directly from an open_clip model). The default model is OpenAI's ViT-L/14;
Hessel's reference code used ViT-B/32 and the caption prefix ``"A photo depicts "`` (set ``text_prefix``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lightning_search.errors import ConfigurationError
from lightning_search.verifiers.base import Verifier
from lightning_search.verifiers.clip_models import Preprocess, load_open_clip, model_dtype_device, unique_texts

HESSEL_W = 2.5


class ClipScoreVerifier(Verifier):
    """CLIPScore of each image against its prompt; conditions are prompts.

    Args:
        model: open_clip model name, ``"hf-hub:org/repo"``, ``"local-dir:/folder"``, or ``"tiny"`` (a small
            random CLIP for tests, seeded).
        pretrained: pretrained tag (``"openai"``) or local weights file; ignored for ``"tiny"``.
        w: the score scale (Hessel's 2.5; 100 reproduces torchmetrics' convention).
        text_prefix: prepended to every prompt (Hessel used ``"A photo depicts "``).
        cache_dir: where hub downloads are cached.
    """

    channels = 3

    def __init__(
        self,
        model: str = "ViT-L-14",
        pretrained: str | None = "openai",
        w: float = HESSEL_W,
        text_prefix: str = "",
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if w <= 0:
            raise ConfigurationError(f"CLIPScore scale w must be positive, got {w}")
        self.clip, self.tokenizer = load_open_clip(model, pretrained, cache_dir=cache_dir)
        self.preprocess = Preprocess.from_open_clip(self.clip)
        self.w, self.text_prefix = float(w), text_prefix

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1] -> L2-normalised CLIP image embeddings (B, D), float32."""
        dtype, _ = model_dtype_device(self.clip)
        return F.normalize(self.clip.encode_image(self.preprocess(images.float()).to(dtype)).float(), dim=-1)

    def text_features(self, texts: list[str]) -> torch.Tensor:
        """texts -> L2-normalised CLIP text embeddings (T, D), float32."""
        _, device = model_dtype_device(self.clip)
        tokens = self.tokenizer([self.text_prefix + t for t in texts]).to(device)
        return F.normalize(self.clip.encode_text(tokens).float(), dim=-1)

    def score(
        self, images: torch.Tensor, conditions: Sequence[Any], x0_images: torch.Tensor | None = None
    ) -> torch.Tensor:
        texts, inverse = unique_texts(conditions)
        text = self.text_features(texts)[inverse.to(images.device)]
        cos = (self.image_features(images) * text).sum(-1)
        return self.w * cos.clamp(min=0)
