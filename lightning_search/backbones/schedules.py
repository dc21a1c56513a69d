"""Noise schedules in the one time convention: ``x_t = alpha(t) * x0 + sigma(t) * eps``, t = 1 noise, t = 0 data.

A schedule is all the framework needs to (a) turn any model output (epsilon, v, velocity, x0) into an
x0- and epsilon-prediction, (b) integrate the probability-flow ODE, (c) re-noise a state to a noisier time.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Literal

import torch

PredictionType = Literal["epsilon", "v_prediction", "velocity", "sample"]
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "velocity", "sample")


def _expand(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-sample coefficient (B,) or scalar against x (B, ...)."""
    c = torch.as_tensor(c, dtype=x.dtype, device=x.device)
    return c.reshape(c.shape + (1,) * (x.dim() - c.dim()))


class Schedule(ABC):
    """``alpha(t)``, ``sigma(t)`` and their time derivatives for t in [0, 1] (tensors of any shape)."""

    @abstractmethod
    def alpha(self, t: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def sigma(self, t: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def d_alpha(self, t: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def d_sigma(self, t: torch.Tensor) -> torch.Tensor: ...

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The forward process: ``x_t = alpha(t) x0 + sigma(t) eps``; t: (B,) or scalar."""
        return _expand(self.alpha(t), x0) * x0 + _expand(self.sigma(t), x0) * eps

    def target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, prediction_type: str) -> torch.Tensor:
        """What a network of ``prediction_type`` should output at x_t (the regression target of training)."""
        if prediction_type == "epsilon":
            return eps
        if prediction_type == "sample":
            return x0
        a, s = _expand(self.alpha(t), x0), _expand(self.sigma(t), x0)
        if prediction_type == "v_prediction":
            return a * eps - s * x0
        if prediction_type == "velocity":
            return _expand(self.d_alpha(t), x0) * x0 + _expand(self.d_sigma(t), x0) * eps
        raise ValueError(f"unknown prediction type {prediction_type!r}; valid: {', '.join(PREDICTION_TYPES)}")

    def to_x0_eps(
        self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, prediction_type: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Invert :meth:`target`: the (x0, eps) pair that explains ``x_t`` given the network ``output``."""
        a, s = _expand(self.alpha(t), x_t), _expand(self.sigma(t), x_t)
        if prediction_type == "epsilon":
            return (x_t - s * output) / a.clamp_min(1e-8), output
        if prediction_type == "sample":
            return output, (x_t - a * output) / s.clamp_min(1e-8)
        if prediction_type == "v_prediction":
            norm = a**2 + s**2
            return (a * x_t - s * output) / norm, (s * x_t + a * output) / norm
        if prediction_type == "velocity":
            da, ds = _expand(self.d_alpha(t), x_t), _expand(self.d_sigma(t), x_t)
            det = a * ds - s * da  # 1 for the linear flow schedule
            return (ds * x_t - s * output) / det, (a * output - da * x_t) / det
        raise ValueError(f"unknown prediction type {prediction_type!r}; valid: {', '.join(PREDICTION_TYPES)}")

    def velocity(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """dx_t/dt of the probability-flow ODE along the path with fixed (x0, eps)."""
        return _expand(self.d_alpha(t), x0) * x0 + _expand(self.d_sigma(t), x0) * eps

    def renoise(self, x_a: torch.Tensor, t_a: float, t_b: float, eps: torch.Tensor) -> torch.Tensor:
        """Move a state from time t_a to the noisier t_b >= t_a under the forward process.

        ``x_b = (alpha_b / alpha_a) x_a + sqrt(sigma_b^2 - (alpha_b / alpha_a)^2 sigma_a^2) eps`` keeps the
        marginal of x_t: if x_a ~ q(x_{t_a}) then x_b ~ q(x_{t_b}) (DESIGN.md, "one time convention").
        """
        if t_b < t_a:
            raise ValueError(f"re-noising goes to a noisier time: t_b={t_b} < t_a={t_a}")
        ta, tb = torch.tensor(t_a, dtype=torch.float64), torch.tensor(t_b, dtype=torch.float64)
        ratio = self.alpha(tb) / self.alpha(ta).clamp_min(1e-12)
        var = (self.sigma(tb) ** 2 - ratio**2 * self.sigma(ta) ** 2).clamp_min(0.0)
        return float(ratio) * x_a + math.sqrt(float(var)) * eps


class FlowSchedule(Schedule):
    """Rectified flow / flow matching (SiT, SD3, FLUX): alpha = 1 - t, sigma = t."""

    def alpha(self, t):
        return 1.0 - torch.as_tensor(t)

    def sigma(self, t):
        return torch.as_tensor(t)

    def d_alpha(self, t):
        return torch.full_like(torch.as_tensor(t, dtype=torch.float32), -1.0)

    def d_sigma(self, t):
        return torch.ones_like(torch.as_tensor(t, dtype=torch.float32))


class VPSchedule(Schedule):
    """A variance-preserving discrete schedule (DDPM's ``alphas_cumprod``) mapped onto continuous t.

    Discrete timestep k in 0..T-1 sits at t = (k + 1) / T and t = 0 is clean data (abar = 1). Between grid
    points log(abar) is interpolated linearly, so derivatives are those of the interpolant.
    """

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.num_train_timesteps = abar.numel()
        self._log_abar = torch.cat([torch.zeros(1, dtype=torch.float64), abar.log()])

    @classmethod
    def scaled_linear(cls, num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012):
        """Stable Diffusion's schedule."""
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
        return cls(torch.cumprod(1.0 - betas, dim=0))

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        """The (fractional) discrete training timestep a network conditioned on 0..T-1 expects at t."""
        return torch.as_tensor(t) * self.num_train_timesteps - 1.0

    def _log_abar_at(self, t):
        t = torch.as_tensor(t)
        u = (t.to(torch.float64) * self.num_train_timesteps).clamp(0, self.num_train_timesteps)
        lo = u.floor().long().clamp(max=self.num_train_timesteps - 1)
        frac = u - lo
        la = self._log_abar.to(u.device)
        slope = la[lo + 1] - la[lo]
        return la[lo] + frac * slope, slope * self.num_train_timesteps

    def alpha(self, t):
        t = torch.as_tensor(t)
        return self._log_abar_at(t)[0].mul(0.5).exp().to(t.dtype if t.is_floating_point() else torch.float32)

    def sigma(self, t):
        t = torch.as_tensor(t)
        return (
            (1 - self._log_abar_at(t)[0].exp())
            .clamp_min(0)
            .sqrt()
            .to(t.dtype if t.is_floating_point() else torch.float32)
        )

    def d_alpha(self, t):
        t = torch.as_tensor(t)
        la, dla = self._log_abar_at(t)
        return (0.5 * dla * (0.5 * la).exp()).to(t.dtype if t.is_floating_point() else torch.float32)

    def d_sigma(self, t):
        t = torch.as_tensor(t)
        la, dla = self._log_abar_at(t)
        abar = la.exp()
        sig = (1 - abar).clamp_min(1e-12).sqrt()
        return (-0.5 * abar * dla / sig).to(t.dtype if t.is_floating_point() else torch.float32)
