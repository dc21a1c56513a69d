"""Diffusers' stochastic schedulers driven by the scheduler sampler with per-row generators seeded per step
equal ``pipe(..., generator=[...])`` given generators seeded the same way at each step."""

from __future__ import annotations

import pytest
import torch

from lightning_search.sampling import Sampler
from lightning_search.sampling.noise import step_seed
from tests.backbones.helpers import PARITY_ATOL, PROMPTS, max_abs_diff, noise_for


def _reseeding(generators, row_seeds, times):
    """callback_on_step_end that reseeds each row's generator for the next step, as our loop seeds it."""

    def callback(pipe, i, timestep, callback_kwargs):
        if i + 1 < len(times) - 1:
            for g, s in zip(generators, row_seeds):
                g.manual_seed(step_seed(s, times[i + 1]))
        return callback_kwargs

    return callback


@pytest.mark.parametrize("scheduler", ["ddpm", "euler_ancestral", "dpmsolver++_sde"])
def test_stochastic_schedulers_match_the_pipeline_with_the_same_generators(sd, scheduler):
    sd.set_scheduler(scheduler)
    noise, row_seeds, steps = noise_for(sd, 2, seed=7), [11, 12], 5
    sampler = Sampler(solver="scheduler", steps=steps, guidance_scale=3.0)
    times = sampler.grid(sd)
    with torch.no_grad():
        out = sampler.sample(sd, noise, sd.encode_conditions(PROMPTS), seeds=row_seeds)
        ours = sd.decode(out.x)
        generators = [torch.Generator().manual_seed(step_seed(s, times[0])) for s in row_seeds]
        ref = sd.pipe(
            PROMPTS, latents=noise.clone(), num_inference_steps=steps, guidance_scale=3.0, height=sd.height,
            width=sd.width, output_type="pt", generator=generators,
            callback_on_step_end=_reseeding(generators, row_seeds, times),
        ).images  # fmt: skip
        unseeded = sd.decode(sampler.sample(sd, noise, sd.encode_conditions(PROMPTS), seeds=[21, 22]).x)
    assert max_abs_diff(ours, ref) <= PARITY_ATOL
    assert max_abs_diff(ours, unseeded) > 1e-2  # the step noises matter: the test can fail


def test_a_deterministic_scheduler_swapped_in_from_a_stochastic_one_is_deterministic(sd):
    """from_config keeps the old class's keys: DDIM built after DPM-Solver++ SDE still holds its
    algorithm_type, and must not be taken for a stochastic scheduler."""
    sd.set_scheduler("dpmsolver++_sde")
    sd.set_scheduler("ddim")
    assert str(sd.scheduler.config.get("algorithm_type")).startswith("sde")
    assert not Sampler(solver="scheduler").stochastic(sd)
