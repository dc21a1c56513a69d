"""The no-search baseline: one noise per sample, seeded by (seed, sample id, round 0, candidate 0)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lightning_search.backbones.base import Backbone
from lightning_search.sampling.sampler import Sampler
from lightning_search.search.base import Lineage, SearchAlgorithm, SearchContext, SearchResult


class NoSearch(SearchAlgorithm):
    """Sample once with the sampler's full steps; score with the verifier if there is one (not counted as search)."""

    needs_verifier = False

    def nfe_per_sample(self, sampler: Sampler, backbone: Backbone) -> int:
        return sampler.nfe(backbone)

    def run(self, ctx: SearchContext, conditions: Sequence[Any], sample_ids: Sequence[int]) -> SearchResult:
        seeds = ctx.seeds(sample_ids, 0, 1)
        cond = ctx.encode(conditions)
        b = len(sample_ids)
        if ctx.verifier is None:
            out = ctx.integrate(ctx.noise(seeds), cond, seeds)
            x0, images = out.x[:, 0], ctx.decode(out.x)[:, 0]
            score, nfe, calls = torch.full((b,), float("nan")), out.nfe, 0
        else:
            x0, images, scores, nfe = ctx.sample_and_score(ctx.noise(seeds), seeds, cond, conditions, None)
            x0, images, score, calls = x0[:, 0], images[:, 0], scores[:, 0].cpu(), 1
        lineage = Lineage.start(seeds)
        lineage.record(score)
        return lineage.result(x0, images, score, torch.zeros(b, dtype=torch.long), nfe, calls)
