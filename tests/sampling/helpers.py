"""Toy backbones whose exact behaviour is known, for sampler and search tests."""

from __future__ import annotations

import torch
from torch import nn

from lightning_search.backbones.base import Backbone
from lightning_search.backbones.schedules import FlowSchedule, VPSchedule
from lightning_search.verifiers.base import Verifier


class ConstantX0Backbone(Backbone):
    """Predicts x0 = the condition value everywhere (prediction type 'sample').

    The probability-flow ODE then has the exact solution x_t = (1 - t) c + t eps for a flow schedule, so
    every solver lands on c exactly. Counts the rows it sees: the NFEs, summed over samples.
    """

    prediction_type = "sample"

    def __init__(self, schedule=None, shape=(1, 2, 2)) -> None:
        super().__init__()
        self.schedule = schedule or FlowSchedule()
        self._shape = shape
        self.dummy = nn.Parameter(torch.zeros(()))
        self.rows_seen = 0
        self.calls = 0

    @property
    def latent_shape(self):
        return self._shape

    def encode_conditions(self, conditions):
        return torch.as_tensor(list(conditions), dtype=torch.float32)

    def null_conditions(self, cond):
        return torch.zeros_like(cond)

    def forward(self, x_t, t, cond):
        self.rows_seen += x_t.shape[0]
        self.calls += 1
        return cond.view(-1, *([1] * (x_t.dim() - 1))).expand_as(x_t)

    def decode(self, x0):
        return x0.clamp(0, 1).mean(dim=1, keepdim=True)

    def encode_images(self, images):
        return images


def vp_constant_backbone():
    return ConstantX0Backbone(VPSchedule.scaled_linear())


class ZeroVelocityBackbone(ConstantX0Backbone):
    """A flow model whose velocity is zero: every trajectory stays at its noise, so a sample *is* its
    initial noise (and a re-noised state stays where re-noising put it). Search results can then be
    computed by hand from the seeds."""

    prediction_type = "velocity"

    def forward(self, x_t, t, cond):
        self.rows_seen += x_t.shape[0]
        self.calls += 1
        return torch.zeros_like(x_t)

    def decode(self, x0):
        return torch.sigmoid(x0)


class MeanVerifier(Verifier):
    """Score = mean pixel value; ``nan_above`` turns scores above it into NaN (a broken verifier)."""

    channels = None

    def __init__(self, nan_above: float | None = None) -> None:
        super().__init__()
        self.nan_above = nan_above
        self.images_scored = 0

    def score(self, images, conditions, x0_images=None):
        self.images_scored += images.shape[0]
        s = images.float().mean(dim=(1, 2, 3))
        if self.nan_above is not None:
            s = torch.where(s > self.nan_above, torch.full_like(s, float("nan")), s)
        return s
