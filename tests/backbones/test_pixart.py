"""PixArt-Sigma (DPM-Solver++, DDIM) and PixArt-Alpha: scheduler sampling reproduces the pipeline."""

from __future__ import annotations

import pytest
import torch

from tests.backbones.helpers import PARITY_ATOL, PROMPTS, framework_images, max_abs_diff, noise_for


def _pipe_images(backbone, prompts, noise, steps, guidance_scale, **kwargs):
    return backbone.pipe(
        prompts,
        latents=noise.clone(),
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        height=backbone.height,
        width=backbone.width,
        use_resolution_binning=False,
        clean_caption=False,
        max_sequence_length=backbone.max_sequence_length,
        output_type="pt",
        **kwargs,
    ).images


@pytest.mark.parametrize("scheduler", ["dpmsolver++", "ddim"])
def test_pixart_sigma_matches_the_pipeline(pixart, scheduler):
    pixart.set_scheduler(scheduler)
    noise = noise_for(pixart, 2)
    ref = _pipe_images(pixart, PROMPTS, noise, 6, 4.5)
    ours, out = framework_images(pixart, PROMPTS, noise, 6, 4.5)
    assert max_abs_diff(ours, ref) <= PARITY_ATOL
    assert out.nfe == 12
    assert max_abs_diff(ref[0], ref[1]) > 1e-2


def test_pixart_negative_prompt_matches_the_pipeline(pixart):
    pixart.set_scheduler("dpmsolver++")
    noise = noise_for(pixart, 1, seed=2)
    ref = _pipe_images(pixart, PROMPTS[:1], noise, 4, 3.0, negative_prompt="a blurry photo")
    ours, _ = framework_images(pixart, [{"prompt": PROMPTS[0], "negative_prompt": "a blurry photo"}], noise, 4, 3.0)
    assert max_abs_diff(ours, ref) <= PARITY_ATOL


def test_pixart_alpha_matches_the_pipeline(pixart_alpha):
    assert not pixart_alpha.is_sigma and pixart_alpha.max_sequence_length == 120
    noise = noise_for(pixart_alpha, 2, seed=3)
    ref = _pipe_images(pixart_alpha, PROMPTS, noise, 4, 4.5)
    ours, _ = framework_images(pixart_alpha, PROMPTS, noise, 4, 4.5)
    assert max_abs_diff(ours, ref) <= PARITY_ATOL


def test_pixart_schedule_and_learned_variance(pixart):
    """The schedule is the scheduler's alphas_cumprod; the network's variance channels are dropped."""
    k = torch.tensor([999, 0])
    t = (k + 1).double() / 1000
    torch.testing.assert_close(pixart.schedule.alpha(t) ** 2, pixart.scheduler.alphas_cumprod[k].double())
    cond = pixart.encode_conditions(PROMPTS)
    with torch.no_grad():
        out = pixart(noise_for(pixart, 2), t.float(), cond)
    assert out.shape == (2, *pixart.latent_shape) and pixart.transformer.config.out_channels == 8
    names = [n for n, _ in pixart.transformer.named_modules()]
    assert all(any(n.endswith(target) for n in names) for target in pixart.lora_target_modules)
