"""SD 1.x and SDXL: the framework's scheduler sampling reproduces the diffusers pipeline, and the pieces
search relies on (times, x0-predictions, NFEs, stopping and resuming) match diffusers' own numbers."""

from __future__ import annotations

import pytest
import torch

from lightning_search.backbones.stable_diffusion import StableDiffusionBackbone
from lightning_search.errors import CheckpointError, ConfigurationError, UnknownNameError
from lightning_search.sampling import Sampler
from tests.backbones.helpers import PARITY_ATOL, PROMPTS, framework_images, max_abs_diff, noise_for


def _pipe_images(backbone, prompts, noise, steps, guidance_scale, **kwargs):
    return backbone.pipe(
        prompts,
        latents=noise.clone(),
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        height=backbone.height,
        width=backbone.width,
        output_type="pt",
        **kwargs,
    ).images


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpmsolver++"])
def test_sd_matches_the_pipeline(sd, scheduler):
    sd.set_scheduler(scheduler)
    noise = noise_for(sd, 2)
    ref = _pipe_images(sd, PROMPTS, noise, 6, 5.0)
    ours, out = framework_images(sd, PROMPTS, noise, 6, 5.0)
    assert max_abs_diff(ours, ref) <= PARITY_ATOL
    assert out.nfe == 12  # 6 steps, guidance doubles
    assert max_abs_diff(ref[0], ref[1]) > 1e-2  # the tiny model is not degenerate: prompts and noises matter


def test_sd_negative_prompt_and_guidance_rescale_match_the_pipeline(sd):
    sd.set_scheduler("ddim")
    noise = noise_for(sd, 2, seed=1)
    ref = _pipe_images(sd, PROMPTS, noise, 4, 7.0, negative_prompt=["blurry", "a cat"], guidance_rescale=0.7)
    conditions = [{"prompt": p, "negative_prompt": n} for p, n in zip(PROMPTS, ["blurry", "a cat"])]
    sd.guidance_rescale = 0.7
    try:
        ours, _ = framework_images(sd, conditions, noise, 4, 7.0)
    finally:
        sd.guidance_rescale = 0.0
    assert max_abs_diff(ours, ref) <= PARITY_ATOL


def test_sdxl_euler_matches_the_pipeline(sdxl):
    sdxl.set_scheduler("euler")
    noise = noise_for(sdxl, 2)
    ref = _pipe_images(sdxl, PROMPTS, noise, 5, 5.0)
    ours, _ = framework_images(sdxl, PROMPTS, noise, 5, 5.0)
    assert max_abs_diff(ours, ref) <= PARITY_ATOL


def test_sdxl_negative_prompts_and_micro_conditioning(sdxl):
    # no negative prompt: SDXL base zeroes the unconditional embeddings (force_zeros_for_empty_prompt)
    cond = sdxl.encode_conditions([PROMPTS[0], {"prompt": PROMPTS[1], "negative_prompt": "ugly"}])
    assert cond["neg"]["prompt_embeds"][0].abs().max() == 0 and cond["neg"]["text_embeds"][0].abs().max() == 0
    assert cond["neg"]["prompt_embeds"][1].abs().max() > 0
    # add_time_ids = original size, crop top-left, target size (the pipeline defaults to the image size)
    assert cond["pos"]["time_ids"][0].tolist() == [32, 32, 0, 0, 32, 32]
    sdxl.set_scheduler("euler")
    noise = noise_for(sdxl, 1, seed=3)
    ref = _pipe_images(sdxl, PROMPTS[1:], noise, 3, 4.0, negative_prompt=["ugly"])
    ours, _ = framework_images(sdxl, [{"prompt": PROMPTS[1], "negative_prompt": "ugly"}], noise, 3, 4.0)
    assert max_abs_diff(ours, ref) <= PARITY_ATOL


def test_forward_in_the_one_convention_is_the_pipelines_network_call(sd):
    """forward(x, t) at t = (k + 1) / T is the UNet at discrete timestep k; alpha(t)^2 is alphas_cumprod[k]."""
    sd.set_scheduler("ddim")
    cond = sd.encode_conditions(PROMPTS)
    x = noise_for(sd, 2, seed=4)
    k = torch.tensor([500, 120])
    t = (k + 1).float() / 1000
    with torch.no_grad():
        ours = sd(x, t, cond)
        ref = sd.unet(x, k, encoder_hidden_states=cond["pos"]["prompt_embeds"]).sample
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    abar = sd.scheduler.alphas_cumprod[k].double()
    torch.testing.assert_close(sd.schedule.alpha(t.double()) ** 2, abar)
    torch.testing.assert_close(sd.schedule.sigma(t.double()) ** 2, 1 - abar)


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
def test_single_step_schedulers_stop_and_resume_exactly(sd, scheduler):
    """A run cut at a grid time and resumed there is the one-call run (the state of DDIM / Euler is x alone)."""
    sd.set_scheduler(scheduler)
    cond, noise = sd.encode_conditions(PROMPTS), noise_for(sd, 2, seed=5)
    sampler = Sampler(solver="scheduler", steps=8, guidance_scale=3.0)
    times = sampler.grid(sd)
    with torch.no_grad():
        whole = sampler.sample(sd, noise, cond).x
        first = sampler.sample(sd, noise, cond, t_end=times[3])
        second = sampler.sample(sd, first.x, cond, t_start=times[3])
    assert first.nfe + second.nfe == 16
    torch.testing.assert_close(second.x, whole, atol=1e-5, rtol=1e-5)


