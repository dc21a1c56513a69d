"""Evolutionary search (after EvoSearch, Jiang et al. 2025): a population of noises or intermediate states,
elites kept, children made by a mutation that keeps the Gaussian's sphere.

Generation 0 samples P noises and scores the results. Each later generation keeps the E best individuals
seen so far (elites: a (mu + lambda) selection, so the best never gets lost) and makes P - E children, child
j from elite j mod E:

- from the initial noise (``state_time`` None): ``n' = sqrt(1 - lambda^2) n + lambda z``, zero-order search's
  neighbour, again standard normal; the child is sampled from t = 1;
- from the state at ``state_time`` tau: the parent's state there is split into its x0-prediction and noise,
  ``x = alpha x0 + sigma eps``, and only the noise part is mutated on its sphere,
  ``x' = alpha x0 + sigma (sqrt(1 - lambda^2) eps + lambda z)``; the child is sampled from tau, so it keeps
  the parent's layout and costs only the steps below tau.

The result is the best individual ever scored. NFE per sample = P x (a full sample) + (G - 1) x (P - E) x
(a child's run: full, or tau -> 0); the x0-predictions at tau come free from the step that starts there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from lightning_search.backbones.base import Backbone
from lightning_search.errors import ConfigurationError
from lightning_search.sampling.noise import noise_seed
from lightning_search.sampling.sampler import Sampler
from lightning_search.search.base import SearchAlgorithm, SearchContext, SearchResult, gather_rows


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` (B, K) of x (B, N, ...) -> (B, K, ...)."""
    return torch.stack([gather_rows(x, index[:, j]) for j in range(index.shape[1])], dim=1)


class EvolutionarySearch(SearchAlgorithm):
    """(mu + lambda) evolution of initial noises or intermediate states.

    Args:
        population: P individuals per generation.
        generations: G (1 = plain best-of-P).
        elites: E < P individuals carried over and mutated.
        mutation: lambda in (0, 1), the mutation's step on the sphere (a cosine of sqrt(1 - lambda^2)).
        state_time: evolve the states at this time (None: the initial noises).
    """

    def __init__(
        self,
        population: int = 8,
        generations: int = 3,
        elites: int = 2,
        mutation: float = 0.5,
        state_time: float | None = None,
    ) -> None:
        if population < 2 or generations < 1 or not 1 <= elites < population:
            raise ConfigurationError(
                f"evolutionary search needs num_candidates (population) >= 2, iterations (generations) >= 1 and "
                f"1 <= elites < population, got {population}, {generations}, {elites}"
            )
        if not 0 < mutation < 1:
            raise ConfigurationError(f"evolutionary mutation (step_size) must lie in (0, 1), got {mutation}")
        if state_time is not None and not 0 < state_time < 1:
            raise ConfigurationError(f"evo_state_time must lie in (0, 1), got {state_time}")
        self.population, self.generations, self.elites = population, generations, elites
        self.mutation, self.state_time = mutation, state_time

    def _tau(self, sampler: Sampler, backbone: Backbone) -> float | None:
        return None if self.state_time is None else sampler.snap(backbone, self.state_time)

    def nfe_per_sample(self, sampler: Sampler, backbone: Backbone) -> int:
        tau = self._tau(sampler, backbone)
        child = sampler.nfe(backbone) if tau is None else sampler.nfe(backbone, tau, 0.0)
        return (
            self.population * sampler.nfe(backbone) + (self.generations - 1) * (self.population - self.elites) * child
        )

    def _sample(self, ctx, x, seeds, cond, conditions, t_start, tau):
        """Run states from t_start to 0 (recording the state and x0 at tau) -> (dict of tensors, NFE per row)."""
        if tau is None or t_start <= tau:
            out = ctx.integrate(x, cond, seeds, t_start=t_start)
            return {"x0": out.x}, out.nfe
        first = ctx.integrate(x, cond, seeds, t_start=t_start, t_end=tau)
        second = ctx.integrate(first.x, cond, seeds, t_start=tau, x0_at=(tau,))
        return {"x0": second.x, "state": first.x, "pred": second.x0[tau]}, first.nfe + second.nfe

    def run(self, ctx: SearchContext, conditions: Sequence[Any], sample_ids: Sequence[int]) -> SearchResult:
        b, p, e = len(sample_ids), self.population, self.elites
        tau = self._tau(ctx.sampler, ctx.backbone)
        cond = ctx.encode(conditions)
        seeds = ctx.seeds(sample_ids, 0, p)
        noise = ctx.noise(seeds)
        pop, cost = self._sample(ctx, noise, seeds, cond, conditions, 1.0, tau)
        pop["noise"] = noise
        images = ctx.decode(pop["x0"])
        scores = ctx.score(images, conditions)
        pop["images"] = images
        ids = [[{"round": 0, "candidate": j, "seed": seeds[i][j]} for j in range(p)] for i in range(b)]
        nfe, calls = cost * p, p
        all_seeds = [list(s) for s in seeds]
        trace = [[float(s)] for s in scores.max(dim=1).values]
        keep, move = math.sqrt(1 - self.mutation**2), self.mutation
        for g in range(1, self.generations):
            elite = scores.topk(e, dim=1).indices  # (B, E), best first
            parents = elite[:, torch.arange(p - e) % e]  # (B, P - E): child j from elite j mod E
            child_seeds = [[noise_seed(ctx.seed, int(s), g, j) for j in range(p - e)] for s in sample_ids]
            z = ctx.noise(child_seeds)
            if tau is None:
                start, x = 1.0, keep * _take(pop["noise"], parents) + move * z
            else:  # mutate the noise part of the parents' states at tau, on its sphere
                tt = torch.tensor(tau, dtype=torch.float64)
                a, s = float(ctx.backbone.schedule.alpha(tt)), float(ctx.backbone.schedule.sigma(tt))
                x0, state = _take(pop["pred"], parents), _take(pop["state"], parents)
                eps = (state - a * x0) / s
                start, x = tau, a * x0 + s * (keep * eps + move * z)
            children, cost = self._sample(ctx, x, child_seeds, cond, conditions, start, tau)
            children["noise"] = x if tau is None else _take(pop["noise"], parents)
            if tau is not None:  # a child's state at tau is where it started; its x0 there, the parent's
                children["state"], children["pred"] = x, _take(pop["pred"], parents)
            children["images"] = ctx.decode(children["x0"])
            child_scores = ctx.score(children["images"], conditions)
            nfe, calls = nfe + cost * (p - e), calls + (p - e)
            pop = {k: torch.cat([_take(pop[k], elite), children[k]], dim=1) for k in pop}
            scores = torch.cat([torch.gather(scores, 1, elite), child_scores], dim=1)
            for i in range(b):
                ids[i] = [ids[i][int(j)] for j in elite[i]] + [
                    {"round": g, "candidate": j, "seed": child_seeds[i][j]} for j in range(p - e)
                ]
                all_seeds[i].extend(child_seeds[i])
                trace[i].append(float(scores[i].max()))
        best = scores.argmax(dim=1)
        return SearchResult(
            x0=gather_rows(pop["x0"], best),
            images=gather_rows(pop["images"], best),
            score=gather_rows(scores, best).cpu(),
            nfe=torch.full((b,), nfe),
            verifier_calls=torch.full((b,), calls),
            chosen=[ids[i][int(j)] for i, j in enumerate(best)],
            candidate_seeds=all_seeds,
            trace=trace,
        )
