"""ODE solvers in the one time convention, one step each; the sampling math in one readable place.

A step maps x at time t to time t_next < t, given ``denoise(x, t) -> (x0, eps)`` (already guided). The
state of these single-step solvers is just x_t, so search can copy, branch and re-noise it freely.
Every step returns how many ``denoise`` calls it made (the NFE per sample, before guidance doubling).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch

from lightning_search.backbones.schedules import Schedule

Denoise = Callable[[torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]


class Step(Protocol):
    def __call__(
        self, denoise: Denoise, schedule: Schedule, x: torch.Tensor, t: float, t_next: float, exact_end: bool
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """-> (x at t_next, x0-prediction at t, number of denoise calls)."""


def _velocity(schedule: Schedule, x0: torch.Tensor, eps: torch.Tensor, t: float) -> torch.Tensor:
    return schedule.velocity(x0, eps, torch.tensor(t))


def euler_step(denoise, schedule, x, t, t_next, exact_end=True):
    """First-order step along the probability-flow ODE: x + (t_next - t) dx/dt."""
    x0, eps = denoise(x, t)
    return x + (t_next - t) * _velocity(schedule, x0, eps, t), x0, 1


def ddim_step(denoise, schedule, x, t, t_next, exact_end=True):
    """DDIM (Song et al. 2021, eta = 0): keep (x0, eps) fixed and move along the schedule.

    For the linear flow schedule this equals :func:`euler_step` exactly.
    """
    x0, eps = denoise(x, t)
    tn = torch.tensor(t_next)
    return schedule.alpha(tn).item() * x0 + schedule.sigma(tn).item() * eps, x0, 1


def heun_step(denoise, schedule, x, t, t_next, exact_end=True):
    """Heun's second-order step (EDM, Karras et al. 2022): Euler predictor, trapezoidal corrector.

    When the step ends at t = 0 and ``exact_end`` is False the corrector is skipped, as in EDM: a network
    that does not predict velocity is not trained at sigma = 0 (and the VP ODE is stiff there).
    """
    x0, eps = denoise(x, t)
    d = _velocity(schedule, x0, eps, t)
    x_euler = x + (t_next - t) * d
    if t_next <= 0 and not exact_end:
        return x_euler, x0, 1
    x0_next, eps_next = denoise(x_euler, t_next)
    d_next = _velocity(schedule, x0_next, eps_next, t_next)
    return x + (t_next - t) * 0.5 * (d + d_next), x0, 2


SOLVERS: dict[str, Step] = {"euler": euler_step, "heun": heun_step, "ddim": ddim_step}


# -- stochastic steps: the reverse SDEs with the marginals of the probability-flow ODE ---------------------
#
# A stochastic step maps x at t to ``mean + std * z`` at t_next with z ~ N(0, I) given by the caller (from a
# seeded generator), and returns the mean and std too: the transition is an exact Gaussian, so its
# log-probability is known (SMC weights, GRPO ratios). eta scales the noise; eta = 0 is the ODE step.


def _coeffs(schedule: Schedule, t: float) -> tuple[float, float]:
    tt = torch.tensor(t, dtype=torch.float64)
    return float(schedule.alpha(tt)), float(schedule.sigma(tt))


def ddim_sde_step(denoise, schedule, x, t, t_next, eta, noise):
    """DDIM with noise (Song et al. 2021, Eq. 12) in the one convention, for any schedule:

        x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z,   c = eta sigma_s sigma_{t|s} / sigma_t,

    with sigma_{t|s}^2 = sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2, the forward kernel's variance from s to t.
    eta = 1 is the DDPM ancestral step (the posterior q(x_s | x_t, x0) at x0 = x0-prediction), eta = 0 DDIM.
    -> (x_s, x0, mean, std).
    """
    x0, eps = denoise(x, t)
    a_t, s_t = _coeffs(schedule, t)
    a_s, s_s = _coeffs(schedule, t_next)
    var_ts = max(s_t**2 - (a_t / a_s) ** 2 * s_s**2, 0.0) if a_s > 0 else s_t**2
    c = eta * s_s * math.sqrt(var_ts) / s_t if s_t > 0 else 0.0
    mean = a_s * x0 + math.sqrt(max(s_s**2 - c**2, 0.0)) * eps
    return mean + c * noise, x0, mean, c


def euler_maruyama_step(denoise, schedule, x, t, t_next, eta, noise):
    """Euler-Maruyama on the reverse SDE family with the ODE's marginals (Karras et al. 2022, Eq. 6):

        dx = [v(x, t) - (eta^2 / 2) g(t)^2 score(x, t)] dt + eta g(t) dw,   score = -eps / sigma,

    with v the probability-flow velocity, f = alpha' / alpha and g^2 = (sigma^2)' - 2 f sigma^2 (for flow
    matching g^2 = 2t / (1 - t): the velocity-to-score conversion of Flow-GRPO, whose noise level a is
    eta * sqrt(2)). eta = 0 is the Euler step, eta = 1 the reverse-time SDE of Anderson (1982).

    From pure noise (alpha = 0: a flow model at t = 1) g is infinite and g^2 dt stays 2 however small the
    step, so Euler-Maruyama would inject twice the noise the marginal has (Flow-GRPO's clipped sigma does
    the same); that step is taken with the exact kernel of :func:`ddim_sde_step` instead (eta capped at 1).
    -> (x_s, x0, mean, std).
    """
    a, s = _coeffs(schedule, t)
    if a <= 1e-6:
        return ddim_sde_step(denoise, schedule, x, t, t_next, min(eta, 1.0), noise)
    x0, eps = denoise(x, t)
    v = schedule.velocity(x0, eps, torch.tensor(t))
    tt = torch.tensor(t, dtype=torch.float64)
    da, ds = float(schedule.d_alpha(tt)), float(schedule.d_sigma(tt))
    g2 = max(2 * s * ds - 2 * (da / a) * s**2, 0.0)
    dt = t_next - t  # < 0
    mean = x + dt * (v + 0.5 * eta**2 * g2 * eps / max(s, 1e-12))
    std = eta * math.sqrt(g2 * -dt)
    return mean + std * noise, x0, mean, std


class StochasticStep(Protocol):
    def __call__(
        self,
        denoise: Denoise,
        schedule: Schedule,
        x: torch.Tensor,
        t: float,
        t_next: float,
        eta: float,
        noise: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """-> (x at t_next, x0-prediction at t, the transition's mean, its std)."""


STOCHASTIC_SOLVERS: dict[str, StochasticStep] = {"ddim": ddim_sde_step, "euler_maruyama": euler_maruyama_step}


def time_grid(steps: int, shift: float = 1.0) -> list[float]:
    """The full grid of our solvers: ``steps`` + 1 times from 1 down to 0, uniform in t, then warped by the
    SD3 / FLUX shift t -> shift t / (1 + (shift - 1) t) (shift > 1 spends more steps at high noise).

    Runs over part of [0, 1] step through the points of this grid (``segments.py``), so a segment has the
    density of the full run there and its end points are never warped.
    """
    if steps < 1:
        raise ValueError(f"a sampler needs at least one step, got steps={steps}")
    grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    if shift != 1.0:
        grid = shift * grid / (1 + (shift - 1) * grid)
    return grid.tolist()
