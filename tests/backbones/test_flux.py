"""FLUX.1 (dev-like with the guidance embedding, and schnell): FlowMatchEuler sampling reproduces the pipeline,
with packed latents and the resolution-dependent shift; so do DPM-Solver++ and UniPC on flow sigmas."""

from __future__ import annotations

import pytest
import torch

from lightning_search.backbones.flux import FluxBackbone
from lightning_search.backbones.schedules import FlowSchedule
from lightning_search.errors import UnknownNameError
from lightning_search.sampling import Sampler
from tests.backbones.helpers import PARITY_ATOL, PROMPTS, framework_images, max_abs_diff, noise_for


def _pipe_images(backbone, prompts, noise, steps, guidance_scale, **kwargs):
    b, (c, h, w) = noise.shape[0], backbone.latent_shape
    return backbone.pipe(
        prompts,
        latents=backbone.pipe._pack_latents(noise.clone(), b, c, h, w),  # the pipeline takes packed latents
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        height=backbone.height,
        width=backbone.width,
        max_sequence_length=backbone.max_sequence_length,
        output_type="pt",
        **kwargs,
    ).images


def test_flux_dev_flow_match_euler_matches_the_pipeline(flux):
    assert flux.transformer.config.guidance_embeds and flux.scheduler.config.use_dynamic_shifting
    noise = noise_for(flux, 2)
    ref = _pipe_images(flux, PROMPTS, noise, 6, flux.guidance)
    ours, out = framework_images(flux, PROMPTS, noise, 6)  # guidance is an input, not CFG: 1 NFE per step
    assert max_abs_diff(ours, ref) <= PARITY_ATOL
    assert out.nfe == 6
    assert max_abs_diff(ref[0], ref[1]) > 1e-2


def test_flux_guidance_embedding_changes_the_output(flux):
    noise = noise_for(flux, 1, seed=1)
    base, _ = framework_images(flux, PROMPTS[:1], noise, 3)
    flux.guidance = 7.0
    try:
        other, _ = framework_images(flux, PROMPTS[:1], noise, 3)
        ref = _pipe_images(flux, PROMPTS[:1], noise, 3, 7.0)
    finally:
        flux.guidance = 3.5
    assert max_abs_diff(other, ref) <= PARITY_ATOL and max_abs_diff(base, other) > 1e-4


def test_flux_true_cfg_matches_the_pipeline(flux):
    noise = noise_for(flux, 1, seed=2)
    ref = _pipe_images(flux, PROMPTS[:1], noise, 3, flux.guidance, negative_prompt="ugly", true_cfg_scale=2.5)
    ours, out = framework_images(flux, [{"prompt": PROMPTS[0], "negative_prompt": "ugly"}], noise, 3, 2.5)
    assert max_abs_diff(ours, ref) <= PARITY_ATOL and out.nfe == 6


def test_flux_schnell_matches_the_pipeline(flux_schnell):
    assert not flux_schnell.transformer.config.guidance_embeds
    noise = noise_for(flux_schnell, 2, seed=3)
    ref = _pipe_images(flux_schnell, PROMPTS, noise, 4, 0.0)
    ours, _ = framework_images(flux_schnell, PROMPTS, noise, 4)
    assert max_abs_diff(ours, ref) <= PARITY_ATOL


def test_flux_times_are_the_shifted_sigmas_and_resume_exactly(flux):
    """t = sigma of the scheduler grid (shifted by mu); a run resumed at a grid time is the one-call run."""
    assert isinstance(flux.schedule, FlowSchedule)
    scheduler = type(flux.scheduler).from_config(flux.scheduler.config)
    flux.set_timesteps(scheduler, 6)
    times = flux.scheduler_times(scheduler)
    assert times[0] == 1.0 and times[-1] == 0.0 and times[3] > 0.5  # mu > 0 shifts the grid towards noise
    cond, noise = flux.encode_conditions(PROMPTS), noise_for(flux, 2, seed=4)
    sampler = Sampler(solver="scheduler", steps=6)
    with torch.no_grad():
        whole = sampler.sample(flux, noise, cond).x
        first = sampler.sample(flux, noise, cond, t_end=times[2], x0_at=[1.0])
        second = sampler.sample(flux, first.x, cond, t_start=times[2]).x
        velocity = flux(noise, torch.ones(2), cond)
    torch.testing.assert_close(second, whole, atol=1e-5, rtol=1e-5)
    # x0-prediction of a flow model at t = 1: x - t v
    torch.testing.assert_close(first.x0[1.0], noise - velocity, atol=1e-5, rtol=1e-5)


