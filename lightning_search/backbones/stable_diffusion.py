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

from typing import Any, Unpack

import torch

from lightning_search.backbones.base import Cond
from lightning_search.backbones.loading import PipelineLoading, load_component
from lightning_search.backbones.pipeline import PipelineBackbone
from lightning_search.backbones.tiny import tiny_sd_pipeline, tiny_sdxl_pipeline
from lightning_search.errors import ConfigurationError


def rescale_noise_cfg(noise_cfg: torch.Tensor, noise_pred_text: torch.Tensor, guidance_rescale: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
    Sec. 3.4), the diffusers pipelines' function."""
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg as rescale

    return rescale(noise_cfg, noise_pred_text, guidance_rescale=guidance_rescale)


class _StableDiffusionBase(PipelineBackbone):
    guidance_rescale: float = 0.0
    component_arguments = ("unet", "unet_subfolder")

    @classmethod
    def _replacements(cls, torch_dtype: str | None, **chosen: Any) -> dict[str, Any]:
        """A replacement UNet (e.g. a fine-tune), loaded from ``unet_subfolder``; DPO checkpoints ship only
        unet/ (in float32): no variant is passed for them."""
        from diffusers import AutoencoderKL, UNet2DConditionModel

        replaced = {}
        if chosen.get("unet") is not None:
            replaced["unet"] = load_component(
                UNet2DConditionModel, chosen["unet"], chosen["unet_subfolder"], torch_dtype=torch_dtype
            )
        if chosen.get("vae") is not None:
            replaced["vae"] = load_component(AutoencoderKL, chosen["vae"], None, torch_dtype=torch_dtype)
        return replaced

    def _native_size(self) -> tuple[int, int]:
        sample_size = self.pipe.unet.config.sample_size
        f = self.vae_scale_factor
        return (sample_size if isinstance(sample_size, int) else sample_size[0]) * f, f

    def combine_guidance(self, cond_out: torch.Tensor, uncond_out: torch.Tensor, scale: float) -> torch.Tensor:
        """As the pipeline: u + w (c - u), then guidance rescale towards the conditional output's std."""
        out = uncond_out + scale * (cond_out - uncond_out)
        if self.guidance_rescale > 0:
            out = rescale_noise_cfg(out, cond_out, self.guidance_rescale)
        return out

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

    pipeline_classes = ("StableDiffusionPipeline",)
    components = ("unet", "vae", "text_encoder")
    tiny_flavours = {"tiny": tiny_sd_pipeline}
    pretrained_kwargs = {"safety_checker": None, "requires_safety_checker": False}

    def __init__(
        self,
        pretrained: str = "tiny",
        scheduler: str | None = None,
        height: int | None = None,
        width: int | None = None,
        guidance_rescale: float = 0.0,
        clip_skip: int | None = None,
        unet: str | None = None,
        unet_subfolder: str | None = "unet",
        **loading: Unpack[PipelineLoading],
    ) -> None:
        self._build(locals())

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

    Decoding and encoding run the VAE in float32 when it is float16 with ``force_upcast``, as the SDXL
    pipelines do, and use the VAE's latents_mean/std where its config has them.
    """

    pipeline_classes = ("StableDiffusionXLPipeline",)
    components = ("unet", "vae", "text_encoder", "text_encoder_2")
    tiny_flavours = {"tiny": tiny_sdxl_pipeline}
    component_arguments = ("unet", "unet_subfolder", "vae")
    force_upcast_vae = True

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
        unet: str | None = None,
        unet_subfolder: str | None = "unet",
        vae: str | None = None,
        **loading: Unpack[PipelineLoading],
    ) -> None:
        self._build(locals())

    def _configure(self) -> None:
        size = (self.height, self.width)
        self.original_size = tuple(self.original_size or size)
        self.crops_coords_top_left = tuple(self.crops_coords_top_left or (0, 0))
        self.target_size = tuple(self.target_size or size)

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
