"""The framework's own solvers (in the one time convention, through ``Backbone.forward``) agree with the
pipelines' schedulers wherever the two grids coincide: the t <-> timestep mapping and the schedules are right."""

from __future__ import annotations

import torch

from lightning_search.sampling import Sampler
from tests.backbones.helpers import PROMPTS, noise_for


def test_our_ddim_solver_is_diffusers_ddim_on_the_same_grid(sd):
    """DDIM with "trailing" spacing and alpha_T = 1 steps through t = 1, 0.75, 0.5, 0.25, 0: our DDIM grid."""
    from diffusers import DDIMScheduler

    original = sd.pipe.scheduler
    sd.pipe.scheduler = DDIMScheduler.from_config(original.config, timestep_spacing="trailing", set_alpha_to_one=True)
    try:
        cond, noise = sd.encode_conditions(PROMPTS), noise_for(sd, 2, seed=12)
        with torch.no_grad():
            ours = Sampler(solver="ddim", steps=4, guidance_scale=3.0).sample(sd, noise, cond).x
            theirs = Sampler(solver="scheduler", steps=4, guidance_scale=3.0).sample(sd, noise, cond).x
    finally:
        sd.pipe.scheduler = original
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_our_euler_solver_is_flow_match_euler_on_schnell(flux_schnell):
    """schnell's grid (no shift) is linspace(1, 0, n + 1), the framework's Euler grid."""
    cond, noise = flux_schnell.encode_conditions(PROMPTS), noise_for(flux_schnell, 2, seed=13)
    with torch.no_grad():
        ours = Sampler(solver="euler", steps=4).sample(flux_schnell, noise, cond).x
        theirs = Sampler(solver="scheduler", steps=4).sample(flux_schnell, noise, cond).x
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_heun_runs_on_a_pipeline_backbone(dit):
    cond, noise = dit.encode_conditions([1, 2]), noise_for(dit, 2, seed=14)
    with torch.no_grad():
        out = Sampler(solver="heun", steps=3, guidance_scale=2.0).sample(dit, noise, cond, x0_at=[0.5])
    assert out.nfe == (2 * 3 - 1) * 2 and torch.isfinite(out.x).all() and out.x0[0.5].shape == noise.shape