def test_multistep_history_restarts_at_each_call(sd):
    """DPM-Solver++ resumed at a grid time restarts its history (first-order step), as documented in
    sampling/scheduler.py: equal to diffusers' own loop with the history cleared at that step."""
    from diffusers import DPMSolverMultistepScheduler

    sd.set_scheduler("dpmsolver++")
    cond, noise = sd.encode_conditions(PROMPTS), noise_for(sd, 2, seed=6)
    sampler = Sampler(solver="scheduler", steps=6)
    times = sampler.grid(sd)
    with torch.no_grad():
        whole = sampler.sample(sd, noise, cond).x
        first = sampler.sample(sd, noise, cond, t_end=times[2])
        split = sampler.sample(sd, first.x, cond, t_start=times[2]).x
        scheduler = DPMSolverMultistepScheduler.from_config(sd.scheduler.config)
        scheduler.set_timesteps(6)
        x = noise.clone()
        for i, k in enumerate(scheduler.timesteps):
            if i == 2:
                scheduler.model_outputs = [None] * scheduler.config.solver_order
                scheduler.lower_order_nums = 0
            eps = sd.unet(x, k, encoder_hidden_states=cond["pos"]["prompt_embeds"]).sample
            x = scheduler.step(eps, k, x).prev_sample
    torch.testing.assert_close(split, x, atol=1e-5, rtol=1e-5)
    assert max_abs_diff(split, whole) > 1e-6  # the one-call run kept its second-order history


def test_x0_predictions_are_the_schedulers_own(sd):
    """DDIM: its pred_original_sample; DPM-Solver++: its convert_model_output (the data prediction)."""
    from diffusers import DDIMScheduler

    cond, noise = sd.encode_conditions(PROMPTS[:1]), noise_for(sd, 1, seed=7)
    sd.set_scheduler("ddim")
    with torch.no_grad():
        out = Sampler(solver="scheduler", steps=5).sample(sd, noise, cond, x0_at=[0.4])
        scheduler = DDIMScheduler.from_config(sd.scheduler.config)
        scheduler.set_timesteps(5)
        times = [(float(k) + 1) / 1000 for k in scheduler.timesteps]
        index = min(range(5), key=lambda i: abs(times[i] - 0.4))
        x = noise.clone()
        for i, k in enumerate(scheduler.timesteps):
            eps = sd.unet(x, k, encoder_hidden_states=cond["pos"]["prompt_embeds"]).sample
            step = scheduler.step(eps, k, x)
            if i == index:
                expected = step.pred_original_sample
            x = step.prev_sample
    torch.testing.assert_close(out.x0[0.4], expected)

    sd.set_scheduler("dpmsolver++")
    with torch.no_grad():
        out = Sampler(solver="scheduler", steps=5).sample(sd, noise, cond, x0_at=[1.0])
        scheduler = type(sd.scheduler).from_config(sd.scheduler.config)
        scheduler.set_timesteps(5)
        k = scheduler.timesteps[0]
        eps = sd.unet(noise, k, encoder_hidden_states=cond["pos"]["prompt_embeds"]).sample
        scheduler._init_step_index(k)
        expected = scheduler.convert_model_output(eps, sample=noise)
    torch.testing.assert_close(out.x0[1.0], expected, atol=1e-5, rtol=1e-5)


def test_nfe_counting_and_micro_batches(sd):
    sd.set_scheduler("euler")
    cond, noise = sd.encode_conditions(PROMPTS * 2), noise_for(sd, 4, seed=8)
    rows = []
    original = sd.call_network

    def counting(x, timestep, c):
        rows.append(x.shape[0])
        return original(x, timestep, c)

    sd.call_network = counting
    try:
        with torch.no_grad():
            small = Sampler(solver="scheduler", steps=3, guidance_scale=2.0, micro_batch_size=4).sample(sd, noise, cond)
            whole = Sampler(solver="scheduler", steps=3, guidance_scale=2.0).sample(sd, noise, cond).x
    finally:
        del sd.call_network
    assert small.nfe == 6 and sum(rows[:6]) == 6 * 4 and max(rows[:6]) == 4  # 2 rows x 2 (guidance) per call
    # a micro-batch of 4 rows runs other CPU kernel blockings than one of 8 (2e-5 apart on an AVX-512 Xeon);
    # a row paired with another row's noise or condition would be O(1) apart
    torch.testing.assert_close(small.x, whole, atol=1e-4, rtol=1e-4)


