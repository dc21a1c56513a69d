"""Verifiers for fault tests: one that gives every image the same score (e.g. +inf or NaN)."""

from __future__ import annotations

import torch

from lightning_search.verifiers.base import Verifier


class ConstantVerifier(Verifier):
    """Score = ``value`` for every image (``inf``, ``nan``, ...)."""

    def __init__(self, value: float = 0.0) -> None:
        super().__init__()
        self.value = float(value)

    def score(self, images, conditions, x0_images=None) -> torch.Tensor:
        return torch.full((images.shape[0],), self.value, device=images.device)
