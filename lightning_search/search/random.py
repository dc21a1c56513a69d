"""Random search (best-of-N), the paper's simplest algorithm (Ma et al. 2025, Sec. 3.2).

N noises per sample are each integrated to t = 0 with ``candidate_steps`` solver steps and scored; the best
noise is then re-denoised with the sampler's full steps (unless the candidates already used them, in which
case the winning candidate is the result and nothing is spent twice). NFE = N x candidate + final.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lightning_search.backbones.base import Backbone
from lightning_search.errors import ConfigurationError
from lightning_search.sampling.sampler import Sampler
from lightning_search.search.base import Lineage, SearchAlgorithm, SearchContext, SearchResult


class RandomSearch(SearchAlgorithm):
    """Best of ``num_candidates`` initial noises.

    Args:
        num_candidates: N, the noises drawn per sample.
        candidate_steps: solver steps per candidate (None: the sampler's steps, and no re-denoising).
    """

    supports_candidate_sharding = True

    def __init__(self, num_candidates: int = 4, candidate_steps: int | None = None) -> None:
        if num_candidates < 1:
            raise ConfigurationError(f"random search needs num_candidates >= 1, got {num_candidates}")
        self.num_candidates, self.candidate_steps = num_candidates, candidate_steps

    def _redenoise(self, sampler: Sampler) -> bool:
        return self.candidate_steps is not None and self.candidate_steps != sampler.steps

    def nfe_per_sample(self, sampler: Sampler, backbone: Backbone) -> int:
        final = sampler.nfe(backbone)
        if not self._redenoise(sampler):
            return self.num_candidates * final
        return self.num_candidates * sampler.nfe(backbone, steps=self.candidate_steps) + final

    def run(self, ctx: SearchContext, conditions: Sequence[Any], sample_ids: Sequence[int]) -> SearchResult:
        seeds = ctx.seeds(sample_ids, 0, self.num_candidates)
        mine = ctx.local_candidates(self.num_candidates)  # all of them unless sharded across ranks
        cond = ctx.encode(conditions)
        redenoise = self._redenoise(ctx.sampler)
        steps = self.candidate_steps if redenoise else None
        b = len(sample_ids)
        local_seeds = [[row[c] for c in mine] for row in seeds]
        if mine:
            noise = ctx.noise(local_seeds)
        else:  # more ranks than candidates: this rank evaluates none
            noise = torch.zeros(b, 0, *ctx.backbone.latent_shape, device=ctx.device, dtype=ctx.dtype)
        sharded = self.num_candidates if ctx.sharded else None
        x0, images, scores, _ = ctx.sample_and_score(noise, local_seeds, cond, conditions, steps, sharded)
        best, score, chosen_rows = ctx.pick_best(scores, {"x0": x0, "images": images})
        nfe = self.num_candidates * ctx.sampler.nfe(ctx.backbone, steps=steps)
        calls = self.num_candidates
        best_seeds = [seeds[i][int(c)] for i, c in enumerate(best)]
        lineage = Lineage.start(seeds)
        lineage.record(score)  # the search round: the best candidate's score
        if redenoise:
            winner = [[s] for s in best_seeds]  # the winner's noise, redrawn from its seed
            x0, images, final_scores, final_nfe = ctx.sample_and_score(
                ctx.noise(winner), winner, cond, conditions, None
            )
            x0, images = x0[:, 0], images[:, 0]
            nfe, calls = nfe + final_nfe, calls + 1
            # a rank-based score means something only within the candidate set: keep the winner's rank there
            if not ctx.verifier.rank_based:
                score = final_scores[:, 0]
        else:
            x0, images = chosen_rows["x0"], chosen_rows["images"]
        return lineage.result(x0, images, score.cpu(), best, nfe, calls)
