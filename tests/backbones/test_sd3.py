"""SD3 / SD3.5: the scheduler sampler reproduces StableDiffusion3Pipeline (shifted flow-matching Euler, its
dynamic-shift variant, DPM-Solver++ on flow sigmas; CFG with negative prompts; T5 dropped), the one time
convention is the pipeline's, and search counts every transformer call."""

from __future__ import annotations

import math
from contextlib import contextmanager

import pytest
import torch

from lightning_search.backbones.sd3 import StableDiffusion3Backbone
from lightning_search.errors import UnknownNameError
from lightning_search.sampling import Sampler
from lightning_search.search import RandomSearch, SearchContext
from tests.backbones.helpers import PARITY_ATOL, PROMPTS, framework_images, max_abs_diff, noise_for
from tests.sampling.helpers import MeanVerifier


def _pipe_images(backbone, prompts, noise, steps, guidance_scale, **kwargs):
    backbone.pipe.set_progress_bar_config(disable=True)
    kwargs.setdefault("output_type", "pt")
    return backbone.pipe(
        prompts,
        latents=noise.clone(),
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        height=backbone.height,
        width=backbone.width,
        max_sequence_length=backbone.max_sequence_length,
        **kwargs,
    ).images


@contextmanager
def _scheduler(backbone, name: str | None):
    """Swap the pipeline's scheduler for one test (the fixture is shared by the session)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    original = backbone.pipe.scheduler
    if name == "dynamic":  # the pipeline then computes mu from the image's token count
        config = original.config
        backbone.pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(config, use_dynamic_shifting=True)
    elif name is not None:
        backbone.set_scheduler(name)
    try:
        yield backbone.pipe.scheduler
    finally:
        backbone.pipe.scheduler = original


@pytest.mark.parametrize("guidance_scale", [1.0, 4.5])
@pytest.mark.parametrize("scheduler", [None, "dynamic", "dpmsolver++"])
def test_sd3_matches_the_pipeline(sd3, scheduler, guidance_scale):
    with _scheduler(sd3, scheduler) as active:
        if scheduler is None:  # the SD3 / 3.5 scheduler config: a fixed shift of 3
            assert active.config.shift == 3.0 and not active.config.use_dynamic_shifting
        noise = noise_for(sd3, 2)
        ref = _pipe_images(sd3, PROMPTS, noise, 4, guidance_scale)
        ours, out = framework_images(sd3, PROMPTS, noise, 4, guidance_scale)
    assert max_abs_diff(ours, ref) <= PARITY_ATOL
    assert out.nfe == 4 * (2 if guidance_scale > 1 else 1)
    assert max_abs_diff(ref[0], ref[1]) > 1e-2  # the tiny model is not degenerate: prompts and noises matter


def test_dynamic_shift_and_flow_sigmas_change_the_grid(sd3):
    """The three grids differ (so the parity above tests three schedules); t = sigma, ending at 0."""
    grids = {}
    for name in (None, "dynamic", "dpmsolver++"):
        with _scheduler(sd3, name) as template:
            scheduler = type(template).from_config(template.config)
            sd3.set_timesteps(scheduler, 4)
            grids[name] = sd3.scheduler_times(scheduler)
    assert all(len(g) == 5 and g[-1] == 0.0 for g in grids.values())
    # diffusers' FlowMatchEuler: n sigmas uniform from 1 to the shifted smallest training sigma, then shifted by 3
    shift = lambda s: 3 * s / (1 + 2 * s)  # noqa: E731
    uniform = torch.linspace(1.0, shift(1 / 1000), 4, dtype=torch.float64)
    assert grids[None] == pytest.approx([shift(float(s)) for s in uniform] + [0.0], abs=1e-6)
    # dynamic: exponential shift by mu, linear in the token count (8 x 8 patches = 64 tokens; the scheduler
    # config's base 0.5 at 256 tokens, max 1.15 at 4096), of sigmas uniform from 1 to 1 / 1000
    mu = 0.5 + (64 - 256) * (1.15 - 0.5) / (4096 - 256)
    uniform = torch.linspace(1.0, 1 / 1000, 4, dtype=torch.float64)
    expected = [math.exp(mu) / (math.exp(mu) + 1 / float(s) - 1) for s in uniform] + [0.0]
    assert grids["dynamic"] == pytest.approx(expected, abs=1e-6)
    # DPM-Solver++ on flow sigmas (diffusers' use_flow_sigmas): 1 - linspace(1, 1 / 1000, n + 1), shifted by
    # flow_shift = 3, the last dropped, then the terminal 0
    flow = 1 - torch.linspace(1.0, 1 / 1000, 5, dtype=torch.float64)
    expected = [shift(float(s)) for s in flow.flip(0)[:-1]] + [0.0]
    assert grids["dpmsolver++"] == pytest.approx(expected, abs=1e-6)


def test_sd3_negative_prompts_match_the_pipeline(sd3):
    noise = noise_for(sd3, 2, seed=1)
    ref = _pipe_images(sd3, PROMPTS, noise, 3, 5.0, negative_prompt=["blurry", ""])
    conditions = [{"prompt": PROMPTS[0], "negative_prompt": "blurry"}, PROMPTS[1]]  # no negative = ""
    ours, out = framework_images(sd3, conditions, noise, 3, 5.0)
    assert max_abs_diff(ours, ref) <= PARITY_ATOL and out.nfe == 6
    plain = _pipe_images(sd3, PROMPTS, noise, 3, 5.0)
    assert max_abs_diff(plain[0], ref[0]) > 1e-3 and max_abs_diff(plain[1], ref[1]) <= PARITY_ATOL


def test_sd3_without_t5_matches_the_pipeline(sd3):
    no_t5 = StableDiffusion3Backbone("tiny", max_sequence_length=32, drop_t5=True)
    assert no_t5.pipe.text_encoder_3 is None and not hasattr(no_t5, "text_encoder_3")
    cond = no_t5.encode_conditions(PROMPTS)
    clip_tokens = no_t5.pipe.tokenizer_max_length
    assert cond["pos"]["prompt_embeds"].shape[1] == clip_tokens + 32  # CLIP's 77 tokens, then T5's zeros
    assert cond["pos"]["prompt_embeds"][:, clip_tokens:].abs().max() == 0
    noise = noise_for(no_t5, 2, seed=2)
    ref = _pipe_images(no_t5, PROMPTS, noise, 3, 3.0)
    ours, _ = framework_images(no_t5, PROMPTS, noise, 3, 3.0)
    with_t5, _ = framework_images(sd3, PROMPTS, noise, 3, 3.0)  # same random weights, T5 present
    assert max_abs_diff(ours, ref) <= PARITY_ATOL and max_abs_diff(ours, with_t5) > 1e-3


def test_forward_in_the_one_convention_is_the_pipelines_network_call(sd3):
    """At each step of a real pipeline call (hooked), forward(x, t = sigma) is the transformer's output at the
    scheduler's timestep, and the pipeline's next state is x0 + eps moved to the next sigma by the flow
    schedule (x_t = (1 - t) x0 + t eps, velocity = eps - x0)."""
    calls = []
    hook = sd3.transformer.register_forward_hook(
        lambda m, args, kwargs, out: calls.append((kwargs["hidden_states"].clone(), kwargs["timestep"], out[0])),
        with_kwargs=True,
    )
    noise = noise_for(sd3, 2, seed=3)
    try:
        with torch.no_grad():
            _pipe_images(sd3, PROMPTS, noise, 4, 1.0, output_type="latent")
    finally:
        hook.remove()
    sigmas = sd3.pipe.scheduler.sigmas  # the grid of the call just made
    cond = sd3.encode_conditions(PROMPTS)
    assert len(calls) == 4 and torch.equal(calls[0][0], noise)
    for i, (x, timestep, velocity) in enumerate(calls):
        t = sigmas[i].expand(2)
        torch.testing.assert_close(timestep, t * 1000)
        with torch.no_grad():
            ours = sd3(x, t, cond)
        torch.testing.assert_close(ours, velocity, atol=1e-6, rtol=1e-6)
        if i + 1 < len(calls):
            x0, eps = x - t.view(-1, 1, 1, 1) * velocity, x + (1 - t.view(-1, 1, 1, 1)) * velocity
            expected = sd3.schedule.add_noise(x0, eps, sigmas[i + 1].expand(2))
            torch.testing.assert_close(calls[i + 1][0], expected, atol=1e-5, rtol=1e-5)
    # the scheduler's forward process is the schedule's
    x0, eps = torch.randn(2, *sd3.latent_shape), torch.randn(2, *sd3.latent_shape)
    scheduler = sd3.pipe.scheduler
    noisy = scheduler.scale_noise(x0, scheduler.timesteps[1:2].expand(2), eps)
    torch.testing.assert_close(noisy, sd3.schedule.add_noise(x0, eps, sigmas[1].expand(2)), atol=1e-6, rtol=1e-6)


def test_flow_match_euler_stops_and_resumes_exactly(sd3):
    cond, noise = sd3.encode_conditions(PROMPTS), noise_for(sd3, 2, seed=4)
    sampler = Sampler(solver="scheduler", steps=4, guidance_scale=2.0)
    scheduler = type(sd3.scheduler).from_config(sd3.scheduler.config)
    sd3.set_timesteps(scheduler, 4)
    cut = sd3.scheduler_times(scheduler)[2]
    with torch.no_grad():
        whole = sampler.sample(sd3, noise, cond).x
        first = sampler.sample(sd3, noise, cond, t_end=cut, x0_at=[1.0])
        second = sampler.sample(sd3, first.x, cond, t_start=cut).x
    torch.testing.assert_close(second, whole, atol=1e-5, rtol=1e-5)
    assert first.x0[1.0].shape == noise.shape and torch.isfinite(first.x0[1.0]).all()


def test_random_search_nfe_is_the_transformer_rows(sd3):
    """result.nfe (per sample, summed) is the number of rows the transformer saw, counted by a forward hook."""
    rows = []
    hook = sd3.transformer.register_forward_hook(
        lambda m, args, kwargs, out: rows.append(kwargs["hidden_states"].shape[0]), with_kwargs=True
    )
    sampler = Sampler(solver="scheduler", steps=3, guidance_scale=2.0, micro_batch_size=4)
    search = RandomSearch(num_candidates=3, candidate_steps=2)
    try:
        with torch.no_grad():
            result = search.run(SearchContext(sd3, sampler, MeanVerifier(), seed=5), ["a red car", PROMPTS[1]], [0, 1])
    finally:
        hook.remove()
    assert sum(rows) == int(result.nfe.sum()) == 2 * (3 * 2 + 3) * 2  # 2 samples, 3 x 2 + 3 steps, CFG doubles
    assert max(rows) <= 4 and result.nfe.tolist() == [search.nfe_per_sample(sampler, sd3)] * 2
    assert result.images.shape == (2, 3, 32, 32)


def test_images_latents_schedulers_and_lora_targets(sd3):
    images = torch.rand(2, 3, sd3.height, sd3.width)
    with torch.no_grad():
        x0 = sd3.encode_images(images)
        decoded = sd3.decode(x0)
    assert x0.shape == (2, *sd3.latent_shape) == (2, 16, 16, 16)
    assert decoded.shape == images.shape and 0 <= decoded.min() and decoded.max() <= 1
    assert sd3.schedule.alpha(torch.tensor(0.25)) == 0.75 and sd3.prediction_type == "velocity"
    names = [n for n, _ in sd3.transformer.named_modules()]
    for target in sd3.lora_target_modules:
        assert any(n.endswith("." + target) for n in names), target
    assert all(p.requires_grad for p in sd3.transformer.parameters())
    assert not any(p.requires_grad for p in sd3.text_encoder_3.parameters())
    with pytest.raises(UnknownNameError, match="dpmsolver\\+\\+, flow_match_euler, unipc"):
        sd3.set_scheduler("ddim")  # a VP scheduler would integrate the wrong ODE


def test_tiny_sd3_medium_flavour_matches_its_pipeline():
    sd3_medium = StableDiffusion3Backbone("tiny-sd3", max_sequence_length=16)
    assert sd3_medium.transformer.config.qk_norm is None and not sd3_medium.transformer.config.dual_attention_layers
    noise = noise_for(sd3_medium, 1, seed=6)
    ref = _pipe_images(sd3_medium, PROMPTS[:1], noise, 3, 7.0)
    ours, _ = framework_images(sd3_medium, PROMPTS[:1], noise, 3, 7.0)
    assert max_abs_diff(ours, ref) <= PARITY_ATOL
