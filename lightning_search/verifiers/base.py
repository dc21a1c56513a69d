"""The verifier interface: ``score(images, conditions) -> Tensor[B]``, higher is better."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lightning_search.errors import LightningSearchError


class Verifier(nn.Module, ABC):
    """Scores a batch of images against their conditions; knows nothing of how they were made.

    Set ``x0_time`` to receive, as ``x0_images``, the decoded x0-prediction made at that time of the same
    trajectory (the self-supervised verifier of Ma et al. 2025 uses t = 0.4).
    ``channels`` is the number of image channels the verifier accepts (None: any).
    """

    x0_time: float | None = None
    channels: int | None = None
    # A rank-based verifier's score of an image depends on the other images of its candidate set (the
    # ensemble's mean rank): it must see each set whole, so search scores in two stages, ``raw_scores`` on
    # any micro-batch, then ``reduce`` over whole sets (also across ranks when candidates are sharded).
    rank_based: bool = False

    @abstractmethod
    def score(
        self, images: torch.Tensor, conditions: Sequence[Any], x0_images: torch.Tensor | None = None
    ) -> torch.Tensor:
        """images: (B, C, H, W) in [0, 1] on the verifier's device -> scores (B,), float32."""

    def resolve_members(self, verifiers: Mapping[str, Verifier]) -> None:
        """Called once with every verifier of the run ({name: verifier}); a verifier built on others that are
        named rather than nested (the ensemble) binds them here. Default: nothing to bind."""

    def forward(
        self,
        images: torch.Tensor,
        conditions: Sequence[Any],
        x0_images: torch.Tensor | None = None,
        groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Validate, then score. ``groups`` (B,) ids the candidate set of each image (search passes it;
        rank-based verifiers such as the ensemble rank within a group; others ignore it)."""
        self.check_inputs(images, conditions, groups)
        return self.reduce(self.raw_scores(images, conditions, x0_images), groups)

    def raw_scores(
        self, images: torch.Tensor, conditions: Sequence[Any], x0_images: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-image scores that do not depend on the other images: (B, M) float32 (M = 1 but for ensembles).

        Safe to compute on any micro-batch; :meth:`reduce` turns them into the final scores.
        """
        scores = self.score(images, conditions, x0_images).float()
        infinite = torch.isinf(scores)
        if infinite.any():  # +inf would win every comparison (and be stored as 3.4e38): a bug of the verifier
            raise LightningSearchError(
                f"{type(self).__name__} scored {int(infinite.sum())} of {scores.numel()} images "
                f"{float(scores[infinite][0]):+}; a score must be finite (NaN marks an image it cannot score)"
            )
        return scores[:, None]

    @property
    def num_raw_scores(self) -> int:
        """M, the columns of :meth:`raw_scores`."""
        return 1

    def reduce(self, raw: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """(B, M) raw scores of whole candidate sets (``groups`` (B,) or None: one set) -> scores (B,)."""
        return raw[:, 0].float()

    def check_inputs(self, images: torch.Tensor, conditions: Sequence[Any], groups: torch.Tensor | None = None) -> None:
        """Reject a batch this verifier cannot score, with a message saying what was expected."""
        check_images(images, self.channels, type(self).__name__)
        if len(conditions) != images.shape[0]:
            raise LightningSearchError(f"{images.shape[0]} images but {len(conditions)} conditions")
        if groups is not None and groups.shape != (images.shape[0],):
            raise LightningSearchError(f"groups must have shape ({images.shape[0]},), got {tuple(groups.shape)}")


def check_images(images: torch.Tensor, channels: int | None, who: str = "verifier") -> None:
    """Reject what a verifier cannot score, with a message saying what was expected."""
    if images.dim() != 4:
        raise LightningSearchError(f"{who} expects images (B, C, H, W), got shape {tuple(images.shape)}")
    if channels is not None and images.shape[1] != channels:
        raise LightningSearchError(f"{who} expects {channels}-channel images, got {images.shape[1]} channels")
    if images.numel():
        lo, hi = images.min().item(), images.max().item()
        if lo < -1e-4 or hi > 1 + 1e-4:
            raise LightningSearchError(
                f"{who} expects images in [0, 1], got values in [{lo:.3g}, {hi:.3g}] (decode latents first)"
            )
