"""Zero-order search (Ma et al. 2025, Sec. 3.2): local search on the noise sphere around a pivot.

Start from a random pivot noise n; each iteration draws N neighbours of it, integrates and scores them,
and the best neighbour becomes the pivot only if it beats the pivot. Two neighbourhoods, one step size lambda:

- ``mix`` (the paper's description): ``y = sqrt(1 - lambda^2) n + lambda z`` with z fresh standard normal, so
  y is again standard normal and its cosine to n is about sqrt(1 - lambda^2);
- ``sphere`` (the first author's public code): z is orthogonalised to n and the neighour is put at cosine
  exactly ``sqrt(1 - lambda^2)`` to n on n's own sphere (``|y| = |n|``). The public code's cosine
  ``threshold`` is that cosine: lambda = 0.1 is a threshold of 0.995, a threshold of 0.95 is lambda = 0.312.

Small lambda stays close to the first noise (keeps diversity across samples, overfits the verifier less);
large lambda explores more. The pivot is scored together with its neighbours every round, as the public
code does: a rank-based verifier (the ensemble) then compares them within one set (others give the pivot
the score they gave it before, so it is not scored again).

Local search can stall at a noise none of whose neighbours is better (the fixed point the public code
reports). With ``restart_after = R`` a sample that has not improved for R rounds restarts from a fresh noise
(seeded by its round): that round's first candidate is the fresh noise itself, the others its neighbours.
The best sample ever seen is the result, whatever the pivot is at the end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from lightning_search.backbones.base import Backbone
from lightning_search.errors import ConfigurationError
from lightning_search.sampling.sampler import Sampler
from lightning_search.search.base import SearchAlgorithm, SearchContext, SearchResult, gather_rows

NEIGHBOURHOODS = ("mix", "sphere")


def neighbours(pivot: torch.Tensor, z: torch.Tensor, step_size: float, kind: str) -> torch.Tensor:
    """Neighbours of pivots (B, *latent) from directions z (B, N, *latent) -> (B, N, *latent)."""
    keep = math.sqrt(1 - step_size**2)
    if kind == "mix":
        return keep * pivot[:, None] + step_size * z
    n = pivot.flatten(1)[:, None]  # (B, 1, D)
    d = z.flatten(2)
    radius = n.norm(dim=-1, keepdim=True)
    unit = n / radius.clamp_min(1e-12)
    ortho = d - (d * unit).sum(-1, keepdim=True) * unit
    ortho = ortho / ortho.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (radius * (keep * unit + step_size * ortho)).view_as(z)


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, *[1] * (a.dim() - 1)).to(a.device), a, b)


class ZeroOrderSearch(SearchAlgorithm):
    """Hill climbing over initial noises with a verifier as the (zero-order) objective.

    Args:
        num_neighbors: N neighbours per iteration.
        iterations: K iterations.
        step_size: lambda in (0, 1).
        candidate_steps: solver steps per candidate (None: the sampler's; then no final re-denoising).
        neighbourhood: ``mix`` or ``sphere`` (module docstring).
        restart_after: restart a sample from a fresh noise after this many rounds without improvement
            (None: never).
    """

    def __init__(
        self,
        num_neighbors: int = 4,
        iterations: int = 4,
        step_size: float = 0.1,
        candidate_steps: int | None = None,
        neighbourhood: str = "mix",
        restart_after: int | None = None,
    ) -> None:
        if num_neighbors < 1 or iterations < 1:
            raise ConfigurationError(
                f"zero-order search needs num_candidates >= 1 and iterations >= 1, got {num_neighbors}, {iterations}"
            )
        if not 0 < step_size < 1:
            raise ConfigurationError(f"zero-order step_size (lambda) must lie in (0, 1), got {step_size}")
        if neighbourhood not in NEIGHBOURHOODS:
            raise ConfigurationError(
                f"zero-order neighbourhood must be one of {', '.join(NEIGHBOURHOODS)}, got {neighbourhood!r}"
            )
        if restart_after is not None and restart_after < 1:
            raise ConfigurationError(f"zero-order restart_after must be >= 1 (or null), got {restart_after}")
        self.num_neighbors, self.iterations, self.step_size = num_neighbors, iterations, step_size
        self.candidate_steps, self.neighbourhood, self.restart_after = candidate_steps, neighbourhood, restart_after

    def _redenoise(self, sampler: Sampler) -> bool:
        return self.candidate_steps is not None and self.candidate_steps != sampler.steps

    def nfe_per_sample(self, sampler: Sampler, backbone: Backbone) -> int:
        evaluations = 1 + self.iterations * self.num_neighbors
        final = sampler.nfe(backbone)
        if not self._redenoise(sampler):
            return evaluations * final
        return evaluations * sampler.nfe(backbone, steps=self.candidate_steps) + final

    def run(self, ctx: SearchContext, conditions: Sequence[Any], sample_ids: Sequence[int]) -> SearchResult:
        b, n_nb = len(sample_ids), self.num_neighbors
        redenoise = self._redenoise(ctx.sampler)
        steps = self.candidate_steps if redenoise else None
        rank_based = ctx.verifier is not None and ctx.verifier.rank_based
        cond = ctx.encode(conditions)
        pivot_seeds = ctx.seeds(sample_ids, 0, 1)
        pivot = ctx.noise(pivot_seeds)[:, 0]
        x0, images, scores, nfe = ctx.sample_and_score(pivot[:, None], pivot_seeds, cond, conditions, steps)
        calls = torch.ones(b, dtype=torch.long)
        # the pivot (centre of the neighbourhood) and the best sample so far: the same unless restarted
        piv = {"noise": pivot, "x0": x0[:, 0], "images": images[:, 0], "score": scores[:, 0]}
        best = dict(piv)
        chosen = [{"round": 0, "candidate": 0, "seed": s[0]} for s in pivot_seeds]
        all_seeds = [list(s) for s in pivot_seeds]
        trace = [[float(s)] for s in best["score"]]
        stalled = torch.zeros(b, dtype=torch.long)
        for k in range(1, self.iterations + 1):
            seeds = ctx.seeds(sample_ids, k, n_nb)
            restart = (
                stalled >= self.restart_after if self.restart_after is not None else torch.zeros(b, dtype=torch.bool)
            )
            fresh = ctx.seeds(sample_ids, k, 1, offset=n_nb)  # a restart's new pivot: candidate N of the round
            if restart.any():
                piv["noise"] = _where(restart, ctx.noise(fresh)[:, 0], piv["noise"])
            candidates = neighbours(piv["noise"], ctx.noise(seeds), self.step_size, self.neighbourhood)
            candidates[:, 0] = _where(restart, piv["noise"], candidates[:, 0])
            row_seeds = [[f[0] if r else s[0], *s[1:]] for f, r, s in zip(fresh, restart.tolist(), seeds)]
            cx0, cimages, cscores, cost = ctx.sample_and_score(candidates, row_seeds, cond, conditions, steps)
            nfe += cost
            calls += n_nb
            if restart.any():  # the fresh pivot is candidate 0: its own score is its pivot score
                for key, value in (("x0", cx0[:, 0]), ("images", cimages[:, 0]), ("score", cscores[:, 0])):
                    piv[key] = _where(restart, value, piv[key])
            if rank_based:
                # best, pivot and candidates are one candidate set: rank them together
                group = torch.cat([best["images"][:, None], piv["images"][:, None], cimages], dim=1)
                scores = ctx.score(group, conditions)
                best["score"], piv["score"], cscores = scores[:, 0], scores[:, 1], scores[:, 2:]
                calls += 2
            top = cscores.argmax(dim=1)
            top_score = gather_rows(cscores, top)
            # strict: the pivot is kept on ties and when all are NaN (-inf)
            moves, improves = top_score > piv["score"], top_score > best["score"]
            for state, mask in ((piv, moves), (best, improves)):
                state["noise"] = _where(mask, gather_rows(candidates, top), state["noise"])
                state["x0"] = _where(mask, gather_rows(cx0, top), state["x0"])
                state["images"] = _where(mask, gather_rows(cimages, top), state["images"])
                state["score"] = torch.where(mask.to(top_score.device), top_score, state["score"])
            stalled = torch.where(improves.cpu(), 0, stalled + 1)
            stalled = torch.where(restart, 0, stalled)
            for i in range(b):
                all_seeds[i].extend(seeds[i])
                if restart[i]:
                    all_seeds[i].append(fresh[i][0])
                if improves[i]:
                    j = int(top[i])
                    seed = fresh[i][0] if restart[i] and j == 0 else seeds[i][j]
                    chosen[i] = {"round": k, "candidate": j, "seed": seed}
                trace[i].append(float(best["score"][i]))
        score = best["score"]
        if redenoise:
            best_seeds = [[c["seed"]] for c in chosen]
            x0, images, final_scores, final_nfe = ctx.sample_and_score(
                best["noise"][:, None], best_seeds, cond, conditions, None
            )
            best["x0"], best["images"] = x0[:, 0], images[:, 0]
            nfe, calls = nfe + final_nfe, calls + 1
            if not rank_based:  # a rank means something only within its candidate set
                score = final_scores[:, 0]
        return SearchResult(
            x0=best["x0"],
            images=best["images"],
            score=score.cpu(),
            nfe=torch.full((b,), nfe),
            verifier_calls=calls,
            chosen=chosen,
            candidate_seeds=all_seeds,
            trace=trace,
        )
