"""Parity helpers shared by the backbone tests."""

from __future__ import annotations

import torch

from lightning_search.sampling import Sampler

PARITY_ATOL = 1e-4  # max abs difference of [0, 1] images, float32 (issue 4)
PROMPTS = ["a red car next to a blue bench", "two dogs in the snow"]


def noise_for(backbone, batch: int, seed: int = 0) -> torch.Tensor:
    """(batch, *latent_shape) standard normal noise from a seeded CPU generator."""
    return torch.randn(batch, *backbone.latent_shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def framework_images(backbone, conditions, noise, steps: int, guidance_scale: float = 1.0, **sample_kwargs):
    """Sample through ``Sampler(solver="scheduler")`` and decode -> (images (B, 3, H, W), SampleOutput)."""
    sampler = Sampler(solver="scheduler", steps=steps, guidance_scale=guidance_scale, **sample_kwargs)
    out = sampler.sample(backbone, noise, backbone.encode_conditions(conditions))
    return backbone.decode(out.x), out


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()
