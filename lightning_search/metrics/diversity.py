"""Diversity of generated samples: the mean pairwise distance of their features, within each condition.

Search that over-optimises a verifier collapses every condition onto the few samples the verifier likes
best ("verifier hacking", Ma et al. 2025, Sec. 4.1); recall sees the collapse against the real data, the
pairwise distance sees it among the samples themselves. Within a condition (class), because the spread
between classes says nothing about the spread within one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat


def mean_pairwise_distance(features: torch.Tensor, labels: Sequence[int] | torch.Tensor | None = None) -> float:
    """Mean Euclidean distance between distinct pairs of features (N, D) that share a label, averaged over
    labels (each label with at least two samples counts once); all samples share one label if None."""
    features = features.double()
    if labels is None:
        labels = torch.zeros(features.shape[0], dtype=torch.long)
    labels = torch.as_tensor(labels, device=features.device)
    means = []
    for label in labels.unique():
        group = features[labels == label]
        n = group.shape[0]
        if n >= 2:
            # the diagonal is zero: the sum over all ordered pairs / n (n - 1) is the mean over distinct pairs
            means.append(torch.cdist(group, group).sum() / (n * (n - 1)))
    return float(torch.stack(means).mean()) if means else float("nan")


class PairwiseDistance(Metric):
    """Accumulates features of generated images (with their conditions) -> mean within-condition distance."""

    full_state_update = False

    def __init__(self, feature: torch.nn.Module, **kwargs) -> None:
        super().__init__(**kwargs)
        self.feature = feature
        self.add_state("features", [], dist_reduce_fx="cat")
        self.add_state("labels", [], dist_reduce_fx="cat")

    def update(self, images: torch.Tensor, labels: Sequence[int] | torch.Tensor | None = None) -> None:
        features = self.feature(images).detach().double()
        if labels is None:
            labels = torch.zeros(features.shape[0], dtype=torch.long)
        self.features.append(features)
        self.labels.append(torch.as_tensor(labels, dtype=torch.long, device=features.device))

    def compute(self) -> torch.Tensor:
        value = mean_pairwise_distance(dim_zero_cat(self.features), dim_zero_cat(self.labels))
        return torch.tensor(value, dtype=torch.float64)
