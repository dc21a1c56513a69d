"""First-order search: gradient ascent on the initial noise (Ma et al. 2025, Fig. 14's comparison; ReNO,
Eyring et al. 2024).

The verifier's score of a sample is differentiated with respect to the initial noise through a few-step
differentiable sampler (``candidate_steps``; one or two steps keep the graph small, as in ReNO's one-step
models). Each iteration moves the noise n along the gradient's component tangent to its sphere,

    n <- sqrt(1 - lambda^2) n + lambda ||n|| g_perp / ||g_perp||,

the first-order twin of zero-order search's neighbour ``sqrt(1 - lambda^2) n + lambda z``: a normalised
step (its length does not depend on the verifier's scale) that keeps ||n|| exactly, so the noise stays
on the typical sphere of its Gaussian (radius about sqrt(d)) where the model was trained; ReNO adds a
norm penalty for the same reason.

The result is the best iterate, as ReNO keeps it: the noises n_0 (the no-search noise) .. n_K are scored
with the few-step sampler (n_K with one more forward pass), and the best one is the result, denoised again
with the sampler's full steps when the few-step sampler has fewer. A step that made the score worse
therefore never makes the result worse.

Compute. A backward pass through the sampler is counted as ``backward_cost`` x its forward NFEs
(default 2, an upper bound of the cost measured on digits, see ``BACKWARD_COST``), so with F the forward
NFEs of the few-step sampler, NFE per sample = iterations x (1 + backward_cost) x F + F (the last iterate)
+ the full sampler's NFEs when it is re-denoised; verifier calls = iterations x (1 + backward_cost) + 1
(+ 1 when re-denoised), the backward through the verifier counted alike.
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

# NFEs charged per backward pass, per forward NFE. Measured on digits (digits-m generator, 1-step Heun, batch
# 250, 1 CPU thread): the backward to the noise alone (the weights need no gradient, autograd.grad skips
# them) costs 0.47x the forward in FLOPs (torch.utils.flop_counter) and 0.6x in wall time; with the
# verifier CNN's backward included, 1.3x the forward's wall time. 2 is at least every one of these, and
# the usual estimate for a backward that also needs weight gradients (Kaplan et al. 2020).
BACKWARD_COST = 2


class GradientSearch(SearchAlgorithm):
    """Normalised gradient ascent on the initial noise through a differentiable verifier.

    Args:
        iterations: gradient steps.
        step_size: lambda in (0, 1]: the step's length relative to the noise's norm (an angle of asin lambda).
        candidate_steps: steps of the differentiable sampler the gradient flows through (None: the sampler's).
        backward_cost: NFEs charged per backward pass, as a multiple of the forward pass's NFEs (an integer,
            so that NFE counts stay integers).
    """

    def __init__(
        self,
        iterations: int = 1,
        step_size: float = 0.1,
        candidate_steps: int | None = 1,
        backward_cost: int = BACKWARD_COST,
    ) -> None:
        if iterations < 1:
            raise ConfigurationError(f"gradient search needs iterations >= 1, got {iterations}")
        if not 0 < step_size <= 1:
            raise ConfigurationError(f"gradient step_size (lambda) must lie in (0, 1], got {step_size}")
        if candidate_steps is not None and candidate_steps < 1:
            raise ConfigurationError(f"gradient search needs candidate_steps >= 1, got {candidate_steps}")
        if backward_cost < 0:
            raise ConfigurationError(f"backward_cost must be >= 0, got {backward_cost}")
        self.iterations, self.step_size, self.candidate_steps = iterations, step_size, candidate_steps
        self.backward_cost = backward_cost

    def _redenoise(self, sampler: Sampler) -> bool:
        return self.candidate_steps is not None and self.candidate_steps != sampler.steps

    def nfe_per_sample(self, sampler: Sampler, backbone: Backbone) -> int:
        forward = sampler.nfe(backbone, steps=self.candidate_steps)
        total = self.iterations * forward * (1 + self.backward_cost) + forward
        return total + (sampler.nfe(backbone) if self._redenoise(sampler) else 0)

    def verifier_calls_per_sample(self, sampler: Sampler) -> int:
        return self.iterations * (1 + self.backward_cost) + 1 + int(self._redenoise(sampler))

    def step(self, noise: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """One normalised ascent step on the sphere of each noise's own radius: (B, *latent) -> (B, *latent)."""
        n, g = noise.flatten(1), torch.nan_to_num(grad.flatten(1), nan=0.0, posinf=0.0, neginf=0.0)
        radius = n.norm(dim=1, keepdim=True)
        tangent = g - (g * n).sum(dim=1, keepdim=True) / radius.pow(2).clamp_min(1e-12) * n
        norm = tangent.norm(dim=1, keepdim=True)
        # a zero gradient (a saturated verifier, or -inf scores) leaves the noise where it is
        direction = torch.where(norm > 0, tangent / norm.clamp_min(1e-12), torch.zeros_like(tangent))
        lam = self.step_size
        return (math.sqrt(1 - lam**2) * n + lam * radius * direction).view_as(noise)

    def run(self, ctx: SearchContext, conditions: Sequence[Any], sample_ids: Sequence[int]) -> SearchResult:
        verifier = ctx.verifier
        if verifier is not None and (verifier.rank_based or not getattr(verifier, "differentiable", True)):
            raise ConfigurationError(
                f"gradient search needs a differentiable verifier; {type(verifier).__name__} declares it is not"
            )
        b = len(sample_ids)
        seeds = ctx.seeds(sample_ids, 0, 1)  # the no-search noise: a zero step gives the no-search sample
        steps = self.candidate_steps
        iterates, x0s, images, scores = [], [], [], []  # n_0 .. n_K, their few-step samples and scores
        nfe = 0
        # Lightning predicts under torch.inference_mode; leave it (and no_grad) locally, and make the
        # noise and the encoded conditions here so that they are ordinary tensors autograd may save
        with torch.inference_mode(False), torch.enable_grad():
            cond = ctx.encode(conditions)
            noise = ctx.noise(seeds)[:, 0].clone()
            for k in range(self.iterations):
                leaf = noise.detach().requires_grad_(True)
                iterate_seeds = ctx.seeds(sample_ids, k, 1)  # a stochastic sampler's step noises of iterate k
                x0, image, score, forward = ctx.sample_and_score(leaf[:, None], iterate_seeds, cond, conditions, steps)
                if not score.requires_grad:
                    raise ConfigurationError(
                        f"gradient search needs a differentiable verifier; {type(verifier).__name__}'s score "
                        "does not depend differentiably on the image"
                    )
                # samples are independent, so the gradient of the sum is each sample's own gradient;
                # autograd.grad leaves the networks' weights alone (no weight gradients computed)
                finite = torch.isfinite(score)
                objective = torch.where(finite, score, torch.zeros_like(score)).sum()
                (grad,) = torch.autograd.grad(objective, leaf)
                nfe += forward * (1 + self.backward_cost)
                iterates.append(noise.detach())
                x0s.append(x0[:, 0].detach())
                images.append(image[:, 0].detach())
                scores.append(score[:, 0].detach())
                noise = self.step(noise.detach(), grad)
        with torch.no_grad():
            last_seeds = ctx.seeds(sample_ids, self.iterations, 1)
            x0, image, score, forward = ctx.sample_and_score(noise[:, None], last_seeds, cond, conditions, steps)
            nfe += forward
            iterates.append(noise)
            x0s.append(x0[:, 0])
            images.append(image[:, 0])
            scores.append(score[:, 0])
            all_scores = torch.stack(scores, dim=1)  # (B, K + 1), NaN already -inf
            best = all_scores.argmax(dim=1)  # ties: the earliest iterate
            score = gather_rows(all_scores, best)
            x0, image = gather_rows(torch.stack(x0s, 1), best), gather_rows(torch.stack(images, 1), best)
            if self._redenoise(ctx.sampler):
                winner = gather_rows(torch.stack(iterates, 1), best)
                winner_seeds = [[ctx.seeds([sid], int(k), 1)[0][0]] for sid, k in zip(sample_ids, best.tolist())]
                final_x0, final_images, final_scores, final = ctx.sample_and_score(
                    winner[:, None], winner_seeds, cond, conditions, None
                )
                x0, image, score, nfe = final_x0[:, 0], final_images[:, 0], final_scores[:, 0], nfe + final
        trace = [[float(v) for v in row] for row in all_scores.cpu().cummax(dim=1).values]  # best so far
        if self._redenoise(ctx.sampler):
            for row, final_score in zip(trace, score.tolist()):
                row.append(final_score)
        return SearchResult(
            x0=x0,
            images=image,
            score=score.detach().cpu(),
            nfe=torch.full((b,), nfe),
            verifier_calls=torch.full((b,), self.verifier_calls_per_sample(ctx.sampler)),
            chosen=[{"round": int(r), "candidate": 0, "seed": s[0]} for r, s in zip(best.tolist(), seeds)],
            candidate_seeds=seeds,
            trace=trace,
        )
