"""``Sampler(solver="scheduler")``: sample through the pipeline's own diffusers scheduler, for exact parity.

The loop is the pipelines' loop: ``set_timesteps``, then per timestep ``scale_model_input``, one network call
(both halves of classifier-free guidance in one batch), ``step``. A backbone sampled this way from t = 1 to
t = 0 with ``steps`` steps reproduces ``pipe(latents=noise, num_inference_steps=steps, output_type="pt")``
(tests/backbones/test_*.py). What a backbone must offer (duck-typed, see ``backbones/pipeline.py``):
``scheduler`` (a template), ``set_timesteps(scheduler, n, device)``, ``scheduler_times(scheduler)`` (the
times t of its timesteps, then 0), ``call_network(x, timestep, cond)``, ``combine_guidance``,
``to_x0_eps`` and ``null_conditions``.

**Starting and stopping anywhere.** A run from ``t_start`` to ``t_end`` in ``steps`` steps uses the
scheduler's own grid for some ``num_inference_steps`` n (n = steps for the whole interval; otherwise the n
whose grid fits ``steps`` steps between the two times best) and the window of ``steps`` consecutive
timesteps whose first time is nearest to ``t_start``. The state given at ``t_start`` is taken as the state at
that grid time (the snap is at most half a grid step; at t = 1 the noise enters as the pipeline feeds it,
times ``init_noise_sigma``), and the state returned is the one at the grid time after the window. States in
and out are in the one convention (``x_t = alpha x0 + sigma eps``): a scheduler that works on another scale
(Euler's ``x / alpha``) is converted with its own ``scale_model_input``.

**Multistep history on branching.** Every call starts a fresh copy of the scheduler: a multistep solver
(DPM-Solver++, UniPC) starts with an empty history and takes its lower-order warm-up step(s) at the first
timestep of the call, exactly as it does at t = 1. So a state that search re-noised or branched never
carries the history of another trajectory (which would no longer describe it); the cost is that a run cut
into several calls is not bitwise the one-call run for multistep schedulers (it is for DDIM, Euler and
flow-matching Euler, whose state is x alone). Stochastic (ancestral, SDE) schedulers are refused: they draw
noise inside ``step`` and would make seeded search irreproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lightning_search.backbones.base import Backbone, Cond, cond_cat, cond_index
from lightning_search.errors import ConfigurationError
from lightning_search.sampling.sampler import SampleOutput, Sampler

SCHEDULER_SOLVER = "scheduler"

# Scheduler classes whose step is deterministic and which can start at any index of their grid.
SUPPORTED_SCHEDULERS = (
    "DDIMScheduler",
    "EulerDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "UniPCMultistepScheduler",
    "FlowMatchEulerDiscreteScheduler",
)


def check_scheduler(backbone: Backbone) -> Any:
    """The backbone's scheduler template, or an error saying how to choose a supported one."""
    scheduler = getattr(backbone, "scheduler", None)
    if scheduler is None or not hasattr(backbone, "call_network"):
        raise ConfigurationError(
            f"solver='scheduler' needs a backbone built on a diffusers pipeline; {type(backbone).__name__} has "
            "no scheduler: use solver euler, heun or ddim"
        )
    name = type(scheduler).__name__
    stochastic = str(scheduler.config.get("algorithm_type", "")).startswith("sde") or scheduler.config.get(
        "stochastic_sampling", False
    )
    if name not in SUPPORTED_SCHEDULERS or stochastic:
        raise ConfigurationError(
            f"solver='scheduler' cannot drive {name}"
            + (" with stochastic sampling" if stochastic else "")
            + f"; supported: {', '.join(SUPPORTED_SCHEDULERS)} (deterministic). Choose one with the backbone's "
            "`scheduler:` argument (ddim, euler, dpmsolver++, unipc, flow_match_euler)"
        )
    return scheduler


def _fresh(backbone: Backbone, num_inference_steps: int, device: torch.device) -> Any:
    template = backbone.scheduler
    scheduler = type(template).from_config(template.config)
    backbone.set_timesteps(scheduler, num_inference_steps, device)
    return scheduler


def plan_window(
    backbone: Backbone, t_start: float, t_end: float, steps: int, device: torch.device | None = None
) -> tuple[int, int, list[float]]:
    """(num_inference_steps n, first index i0, times of n's grid (n + 1 values, the last 0)).

    The run performs timesteps i0 .. i0 + steps - 1 of that grid. For the whole interval n = steps, i0 = 0,
    which is the pipeline's own call.
    """
    from_noise = t_start >= 1.0 - 1e-6
    if from_noise and t_end <= 1e-6:
        return steps, 0, backbone.scheduler_times(_fresh(backbone, steps, device))
    estimate = max(steps, round(steps / max(t_start - t_end, 1e-6)))
    best: tuple[float, int, int, list[float]] | None = None
    for n in range(max(steps, estimate - 3), estimate + 4):
        times = backbone.scheduler_times(_fresh(backbone, n, device))
        if from_noise:
            i0 = 0
        else:
            i0 = min(range(n), key=lambda i: abs(times[i] - t_start))
        i0 = min(i0, n - steps)
        error = (0.0 if from_noise and i0 == 0 else abs(times[i0] - t_start)) + abs(times[i0 + steps] - t_end)
        if best is None or error < best[0] - 1e-12:
            best = (error, n, i0, times)
    assert best is not None
    return best[1], best[2], best[3]


