"""GFLOPs per network forward pass, measured once with ``torch.utils.flop_counter`` (not estimated)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from lightning_search.backbones.base import Backbone
from lightning_search.verifiers.base import Verifier


@torch.no_grad()
def backbone_gflops(backbone: Backbone, condition: Any) -> float:
    """GFLOPs of one forward pass for one sample (an NFE) at the backbone's latent resolution."""
    p = next(backbone.parameters())
    x = torch.zeros(1, *backbone.latent_shape, device=p.device, dtype=p.dtype)
    t = torch.full((1,), 0.5, device=p.device, dtype=p.dtype)
    cond = backbone.encode_conditions([condition])
    with FlopCounterMode(display=False) as counter:
        backbone(x, t, cond)
    return counter.get_total_flops() / 1e9


@torch.no_grad()
def verifier_gflops(verifier: Verifier, image_shape: Sequence[int], condition: Any) -> float:
    """GFLOPs of scoring one image of ``image_shape`` (C, H, W)."""
    p = next(iter(verifier.parameters()), None)
    device = p.device if p is not None else "cpu"
    images = torch.full((1, *image_shape), 0.5, device=device)
    x0 = images if verifier.x0_time is not None else None
    with FlopCounterMode(display=False) as counter:
        verifier(images, [condition], x0)
    return counter.get_total_flops() / 1e9
