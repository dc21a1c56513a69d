"""The self-supervised verifier of Ma et al. 2025 (Sec. 3.1): the cosine similarity between features of the
decoded x0-prediction at time ``t`` (0.4 by default; t = 1 is noise) and of the final sample. A trajectory
whose early prediction already looks like where it ends gets a high score; no labels or prompts are needed.

Features: for digits, a classifier written by ``lightning-search fit`` (its penultimate ``features``); for
text-to-image models, a CLIP image encoder (the paper uses DINO or CLIP); or any module images -> features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lightning_search.errors import ConfigurationError, LightningSearchError
from lightning_search.verifiers.base import Verifier
from lightning_search.verifiers.clip_models import OpenClipImageEncoder, cosine


class ClassifierFeatures(nn.Module):
    """A classifier's ``features(images)`` as a module's forward (the penultimate layer, not the logits)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        if not callable(getattr(classifier, "features", None)):
            raise ConfigurationError(f"{type(classifier).__name__} has no features(images) method")
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images)


class SelfSupervisedVerifier(Verifier):
    """Score = cos(f(x0-prediction at t), f(final sample)) with a frozen feature extractor f.

    Exactly one of:
        feature_extractor: any module, images (B, C, H, W) in [0, 1] -> features (B, ...).
        checkpoint: a classifier checkpoint of ``lightning-search fit`` (features = its penultimate layer).
        clip_model: an open_clip model name / ``hf-hub:`` / ``local-dir:`` / ``"tiny"`` (with
            ``clip_pretrained``), for RGB text-to-image samples.
    Args:
        t: time of the x0-prediction (search decodes it and passes it as ``x0_images``).
        channels: image channels accepted (1 for a digits checkpoint, 3 for CLIP; None: any).
    """

    def __init__(
        self,
        feature_extractor: nn.Module | None = None,
        checkpoint: str | None = None,
        clip_model: str | None = None,
        clip_pretrained: str | None = "openai",
        t: float = 0.4,
        channels: int | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if sum(x is not None for x in (feature_extractor, checkpoint, clip_model)) != 1:
            raise ConfigurationError(
                "SelfSupervisedVerifier needs exactly one of feature_extractor=, checkpoint= or clip_model="
            )
        if not 0.0 < t < 1.0:
            raise ConfigurationError(f"x0-prediction time t must lie in (0, 1) (t = 1 is noise), got {t}")
        if checkpoint is not None:
            from lightning_search.classifier import load_classifier

            feature_extractor = ClassifierFeatures(load_classifier(checkpoint))
            channels = 1 if channels is None else channels
        elif clip_model is not None:
            feature_extractor = OpenClipImageEncoder(clip_model, clip_pretrained, cache_dir=cache_dir)
            channels = 3 if channels is None else channels
        self.features = feature_extractor.eval().requires_grad_(False)
        self.x0_time = float(t)
        self.channels = channels

    def score(
        self, images: torch.Tensor, conditions: Sequence[Any], x0_images: torch.Tensor | None = None
    ) -> torch.Tensor:
        if x0_images is None:
            raise LightningSearchError(
                f"the self-supervised verifier compares each sample with its x0-prediction at t = {self.x0_time}, "
                "but none was given: use it as a search verifier (search decodes x0 at verifier.x0_time), "
                "not to score final images alone"
            )
        if x0_images.shape != images.shape:
            raise LightningSearchError(
                f"x0_images {tuple(x0_images.shape)} must have the shape of images {tuple(images.shape)}"
            )
        p = next(iter(self.features.parameters()), None)
        x = torch.cat([x0_images.clamp(0, 1), images]).to(p.dtype if p is not None else images.dtype)
        feats = self.features(x)  # one batched pass for both halves
        early, final = feats.chunk(2)
        return cosine(early, final)
