"""Search over paths (Ma et al. 2025, Sec. 3.2): prune noisy trajectories by their x0-predictions.

N paths are integrated from t = 1 to ``start``. Each round, every path is re-noised M times forward to a
noisier time (t + delta_f, with the schedule's exact forward kernel), integrated back by delta_b > delta_f
(a net step of delta_b - delta_f towards data), and scored on its x0-prediction there (one more NFE);
the N best of the N x M branches survive. At t = 0 the best of the N finished samples is kept.
Every step is counted: initial segment, each branch's integration and its x0-prediction.

Times live on the sampler's grid (``sampling/segments.py``): with a diffusers scheduler every time of the
schedule is rounded to the nearest timestep (a re-noising at least one step, each round at least one step
of progress), and the re-noising and x0-predictions use the times the segments really reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning_search.backbones.base import Backbone, cond_repeat
from lightning_search.errors import ConfigurationError
from lightning_search.sampling.noise import noise_seed
from lightning_search.sampling.sampler import Sampler
from lightning_search.search.base import Lineage, SearchAlgorithm, SearchContext, SearchResult


class PathSearch(SearchAlgorithm):
    """Beam search over denoising paths.

    Args:
        num_paths: N paths kept.
        branches: M re-noisings per path per round.
        start: time at which branching starts (0 < start <= 1).
        forward: delta_f, re-noising distance in t.
        backward: delta_b > delta_f, integration distance back towards data.
    """

    def __init__(
        self, num_paths: int = 2, branches: int = 2, start: float = 0.8, forward: float = 0.1, backward: float = 0.2
    ) -> None:
        if num_paths < 1 or branches < 1:
            raise ConfigurationError(
                f"paths search needs num_candidates >= 1 and branches >= 1, got {num_paths}, {branches}"
            )
        if not 0 < forward < backward:
            raise ConfigurationError(
                f"paths search needs 0 < path_forward < path_backward, got {forward} and {backward}"
            )
        if not 0 < start <= 1:
            raise ConfigurationError(f"path_start must lie in (0, 1], got {start}")
        self.num_paths, self.branches = num_paths, branches
        self.start, self.forward, self.backward = start, forward, backward

    def schedule(self, sampler: Sampler, backbone: Backbone) -> tuple[float, list[tuple[float, float, float]]]:
        """(the time branching starts, rounds as (t, re-noised t_up, end t_down)) from ``start`` down to 0
        by delta_b - delta_f, on the sampler's grid."""
        t = sampler.snap(backbone, self.start)
        start, rounds = t, []
        while t > 1e-9:
            # rounded so that float residue (0.15 - 0.15 = 3e-17) does not add a spurious round
            up = round(sampler.move(backbone, t, self.forward), 9)
            down = round(sampler.move(backbone, up, -self.backward), 9)
            if down >= t:  # a coarse grid rounded the net step away: progress by at least one grid step
                down = round(sampler.move(backbone, t, self.forward - self.backward), 9)
            rounds.append((t, up, down))
            t = down
        return start, rounds

    def nfe_per_sample(self, sampler: Sampler, backbone: Backbone) -> int:
        per_x0 = 2 if sampler.guided else 1
        start, rounds = self.schedule(sampler, backbone)
        total = self.num_paths * sampler.nfe(backbone, 1.0, start)
        for _, up, down in rounds:
            seg = sampler.nfe(backbone, up, down)
            total += self.num_paths * self.branches * (seg + (per_x0 if down > 0 else 0))
        return total

    def run(self, ctx: SearchContext, conditions: Sequence[Any], sample_ids: Sequence[int]) -> SearchResult:
        b, n, m = len(sample_ids), self.num_paths, self.branches
        sampler, backbone = ctx.sampler, ctx.backbone
        cond = ctx.encode(conditions)
        seeds = ctx.seeds(sample_ids, 0, n)
        start, rounds = self.schedule(sampler, backbone)
        out = ctx.integrate(ctx.noise(seeds), cond, seeds, t_start=1.0, t_end=start)
        x, nfe = out.x, out.nfe * n
        lineage = Lineage.start(seeds)  # origin (B, N): the initial noise each surviving path descends from
        calls = 0
        branch_cond = cond_repeat(cond, n * m)
        for r, (t, up, down) in enumerate(rounds, start=1):
            eps_seeds = [[noise_seed(ctx.seed, int(s), r, j) for j in range(n * m)] for s in sample_ids]
            eps = ctx.noise(eps_seeds)  # (B, N*M, *latent)
            branches = backbone.schedule.renoise(x.repeat_interleave(m, dim=1), t, up, eps)
            out = ctx.integrate(branches, cond, eps_seeds, t_start=up, t_end=down)
            nfe += out.nfe * n * m
            if down > 0:
                flat = out.x.reshape(b * n * m, *out.x.shape[2:])
                x0, cost = sampler.predict_x0(backbone, flat, down, branch_cond)
                nfe += cost * n * m
                x0 = x0.view(b, n * m, *x0.shape[1:])
            else:
                x0 = out.x
            scores = ctx.score(ctx.decode(x0), conditions)
            calls += n * m
            x = lineage.keep_best(out.x, scores, n, children=m)  # (B, N), best first
        # the survivors of the last round are finished samples (t = 0); the best one was kept first
        return lineage.first_survivor(ctx, x, nfe, calls)
