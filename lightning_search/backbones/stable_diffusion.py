"""Stable Diffusion 1.x / 2.x and SDXL (UNet2DConditionModel, CLIP text encoders, AutoencoderKL).

Both are variance-preserving epsilon- (or v-) prediction models on diffusers' discrete timesteps, mapped to
the one time convention by ``t = (k + 1) / T``. Prompt encoding, SDXL's second text encoder, pooled
embeddings and micro-conditioning (``add_time_ids``), guidance rescale and VAE decoding are the pipeline's
own methods, so the framework's samples are the pipeline's (tests/backbones/test_stable_diffusion.py).

Real models (GPU):
    StableDiffusionBackbone("stable-diffusion-v1-5/stable-diffusion-v1-5", torch_dtype="float16")
    StableDiffusionXLBackbone("stabilityai/stable-diffusion-xl-base-1.0", torch_dtype="float16", variant="fp16",
                              vae="madebyollin/sdxl-vae-fp16-fix")
    StableDiffusionXLBackbone(..., unet="mhdang/dpo-sdxl-text2image-v1")   # Diffusion-DPO SDXL (Wallace et al.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from lightning_search.backbones.base import Cond
from lightning_search.backbones.pipeline import (
    PipelineBackbone,
    load_component,
    tiny_clip_text_config,
    tiny_clip_tokenizer,
    tiny_vae,
)
from lightning_search.errors import ConfigurationError


def _tiny_scheduler():
    from diffusers import DDIMScheduler

    # SD's training schedule and inference spacing (scaled_linear betas, "leading" timesteps, offset 1)
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def tiny_sd_pipeline():
    """A random StableDiffusionPipeline at 32 x 32 px (latents 4 x 16 x 16), ~1 M parameters."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(**tiny_clip_text_config(tokenizer, 32)))
    return StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_tiny_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_sdxl_pipeline():
    """A random StableDiffusionXLPipeline at 32 x 32 px with both text encoders and micro-conditioning."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = tiny_clip_tokenizer()
    tokenizer_2 = tiny_clip_tokenizer(pad_token="!")  # SDXL's second tokenizer pads with "!"
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six time ids x 8 + pooled text (projection_dim)
        cross_attention_dim=64,  # both encoders' hidden states concatenated (32 + 32)
        norm_num_groups=8,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    return StableDiffusionXLPipeline(
        vae=tiny_vae(force_upcast=True),
        text_encoder=CLIPTextModel(CLIPTextConfig(**tiny_clip_text_config(tokenizer, 32))),
        text_encoder_2=CLIPTextModelWithProjection(
            CLIPTextConfig(**tiny_clip_text_config(tokenizer_2, 32, projection_dim=32))
        ),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )


def rescale_noise_cfg(noise_cfg: torch.Tensor, noise_pred_text: torch.Tensor, guidance_rescale: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
    Sec. 3.4), the diffusers pipelines' function."""
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg as rescale

    return rescale(noise_cfg, noise_pred_text, guidance_rescale=guidance_rescale)


@contextmanager
def upcast_vae(vae) -> Iterator[bool]:
    """Run the block with the VAE in float32 if it is float16 with ``force_upcast`` (SDXL's VAE overflows in
    float16), then cast it back, even on error; yields whether it upcast. The SDXL pipelines do the same around
    decoding (``upcast_vae`` in ``__call__``) and encoding (``_encode_vae_image`` of img2img / inpainting), and
    diffusers' SDXL training scripts keep that VAE in float32 to encode."""
    upcast = vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
    if upcast:
        vae.to(torch.float32)
    try:
        yield upcast
    finally:
        if upcast:
            vae.to(torch.float16)


