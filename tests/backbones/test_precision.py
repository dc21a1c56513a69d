"""dtype follows the module: a backbone cast to bfloat16 (as Lightning's ``precision="bf16-true"`` casts the
LightningModule, or ``torch_dtype`` at load) samples and decodes in that dtype through the scheduler."""

from __future__ import annotations

import pytest
import torch

from lightning_search.backbones import (
    DiTBackbone,
    FluxBackbone,
    PixArtBackbone,
    StableDiffusion3Backbone,
    StableDiffusionBackbone,
    StableDiffusionXLBackbone,
)
from lightning_search.sampling import Sampler
from lightning_search.search import SearchContext

BUILDERS = {
    "sd": lambda: StableDiffusionBackbone("tiny", torch_dtype="bfloat16"),
    "sdxl": lambda: StableDiffusionXLBackbone("tiny").to(torch.bfloat16),
    "pixart": lambda: PixArtBackbone("tiny", clean_caption=False).to(torch.bfloat16),
    "flux": lambda: FluxBackbone("tiny", height=32, width=32, max_sequence_length=16).to(torch.bfloat16),
    "dit": lambda: DiTBackbone("tiny").to(torch.bfloat16),
    "sd3": lambda: StableDiffusion3Backbone("tiny", torch_dtype="bfloat16", max_sequence_length=16),
}


@pytest.mark.parametrize("family", list(BUILDERS))
def test_bfloat16_sampling(family):
    backbone = BUILDERS[family]()
    assert backbone.dtype == torch.bfloat16
    ctx = SearchContext(backbone, Sampler(solver="scheduler", steps=2, guidance_scale=2.0), None)
    conditions = [3, 5] if family == "dit" else ["a red car", "a dog"]
    with torch.no_grad():
        seeds = ctx.seeds([0, 1], 0, 1)
        noise = ctx.noise(seeds)
        assert noise.dtype == torch.bfloat16
        out = ctx.integrate(noise, backbone.encode_conditions(conditions), seeds)
        images = backbone.decode(out.x[:, 0])
    assert images.dtype == torch.float32 and torch.isfinite(images).all()
    assert 0 <= images.min() and images.max() <= 1
