"""Supervised verifier: a classifier's logit for the target class (Ma et al. 2025, Sec. 3.1).

For digits it is the verifier classifier; pointed at the evaluator checkpoint it becomes the *oracle*
verifier of the paper's ceiling experiment. Any classifier module with ``forward(images) -> logits``
works (e.g. a DINO linear head or CLIP zero-shot head wrapped as a module).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lightning_search.errors import ConfigurationError
from lightning_search.verifiers.base import Verifier


class ClassifierVerifier(Verifier):
    """Score = logit of the conditioned class (conditions are class ids).

    Args:
        checkpoint: a classifier checkpoint written by ``lightning-search fit`` (loaded weights-only).
        classifier: or a ready classifier module (images -> logits).
        channels: image channels the classifier accepts.
    """

    def __init__(
        self, checkpoint: str | None = None, classifier: nn.Module | None = None, channels: int | None = 1
    ) -> None:
        super().__init__()
        if (checkpoint is None) == (classifier is None):
            raise ConfigurationError("ClassifierVerifier needs exactly one of checkpoint= or classifier=")
        if checkpoint is not None:
            from lightning_search.classifier import load_classifier

            classifier = load_classifier(checkpoint)
        self.classifier = classifier.eval().requires_grad_(False)
        self.channels = channels

    def score(
        self, images: torch.Tensor, conditions: Sequence[Any], x0_images: torch.Tensor | None = None
    ) -> torch.Tensor:
        labels = torch.as_tensor(list(conditions), dtype=torch.long, device=images.device)
        logits = self.classifier(images)
        return logits.gather(1, labels[:, None]).squeeze(1)
