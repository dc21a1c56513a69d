"""A search problem with a known answer: four Gaussian modes, the verifier prefers the rarest (weight 0.1).

Plain sampling lands there one time in ten; brute force (best of 64) nearly always; a search algorithm that
works finds it too, for the same samples. NFEs are counted from the analytic backbone's own calls.
"""

from __future__ import annotations

import torch

from lightning_search.backbones.analytic import GaussianMixtureBackbone
from lightning_search.sampling import Sampler
from lightning_search.search import RandomSearch, SearchContext
from lightning_search.verifiers.base import Verifier

MEANS = ((-2.0, -2.0), (2.0, -2.0), (-2.0, 2.0), (2.0, 2.0))
WEIGHTS = (0.4, 0.3, 0.2, 0.1)
TARGET = 3
IDS = list(range(120))


class NearTheRareMode(Verifier):
    """Score = minus the squared distance of the (decoded) sample to the rarest mode's mean."""

    def score(self, images, conditions, x0_images=None):
        x = torch.logit(images[:, 0, 0, :].double().clamp(1e-6, 1 - 1e-6))  # the analytic backbone's decode, undone
        return -((x - torch.tensor(MEANS[TARGET], dtype=torch.float64)) ** 2).sum(1).float()


def backbone() -> GaussianMixtureBackbone:
    return GaussianMixtureBackbone(MEANS, std=0.2, weights=WEIGHTS)


def run(algorithm, sampler: Sampler, ids=IDS, seed: int = 0):
    """-> (result, the backbone, NFEs per sample counted from its network calls)."""
    b = backbone()
    result = algorithm.run(SearchContext(b, sampler, NearTheRareMode(), seed=seed), [0] * len(ids), ids)
    return result, b, sum(rows for _, rows in b.calls) / len(ids)


def brute_force_modes(ids=IDS) -> torch.Tensor:
    result, b, _ = run(RandomSearch(64), Sampler("ddim", steps=10), ids)
    return b.mode_of(result.x0)


def found(result, b) -> torch.Tensor:
    return b.mode_of(result.x0) == TARGET
