"""CLIPScore with the shapes world's CLIP analogue: ``w * max(cos(E_image, E_text), 0)`` (Hessel et al. 2021).

The learned verifier of the shapes world (``lightning_search.contrastive``), scored as ``ClipScoreVerifier``
scores open_clip models, so that search and RL on shapes use a CLIPScore whose failures can be measured
against the exact judge (``shapes_judge.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lightning_search.errors import ConfigurationError
from lightning_search.verifiers.base import Verifier
from lightning_search.verifiers.clip_models import condition_text, unique_texts
from lightning_search.verifiers.clip_score import HESSEL_W


class ShapesClipVerifier(Verifier):
    """CLIPScore of each image against its caption; conditions are captions or shapes metadata dicts.

    Args:
        checkpoint: a checkpoint of ``lightning_search.contrastive.ContrastiveModule`` (read weights-only).
        model: or a ready ``ShapesClip``.
        w: the score scale (Hessel's 2.5).
    """

    channels = 3

    def __init__(self, checkpoint: str | None = None, model: nn.Module | None = None, w: float = HESSEL_W) -> None:
        super().__init__()
        if (checkpoint is None) == (model is None):
            raise ConfigurationError("ShapesClipVerifier needs exactly one of checkpoint= or model=")
        if w <= 0:
            raise ConfigurationError(f"CLIPScore scale w must be positive, got {w}")
        if checkpoint is not None:
            from lightning_search.contrastive import load_contrastive

            model = load_contrastive(checkpoint)
        self.clip = model.eval().requires_grad_(False)
        self.w = float(w)

    def cosine(self, images: torch.Tensor, conditions: Sequence[Any]) -> torch.Tensor:
        """cos(E_image, E_text) per row: images (B, 3, H, W) in [0, 1] -> (B,)."""
        texts, inverse = unique_texts([condition_text(c) for c in conditions])
        text = self.clip.encode_text(texts)[inverse.to(images.device)]
        return (self.clip.encode_image(images.float()) * text).sum(-1)

    def score(
        self, images: torch.Tensor, conditions: Sequence[Any], x0_images: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.w * self.cosine(images, conditions).clamp(min=0)
