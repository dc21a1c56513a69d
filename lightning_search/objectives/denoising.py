"""Denoising regression for every parameterisation: flow matching, epsilon-MSE and v-MSE are one loss.

The target is whatever the backbone's ``prediction_type`` says the network outputs at x_t
(``Schedule.target``): velocity ``alpha'(t) x0 + sigma'(t) eps`` for flow models (flow matching, Lipman et
al. 2023; SiT), ``eps`` for DDPM-style models, ``alpha eps - sigma x0`` for v-prediction (Salimans & Ho 2022).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Generator
from typing_extensions import override

from lightning_search.backbones.base import Backbone, Cond
from lightning_search.errors import ConfigurationError
from lightning_search.objectives.base import Batch, LossAndLogs, Objective


class DenoisingLoss(Objective):
    """MSE between the network output and its target at a random time.

    Args:
        time_sampling: ``uniform`` t ~ U(0, 1) or ``logit_normal`` (SD3's sigmoid of a normal).
        t_min: smallest time drawn (avoids t = 0 exactly, where epsilon-prediction is ill-posed).
    """

    def __init__(self, time_sampling: Literal["uniform", "logit_normal"] = "uniform", t_min: float = 1e-3) -> None:
        if time_sampling not in ("uniform", "logit_normal"):
            raise ConfigurationError(f"time_sampling must be 'uniform' or 'logit_normal', got {time_sampling!r}")
        self.time_sampling, self.t_min = time_sampling, t_min

    def sample_time(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B,) training times in [t_min, 1]."""
        if self.time_sampling == "logit_normal":
            t = torch.sigmoid(torch.randn(batch_size, device=device, generator=generator))
        else:
            t = torch.rand(batch_size, device=device, generator=generator)
        return t.clamp(self.t_min, 1.0)

    @staticmethod
    def per_sample_loss(
        backbone: Backbone, x0: torch.Tensor, cond: Cond, t: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        """Mean-over-elements squared error of each sample: (B,). DPO compares these between models."""
        x_t = backbone.schedule.add_noise(x0, eps, t)
        target = backbone.schedule.target(x0, eps, t, backbone.prediction_type)
        return (backbone(x_t, t, cond).float() - target.float()).pow(2).flatten(1).mean(1)

    def training_images(self, batch: dict[str, Any]) -> torch.Tensor:
        """The images (B, C, H, W) in [0, 1] of a batch that the loss regresses on: ``image``."""
        return batch["image"]

    @override
    def loss(
        self, backbone: Backbone, batch: Batch, reference: Backbone | None, generator: Generator | None
    ) -> LossAndLogs:
        x0 = backbone.encode_images(self.training_images(batch))
        cond = backbone.drop_conditions(backbone.encode_conditions(batch["condition"]), generator)
        t = self.sample_time(x0.shape[0], x0.device, generator)
        eps = torch.empty_like(x0).normal_(generator=generator)  # randn_like's memory layout
        loss = self.per_sample_loss(backbone, x0, cond, t, eps).mean()
        return loss, {"loss": loss.detach()}
