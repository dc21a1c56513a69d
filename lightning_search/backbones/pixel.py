"""What the small pixel-space flow models (digits, shapes) share: no VAE, images in [0, 1] mapped to latents
in [-1, 1] and back, and a network ``net`` trained by flow matching to predict the velocity (``FlowSchedule``)."""

from __future__ import annotations

import torch
from torch import nn

from lightning_search.backbones.base import Backbone, Cond
from lightning_search.backbones.schedules import FlowSchedule


class PixelFlowBackbone(Backbone):
    """A rectified-flow model in pixel space; subclasses build ``net`` (x_t, t, cond) -> velocity and encode
    their conditions."""

    prediction_type = "velocity"
    net: nn.Module

    def __init__(self) -> None:
        super().__init__()
        self.schedule = FlowSchedule()

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        return self.net(x_t, t, cond)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, H, W) in [-1, 1] -> images in [0, 1]."""
        return ((x0 + 1) / 2).clamp(0, 1)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return images * 2 - 1
