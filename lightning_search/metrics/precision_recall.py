"""Improved precision and recall (Kynkaanniemi et al. 2019) on any features; torchmetrics has no such metric.

Precision: the share of generated samples inside the real manifold (the union of k-NN balls of real
features); recall: the share of real samples inside the generated manifold. Written as a torchmetrics
``Metric`` so that it accumulates across batches and syncs across processes like FID does.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat


def _knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each point to its k-th nearest other point."""
    dist = torch.cdist(features, features)
    return dist.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0


def _inside(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Whether each query lies within radius of at least one support point: (Q,) bool."""
    return (torch.cdist(queries, support) <= radii[None, :]).any(dim=1)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Functional twin: (precision, recall) of fake features (M, D) against real features (N, D)."""
    real, fake = real.double(), fake.double()
    precision = _inside(fake, real, _knn_radii(real, k)).double().mean().item()
    recall = _inside(real, fake, _knn_radii(fake, k)).double().mean().item()
    return precision, recall


class PrecisionRecall(Metric):
    """k-NN precision and recall of generated against real features; ``feature`` maps images to (B, D)."""

    full_state_update = False

    def __init__(self, feature: torch.nn.Module, k: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.feature, self.k = feature, k
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")

    def update(self, images: torch.Tensor, real: bool) -> None:
        features = self.feature(images).detach().double()
        (self.real_features if real else self.fake_features).append(features)

    def compute(self) -> dict[str, torch.Tensor]:
        p, r = precision_recall(dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features), self.k)
        return {"precision": torch.tensor(p), "recall": torch.tensor(r)}
