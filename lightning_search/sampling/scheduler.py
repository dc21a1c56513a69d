"""``Sampler(solver="scheduler")``: sample through the pipeline's own diffusers scheduler, for exact parity.

The loop is the pipelines' loop: ``set_timesteps``, then per timestep ``scale_model_input``, one network call
(both halves of classifier-free guidance in one batch, unconditional first as the pipelines order them),
``step``. A backbone sampled this way from t = 1 to t = 0 with ``steps`` steps reproduces
``pipe(latents=noise, num_inference_steps=steps, output_type="pt")`` (tests/backbones/test_*.py).
The backbone must be :class:`~lightning_search.backbones.base.SchedulerDriven`.

**Starting and stopping anywhere.** The grid is the scheduler's own for ``steps`` steps; a segment is a window
of consecutive timesteps of it (``sampling/segments.py``: its end points are the grid times nearest to the
requested ones). States in and out are in the one convention (``x_t = alpha x0 + sigma eps``): a scheduler
that works on another scale (Euler's ``x / alpha``) is converted with its own ``scale_model_input``. A window
that starts at the first timestep takes its state as the pipeline takes its latents (times
``init_noise_sigma``).

**Multistep history on branching.** Every call starts a fresh copy of the scheduler: a multistep solver
(DPM-Solver++, UniPC) starts with an empty history and takes its lower-order warm-up step(s) at the first
timestep of the call, exactly as it does at t = 1. So a state that search re-noised or branched never
carries the history of another trajectory (which would no longer describe it); the cost is that a run cut
into several calls is not bitwise the one-call run for multistep schedulers (it is for DDIM, Euler and
flow-matching Euler, whose state is x alone).

**Stochastic schedulers** (DDPM, Euler ancestral, DPM-Solver++ SDE) draw noise inside ``step`` from the
``generator`` they are given: the loop gives them one generator per row, seeded by the row's trajectory
seed and the step's time (``noise.step_seed``), so a stochastic run is as reproducible and as independent
of batching as a deterministic one, and equals ``pipe(latents=..., generator=[...])`` for generators
seeded the same way at each step.
"""

from __future__ import annotations

from typing import Any

import torch

from lightning_search.backbones.base import Backbone, Cond, SchedulerDriven, cond_cat
from lightning_search.backbones.pipeline import SCHEDULER_NAMES
from lightning_search.errors import ConfigurationError
from lightning_search.sampling.noise import step_seed
from lightning_search.sampling.segments import Segment

# Scheduler classes whose step is deterministic and which can start at any index of their grid: the
# classes the backbones' ``scheduler:`` names build (one list, in backbones/pipeline.py).
SUPPORTED = tuple(SCHEDULER_NAMES.values())
STOCHASTIC = ("DDPMScheduler", "EulerAncestralDiscreteScheduler")  # others are stochastic by their config


def check_scheduler(backbone: Backbone) -> Any:
    """The backbone's scheduler template, or an error saying how to choose a supported one."""
    if not isinstance(backbone, SchedulerDriven) or backbone.scheduler is None:
        raise ConfigurationError(
            f"solver='scheduler' needs a backbone built on a diffusers pipeline; {type(backbone).__name__} has "
            "no scheduler: use solver euler, heun or ddim"
        )
    scheduler = backbone.scheduler
    name = type(scheduler).__name__
    if name not in SUPPORTED:
        raise ConfigurationError(
            f"solver='scheduler' cannot drive {name}; supported: {', '.join(sorted(set(SUPPORTED)))}. Choose one "
            f"with the backbone's `scheduler:` argument ({', '.join(SCHEDULER_NAMES)})"
        )
    return scheduler


def is_stochastic(scheduler: Any) -> bool:
    """Whether the scheduler's ``step`` adds noise (and so needs per-row generators)."""
    # read each flag only where the class has it: from_config carries a swapped-out class's keys along
    # (a DDIM built from a DPM-Solver++ SDE config still holds algorithm_type "sde-dpmsolver++")
    config, name = scheduler.config, type(scheduler).__name__
    sde = name in ("DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler") and str(
        config.get("algorithm_type", "")
    ).startswith("sde")
    flow_noise = name == "FlowMatchEulerDiscreteScheduler" and bool(config.get("stochastic_sampling", False))
    return name in STOCHASTIC or sde or flow_noise


