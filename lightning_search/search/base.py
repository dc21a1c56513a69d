"""What every search algorithm shares: deterministic noises, batched evaluation through the sampler,
NaN-safe selection, exact NFE bookkeeping and a per-sample trace."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lightning_search.backbones.base import Backbone, cond_repeat
from lightning_search.errors import ConfigurationError
from lightning_search.sampling.noise import noise_seed, seeded_noise
from lightning_search.sampling.sampler import Sampler
from lightning_search.verifiers.base import Verifier


def nan_safe(scores: torch.Tensor) -> torch.Tensor:
    """Scores with NaN replaced by -inf, so that a NaN never wins a comparison or an argmax."""
    return torch.nan_to_num(scores.float(), nan=float("-inf"))


@dataclass
class SearchResult:
    """The chosen sample of each condition, and what it cost.

    x0: (B, *latent) final latents; images: (B, C, H, W) in [0, 1]; score: (B,) the search verifier's score
    of the chosen sample (NaN without a verifier); nfe: (B,) network forward passes spent per sample;
    verifier_calls: (B,) images scored per sample; chosen: per sample, which noise won ({round, candidate,
    seed}); candidate_seeds: per sample, every initial-noise seed drawn; trace: per sample, per round, the
    best score so far.
    """

    x0: torch.Tensor
    images: torch.Tensor
    score: torch.Tensor
    nfe: torch.Tensor
    verifier_calls: torch.Tensor
    chosen: list[dict[str, int]]
    candidate_seeds: list[list[int]]
    trace: list[list[float]] = field(default_factory=list)


@dataclass
class SearchContext:
    """Everything an algorithm may use: the backbone, the sampler, a verifier, the seed, and counters."""

    backbone: Backbone
    sampler: Sampler
    verifier: Verifier | None
    seed: int = 0
    candidate_steps: int | None = None
    # candidate sharding: this rank evaluates candidates rank, rank + world_size, ... of every sample and the
    # per-rank winners are all-gathered (LightningModule.all_gather), so every rank picks the same one
    shard_candidates: bool = False
    rank: int = 0
    world_size: int = 1
    all_gather: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        self.device = next(self.backbone.parameters()).device
        self.dtype = next(self.backbone.parameters()).dtype

    # -- noises -------------------------------------------------------------------------------------------
    def seeds(self, sample_ids: Sequence[int], round_: int, num: int, offset: int = 0) -> list[list[int]]:
        """Seeds of candidates offset..offset+num-1 of round ``round_`` for each sample id."""
        return [[noise_seed(self.seed, int(s), round_, offset + c) for c in range(num)] for s in sample_ids]

    def noise(self, seeds: list[list[int]]) -> torch.Tensor:
        """(B, N, *latent) standard normal noises, one generator per seed."""
        flat = [s for row in seeds for s in row]
        noise = seeded_noise(flat, self.backbone.latent_shape, self.device, self.dtype)
        return noise.view(len(seeds), -1, *self.backbone.latent_shape)

    def local_candidates(self, num: int) -> list[int]:
        """The global candidate indices this rank evaluates (all of them unless candidates are sharded)."""
        if not self.shard_candidates or self.world_size == 1:
            return list(range(num))
        return list(range(self.rank, num, self.world_size))

    def pick_best(
        self, scores: torch.Tensor, candidates: Sequence[int], tensors: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The best candidate of each sample: (global index (B,), score (B,), {name: chosen row (B, ...)}).

        scores: (B, n_local) for the global candidate indices ``candidates``; tensors: (B, n_local, ...).
        Ties go to the lowest global index, as ``argmax`` does in one process, so sharded and unsharded
        runs choose the same candidate. NaN scores were already turned into -inf.
        """
        b = scores.shape[0]
        index = torch.tensor(list(candidates), device=scores.device, dtype=torch.long)
        if len(candidates) == 0:  # more ranks than candidates: this rank contributes nothing
            best_score = torch.full((b,), float("-inf"), device=scores.device)
            best_index = torch.full((b,), torch.iinfo(torch.long).max, device=scores.device)
            chosen = {k: torch.zeros(b, *v.shape[2:], device=v.device, dtype=v.dtype) for k, v in tensors.items()}
        else:
            local = scores.argmax(dim=1)
            best_score, best_index = gather_rows(scores, local), index[local]
            chosen = {k: gather_rows(v, local) for k, v in tensors.items()}
        if not self.shard_candidates or self.world_size == 1:
            return best_index, best_score, chosen
        all_scores = self.all_gather(best_score)  # (W, B)
        all_index = self.all_gather(best_index)
        top = all_scores.max(dim=0).values
        masked = torch.where(all_scores == top, all_index, torch.iinfo(torch.long).max)
        winner_rank = masked.argmin(dim=0)  # (B,)
        rows = torch.arange(b, device=scores.device)
        chosen = {k: self.all_gather(v)[winner_rank, rows] for k, v in chosen.items()}
        return all_index[winner_rank, rows], top, chosen

    # -- evaluation ---------------------------------------------------------------------------------------
    def encode(self, conditions: Sequence[Any]):
        return self.backbone.encode_conditions(conditions)

    def integrate(
        self,
        x: torch.Tensor,
        cond,
        *,
        steps: int | None = None,
        t_start: float = 1.0,
        t_end: float = 0.0,
        x0_at: Sequence[float] = (),
    ):
        """Integrate (B, N, *latent) states with cond encoded for the B conditions (repeated N times)."""
        b, n = x.shape[:2]
        out = self.sampler.sample(
            self.backbone,
            x.reshape(b * n, *x.shape[2:]),
            cond_repeat(cond, n),
            t_start=t_start,
            t_end=t_end,
            steps=steps,
            x0_at=x0_at,
        )
        out.x = out.x.view(b, n, *out.x.shape[1:])
        out.x0 = {t: v.view(b, n, *v.shape[1:]) for t, v in out.x0.items()}
        return out

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Decode (B, N, *latent) -> (B, N, C, H, W)."""
        b, n = x0.shape[:2]
        images = self.backbone.decode(x0.reshape(b * n, *x0.shape[2:]))
        return images.view(b, n, *images.shape[1:])

    def score(
        self, images: torch.Tensor, conditions: Sequence[Any], x0_images: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Verifier scores of (B, N, C, H, W) images -> (B, N), NaN replaced by -inf."""
        if self.verifier is None:
            raise ConfigurationError("this search algorithm needs a verifier; set --search.verifier")
        b, n = images.shape[:2]
        flat_conditions = [c for c in conditions for _ in range(n)]
        flat_x0 = None if x0_images is None else x0_images.reshape(b * n, *x0_images.shape[2:])
        groups = torch.arange(b, device=images.device).repeat_interleave(n)
        scores = self.verifier(images.reshape(b * n, *images.shape[2:]), flat_conditions, flat_x0, groups)
        return nan_safe(scores.view(b, n))

    @property
    def x0_time(self) -> tuple[float, ...]:
        """The time at which the verifier wants x0-predictions, if any."""
        t = None if self.verifier is None else self.verifier.x0_time
        return () if t is None else (t,)

    def sample_and_score(self, noise: torch.Tensor, cond, conditions, steps: int | None):
        """Integrate (B, N) noises to t = 0 and score them -> (x0, images, scores (B, N), nfe per sample)."""
        out = self.integrate(noise, cond, steps=steps, x0_at=self.x0_time)
        images = self.decode(out.x)
        x0_images = self.decode(out.x0[self.x0_time[0]]) if self.x0_time else None
        return out.x, images, self.score(images, conditions, x0_images), out.nfe * noise.shape[1]


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x: (B, N, ...), index: (B,) -> (B, ...) the chosen row of each sample."""
    return x[torch.arange(x.shape[0], device=x.device), index.to(x.device)]


class SearchAlgorithm(ABC):
    """Spends a budget of NFEs on initial noises through a sampler and a verifier."""

    needs_verifier: bool = True
    supports_candidate_sharding: bool = False

    @abstractmethod
    def run(self, ctx: SearchContext, conditions: Sequence[Any], sample_ids: Sequence[int]) -> SearchResult:
        """Search for each (condition, sample id) of the batch; candidates of all conditions are batched."""

    def nfe_per_sample(self, sampler: Sampler, prediction_type: str = "velocity") -> int:
        """The NFEs this algorithm will spend per sample (for budgets and matched-NFE sweeps)."""
        raise NotImplementedError
