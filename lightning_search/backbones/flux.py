"""FLUX.1-dev and FLUX.1-schnell (FluxTransformer2DModel, CLIP + T5 text encoders, a 16-channel VAE).

Rectified flow: ``x_t = (1 - t) x0 + t eps`` (FlowSchedule, t = sigma) and the network predicts the
velocity ``eps - x0``. The pipeline's sampling grid is ``FlowMatchEulerDiscreteScheduler`` on
``linspace(1, 1/n, n)``, shifted by ``mu`` computed from the image's token count (dev; schnell uses no shift).
Latents are kept unpacked, (C, H/8, W/8) as the VAE makes them (so noise, re-noising and decoding are plain
tensors); they are packed into 2 x 2 patches around each network call, as the pipeline packs them.

Guidance: FLUX.1-dev is guidance-distilled: its guidance scale is an *input* of the network (``guidance``
here, 3.5 by default as in the pipeline), not classifier-free guidance; keep the sampler's
``guidance_scale`` at 1 (1 NFE per step). A sampler ``guidance_scale`` > 1 runs true CFG against the negative
prompt ("" if none), the pipeline's ``true_cfg_scale``. schnell ignores ``guidance``.

Real models (GPU, bfloat16: ~33 GB for dev with both text encoders on the GPU):
    FluxBackbone("black-forest-labs/FLUX.1-dev", torch_dtype="bfloat16", height=1024, width=1024)
    FluxBackbone("black-forest-labs/FLUX.1-schnell", torch_dtype="bfloat16", max_sequence_length=256)
"""

from __future__ import annotations

import numpy as np
import torch

from lightning_search.backbones.base import Cond
from lightning_search.backbones.pipeline import (
    PipelineBackbone,
    tiny_clip_text_config,
    tiny_clip_tokenizer,
    tiny_t5_encoder,
    tiny_t5_tokenizer,
    tiny_vae,
)
from lightning_search.backbones.schedules import FlowSchedule
from lightning_search.errors import ConfigurationError


def _tiny_flux(guidance_embeds: bool, dynamic_shift: bool):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer()
    tokenizer_2 = tiny_t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels x a 2 x 2 patch
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 4, 8),
    )
    # FLUX.1-dev's scheduler config; schnell's has a fixed shift of 1
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0 if dynamic_shift else 1.0,
        use_dynamic_shifting=dynamic_shift,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    vae = tiny_vae(latent_channels=4, use_quant_conv=False, use_post_quant_conv=False,
                   scaling_factor=0.3611, shift_factor=0.1159)  # fmt: skip
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=CLIPTextModel(CLIPTextConfig(**tiny_clip_text_config(tokenizer, 32))),
        tokenizer=tokenizer,
        text_encoder_2=tiny_t5_encoder(tokenizer_2, 32),
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


def tiny_flux_dev_pipeline():
    """A random FluxPipeline like FLUX.1-dev (guidance embedding, resolution-dependent shift), 32 x 32 px."""
    return _tiny_flux(guidance_embeds=True, dynamic_shift=True)


def tiny_flux_schnell_pipeline():
    """A random FluxPipeline like FLUX.1-schnell (no guidance embedding, no shift)."""
    return _tiny_flux(guidance_embeds=False, dynamic_shift=False)