def fresh_scheduler(backbone: SchedulerDriven, steps: int, device: torch.device | None = None) -> Any:
    """A new scheduler of the backbone's class and config, with the pipeline's timesteps for ``steps``."""
    template = backbone.scheduler
    scheduler = type(template).from_config(template.config)
    backbone.set_timesteps(scheduler, steps, device)
    return scheduler


def scheduler_grid(backbone: Backbone, steps: int) -> list[float]:
    """The times t of the scheduler's timesteps for ``steps`` steps, then 0: ``steps + 1`` values."""
    check_scheduler(backbone)
    return backbone.scheduler_times(fresh_scheduler(backbone, steps))


def _input_scale(scheduler: Any, timestep: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """model input / scheduler state at ``timestep`` (1 for schedulers whose state is the model input)."""
    if not hasattr(scheduler, "scale_model_input"):
        return torch.ones((), dtype=like.dtype, device=like.device)
    return scheduler.scale_model_input(torch.ones((), dtype=like.dtype, device=like.device), timestep)


def run_window(
    backbone: SchedulerDriven,
    x: torch.Tensor,
    cond: Cond,
    null_cond: Cond | None,
    segment: Segment,
    guidance_scale: float,
    record: dict[int, float],
    seeds: list[int] | None = None,
) -> tuple[torch.Tensor, dict[float, torch.Tensor]]:
    """Steps ``segment.first`` .. of the scheduler's grid over states x (B, *latent) at ``segment.t_start``.

    record: {step index within the segment: requested time} of the x0-predictions to keep; seeds: the rows'
    trajectory seeds, for a stochastic scheduler's noise.
    -> (states at ``segment.t_end``, {requested time: x0-prediction (B, *latent)}).
    """
    scheduler = fresh_scheduler(backbone, segment.grid_steps, x.device)
    i0 = segment.first
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(i0)
    timesteps = scheduler.timesteps
    guided = null_cond is not None
    both = cond_cat([null_cond, cond]) if guided else cond  # the pipelines' order: unconditional first
    if i0 == 0:
        state = x * getattr(scheduler, "init_noise_sigma", 1.0)  # prepare_latents
    else:
        state = x / _input_scale(scheduler, timesteps[i0], x)
    x0_preds: dict[float, torch.Tensor] = {}
    for k in range(segment.steps):
        i = i0 + k
        timestep = timesteps[i]
        model_input = scheduler.scale_model_input(state, timestep) if hasattr(scheduler, "scale_model_input") else state
        if guided:
            out = backbone.call_network(torch.cat([model_input, model_input]), timestep, both)
            uncond, cond_out = out.chunk(2)
            out = backbone.combine_guidance(cond_out, uncond, guidance_scale)
        else:
            out = backbone.call_network(model_input, timestep, cond)
        extra = {}
        if seeds is not None:  # one CPU generator per row: the draws do not depend on the device or the batch
            extra["generator"] = [torch.Generator().manual_seed(step_seed(s, segment.times[k])) for s in seeds]
        result = scheduler.step(out, timestep, state, return_dict=True, **extra)
        if k in record:
            x0 = getattr(result, "pred_original_sample", None)
            if x0 is None:  # the scheduler's own parameterisation at its grid time
                t = torch.full((x.shape[0],), segment.times[k], device=x.device, dtype=torch.float32)
                x0 = backbone.to_x0_eps(out.float(), model_input.float(), t)[0].to(out.dtype)
            x0_preds[record[k]] = x0
        state = result.prev_sample
    end = i0 + segment.steps
    if end < len(timesteps):  # convert back from the scheduler's scale (Euler: x / alpha) to x_t
        state = state * _input_scale(scheduler, timesteps[end], state)
    return state, x0_preds