def _input_scale(scheduler: Any, timestep: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """model input / scheduler state at ``timestep`` (1 for schedulers whose state is the model input)."""
    if not hasattr(scheduler, "scale_model_input"):
        return torch.ones((), dtype=like.dtype, device=like.device)
    return scheduler.scale_model_input(torch.ones((), dtype=like.dtype, device=like.device), timestep)


def sample_with_scheduler(
    sampler: Sampler,
    backbone: Backbone,
    noise: torch.Tensor,
    cond: Cond,
    *,
    t_start: float = 1.0,
    t_end: float = 0.0,
    steps: int | None = None,
    x0_at: Sequence[float] = (),
    null_cond: Cond | None = None,
) -> SampleOutput:
    """:meth:`Sampler.sample` through the backbone's diffusers scheduler (same arguments and result)."""
    check_scheduler(backbone)
    if not 0 <= t_end <= t_start <= 1:
        raise ValueError(f"need 0 <= t_end <= t_start <= 1, got t_start={t_start}, t_end={t_end}")
    if steps is None:
        steps = max(1, round(sampler.steps * (t_start - t_end)))
    n, i0, times = plan_window(backbone, t_start, t_end, steps, noise.device)
    window = range(i0, i0 + steps)
    # the x0-prediction at t comes from the step whose start time is nearest to t (as in the ODE sampler)
    record = {min(window, key=lambda i: abs(times[i] - t)): t for t in x0_at}
    guided = sampler.guided
    if null_cond is None and guided:
        null_cond = backbone.null_conditions(cond)
    rows = max(1, sampler.micro_batch_size // (2 if guided else 1))
    chunks = []
    for start in range(0, noise.shape[0], rows):
        idx = slice(start, start + rows)
        chunks.append(
            _run(
                sampler,
                backbone,
                noise[idx],
                cond_index(cond, idx),
                None if null_cond is None else cond_index(null_cond, idx),
                n,
                i0,
                steps,
                times,
                record,
                from_noise=t_start >= 1.0 - 1e-6,
            )
        )
    x0 = {t: torch.cat([c.x0[t] for c in chunks]) for t in x0_at}
    nfe = steps * (2 if guided else 1)
    return SampleOutput(torch.cat([c.x for c in chunks]), x0, nfe if chunks else 0)


def _run(sampler, backbone, x, cond, null_cond, n, i0, steps, times, record, from_noise) -> SampleOutput:
    scheduler = _fresh(backbone, n, x.device)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(i0)
    timesteps = scheduler.timesteps
    guided = sampler.guided
    both = cond_cat([null_cond, cond]) if guided else cond  # the pipelines' order: unconditional first
    if from_noise and i0 == 0:
        state = x * getattr(scheduler, "init_noise_sigma", 1.0)  # prepare_latents
    else:
        state = x / _input_scale(scheduler, timesteps[i0], x)
    x0_preds: dict[float, torch.Tensor] = {}
    for i in range(i0, i0 + steps):
        k = timesteps[i]
        model_input = scheduler.scale_model_input(state, k) if hasattr(scheduler, "scale_model_input") else state
        if guided:
            out = backbone.call_network(torch.cat([model_input, model_input]), k, both)
            uncond, cond_out = out.chunk(2)
            out = backbone.combine_guidance(cond_out, uncond, sampler.guidance_scale)
        else:
            out = backbone.call_network(model_input, k, cond)
        result = scheduler.step(out, k, state, return_dict=True)
        if i in record:
            x0 = getattr(result, "pred_original_sample", None)
            if x0 is None:  # the scheduler's own parameterisation at its grid time
                t = torch.full((x.shape[0],), times[i], device=x.device, dtype=torch.float32)
                x0 = backbone.to_x0_eps(out.float(), model_input.float(), t)[0].to(out.dtype)
            x0_preds[record[i]] = x0
        state = result.prev_sample
    end = i0 + steps
    if end < len(timesteps):  # convert back from the scheduler's scale (Euler: x / alpha) to x_t
        state = state * _input_scale(scheduler, timesteps[end], state)
    return SampleOutput(state, x0_preds, steps * (2 if guided else 1))
