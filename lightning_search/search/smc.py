"""Sequential Monte Carlo steering (Feynman-Kac steering, Singhal et al. 2025, "A General Framework for
Inference-time Scaling and Steering of Diffusion Models").

K particles (``num_candidates``) per sample are integrated together from t = 1. At each scheduled time
t_r the verifier scores the particles' decoded x0-predictions r_t; a potential turns the scores into
incremental log-weights ``lambda * potential``:

- ``difference``: r_t - r_prev (the ancestor's score at the previous time, 0 at the first); the product
  over times telescopes to exp(lambda r_final), so the target is the base distribution tilted by the reward;
- ``max``: the largest score along the particle's ancestry so far;
- ``sum``: the sum of the scores along the ancestry.

Particles are then resampled (multinomial or systematic), optionally only when the effective sample size
``1 / sum w^2`` falls below ``ess_threshold * K``; weights reset to uniform after a resampling. A flow
(ODE) sampler is deterministic, so resampled copies of one particle would stay identical forever: every
particle is therefore re-noised with the schedule's exact forward kernel from t_r to t_r + ``renoise``
(fresh noise seeded by (seed, sample id, round, particle)) and integrated back to t_r. All particles are
re-noised, not only the duplicates, so that the cost is the same for every sample and known in advance
(the forward-then-back move leaves the marginal at t_r unchanged for an exact model, so the unique
particles lose nothing). With a stochastic sampler (``ddim`` or ``euler_maruyama`` with eta > 0, or a
stochastic scheduler) the proposals are the SDE's own, as in FK steering: every particle draws its own step
noises after a resampling, copies diverge by themselves, and ``renoise`` can be 0. At t = 0 the verifier
scores the finished particles and the best one is returned.

NFE per sample = K x (the sampler's steps from 1 to 0, cut at the scheduled times)
+ K x (one x0-prediction per scheduled time) + K x (the re-noise segment per scheduled time).

Times live on the sampler's grid (``sampling/segments.py``): with a diffusers scheduler the scheduled times
are rounded to the nearest timesteps and a re-noising goes at least one timestep; resampling, re-noising and
x0-predictions use the times the segments really reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lightning_search.backbones.base import Backbone, cond_repeat
from lightning_search.errors import ConfigurationError
from lightning_search.sampling.noise import noise_seed
from lightning_search.sampling.sampler import Sampler
from lightning_search.search.base import Lineage, SearchAlgorithm, SearchContext, SearchResult

POTENTIALS = ("difference", "max", "sum")
RESAMPLING = ("multinomial", "systematic")


def normalise_log_weights(log_weights: torch.Tensor) -> torch.Tensor:
    """(B, K) log-weights (-inf allowed, NaN treated as -inf) -> (B, K) weights summing to 1 per row.

    A row whose particles all have weight zero (every score -inf) gets uniform weights.
    """
    log_weights = torch.nan_to_num(log_weights.double(), nan=float("-inf"))
    dead = torch.isneginf(log_weights).all(dim=1, keepdim=True)
    log_weights = torch.where(dead, torch.zeros_like(log_weights), log_weights)
    return torch.softmax(log_weights, dim=1)


def effective_sample_size(weights: torch.Tensor) -> torch.Tensor:
    """(B, K) normalised weights -> (B,) ESS = 1 / sum w^2, between 1 and K."""
    return 1.0 / (weights.double() ** 2).sum(dim=1)


def multinomial_resample(weights: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """K i.i.d. draws of ancestor indices per row: (B, K) weights -> (B, K) long (CPU), sorted per row."""
    k = weights.shape[1]
    w = weights.detach().double().cpu()
    rows = [torch.multinomial(w[i], k, replacement=True, generator=g).sort().values for i, g in enumerate(generators)]
    return torch.stack(rows)


def systematic_resample(weights: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Systematic resampling (Kitagawa 1996): one uniform u per row, positions (u + j) / K, j = 0..K-1.

    Ancestor i is copied floor(K w_i) or ceil(K w_i) times: lower variance than multinomial draws.
    (B, K) weights -> (B, K) long (CPU), sorted per row.
    """
    k = weights.shape[1]
    w = weights.detach().double().cpu()
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators])  # (B,)
    positions = (u[:, None] + torch.arange(k, dtype=torch.float64)) / k
    cumulative = w.cumsum(dim=1)
    cumulative[:, -1] = 1.0  # float residue must not push the last position past the end
    return torch.searchsorted(cumulative, positions).clamp_max(k - 1)


