"""Zero-order search (Ma et al. 2025, Sec. 3.2): local search on the noise sphere around a pivot.

Start from a random pivot noise n; each iteration draws N neighbours
``y = sqrt(1 - lambda^2) n + lambda z`` (z fresh standard normal, so y is again standard normal and its
cosine to n is about sqrt(1 - lambda^2)), integrates and scores them; the best neighbour becomes the
pivot only if it beats the pivot's score. Small lambda stays close to the first noise (keeps diversity
across samples, overfits the verifier less); large lambda explores more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from lightning_search.errors import ConfigurationError
from lightning_search.sampling.sampler import Sampler
from lightning_search.search.base import SearchAlgorithm, SearchContext, SearchResult, gather_rows


class ZeroOrderSearch(SearchAlgorithm):
    """Hill climbing over initial noises with a verifier as the (zero-order) objective.

    Args:
        num_neighbors: N neighbours per iteration.
        iterations: K iterations.
        step_size: lambda in (0, 1).
        candidate_steps: solver steps per candidate (None: the sampler's; then no final re-denoising).
    """

    def __init__(
        self, num_neighbors: int = 4, iterations: int = 4, step_size: float = 0.1, candidate_steps: int | None = None
    ) -> None:
        if num_neighbors < 1 or iterations < 1:
            raise ConfigurationError(
                f"zero-order search needs num_candidates >= 1 and iterations >= 1, got {num_neighbors}, {iterations}"
            )
        if not 0 < step_size < 1:
            raise ConfigurationError(f"zero-order step_size (lambda) must lie in (0, 1), got {step_size}")
        self.num_neighbors, self.iterations, self.step_size = num_neighbors, iterations, step_size
        self.candidate_steps = candidate_steps

    def _redenoise(self, sampler: Sampler) -> bool:
        return self.candidate_steps is not None and self.candidate_steps != sampler.steps

    def nfe_per_sample(self, sampler: Sampler, prediction_type: str = "velocity") -> int:
        evaluations = 1 + self.iterations * self.num_neighbors
        final = sampler.nfe(prediction_type=prediction_type)
        if not self._redenoise(sampler):
            return evaluations * final
        return evaluations * sampler.nfe(self.candidate_steps, prediction_type=prediction_type) + final

    def run(self, ctx: SearchContext, conditions: Sequence[Any], sample_ids: Sequence[int]) -> SearchResult:
        b, n_nb = len(sample_ids), self.num_neighbors
        redenoise = self._redenoise(ctx.sampler)
        steps = self.candidate_steps if redenoise else None
        cond = ctx.encode(conditions)
        pivot_seeds = ctx.seeds(sample_ids, 0, 1)
        pivot = ctx.noise(pivot_seeds)[:, 0]
        x0, images, scores, nfe = ctx.sample_and_score(pivot[:, None], cond, conditions, steps)
        best_x0, best_images, best_score = x0[:, 0], images[:, 0], scores[:, 0]
        chosen = [{"round": 0, "candidate": 0, "seed": s[0]} for s in pivot_seeds]
        all_seeds = [list(s) for s in pivot_seeds]
        trace = [[float(s)] for s in best_score]
        keep, move = math.sqrt(1 - self.step_size**2), self.step_size
        for k in range(1, self.iterations + 1):
            seeds = ctx.seeds(sample_ids, k, n_nb)
            neighbours = keep * pivot[:, None] + move * ctx.noise(seeds)
            x0, images, scores, cost = ctx.sample_and_score(neighbours, cond, conditions, steps)
            nfe += cost
            top = scores.argmax(dim=1)
            top_score = gather_rows(scores, top)
            better = top_score > best_score  # strict: the pivot is kept on ties and when all are NaN
            pivot = torch.where(better.view(-1, *[1] * (pivot.dim() - 1)), gather_rows(neighbours, top), pivot)
            best_x0 = torch.where(better.view(-1, *[1] * (best_x0.dim() - 1)), gather_rows(x0, top), best_x0)
            best_images = torch.where(
                better.view(-1, *[1] * (best_images.dim() - 1)), gather_rows(images, top), best_images
            )
            best_score = torch.where(better, top_score, best_score)
            for i in range(b):
                all_seeds[i].extend(seeds[i])
                if better[i]:
                    chosen[i] = {"round": k, "candidate": int(top[i]), "seed": seeds[i][int(top[i])]}
                trace[i].append(float(best_score[i]))
        calls = 1 + self.iterations * n_nb
        if redenoise:
            best_x0, best_images, final_scores, final_nfe = ctx.sample_and_score(pivot[:, None], cond, conditions, None)
            best_x0, best_images, best_score = best_x0[:, 0], best_images[:, 0], final_scores[:, 0]
            nfe, calls = nfe + final_nfe, calls + 1
        return SearchResult(
            x0=best_x0,
            images=best_images,
            score=best_score.cpu(),
            nfe=torch.full((b,), nfe),
            verifier_calls=torch.full((b,), calls),
            chosen=chosen,
            candidate_seeds=all_seeds,
            trace=trace,
        )
