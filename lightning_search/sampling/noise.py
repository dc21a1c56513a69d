"""Deterministic noise: every initial noise comes from a generator seeded by (seed, sample id, round, candidate),
and every noise a stochastic sampler adds along the way from one seeded by that and the step.

So one process and N processes (and a rerun, and a resumed run) draw exactly the same noises, whatever the
batch composition or micro-batch size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    # SplitMix64's finaliser (Steele et al. 2014): a cheap, well-mixed hash of one 64-bit word.
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def noise_seed(seed: int, sample_id: int, round_: int = 0, candidate: int = 0) -> int:
    """A 63-bit generator seed unique to (seed, sample id, round, candidate)."""
    h = 0
    for part in (seed, sample_id, round_, candidate):
        h = _splitmix64(h ^ (part & _MASK64))
    return h >> 1


# a step noise's seed mixes the trajectory's seed with this tag, so it never equals an initial-noise seed
_STEP_TAG = 0x5D3_57E9


def step_seed(row_seed: int, t: float) -> int:
    """The seed of the noise a stochastic step starting at time t adds to the trajectory of ``row_seed``.

    Keyed by the time (to a microsecond), not by a step counter, so a run cut into segments draws exactly the
    noises of the uncut run, and two runs that meet the same time draw the same noise.
    """
    h = _splitmix64(int(row_seed) ^ _STEP_TAG)
    return _splitmix64(h ^ (round(t * 1_000_000) & _MASK64)) >> 1


def _mix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 tensors (wrapping arithmetic; logical shifts by masking)."""
    x = x + _i64(0x9E3779B97F4A7C15)
    x = (x ^ _shr(x, 30)) * _i64(0xBF58476D1CE4E5B9)
    x = (x ^ _shr(x, 27)) * _i64(0x94D049BB133111EB)
    return x ^ _shr(x, 31)


def _i64(u: int) -> int:
    return u - (1 << 64) if u >= 1 << 63 else u


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    return (x >> k) & ((1 << (64 - k)) - 1)


def _as_seeds(seeds: Sequence[int] | torch.Tensor, device=None) -> torch.Tensor:
    if isinstance(seeds, torch.Tensor):
        return seeds.to(device=device, dtype=torch.int64)
    return torch.tensor([_i64(int(x) & _MASK64) for x in seeds], dtype=torch.int64, device=device)


def step_seeds(row_seeds: Sequence[int] | torch.Tensor, t: float, device=None) -> torch.Tensor:
    """:func:`step_seed` of every row at once: (len(row_seeds),) int64, equal to the Python function's."""
    h = _mix64(_as_seeds(row_seeds, device) ^ _STEP_TAG)
    return _shr(_mix64(h ^ _i64(round(t * 1_000_000) & _MASK64)), 1)


def hashed_normal(
    seeds: Sequence[int] | torch.Tensor, shape: Sequence[int], device=None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """One standard normal draw of ``shape`` per seed, (len(seeds), *shape), computed as a pure function of
    (seed, element index): a counter-based generator (SplitMix64 hash of the pair, Box-Muller).

    Why not torch generators here: a stochastic step needs a fresh seeded draw per trajectory *and* step,
    and one ``torch.Generator`` per row per step costs ~15 us a row in Python, more than a small network's
    forward pass; this is one vectorised computation, the same on every device and batch composition.
    """
    n = math.prod(int(d) for d in shape)
    base = _mix64(_as_seeds(seeds, device))[:, None]
    j = torch.arange(n, dtype=torch.int64, device=base.device)[None]
    h1, h2 = _mix64(base ^ (2 * j)), _mix64(base ^ (2 * j + 1))
    u1 = (_shr(h1, 11).double() + 1.0) / 2.0**53  # 53 random bits -> (0, 1]
    u2 = _shr(h2, 11).double() / 2.0**53
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * math.pi * u2)  # Box-Muller
    return z.view(base.shape[0], *shape).to(dtype)


def step_noise(
    row_seeds: Sequence[int] | torch.Tensor, t: float, shape: Sequence[int], device=None, dtype=torch.float32
) -> torch.Tensor:
    """The noise a stochastic step starting at t adds to each trajectory: (len(row_seeds), *shape)."""
    return hashed_normal(step_seeds(row_seeds, t, device), shape, device, dtype)


def seeded_noise(
    seeds: Sequence[int],
    shape: Sequence[int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One standard normal draw of ``shape`` per seed, stacked: (len(seeds), *shape).

    Drawn on the CPU so that the values do not depend on the device (CUDA's generator differs).
    """
    gen = torch.Generator()
    out = torch.empty((len(seeds), *shape), dtype=torch.float32)
    for i, s in enumerate(seeds):
        gen.manual_seed(int(s))
        out[i] = torch.randn(tuple(shape), generator=gen)
    return out.to(device=device, dtype=dtype)
