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
    # images per VAE decode call and per verifier call: a full-resolution decode of every candidate at once
    # does not fit a GPU (FLUX's VAE at 1024 px needs ~1.6 GB per image, benchmarks/memory.py)
    decode_batch_size: int = 8
    verifier_batch_size: int = 64
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

    @property
    def sharded(self) -> bool:
        return self.shard_candidates and self.world_size > 1

    def gather_candidates(self, local: torch.Tensor, num: int) -> torch.Tensor:
        """(B, n_local, ...) rows of this rank's candidates -> (B, num, ...) rows of every candidate, in the
        global candidate order (every rank gets the same tensor). Unsharded: ``local`` itself."""
        if not self.sharded:
            return local
        w = self.world_size
        per = -(-num // w)  # ranks hold ceil or floor of num / w candidates: pad to the same shape
        padded = local.new_zeros((local.shape[0], per, *local.shape[2:]))
        padded[:, : local.shape[1]] = local
        gathered = self.all_gather(padded)  # (W, B, per, ...)
        out = local.new_empty((local.shape[0], num, *local.shape[2:]))
        for r in range(w):
            owned = list(range(r, num, w))
            out[:, owned] = gathered[r, :, : len(owned)]
        return out

    def pick_best(
        self, scores: torch.Tensor, tensors: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The best candidate of each sample: (global index (B,), score (B,), {name: chosen row (B, ...)}).

        scores: (B, N) of every candidate (from :meth:`score`, all-gathered when sharded, NaN already -inf);
        tensors: (B, n_local, ...) rows of this rank's candidates. Ties go to the lowest index, as ``argmax``
        does, so sharded and unsharded runs choose the same candidate; the winner's rows come from its rank.
        """
        best = scores.argmax(dim=1)
        best_score = gather_rows(scores, best)
        if not self.sharded:
            return best, best_score, {k: gather_rows(v, best) for k, v in tensors.items()}
        owner, position = best % self.world_size, best // self.world_size
        mine = owner == self.rank
        rows = torch.arange(scores.shape[0], device=scores.device)
        chosen = {}
        for k, v in tensors.items():
            if v.shape[1] == 0:  # more ranks than candidates: this rank holds none
                local = v.new_zeros((v.shape[0], *v.shape[2:]))
            else:
                local = gather_rows(v, position.clamp(max=v.shape[1] - 1))
                local = torch.where(mine.view(-1, *[1] * (local.dim() - 1)).to(local.device), local, 0)
            chosen[k] = self.all_gather(local)[owner.to(local.device), rows.to(local.device)]
        return best, best_score, chosen

    # -- evaluation ---------------------------------------------------------------------------------------
    def encode(self, conditions: Sequence[Any]):
        return self.backbone.encode_conditions(conditions)

    def integrate(
        self,
        x: torch.Tensor,
        cond,
        seeds: list[list[int]],
        *,
        steps: int | None = None,
        t_start: float = 1.0,
        t_end: float = 0.0,
        x0_at: Sequence[float] = (),
        keep_transitions: bool = False,
    ):
        """Integrate (B, N, *latent) states with cond encoded for the B conditions (repeated N times).

        seeds: (B, N) the trajectories' seeds, from which a stochastic sampler draws its step noises.
        """
        b, n = x.shape[:2]
        out = self.sampler.sample(
            self.backbone,
            x.reshape(b * n, *x.shape[2:]),
            cond_repeat(cond, n),
            t_start=t_start,
            t_end=t_end,
            steps=steps,
            x0_at=x0_at,
            seeds=[s for row in seeds for s in row],
            keep_transitions=keep_transitions,
        )
        out.x = out.x.view(b, n, *out.x.shape[1:])
        out.x0 = {t: v.view(b, n, *v.shape[1:]) for t, v in out.x0.items()}
        return out

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Decode (B, N, *latent) -> (B, N, C, H, W), ``decode_batch_size`` latents per VAE call."""
        b, n = x0.shape[:2]
        flat = x0.reshape(b * n, *x0.shape[2:])
        step = max(1, self.decode_batch_size)
        images = torch.cat([self.backbone.decode(flat[i : i + step]) for i in range(0, flat.shape[0], step)])
        return images.view(b, n, *images.shape[1:])

    def score(
        self,
        images: torch.Tensor,
        conditions: Sequence[Any],
        x0_images: torch.Tensor | None = None,
        num_candidates: int | None = None,
    ) -> torch.Tensor:
        """Verifier scores of (B, N, C, H, W) images -> (B, N), NaN replaced by -inf.

        Each sample's N images are one candidate set (rank-based verifiers rank within it). Raw scores are
        computed ``verifier_batch_size`` images at a time, then reduced over whole sets. With sharded
        candidates, pass ``num_candidates``: ``images`` are this rank's (:meth:`local_candidates`), the raw
        scores of every rank are gathered first, and the result is (B, num_candidates) on every rank.
        """
        if self.verifier is None:
            raise ConfigurationError("this search algorithm needs a verifier; set --search.verifier")
        b, n = images.shape[:2]
        flat = images.reshape(b * n, *images.shape[2:])
        flat_conditions = [c for c in conditions for _ in range(n)]
        flat_x0 = None if x0_images is None else x0_images.reshape(b * n, *x0_images.shape[2:])
        if n:
            self.verifier.check_inputs(flat, flat_conditions)
        step = max(1, self.verifier_batch_size)
        parts = [
            self.verifier.raw_scores(
                flat[i : i + step], flat_conditions[i : i + step], None if flat_x0 is None else flat_x0[i : i + step]
            )
            for i in range(0, flat.shape[0], step)
        ]
        raw = torch.cat(parts).view(b, n, -1) if parts else torch.zeros(b, 0, self.verifier.num_raw_scores)
        if num_candidates is not None:
            raw = self.gather_candidates(raw.to(self.device), num_candidates)
        n = raw.shape[1]
        groups = torch.arange(b, device=raw.device).repeat_interleave(n)
        return nan_safe(self.verifier.reduce(raw.reshape(b * n, -1), groups).view(b, n))

    @property
    def x0_time(self) -> tuple[float, ...]:
        """The time at which the verifier wants x0-predictions, if any."""
        t = None if self.verifier is None else self.verifier.x0_time
        return () if t is None else (t,)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of a decoded sample (decoded once from a zero latent, then cached)."""
        if "_image_shape" not in self.__dict__:
            with torch.no_grad():
                zero = torch.zeros(1, *self.backbone.latent_shape, device=self.device, dtype=self.dtype)
                self.__dict__["_image_shape"] = tuple(self.backbone.decode(zero).shape[1:])
        return self.__dict__["_image_shape"]

    def sample_and_score(
        self,
        noise: torch.Tensor,
        seeds: list[list[int]],
        cond,
        conditions,
        steps: int | None,
        num_candidates: int | None = None,
    ):
        """Integrate (B, N) noises (trajectory seeds (B, N)) to t = 0 and score them -> (x0, images, scores,
        nfe per sample).

        ``num_candidates``: the noises are this rank's share of sharded candidates; scores then cover all
        ``num_candidates`` of every rank (see :meth:`score`), x0 and images only this rank's.
        """
        b, n = noise.shape[:2]
        if n == 0:  # more ranks than candidates: nothing to integrate, but the gather must still happen
            x0 = noise.new_zeros((b, 0, *noise.shape[2:]))
            images = torch.zeros(b, 0, *self.image_shape, device=self.device)
            return x0, images, self.score(images, conditions, None, num_candidates), 0
        out = self.integrate(noise, cond, seeds, steps=steps, x0_at=self.x0_time)
        images = self.decode(out.x)
        x0_images = self.decode(out.x0[self.x0_time[0]]) if self.x0_time else None
        return out.x, images, self.score(images, conditions, x0_images, num_candidates), out.nfe * n

    def score_states(self, x: torch.Tensor, t: float, cond, conditions: Sequence[Any]) -> tuple[torch.Tensor, int]:
        """Scores (B, K) of states x (B, K, *latent) at time t by their x0-predictions (at t = 0 the states
        themselves, for free) -> (scores, NFE per state)."""
        b, k = x.shape[:2]
        if t <= 0:
            return self.score(self.decode(x), conditions), 0
        flat = x.reshape(b * k, *x.shape[2:])
        x0, cost = self.sampler.predict_x0(self.backbone, flat, t, cond_repeat(cond, k))
        return self.score(self.decode(x0.view_as(x)), conditions), cost

    def require_stochastic(self, algorithm: str) -> None:
        """Algorithms that branch by the sampler's own noise need a stochastic sampler."""
        if not self.sampler.stochastic(self.backbone):
            raise ConfigurationError(
                f"{algorithm} branches with the sampler's noise: use a stochastic sampler, e.g. "
                "--model.init_args.sampler.solver ddim --model.init_args.sampler.eta 1.0 (or a stochastic "
                "scheduler: ddpm, euler_ancestral, dpmsolver++_sde)"
            )


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x: (B, N, ...), index: (B,) -> (B, ...) the chosen row of each sample."""
    return x[torch.arange(x.shape[0], device=x.device), index.to(x.device)]


@dataclass
class Lineage:
    """Which round-0 noise each live state of a search descends from, and each sample's trace: the
    bookkeeping of the searches that branch, prune or resample states started from the round-0 candidates.

    seeds: (B, N) the round-0 seeds; origin: (B, K) for each of the K live states, the index of its round-0
    noise (on the CPU); trace: per sample, per round, the best score.
    """

    seeds: list[list[int]]
    origin: torch.Tensor
    trace: list[list[float]]

    @classmethod
    def start(cls, seeds: list[list[int]]) -> Lineage:
        """One live state per round-0 candidate, an empty trace."""
        n = len(seeds[0]) if seeds else 0
        return cls(seeds, torch.arange(n).repeat(len(seeds), 1), [[] for _ in seeds])

    def record(self, score: torch.Tensor) -> None:
        """Append each sample's score (B,) to its trace."""
        for row, s in zip(self.trace, score):
            row.append(float(s))

    def keep_best(self, x: torch.Tensor, scores: torch.Tensor, k: int, children: int = 1) -> torch.Tensor:
        """The k best of the M states x (B, M, *latent) scored (B, M), best first -> (B, k, *latent).

        State j of x is a child of live state ``j // children``: the kept states inherit its origin. The best
        score of each sample is recorded.
        """
        top = scores.topk(k, dim=1).indices
        self.origin = torch.gather(self.origin, 1, (top // children).cpu())
        self.record(gather_rows(scores, top[:, 0]))
        return torch.stack([gather_rows(x, top[:, j]) for j in range(k)], dim=1)

    def result(
        self, x0: torch.Tensor, images: torch.Tensor, score: torch.Tensor, chosen: torch.Tensor, nfe: int, calls: int
    ) -> SearchResult:
        """x0: (B, *latent), images: (B, C, H, W), score: (B,) of the chosen live state ``chosen`` (B,) of each
        sample; nfe, calls: spent per sample (the same for every sample)."""
        b = len(self.seeds)
        winner = gather_rows(self.origin, chosen.cpu())
        return SearchResult(
            x0=x0,
            images=images,
            score=score,
            nfe=torch.full((b,), nfe),
            verifier_calls=torch.full((b,), calls),
            chosen=[{"round": 0, "candidate": int(c), "seed": self.seeds[i][int(c)]} for i, c in enumerate(winner)],
            candidate_seeds=self.seeds,
            trace=self.trace,
        )

    def best_of_finished(
        self, ctx: SearchContext, x: torch.Tensor, conditions: Sequence[Any], nfe: int, calls: int
    ) -> SearchResult:
        """Decode and score the finished live states x (B, K, *latent) (K more verifier calls per sample) and
        keep the best of each sample; its score closes the trace."""
        images = ctx.decode(x)
        scores = ctx.score(images, conditions)
        best = scores.argmax(dim=1)
        score = gather_rows(scores, best)
        self.record(score)
        return self.result(gather_rows(x, best), gather_rows(images, best), score.cpu(), best, nfe, calls + x.shape[1])

    def first_survivor(self, ctx: SearchContext, x: torch.Tensor, nfe: int, calls: int) -> SearchResult:
        """The first of the finished live states x (B, K, *latent), kept best first by :meth:`keep_best` at
        t = 0, decoded; its score is the trace's last."""
        final = x[:, 0]
        images = ctx.decode(final[:, None])[:, 0]
        score = torch.tensor([row[-1] for row in self.trace])
        return self.result(final, images, score, torch.zeros(len(self.seeds), dtype=torch.long), nfe, calls)


class SearchAlgorithm(ABC):
    """Spends a budget of NFEs on initial noises through a sampler and a verifier."""

    needs_verifier: bool = True
    supports_candidate_sharding: bool = False

    @abstractmethod
    def run(self, ctx: SearchContext, conditions: Sequence[Any], sample_ids: Sequence[int]) -> SearchResult:
        """Search for each (condition, sample id) of the batch; candidates of all conditions are batched."""

    def nfe_per_sample(self, sampler: Sampler, backbone: Backbone) -> int:
        """The NFEs this algorithm will spend per sample (for budgets and matched-NFE sweeps); the grid, and
        so the NFEs of a segment, depend on the backbone's scheduler."""
        raise NotImplementedError
