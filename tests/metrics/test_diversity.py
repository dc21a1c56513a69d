"""Mean within-class pairwise distance against a brute-force double loop."""

import itertools
import math

import torch

from lightning_search.metrics.diversity import PairwiseDistance, mean_pairwise_distance


def test_mean_pairwise_distance_matches_a_double_loop():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(13, 5, generator=gen)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 1, 1, 0, 2, 0, 1, 3])  # class 3 has one sample: skipped
    per_class = []
    for label in (0, 1, 2):
        rows = [f for f, y in zip(features, labels) if y == label]
        pairs = list(itertools.combinations(rows, 2))
        per_class.append(sum(math.dist(a.tolist(), b.tolist()) for a, b in pairs) / len(pairs))
    assert math.isclose(mean_pairwise_distance(features, labels), sum(per_class) / 3, rel_tol=1e-9)


def test_collapsed_samples_have_zero_diversity_and_the_metric_accumulates():
    metric = PairwiseDistance(torch.nn.Flatten())
    same = torch.ones(4, 1, 2, 2)
    metric.update(same[:2], [7, 7])
    metric.update(same[2:], [7, 7])
    assert metric.compute().item() == 0.0
    metric.update(torch.zeros(1, 1, 2, 2), [7])
    # 4 of the 10 pairs are at distance 2 (|1 - 0| over 4 pixels)
    assert math.isclose(metric.compute().item(), 4 * 2 / 10, rel_tol=1e-9)