RESAMPLERS = {"multinomial": multinomial_resample, "systematic": systematic_resample}


class SMCSearch(SearchAlgorithm):
    """Feynman-Kac steering of K particles with resampling at scheduled times.

    Args:
        num_particles: K particles per sample.
        times: the times in (0, 1) at which particles are scored and resampled.
        potential: ``difference``, ``max`` or ``sum`` (see the module docstring).
        lam: lambda, the inverse temperature of the weights ``exp(lambda * potential)``.
        resampling: ``multinomial`` or ``systematic``.
        ess_threshold: resample a sample's particles when their ESS < ess_threshold * K (1: at every time).
        renoise: how far forward in t the particles are re-noised after a resampling (0: no re-noising,
            then copies of one particle stay identical).
    """

    def __init__(
        self,
        num_particles: int = 8,
        times: Sequence[float] = (0.6, 0.2),
        potential: str = "difference",
        lam: float = 1.0,
        resampling: str = "systematic",
        ess_threshold: float = 1.0,
        renoise: float = 0.1,
    ) -> None:
        if num_particles < 1:
            raise ConfigurationError(f"smc search needs num_candidates (particles) >= 1, got {num_particles}")
        times = sorted({float(t) for t in times}, reverse=True)
        if any(not 0 < t < 1 for t in times):
            raise ConfigurationError(f"smc_times must lie in (0, 1), got {times}")
        if potential not in POTENTIALS:
            raise ConfigurationError(f"smc_potential must be one of {', '.join(POTENTIALS)}, got {potential!r}")
        if resampling not in RESAMPLING:
            raise ConfigurationError(f"smc_resampling must be one of {', '.join(RESAMPLING)}, got {resampling!r}")
        if lam < 0:
            raise ConfigurationError(f"smc_lambda must be >= 0, got {lam}")
        if not 0 <= ess_threshold <= 1:
            raise ConfigurationError(f"smc_ess_threshold must lie in [0, 1], got {ess_threshold}")
        if not 0 <= renoise <= 1:
            raise ConfigurationError(f"smc_renoise must lie in [0, 1], got {renoise}")
        self.num_particles, self.times, self.potential, self.lam = num_particles, times, potential, lam
        self.resampling, self.ess_threshold, self.renoise = resampling, ess_threshold, renoise

    def schedule(self, sampler: Sampler, backbone: Backbone) -> list[tuple[float, float, float | None]]:
        """Segments as (t_start, t_end, re-noised t_up or None) from 1 to 0, cut at the scheduled times
        rounded to the sampler's grid; after a cut at t_end > 0 the particles are resampled there."""
        cuts = sorted({sampler.snap(backbone, t) for t in self.times} - {0.0}, reverse=True)
        points = [1.0, *cuts, 0.0]
        plan = []
        for start, end in zip(points[:-1], points[1:]):
            up = round(sampler.move(backbone, end, self.renoise), 9) if self.renoise > 0 and end > 0 else None
            plan.append((start, end, up))
        return plan

    def nfe_per_sample(self, sampler: Sampler, backbone: Backbone) -> int:
        k, per_x0 = self.num_particles, 2 if sampler.guided else 1
        total = 0
        for start, end, up in self.schedule(sampler, backbone):
            total += k * sampler.nfe(backbone, start, end)
            if end > 0:
                total += k * per_x0
            if up is not None:
                total += k * sampler.nfe(backbone, up, end)
        return total

    def resample(
        self, weights: torch.Tensor, generators: Sequence[torch.Generator]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K) normalised weights -> ((B, K) ancestor indices, (B,) bool: resampled), both on the CPU.

        Rows whose ESS is at least ``ess_threshold * K`` keep their particles (ancestor j of particle j).
        """
        ancestors = RESAMPLERS[self.resampling](weights, generators)
        resampled = torch.ones(weights.shape[0], dtype=torch.bool)
        if self.ess_threshold < 1:
            resampled = effective_sample_size(weights).cpu() < self.ess_threshold * weights.shape[1]
            identity = torch.arange(weights.shape[1]).expand_as(ancestors)
            ancestors = torch.where(resampled[:, None], ancestors, identity)
        return ancestors, resampled

    def run(self, ctx: SearchContext, conditions: Sequence[Any], sample_ids: Sequence[int]) -> SearchResult:
        if ctx.verifier is not None and ctx.verifier.x0_time is not None:
            raise ConfigurationError(
                f"smc search scores x0-predictions along the way; verifier {type(ctx.verifier).__name__} needs "
                f"the trajectory's x0 at t = {ctx.verifier.x0_time} as well: use a verifier that scores an image"
            )
        b, k = len(sample_ids), self.num_particles
        sampler, backbone = ctx.sampler, ctx.backbone
        cond = ctx.encode(conditions)
        particle_cond = cond_repeat(cond, k)
        seeds = ctx.seeds(sample_ids, 0, k)
        x = ctx.noise(seeds)  # (B, K, *latent)
        particle_seeds = seeds  # the seeds of the particles' step noises (and re-noisings) from here on
        device = x.device
        log_w = torch.zeros(b, k, dtype=torch.float64, device=device)
        previous = torch.zeros(b, k, dtype=torch.float64, device=device)  # the ancestor's last score
        best_so_far = torch.full((b, k), float("-inf"), dtype=torch.float64, device=device)
        total = torch.zeros(b, k, dtype=torch.float64, device=device)
        lineage = Lineage.start(seeds)  # origin (B, K): the initial noise each particle descends from
        nfe = calls = 0
        for r, (start, end, up) in enumerate(self.schedule(sampler, backbone)):
            out = ctx.integrate(x, cond, particle_seeds, t_start=start, t_end=end)
            x, nfe = out.x, nfe + out.nfe * k
            if end <= 0:
                break
            flat = x.reshape(b * k, *x.shape[2:])
            x0, cost = sampler.predict_x0(backbone, flat, end, particle_cond)
            nfe += cost * k
            scores = ctx.score(ctx.decode(x0.view_as(x)), conditions).double()  # (B, K), NaN -> -inf
            calls += k
            lineage.record(scores.max(dim=1).values)
            best_so_far = torch.maximum(best_so_far, scores)
            total = total + scores
            if self.potential == "difference":
                # an ancestor scored -inf (a NaN verifier) contributes 0, so that -inf - -inf is not NaN
                potential = scores - torch.where(torch.isfinite(previous), previous, torch.zeros_like(previous))
            elif self.potential == "max":
                potential = best_so_far
            else:
                potential = total
            log_w = log_w + self.lam * torch.nan_to_num(potential, nan=float("-inf"))
            weights = normalise_log_weights(log_w)
            generators = [torch.Generator().manual_seed(noise_seed(ctx.seed, int(s), r + 1, k)) for s in sample_ids]
            ancestors, resampled = self.resample(weights, generators)
            index = ancestors.to(device)
            x = torch.gather(x, 1, index.view(b, k, *([1] * (x.dim() - 2))).expand_as(x))
            previous, best_so_far, total = (torch.gather(v, 1, index) for v in (scores, best_so_far, total))
            lineage.origin = torch.gather(lineage.origin, 1, ancestors)
            # after a resampling the copies are equally weighted; rows left alone keep their weights
            log_w = torch.where(resampled.to(device)[:, None], torch.zeros_like(log_w), log_w)
            # every particle continues with noises of its own, so copies of one ancestor diverge under a
            # stochastic sampler (FK steering's SDE proposals) and under re-noising alike
            particle_seeds = [[noise_seed(ctx.seed, int(s), r + 1, j) for j in range(k)] for s in sample_ids]
            if up is not None:
                x = backbone.schedule.renoise(x, end, up, ctx.noise(particle_seeds))
                back = ctx.integrate(x, cond, particle_seeds, t_start=up, t_end=end)
                x, nfe = back.x, nfe + back.nfe * k
        return lineage.best_of_finished(ctx, x, conditions, nfe, calls)