class FluxBackbone(PipelineBackbone):
    """FLUX.1 (``FluxPipeline``).

    Args:
        pretrained: hub id or folder of a FluxPipeline, ``tiny`` (dev-like) or ``tiny-schnell``.
        guidance: the distilled guidance scale fed to FLUX.1-dev's guidance embedding (the pipeline's
            ``guidance_scale``); ignored by schnell.
        height, width: image size (default 1024; multiples of 16).
        max_sequence_length: T5 tokens (512 for dev, 256 for schnell, as in the model cards).
        torch_dtype, variant, revision, local_files_only: passed to ``from_pretrained``.
    """

    components = ("transformer", "vae", "text_encoder", "text_encoder_2")
    tiny_flavours = {"tiny": tiny_flux_dev_pipeline, "tiny-dev": tiny_flux_dev_pipeline,
                     "tiny-schnell": tiny_flux_schnell_pipeline}  # fmt: skip
    lora_target_modules = [
        "attn.to_k",
        "attn.to_q",
        "attn.to_v",
        "attn.to_out.0",
        "attn.add_k_proj",
        "attn.add_q_proj",
        "attn.add_v_proj",
        "attn.to_add_out",
        "ff.net.0.proj",
        "ff.net.2",
        "ff_context.net.0.proj",
        "ff_context.net.2",
    ]  # diffusers' train_dreambooth_lora_flux.py default

    def __init__(
        self,
        pretrained: str = "tiny",
        guidance: float = 3.5,
        height: int | None = None,
        width: int | None = None,
        max_sequence_length: int = 512,
        torch_dtype: str | None = None,
        variant: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
    ) -> None:
        from diffusers import FluxPipeline

        pipe = self._load(
            pretrained,
            FluxPipeline,
            torch_dtype=torch_dtype,
            variant=variant,
            revision=revision,
            local_files_only=local_files_only,
        )
        self._setup(pipe, height=height, width=width, guidance=guidance, max_sequence_length=max_sequence_length)

    def _setup(self, pipe, **kwargs):
        guidance = kwargs.pop("guidance", 3.5)
        max_sequence_length = kwargs.pop("max_sequence_length", 512)
        super()._setup(pipe, **kwargs)
        self.guidance, self.max_sequence_length = guidance, max_sequence_length
        self._flow = FlowSchedule()

    @property
    def schedule(self):  # type: ignore[override]
        return self._flow

    @property
    def prediction_type(self) -> str:  # type: ignore[override]
        return "velocity"

    def _default_size(self, height, width):
        default = self.pipe.default_sample_size * self.vae_scale_factor
        height, width = height or default, width or default
        multiple = 2 * self.vae_scale_factor
        if height % multiple or width % multiple:
            raise ConfigurationError(f"FLUX needs height and width multiples of {multiple}, got {height}x{width}")
        return height, width

    @property
    def latent_shape(self) -> tuple[int, ...]:
        f = self.vae_scale_factor
        return (self.transformer.config.in_channels // 4, self.height // f, self.width // f)

    # -- the scheduler grid: the pipeline's sigmas and resolution-dependent shift -------------------------
    def set_timesteps(self, scheduler, num_inference_steps: int, device=None) -> None:
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        if getattr(scheduler.config, "use_flow_sigmas", False):
            sigmas = None
        _, h, w = self.latent_shape
        config = scheduler.config
        mu = calculate_shift(
            (h // 2) * (w // 2),  # packed tokens
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        scheduler.set_timesteps(num_inference_steps, device=device, sigmas=sigmas, mu=mu)

    def scheduler_times(self, scheduler) -> list[float]:
        return [float(s) for s in scheduler.sigmas]  # t = sigma; the last is 0

    def network_timestep(self, t: torch.Tensor) -> torch.Tensor:
        return t * 1000.0  # call_network divides by 1000 as the pipeline does

    # -- conditions -----------------------------------------------------------------------------------------
    def encode_prompts(self, prompts: list[str], negatives: list[str | None]) -> tuple[Cond, Cond]:
        pe, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=self.device, max_sequence_length=self.max_sequence_length
        )
        ne, npooled, _ = self.pipe.encode_prompt(
            prompt=[n or "" for n in negatives],
            prompt_2=None,
            device=self.device,
            max_sequence_length=self.max_sequence_length,
        )
        return {"prompt_embeds": pe, "pooled": pooled}, {"prompt_embeds": ne, "pooled": npooled}

    # -- the network ------------------------------------------------------------------------------------------
    def call_network(self, x: torch.Tensor, timestep: torch.Tensor, cond: Cond) -> torch.Tensor:
        """x (B, C, h, w) unpacked; timestep = sigma x 1000 (the scheduler's) -> velocity (B, C, h, w)."""
        pos, net, pipe = cond["pos"], self.transformer, self.pipe
        b, c, h, w = x.shape
        dtype = net.dtype
        packed = pipe._pack_latents(x.to(dtype), b, c, h, w)
        img_ids = pipe._prepare_latent_image_ids(b, h // 2, w // 2, x.device, dtype)
        txt_ids = torch.zeros(pos["prompt_embeds"].shape[1], 3, device=x.device, dtype=pos["prompt_embeds"].dtype)
        timestep = torch.as_tensor(timestep, device=x.device)
        timestep = (timestep[None] if timestep.dim() == 0 else timestep).expand(b).to(dtype)
        guidance = None
        if net.config.guidance_embeds:
            guidance = torch.full([1], self.guidance, device=x.device, dtype=torch.float32).expand(b)
        out = net(
            hidden_states=packed,
            timestep=timestep / 1000,
            guidance=guidance,
            pooled_projections=pos["pooled"],
            encoder_hidden_states=pos["prompt_embeds"],
            txt_ids=txt_ids,
            img_ids=img_ids,
            joint_attention_kwargs={},
            return_dict=False,
        )[0]
        f = self.vae_scale_factor
        return pipe._unpack_latents(out, h * f, w * f, f)

    # -- images -----------------------------------------------------------------------------------------------
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 (B, C, h, w) -> images: ``vae.decode(x0 / scaling_factor + shift_factor)`` as the pipeline."""
        vae = self.vae
        latents = x0.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
        return self._postprocess(vae.decode(latents, return_dict=False)[0])

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        return (self._vae_encode(images) - vae.config.shift_factor) * vae.config.scaling_factor
