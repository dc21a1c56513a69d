"""FLUX.1-dev and FLUX.1-schnell (FluxTransformer2DModel, CLIP + T5 text encoders, a 16-channel VAE).

Rectified flow: ``x_t = (1 - t) x0 + t eps`` (FlowSchedule, t = sigma) and the network predicts the
velocity ``eps - x0``. The pipeline's sampling grid is ``FlowMatchEulerDiscreteScheduler`` on
``linspace(1, 1/n, n)``, shifted by ``mu`` computed from the image's token count (dev; schnell uses no shift).
Latents are kept unpacked, (C, H/8, W/8) as the VAE makes them (so noise, re-noising and decoding are plain
tensors); they are packed into 2 x 2 patches around each network call, as the pipeline packs them.
``scheduler`` swaps in DPM-Solver++ or UniPC on flow sigmas, dev's dynamic shift included (``backbones/flow.py``):
FluxPipeline runs them too, except DPM-Solver++ on schnell's fixed shift (the pipeline always passes ``mu``,
which that solver takes only under ``use_dynamic_shifting``); the backbone passes it only then.

Guidance: FLUX.1-dev is guidance-distilled: its guidance scale is an *input* of the network (``guidance``
here, 3.5 by default as in the pipeline), not classifier-free guidance; keep the sampler's
``guidance_scale`` at 1 (1 NFE per step). A sampler ``guidance_scale`` > 1 runs true CFG against the negative
prompt ("" if none), the pipeline's ``true_cfg_scale``. schnell ignores ``guidance``.

Real models (GPU, bfloat16: ~33 GB for dev with both text encoders on the GPU):
    FluxBackbone("black-forest-labs/FLUX.1-dev", torch_dtype="bfloat16", height=1024, width=1024)
    FluxBackbone("black-forest-labs/FLUX.1-schnell", torch_dtype="bfloat16", max_sequence_length=256)
"""

from __future__ import annotations

from typing import Unpack

import numpy as np
import torch

from lightning_search.backbones.base import Cond
from lightning_search.backbones.flow import FlowPipelineBackbone
from lightning_search.backbones.loading import PipelineLoading
from lightning_search.backbones.tiny import tiny_flux_dev_pipeline, tiny_flux_schnell_pipeline


class FluxBackbone(FlowPipelineBackbone):
    """FLUX.1 (``FluxPipeline``).

    Args:
        pretrained: hub id or folder of a FluxPipeline, ``tiny`` (dev-like) or ``tiny-schnell``.
        guidance: the distilled guidance scale fed to FLUX.1-dev's guidance embedding (the pipeline's
            ``guidance_scale``); ignored by schnell.
        height, width: image size (default 1024; multiples of 16).
        max_sequence_length: T5 tokens (512 for dev, 256 for schnell, as in the model cards).
        scheduler: replace the pipeline's scheduler: flow_match_euler, dpmsolver++ or unipc (the last two on
            flow sigmas, with the resolution-dependent shift where the scheduler config has it); None keeps it.
        torch_dtype, variant, revision, local_files_only: passed to ``from_pretrained``.
    """

    pipeline_classes = ("FluxPipeline",)
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
        scheduler: str | None = None,
        **loading: Unpack[PipelineLoading],
    ) -> None:
        self._build(locals())

    @property
    def patch_size(self) -> int:
        """FLUX packs 2 x 2 latent pixels into one token (its transformer's own patch_size is 1)."""
        return 2

    @property
    def latent_shape(self) -> tuple[int, ...]:
        f = self.vae_scale_factor
        return (self.transformer.config.in_channels // 4, self.height // f, self.width // f)

    def pipeline_sigmas(self, num_inference_steps: int) -> np.ndarray:
        """FluxPipeline's grid before the shift: ``linspace(1, 1/n, n)``."""
        return np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)

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
        timestep = self._batch_timestep(timestep, x).to(dtype)
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