def test_unsupported_schedulers_are_refused_and_stochastic_ones_need_seeds(sd):
    from diffusers import EulerAncestralDiscreteScheduler, PNDMScheduler

    original = sd.pipe.scheduler
    try:
        sd.pipe.scheduler = PNDMScheduler.from_config(original.config)  # SD 1.5's default: not resumable
        with pytest.raises(ConfigurationError, match="DDIMScheduler, DDPMScheduler"):
            Sampler(solver="scheduler").sample(sd, noise_for(sd, 1), sd.encode_conditions(PROMPTS[:1]))
        sd.pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(original.config)
        with pytest.raises(ConfigurationError, match="one seed per row"):
            Sampler(solver="scheduler").sample(sd, noise_for(sd, 1), sd.encode_conditions(PROMPTS[:1]))
    finally:
        sd.pipe.scheduler = original
    with pytest.raises(UnknownNameError, match="ddim, ddpm, dpmsolver"):
        sd.set_scheduler("pndm-ish")


def test_unfetchable_hub_id_fails_at_once_naming_the_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError) as err:
        StableDiffusionBackbone("no-such-org/no-such-model")
    message = str(err.value)
    assert "no-such-org/no-such-model" in message and "--local-dir" in message and "pretrained: /" in message
    with pytest.raises(CheckpointError, match="does not exist"):
        StableDiffusionBackbone("./no/such/folder")


@pytest.mark.slow
def test_local_folder_loads_the_same_pipeline(sd, tmp_path):
    sd.set_scheduler("ddim")
    sd.pipe.save_pretrained(tmp_path / "sd")
    loaded = StableDiffusionBackbone(str(tmp_path / "sd"))
    noise = noise_for(sd, 1, seed=9)
    a, _ = framework_images(sd, PROMPTS[:1], noise, 3, 2.0)
    b, _ = framework_images(loaded, PROMPTS[:1], noise, 3, 2.0)
    assert type(loaded.scheduler).__name__ == "DDIMScheduler"
    torch.testing.assert_close(a, b)


def test_images_latents_and_lora_targets(sd, sdxl):
    for backbone in (sd, sdxl):
        images = torch.rand(2, 3, backbone.height, backbone.width)
        with torch.no_grad():
            x0 = backbone.encode_images(images)
            decoded = backbone.decode(x0)
        assert x0.shape == (2, *backbone.latent_shape)
        assert decoded.shape == images.shape and 0 <= decoded.min() and decoded.max() <= 1
        names = [n for n, _ in backbone.unet.named_modules()]
        for target in backbone.lora_target_modules:
            assert any(n.endswith(target) for n in names), target
        assert not any(p.requires_grad for p in backbone.vae.parameters())
        assert all(p.requires_grad for p in backbone.unet.parameters())


def test_sdxl_encodes_and_decodes_a_float16_force_upcast_vae_in_float32():
    """The SDXL VAE overflows in float16: with ``force_upcast`` the pipelines run it in float32 to encode and to
    decode. Observed inside the encoder and decoder with forward pre-hooks; the result equals a float32 encode
    of the same (float16-representable) weights, and the VAE is float16 again afterwards."""
    from lightning_search.backbones.stable_diffusion import StableDiffusionXLBackbone

    backbone = StableDiffusionXLBackbone("tiny")
    vae = backbone.vae
    assert vae.config.force_upcast
    images = torch.rand(2, 3, backbone.height, backbone.width, generator=torch.Generator().manual_seed(0))
    backbone.to(torch.float16).to(torch.float32)  # weights rounded to float16 once, so both runs share them
    with torch.no_grad():
        reference = backbone.encode_images(images)
    backbone.to(torch.float16)
    seen = []
    hooks = [
        part.register_forward_pre_hook(
            lambda m, args, name=name: seen.append((name, args[0].dtype, m.conv_in.weight.dtype))
        )
        for name, part in (("encoder", vae.encoder), ("decoder", vae.decoder))
    ]
    try:
        with torch.no_grad():
            x0 = backbone.encode_images(images)
            decoded = backbone.decode(x0)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen == [("encoder", torch.float32, torch.float32), ("decoder", torch.float32, torch.float32)]
    assert vae.dtype == torch.float16 and all(p.dtype == torch.float16 for p in vae.parameters())
    assert x0.dtype == torch.float16  # the latents come back in the VAE's own dtype, as in the pipelines
    torch.testing.assert_close(x0.float(), reference, rtol=1e-3, atol=1e-3)
    assert decoded.dtype == torch.float32 and torch.isfinite(decoded).all()
