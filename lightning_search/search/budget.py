"""Budget forcing (after Rollover Budget Forcing, Kim et al. 2025, "Inference-Time Scaling for Flow Models via
Stochastic Generation and Rollover Budget Forcing"): a total NFE budget per sample, spent adaptively over time.

The sampling grid is cut into W windows of ``window`` grid steps; each window gets an equal share of the
budget plus whatever the earlier windows left unspent. In a window the sample's current state proposes
children in rounds of ``children``, each integrated through the window by the stochastic sampler with
noises of its own and scored on its x0-prediction at the window's end. The first round with a child that
beats the current state's score ends the window (the best such child goes on) and its unspent share rolls
forward; if no child improves before the window's share runs out, the best child seen goes on. Every
window makes at least one round, so the budget must cover W rounds.

NFEs are exact per sample (they differ between samples); ``nfe_per_sample`` is the budget, their maximum.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lightning_search.backbones.base import Backbone, cond_index
from lightning_search.errors import ConfigurationError
from lightning_search.sampling.noise import noise_seed
from lightning_search.sampling.sampler import Sampler
from lightning_search.search.base import SearchAlgorithm, SearchContext, SearchResult, gather_rows


class BudgetForcingSearch(SearchAlgorithm):
    """Spend ``budget`` NFEs per sample over time windows, rolling unused budget forward.

    Args:
        budget: total NFEs per sample.
        children: children proposed per round.
        window: grid steps per window.
    """

    def __init__(self, budget: int, children: int = 2, window: int = 1) -> None:
        if budget is None or budget < 1 or children < 1 or window < 1:
            raise ConfigurationError(
                f"budget forcing needs --search.budget (total NFEs per sample) >= 1, num_candidates (children per "
                f"round) >= 1 and window >= 1, got {budget}, {children}, {window}"
            )
        self.budget, self.children, self.window = int(budget), children, window

    def windows(self, sampler: Sampler, backbone: Backbone) -> list[tuple[float, float, int]]:
        """(t_start, t_end, NFEs of one child) of every window."""
        grid = sampler.grid(backbone)
        cuts = grid[:: self.window]
        if cuts[-1] != grid[-1]:
            cuts = [*cuts, grid[-1]]
        per_x0 = 2 if sampler.guided else 1
        return [(a, b, sampler.nfe(backbone, a, b) + (per_x0 if b > 0 else 0)) for a, b in zip(cuts[:-1], cuts[1:])]

    def check_budget(self, sampler: Sampler, backbone: Backbone) -> None:
        least = sum(self.children * cost for *_, cost in self.windows(sampler, backbone))
        if self.budget < least:
            raise ConfigurationError(
                f"budget forcing needs at least {least} NFEs per sample (one round of {self.children} children per "
                f"window), got --search.budget {self.budget}"
            )

    def nfe_per_sample(self, sampler: Sampler, backbone: Backbone) -> int:
        self.check_budget(sampler, backbone)
        return self.budget

    def run(self, ctx: SearchContext, conditions: Sequence[Any], sample_ids: Sequence[int]) -> SearchResult:
        ctx.require_stochastic("budget forcing")
        if ctx.verifier is not None and ctx.verifier.rank_based:
            raise ConfigurationError(
                "budget forcing compares scores across windows: use a verifier that is not rank-based"
            )
        self.check_budget(ctx.sampler, ctx.backbone)
        b, m = len(sample_ids), self.children
        windows = self.windows(ctx.sampler, ctx.backbone)
        cond = ctx.encode(conditions)
        seeds = ctx.seeds(sample_ids, 0, 1)
        x = ctx.noise(seeds)[:, 0]
        device = x.device
        current = torch.full((b,), float("-inf"), dtype=torch.float64)  # the state's score (CPU, like the rest)
        spent = torch.zeros(b, dtype=torch.long)
        calls = torch.zeros(b, dtype=torch.long)
        carry = torch.zeros(b, dtype=torch.float64)
        trace: list[list[float]] = [[] for _ in range(b)]
        for w, (t_start, t_end, cost) in enumerate(windows, start=1):
            share = carry + self.budget / len(windows)
            reserve = sum(m * c for *_, c in windows[w:])  # the windows to come keep one round each
            best_x, best = x.clone(), torch.full((b,), float("-inf"), dtype=torch.float64)
            used = torch.zeros(b, dtype=torch.long)
            active = torch.ones(b, dtype=torch.bool)
            r = 0
            while active.any():
                idx = active.nonzero().flatten()
                rows = idx.tolist()
                child_seeds = [[noise_seed(ctx.seed, int(sample_ids[i]), w, r * m + j) for j in range(m)] for i in rows]
                sub = cond_index(cond, idx.to(device))
                parents = x[idx.to(device)][:, None].expand(-1, m, *x.shape[1:])
                out = ctx.integrate(parents, sub, child_seeds, t_start=t_start, t_end=t_end)
                scores, _ = ctx.score_states(out.x, t_end, sub, [conditions[i] for i in rows])
                top = scores.argmax(dim=1)
                top_score = gather_rows(scores, top).cpu().double()
                better = top_score > best[idx]
                best[idx] = torch.where(better, top_score, best[idx])
                keep = better.to(device).view(-1, *[1] * (x.dim() - 1))
                best_x[idx.to(device)] = torch.where(keep, gather_rows(out.x, top), best_x[idx.to(device)])
                used[idx] += m * cost
                calls[idx] += m
                improved = top_score > current[idx]  # an improving round ends the window
                room = (spent[idx] + used[idx] + m * cost + reserve <= self.budget) & (
                    share[idx] - used[idx] >= m * cost
                )
                active[idx] = ~improved & room
                r += 1
            x, current = best_x, best
            spent += used
            carry = share - used
            for i in range(b):
                trace[i].append(float(current[i]))
        images = ctx.decode(x[:, None])[:, 0]
        return SearchResult(
            x0=x,
            images=images,
            score=current.float(),
            nfe=spent,
            verifier_calls=calls,
            chosen=[{"round": 0, "candidate": 0, "seed": s[0]} for s in seeds],
            candidate_seeds=seeds,
            trace=trace,
        )
