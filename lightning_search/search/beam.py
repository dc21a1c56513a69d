"""Beam search over stochastic branches (the tree-search family of DTS and of Ma et al.'s search over paths).

B beams per sample; the sampling grid is cut into windows of ``window`` grid steps. In every window each
beam spawns M children, each integrated through the window by the stochastic sampler with noises of its
own (seeded by (seed, sample id, window, child)); the children are scored on their x0-predictions at the
window's end (one more NFE each; at t = 0 on the samples themselves) and the B best of the B x M survive.
At t = 0 the best finished child is the result.

Search over paths is the special case where a child is made not by SDE steps but by a jump: a Gaussian
re-noising forward by delta_f followed by ODE steps back by delta_b > delta_f (``paths.py``); with B = N
paths and M branches the bookkeeping is the same.

NFE per sample = sum over windows of B x M x (the window's sampler NFEs + one x0-prediction if it ends
before t = 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning_search.backbones.base import Backbone
from lightning_search.errors import ConfigurationError
from lightning_search.sampling.noise import noise_seed
from lightning_search.sampling.sampler import Sampler
from lightning_search.search.base import Lineage, SearchAlgorithm, SearchContext, SearchResult


class BeamSearch(SearchAlgorithm):
    """Keep the top B of B x M stochastic children per window.

    Args:
        beams: B, states kept per sample.
        children: M, children per beam and window.
        window: grid steps per window (the last window takes what is left).
    """

    def __init__(self, beams: int = 2, children: int = 2, window: int = 1) -> None:
        if beams < 1 or children < 1 or window < 1:
            raise ConfigurationError(
                f"beam search needs num_candidates (beams), branches (children) and window >= 1, got "
                f"{beams}, {children}, {window}"
            )
        self.beams, self.children, self.window = beams, children, window

    def windows(self, sampler: Sampler, backbone: Backbone) -> list[tuple[float, float]]:
        """(t_start, t_end) of every window, on the sampler's grid from its first time to 0."""
        grid = sampler.grid(backbone)
        cuts = grid[:: self.window]
        if cuts[-1] != grid[-1]:
            cuts = [*cuts, grid[-1]]
        return list(zip(cuts[:-1], cuts[1:]))

    def nfe_per_sample(self, sampler: Sampler, backbone: Backbone) -> int:
        per_x0 = 2 if sampler.guided else 1
        k = self.beams * self.children
        return sum(
            k * (sampler.nfe(backbone, a, b) + (per_x0 if b > 0 else 0)) for a, b in self.windows(sampler, backbone)
        )

    def run(self, ctx: SearchContext, conditions: Sequence[Any], sample_ids: Sequence[int]) -> SearchResult:
        ctx.require_stochastic("beam search")
        beams, m = self.beams, self.children
        cond = ctx.encode(conditions)
        seeds = ctx.seeds(sample_ids, 0, beams)
        x = ctx.noise(seeds)  # (B, beams, *latent): the beams at the grid's first time
        lineage = Lineage.start(seeds)  # origin: the initial noise each beam descends from
        nfe = calls = 0
        for w, (t_start, t_end) in enumerate(self.windows(ctx.sampler, ctx.backbone), start=1):
            child_seeds = [[noise_seed(ctx.seed, int(s), w, j) for j in range(beams * m)] for s in sample_ids]
            out = ctx.integrate(x.repeat_interleave(m, dim=1), cond, child_seeds, t_start=t_start, t_end=t_end)
            scores, cost = ctx.score_states(out.x, t_end, cond, conditions)
            nfe += (out.nfe + cost) * beams * m
            calls += beams * m
            x = lineage.keep_best(out.x, scores, beams, children=m)  # (B, beams), best first
        return lineage.first_survivor(ctx, x, nfe, calls)
