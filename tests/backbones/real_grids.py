"""The sampling grids of the real models, built from their published scheduler configs (no weights needed).

Each case is a tiny twin of the family (same backbone class, so the same ``set_timesteps`` / time mapping)
with the real model's scheduler config swapped in and, for FLUX, the real image size (the shift ``mu``
depends on the number of latent tokens). ``reference_grid`` computes the grid independently: the flow
grids by the FLUX pipeline's formulas written out here, the VP grids from the scheduler class itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# scheduler/scheduler_config.json of the public model repositories
FLUX_DEV = {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.5,
            "max_image_seq_len": 4096, "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0,
            "use_dynamic_shifting": True}  # fmt: skip
FLUX_SCHNELL = {**FLUX_DEV, "shift": 1.0, "use_dynamic_shifting": False}
SDXL = {"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear", "num_train_timesteps": 1000,
        "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True,
        "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False}  # fmt: skip
SD15 = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
        "steps_offset": 1, "trained_betas": None}  # fmt: skip
PIXART_SIGMA = {"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++", "beta_end": 0.02,
                "beta_schedule": "linear", "beta_start": 0.0001, "lower_order_final": True,
                "num_train_timesteps": 1000, "prediction_type": "epsilon", "solver_order": 2,
                "solver_type": "midpoint", "steps_offset": 0, "timestep_spacing": "linspace"}  # fmt: skip
DIT = {"_class_name": "DDIMScheduler", "beta_end": 0.02, "beta_schedule": "linear", "beta_start": 0.0001,
       "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "epsilon", "set_alpha_to_one": True,
       "steps_offset": 0}  # fmt: skip


@dataclass(frozen=True)
class GridCase:
    name: str
    fixture: str  # the tiny twin's fixture in tests/backbones/conftest.py
    config: dict
    scheduler: str  # the diffusers class the run uses (SD 1.5's PNDM is swapped, as users do)
    steps: int  # the paper recipes' steps
    size: int | None = None  # image size in pixels (FLUX: decides the shift)


CASES = [
    GridCase("flux-dev-1024", "flux", FLUX_DEV, "FlowMatchEulerDiscreteScheduler", 30, 1024),
    GridCase("flux-dev-512", "flux", FLUX_DEV, "FlowMatchEulerDiscreteScheduler", 30, 512),
    GridCase("flux-schnell-1024", "flux_schnell", FLUX_SCHNELL, "FlowMatchEulerDiscreteScheduler", 8, 1024),
    GridCase("flux-schnell-512", "flux_schnell", FLUX_SCHNELL, "FlowMatchEulerDiscreteScheduler", 8, 512),
    GridCase("sdxl-euler", "sdxl", SDXL, "EulerDiscreteScheduler", 30),
    GridCase("sd15-ddim", "sd", SD15, "DDIMScheduler", 50),
    GridCase("sd15-euler", "sd", SD15, "EulerDiscreteScheduler", 50),
    GridCase("pixart-sigma-dpm++", "pixart", PIXART_SIGMA, "DPMSolverMultistepScheduler", 20),
    GridCase("dit-ddim", "dit", DIT, "DDIMScheduler", 50),
]


def make_scheduler(case: GridCase):
    import diffusers

    config = {k: v for k, v in case.config.items() if not k.startswith("_")}
    return getattr(diffusers, case.scheduler).from_config(config)


def flux_mu(config: dict, size: int) -> float:
    """The FLUX pipeline's resolution-dependent shift: linear in the packed token count (16 px per token)."""
    tokens = (size // 16) ** 2
    slope = (config["max_shift"] - config["base_shift"]) / (config["max_image_seq_len"] - config["base_image_seq_len"])
    return config["base_shift"] + slope * (tokens - config["base_image_seq_len"])


def reference_grid(case: GridCase) -> list[float]:
    """The run's times t (steps + 1 values, the last 0), computed without the project's code."""
    n = case.steps
    if case.scheduler.startswith("FlowMatch"):
        sigmas = np.linspace(1.0, 1.0 / n, n)
        if case.config["use_dynamic_shifting"]:
            e = math.exp(flux_mu(case.config, case.size))
            sigmas = e / (e + (1 / sigmas - 1))  # time_shift(mu, 1, sigma), FLUX's exponential shift
        else:
            s = case.config["shift"]
            sigmas = s * sigmas / (1 + (s - 1) * sigmas)
        return [*map(float, sigmas), 0.0]
    scheduler = make_scheduler(case)
    scheduler.set_timesteps(n)
    return [(float(k) + 1) / 1000 for k in scheduler.timesteps] + [0.0]


def half_step(grid: list[float], t: float) -> float:
    """Half the length of the grid interval that contains t."""
    for a, b in zip(grid[:-1], grid[1:]):
        if b <= t <= a:
            return (a - b) / 2
    return (grid[0] - grid[1]) / 2


def configure(request, monkeypatch, case: GridCase):
    """The case's backbone: the tiny twin with the real scheduler (and size), restored after the test."""
    backbone = request.getfixturevalue(case.fixture)
    monkeypatch.setattr(backbone.pipe, "scheduler", make_scheduler(case))
    if case.size is not None:
        # the latent grid of the real model at this size: the real VAE downsamples 8x, the tiny twin's 2x
        size = case.size * backbone.vae_scale_factor // 8
        monkeypatch.setattr(backbone, "height", size)
        monkeypatch.setattr(backbone, "width", size)
    return backbone


class NetworkLog:
    """Replaces a backbone's network by a recorder: zero output, and the time t of every call, marked
    ``step`` (a scheduler step) or ``x0`` (an x0-prediction through ``forward``). Re-noisings are recorded
    as ``renoise`` events (t_a, t_b). Decoding is a cheap squash of the latents (the VAE is not under test)."""

    def __init__(self, backbone, monkeypatch, to_t) -> None:
        self.events: list[tuple] = []
        self._in_forward = False
        forward, renoise = backbone.forward, backbone.schedule.renoise

        def call_network(x, timestep, cond):
            t = float(to_t(torch.as_tensor(timestep, dtype=torch.float64).reshape(-1)[0]))
            self.events.append(("x0" if self._in_forward else "step", t))
            return torch.zeros_like(x)

        def logged_forward(x_t, t, cond):
            self._in_forward = True
            try:
                return forward(x_t, t, cond)
            finally:
                self._in_forward = False

        def logged_renoise(x, t_a, t_b, eps):
            self.events.append(("renoise", float(t_a), float(t_b)))
            return renoise(x, t_a, t_b, eps)

        monkeypatch.setattr(backbone, "call_network", call_network)
        monkeypatch.setattr(backbone, "forward", logged_forward)
        monkeypatch.setattr(backbone.schedule, "renoise", logged_renoise)
        monkeypatch.setattr(backbone, "decode", lambda x0: torch.sigmoid(x0.float().mean(1, keepdim=True)))

    def steps(self) -> list[float]:
        return [e[1] for e in self.events if e[0] == "step"]


def timestep_to_t(case: GridCase):
    if case.scheduler.startswith("FlowMatch"):
        return lambda k: k / 1000  # FLUX's timestep is sigma x 1000 and t = sigma
    return lambda k: (k + 1) / 1000  # VP: discrete timestep k sits at t = (k + 1) / T