class _StableDiffusionBase(PipelineBackbone):
    guidance_rescale: float = 0.0

    def _default_size(self, height, width):
        sample_size = self.pipe.unet.config.sample_size
        default = (sample_size if isinstance(sample_size, int) else sample_size[0]) * self.vae_scale_factor
        height, width = height or default, width or default
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ConfigurationError(
                f"height and width must be multiples of {self.vae_scale_factor}, got {height}x{width}"
            )
        return height, width

    @property
    def latent_shape(self) -> tuple[int, ...]:
        f = self.vae_scale_factor
        return (self.unet.config.in_channels, self.height // f, self.width // f)

    def combine_guidance(self, cond_out: torch.Tensor, uncond_out: torch.Tensor, scale: float) -> torch.Tensor:
        """As the pipeline: u + w (c - u), then guidance rescale towards the conditional output's std."""
        out = uncond_out + scale * (cond_out - uncond_out)
        if self.guidance_rescale > 0:
            out = rescale_noise_cfg(out, cond_out, self.guidance_rescale)
        return out

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> x0 = VAE mode x scaling_factor (B, 4, H/f, W/f)."""
        return self._vae_encode(images) * self.vae.config.scaling_factor

    def _unet(self, x: torch.Tensor, timestep: torch.Tensor, pos: dict, **added: Any) -> torch.Tensor:
        if self.unet.config.time_cond_proj_dim is not None:
            raise ConfigurationError("guidance-distilled UNets (time_cond_proj_dim, LCM) are not supported")
        return self.unet(
            x.to(self.unet.dtype),
            timestep,
            encoder_hidden_states=pos["prompt_embeds"],
            added_cond_kwargs=added or None,
            return_dict=False,
        )[0]


class StableDiffusionBackbone(_StableDiffusionBase):
    """Stable Diffusion 1.x / 2.x (``StableDiffusionPipeline``).

    Args:
        pretrained: hub id or local folder of a StableDiffusionPipeline, or ``tiny`` (random, offline).
        scheduler: replace the pipeline's scheduler (ddim, euler, dpmsolver++, unipc); None keeps it.
        height, width: image size in pixels (default: the UNet's sample size x the VAE factor).
        guidance_rescale: the pipeline's ``guidance_rescale`` (0 = off; 0.7 for zero-terminal-SNR models).
        clip_skip: the pipeline's ``clip_skip``.
        torch_dtype, variant, revision, local_files_only: passed to ``from_pretrained``.
        unet: optional hub id / folder of a replacement UNet (e.g. a fine-tune), loaded from ``unet_subfolder``.
    """

    components = ("unet", "vae", "text_encoder")

    def __init__(
        self,
        pretrained: str = "tiny",
        scheduler: str | None = None,
        height: int | None = None,
        width: int | None = None,
        guidance_rescale: float = 0.0,
        clip_skip: int | None = None,
        torch_dtype: str | None = None,
        variant: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        unet: str | None = None,
        unet_subfolder: str | None = "unet",
    ) -> None:
        from diffusers import StableDiffusionPipeline

        extra = _replacement_unet(unet, unet_subfolder, torch_dtype)
        pipe = self._load(
            pretrained,
            StableDiffusionPipeline,
            torch_dtype=torch_dtype,
            variant=variant,
            revision=revision,
            local_files_only=local_files_only,
            safety_checker=None,
            requires_safety_checker=False,
            **extra,
        )
        self._setup(
            pipe,
            scheduler=scheduler,
            height=height,
            width=width,
            guidance_rescale=guidance_rescale,
            clip_skip=clip_skip,
        )

    tiny_flavours = {"tiny": tiny_sd_pipeline}

    def _setup(self, pipe, **kwargs):
        guidance_rescale = kwargs.pop("guidance_rescale", 0.0)
        clip_skip = kwargs.pop("clip_skip", None)
        super()._setup(pipe, **kwargs)
        self.guidance_rescale, self.clip_skip = guidance_rescale, clip_skip

    def encode_prompts(self, prompts: list[str], negatives: list[str | None]) -> tuple[Cond, Cond]:
        # the pipeline encodes a missing negative prompt as ""
        pos, neg = self.pipe.encode_prompt(
            prompts,
            self.device,
            1,
            True,
            [n or "" for n in negatives],
            clip_skip=self.clip_skip,
        )
        return {"prompt_embeds": pos}, {"prompt_embeds": neg}

    def call_network(self, x: torch.Tensor, timestep: torch.Tensor, cond: Cond) -> torch.Tensor:
        return self._unet(x, timestep, cond["pos"])

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 (B, 4, h, w) -> images (B, 3, H, W) in [0, 1]: ``vae.decode(x0 / scaling_factor)`` as the pipeline."""
        vae = self.vae
        image = vae.decode(x0.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
        return self._postprocess(image)


class StableDiffusionXLBackbone(_StableDiffusionBase):
    """SDXL (``StableDiffusionXLPipeline``): two text encoders, pooled embeddings, micro-conditioning.

    Args:
        pretrained: hub id or local folder of a StableDiffusionXLPipeline, or ``tiny``.
        scheduler: replace the pipeline's scheduler (ddim, euler, dpmsolver++, unipc); None keeps it.
        height, width: image size (default 1024 for SDXL: the UNet's sample size x 8).
        original_size, crops_coords_top_left, target_size: SDXL micro-conditioning (``add_time_ids``);
            None means (height, width), (0, 0), (height, width) as in the pipeline.
        guidance_rescale, clip_skip, torch_dtype, variant, revision, local_files_only: as for SD.
        unet: a replacement UNet, e.g. ``mhdang/dpo-sdxl-text2image-v1`` (Diffusion-DPO SDXL).
        vae: a replacement VAE, e.g. ``madebyollin/sdxl-vae-fp16-fix`` for float16.
    """

    components = ("unet", "vae", "text_encoder", "text_encoder_2")

    def __init__(
        self,
        pretrained: str = "tiny",
        scheduler: str | None = None,
        height: int | None = None,
        width: int | None = None,
        original_size: tuple[int, int] | None = None,
        crops_coords_top_left: tuple[int, int] = (0, 0),
        target_size: tuple[int, int] | None = None,
        guidance_rescale: float = 0.0,
        clip_skip: int | None = None,
        torch_dtype: str | None = None,
        variant: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        unet: str | None = None,
        unet_subfolder: str | None = "unet",
        vae: str | None = None,
    ) -> None:
        from diffusers import AutoencoderKL, StableDiffusionXLPipeline

        extra = _replacement_unet(unet, unet_subfolder, torch_dtype)
        if vae is not None:
            extra["vae"] = load_component(AutoencoderKL, vae, None, torch_dtype=torch_dtype)
        pipe = self._load(
            pretrained,
            StableDiffusionXLPipeline,
            torch_dtype=torch_dtype,
            variant=variant,
            revision=revision,
            local_files_only=local_files_only,
            **extra,
        )
        self._setup(
            pipe,
            scheduler=scheduler,
            height=height,
            width=width,
            original_size=original_size,
            crops_coords_top_left=crops_coords_top_left,
            target_size=target_size,
            guidance_rescale=guidance_rescale,
            clip_skip=clip_skip,
        )

    tiny_flavours = {"tiny": tiny_sdxl_pipeline}

    def _setup(self, pipe, **kwargs):
        micro = {k: kwargs.pop(k, None) for k in ("original_size", "crops_coords_top_left", "target_size")}
        guidance_rescale = kwargs.pop("guidance_rescale", 0.0)
        clip_skip = kwargs.pop("clip_skip", None)
        super()._setup(pipe, **kwargs)
        self.guidance_rescale, self.clip_skip = guidance_rescale, clip_skip
        size = (self.height, self.width)
        self.original_size = tuple(micro["original_size"] or size)
        self.crops_coords_top_left = tuple(micro["crops_coords_top_left"] or (0, 0))
        self.target_size = tuple(micro["target_size"] or size)

    def _time_ids(self, pooled: torch.Tensor) -> torch.Tensor:
        """SDXL's micro-conditioning: (1, 6) (original size, crop top-left, target size), the pipeline's own."""
        te2 = self.pipe.text_encoder_2
        projection_dim = int(pooled.shape[-1]) if te2 is None else te2.config.projection_dim
        return self.pipe._get_add_time_ids(
            self.original_size,
            self.crops_coords_top_left,
            self.target_size,
            dtype=pooled.dtype,
            text_encoder_projection_dim=projection_dim,
        ).to(pooled.device)

    def encode_prompts(self, prompts: list[str], negatives: list[str | None]) -> tuple[Cond, Cond]:
        # With force_zeros_for_empty_prompt (SDXL base) a *missing* negative prompt is all zeros, while a
        # given one (even "") is encoded: rows of the two kinds are encoded in separate pipeline calls.
        b = len(prompts)
        groups = [[i for i in range(b) if negatives[i] is None], [i for i in range(b) if negatives[i] is not None]]
        parts: dict[int, tuple] = {}
        for kind, rows in enumerate(groups):
            if not rows:
                continue
            out = self.pipe.encode_prompt(
                prompt=[prompts[i] for i in rows],
                device=self.device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=True,
                negative_prompt=None if kind == 0 else [negatives[i] for i in rows],
                clip_skip=self.clip_skip,
            )
            for j, i in enumerate(rows):
                parts[i] = tuple(o[j : j + 1] for o in out)
        pe, ne, pooled, npooled = (torch.cat([parts[i][k] for i in range(b)]) for k in range(4))
        time_ids = self._time_ids(pooled).repeat(b, 1)  # the pipeline uses the same ids for the negative half
        return (
            {"prompt_embeds": pe, "text_embeds": pooled, "time_ids": time_ids},
            {"prompt_embeds": ne, "text_embeds": npooled, "time_ids": time_ids},
        )

    def call_network(self, x: torch.Tensor, timestep: torch.Tensor, cond: Cond) -> torch.Tensor:
        pos = cond["pos"]
        return self._unet(x, timestep, pos, text_embeds=pos["text_embeds"], time_ids=pos["time_ids"])

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """As the SDXL pipeline: float32 VAE when it would overflow in float16, latents_mean/std if configured."""
        vae = self.vae
        with upcast_vae(vae):
            dtype = next(iter(vae.post_quant_conv.parameters()), next(vae.parameters())).dtype
            latents = x0.to(dtype)
            mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
            if mean is not None and std is not None:
                mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
                std = torch.tensor(std).view(1, -1, 1, 1).to(latents)
                latents = latents * std / vae.config.scaling_factor + mean
            else:
                latents = latents / vae.config.scaling_factor
            image = vae.decode(latents, return_dict=False)[0]
        return self._postprocess(image)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> x0 (B, 4, H/8, W/8) in the VAE's dtype: the posterior mode, in float32
        when the VAE would overflow in float16 (as decoding), with latents_mean/std if configured."""
        vae = self.vae
        dtype = vae.dtype
        with upcast_vae(vae):
            z = self._vae_encode(images)
        z = z.to(dtype)  # as the pipelines' _encode_vae_image: latents back in the VAE's own dtype
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean).view(1, -1, 1, 1).to(z)
            std = torch.tensor(std).view(1, -1, 1, 1).to(z)
            return (z - mean) * vae.config.scaling_factor / std
        return z * vae.config.scaling_factor


def _replacement_unet(unet: str | None, subfolder: str | None, torch_dtype: str | None) -> dict:
    if unet is None:
        return {}
    from diffusers import UNet2DConditionModel

    # DPO checkpoints ship only unet/ (in float32): no variant is passed for them
    return {"unet": load_component(UNet2DConditionModel, unet, subfolder, torch_dtype=torch_dtype)}
