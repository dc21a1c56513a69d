"""Deterministic noise: every initial noise comes from a generator seeded by (seed, sample id, round, candidate).

So one process and N processes (and a rerun, and a resumed run) draw exactly the same noises, whatever the
batch composition or micro-batch size.
"""

from __future__ import annotations

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
