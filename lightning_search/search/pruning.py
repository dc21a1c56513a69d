"""Best-of-N with early pruning: stop spending on candidates whose early x0-predictions already score low.

N candidates are integrated from t = 1. At each pruning time t_k (rounded to the sampler's grid) the
candidates still alive are scored on their x0-predictions and only the best ``keep[k]`` continue; the
survivors are finished and the best one is the result. The x0-prediction scored is the one the last step
before t_k made (one grid step earlier), which the sampler computed anyway: pruning costs verifier calls,
not NFEs.
Threshold-based early stopping for text-to-image search reports 2-4x less wall-clock at equal quality; on
a deterministic (ODE) sampler the final sample of a noise is fixed, so pruning only ever loses candidates
that the early score misjudged.

NFE per sample = N x (NFEs of 1 -> t_1) + keep[1] x (t_1 -> t_2) + ... + keep[-1] x (t_last -> 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning_search.backbones.base import Backbone
from lightning_search.errors import ConfigurationError
from lightning_search.sampling.sampler import Sampler
from lightning_search.search.base import Lineage, SearchAlgorithm, SearchContext, SearchResult


class EarlyPruningSearch(SearchAlgorithm):
    """Best of N, pruned to ``keep[k]`` candidates at each time ``times[k]``.

    Args:
        num_candidates: N noises per sample.
        times: pruning times in (0, 1), decreasing.
        keep: candidates kept after each pruning time, decreasing, at least 1.
    """

    def __init__(self, num_candidates: int = 16, times: Sequence[float] = (0.6,), keep: Sequence[int] = (4,)) -> None:
        times, keep = [float(t) for t in times], [int(k) for k in keep]
        if len(times) != len(keep) or not times:
            raise ConfigurationError(f"prune_times and prune_keep need the same, non-zero length, got {times}, {keep}")
        if any(not 0 < t < 1 for t in times) or times != sorted(times, reverse=True):
            raise ConfigurationError(f"prune_times must decrease within (0, 1), got {times}")
        if not num_candidates >= keep[0] or keep != sorted(keep, reverse=True) or keep[-1] < 1:
            raise ConfigurationError(
                f"prune_keep must decrease from at most num_candidates ({num_candidates}) to at least 1, got {keep}"
            )
        self.num_candidates, self.times, self.keep = num_candidates, times, keep

    def schedule(self, sampler: Sampler, backbone: Backbone) -> list[tuple[float, float, int]]:
        """Segments (t_start, t_end, candidates alive) from 1 to 0, cut at the pruning times on the grid."""
        cuts = [sampler.snap(backbone, t) for t in self.times]
        first = sampler.snap(backbone, 1.0)
        if cuts[0] >= first or cuts[-1] <= 0 or len(set(cuts)) < len(cuts):
            raise ConfigurationError(
                f"prune_times {self.times} round to {cuts} on the sampler's {sampler.steps}-step grid: each must "
                f"fall on its own grid time after the first ({first:.3f}) and before 0; use more steps or other times"
            )
        points = [1.0, *cuts, 0.0]
        alive = [self.num_candidates, *self.keep]
        return [(a, b, n) for a, b, n in zip(points[:-1], points[1:], alive)]

    def nfe_per_sample(self, sampler: Sampler, backbone: Backbone) -> int:
        return sum(n * sampler.nfe(backbone, a, b) for a, b, n in self.schedule(sampler, backbone))

    def run(self, ctx: SearchContext, conditions: Sequence[Any], sample_ids: Sequence[int]) -> SearchResult:
        b = len(sample_ids)
        cond = ctx.encode(conditions)
        seeds = ctx.seeds(sample_ids, 0, self.num_candidates)
        x = ctx.noise(seeds)
        lineage = Lineage.start(seeds)  # origin (B, n): the candidates still running
        nfe = calls = 0
        schedule = self.schedule(ctx.sampler, ctx.backbone)
        for k, (t_start, t_end, n) in enumerate(schedule):
            row_seeds = [[seeds[i][int(c)] for c in lineage.origin[i]] for i in range(b)]
            last = k == len(schedule) - 1
            # x0_at=[t_end]: the prediction of the step that starts nearest to t_end, the segment's last
            out = ctx.integrate(x, cond, row_seeds, t_start=t_start, t_end=t_end, x0_at=() if last else (t_end,))
            nfe += out.nfe * n
            x = out.x
            if last:
                break
            scores = ctx.score(ctx.decode(out.x0[t_end]), conditions)
            calls += n
            x = lineage.keep_best(x, scores, self.keep[k])
        return lineage.best_of_finished(ctx, x, conditions, nfe, calls)
