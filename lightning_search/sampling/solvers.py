"""ODE solvers in the one time convention, one step each; the sampling math in one readable place.

A step maps x at time t to time t_next < t, given ``denoise(x, t) -> (x0, eps)`` (already guided). The
state of these single-step solvers is just x_t, so search can copy, branch and re-noise it freely.
Every step returns how many ``denoise`` calls it made (the NFE per sample, before guidance doubling).
"""

from __future__ import annotations

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