def test_flux_latents_images_and_lora_targets(flux):
    images = torch.rand(2, 3, flux.height, flux.width)
    with torch.no_grad():
        x0 = flux.encode_images(images)
        decoded = flux.decode(x0)
    assert x0.shape == (2, *flux.latent_shape) == (2, 4, 16, 16)
    assert decoded.shape == images.shape
    names = [n for n, _ in flux.transformer.named_modules()]
    assert all(any(n.endswith(target) for n in names) for target in flux.lora_target_modules)


def _documented_flow_swap(name: str, config: dict, **overrides):
    """diffusers' documented swap for a flow model, written out: the multistep solver from the pipeline's
    scheduler config, on flow sigmas, predicting the flow, with the pipeline's shift."""
    import diffusers

    cls = {"dpmsolver++": diffusers.DPMSolverMultistepScheduler, "unipc": diffusers.UniPCMultistepScheduler}[name]
    settings = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": config["shift"]}
    return cls.from_config({**config, **settings, **overrides})


@pytest.mark.parametrize(("family", "name"), [("flux", "dpmsolver++"), ("flux", "unipc"), ("flux_schnell", "unipc")])
def test_flux_multistep_solvers_on_flow_sigmas_match_the_pipeline(request, family, name):
    """``set_scheduler("dpmsolver++" | "unipc")`` on FLUX samples as FluxPipeline does with the documented swap:
    on flow sigmas, with dev's resolution-dependent shift (``mu``, so ``flow_shift = exp(mu)``)."""
    backbone = request.getfixturevalue(family)
    noise, steps, original = noise_for(backbone, 2, seed=5), 5, backbone.scheduler  # put back by conftest
    backbone.set_scheduler(name)
    config = backbone.scheduler.config
    assert config.use_flow_sigmas and config.prediction_type == "flow_prediction"
    assert config.use_dynamic_shifting == original.config.use_dynamic_shifting
    ours, out = framework_images(backbone, PROMPTS, noise, steps)
    backbone.pipe.scheduler = _documented_flow_swap(name, dict(original.config))
    ref = _pipe_images(backbone, PROMPTS, noise, steps, backbone.guidance)
    assert max_abs_diff(ours, ref) <= PARITY_ATOL and out.nfe == steps
    assert max_abs_diff(ref[0], ref[1]) > 1e-2  # the tiny model is not degenerate: prompts and noises matter


def test_flux_schnell_dpm_solver_runs_where_the_pipeline_cannot(flux_schnell):
    """FluxPipeline always passes ``mu`` to ``set_timesteps``, and DPM-Solver++ asserts ``use_dynamic_shifting``
    when given one: the pipeline cannot run it on schnell's fixed-shift config. The backbone passes ``mu`` only
    under dynamic shifting; its samples equal the pipeline's with a DPM scheduler whose dynamic shift is zero
    (base and max shift 0, so mu = 0 and flow_shift = exp(0) = 1: schnell's shift)."""
    noise, steps, original = noise_for(flux_schnell, 2, seed=6), 4, flux_schnell.scheduler
    flux_schnell.set_scheduler("dpmsolver++")
    assert not flux_schnell.scheduler.config.use_dynamic_shifting
    with pytest.raises(AssertionError):
        _pipe_images(flux_schnell, PROMPTS, noise, steps, 0.0)
    ours, _ = framework_images(flux_schnell, PROMPTS, noise, steps)
    grid = flux_schnell.scheduler_times(_fresh(flux_schnell, steps))
    zero_shift = {**dict(original.config), "base_shift": 0.0, "max_shift": 0.0}
    flux_schnell.pipe.scheduler = _documented_flow_swap("dpmsolver++", zero_shift, use_dynamic_shifting=True)
    ref = _pipe_images(flux_schnell, PROMPTS, noise, steps, 0.0)
    assert max_abs_diff(ours, ref) <= PARITY_ATOL
    # diffusers' flow sigmas at shift 1: 1 - linspace(1, 1 / 1000, n + 1), reversed, the last dropped, then 0
    alphas = torch.linspace(1.0, 1 / 1000, steps + 1, dtype=torch.float64)
    assert grid == pytest.approx([1 - float(a) for a in alphas.flip(0)[:-1]] + [0.0], abs=1e-6)


def test_flux_scheduler_argument_and_vp_schedulers_refused():
    schnell = FluxBackbone("tiny-schnell", height=32, width=32, max_sequence_length=16, scheduler="unipc")
    assert type(schnell.scheduler).__name__ == "UniPCMultistepScheduler" and schnell.scheduler.config.use_flow_sigmas
    with pytest.raises(UnknownNameError, match="dpmsolver\\+\\+, flow_match_euler, unipc"):
        schnell.set_scheduler("ddim")  # a VP scheduler would integrate the wrong ODE


def _fresh(backbone, steps: int):
    scheduler = type(backbone.scheduler).from_config(backbone.scheduler.config)
    backbone.set_timesteps(scheduler, steps)
    return scheduler
