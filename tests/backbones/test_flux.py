"""FLUX.1 (dev-like with the guidance embedding, and schnell): FlowMatchEuler sampling reproduces the pipeline,
with packed latents and the resolution-dependent shift."""

from __future__ import annotations

import torch

from lightning_search.backbones.schedules import FlowSchedule
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
