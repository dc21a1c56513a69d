"""Stable Diffusion 3 / 3.5 (SD3Transformer2DModel, two CLIP text encoders with projection + T5, a 16-channel VAE).

Rectified flow (Esser et al. 2024, "Scaling Rectified Flow Transformers"): ``x_t = (1 - t) x0 + t eps``
(FlowSchedule, t = sigma) and the MMDiT predicts the velocity ``eps - x0``. The pipeline's grid is
``FlowMatchEulerDiscreteScheduler`` with the fixed shift 3.0 of the SD3 / 3.5 scheduler configs; a scheduler
configured with ``use_dynamic_shifting`` gets the resolution-dependent ``mu`` the pipeline computes from the
image's token count. Classifier-free guidance is the pipeline's: the negative prompt ("" if none) in the same
batch, 2 NFEs per step. Prompt encoding (CLIP-L and CLIP-G hidden states concatenated and zero-padded to T5's
width, then T5's tokens after them; pooled = both CLIP projections), decoding
(``latents / scaling_factor + shift_factor``) and image post-processing are the pipeline's own methods.

``drop_t5=True`` loads the pipeline without T5 (``text_encoder_3=None``), as the pipeline allows: its T5 tokens
become zeros (``max_sequence_length`` of them), which saves ~9.5 GB at some cost in prompt following.
``scheduler`` swaps in DPM-Solver++ or UniPC on flow sigmas (``use_flow_sigmas``, ``flow_prediction``, the
pipeline's shift as ``flow_shift``), as diffusers' docs suggest for flow models.

Real models (GPU, bfloat16; weights of the transformer + T5-XXL 4.7B (~9.5 GB) + CLIP-L and CLIP-G (~1.6 GB)
+ VAE, before activations):
    StableDiffusion3Backbone("stabilityai/stable-diffusion-3.5-medium", torch_dtype="bfloat16")  # 2.5B, ~16 GB
    StableDiffusion3Backbone("stabilityai/stable-diffusion-3.5-large", torch_dtype="bfloat16")   # 8.1B, ~27 GB
    StableDiffusion3Backbone("stabilityai/stable-diffusion-3-medium-diffusers", torch_dtype="float16")  # 2B, ~15 GB
    StableDiffusion3Backbone(..., drop_t5=True)   # ~9.5 GB less (all three repositories are gated: accept the
                                                  # licence on the hub and `huggingface-cli login` first)
The model cards sample 3.5-medium with 40 steps at CFG 4.5, 3.5-large with 28 steps at CFG 3.5, 3-medium with
28 steps at CFG 7.0, all at 1024 x 1024.
"""

from __future__ import annotations

from typing import Any, Unpack

import torch

from lightning_search.backbones.base import Cond
from lightning_search.backbones.flow import FlowPipelineBackbone
from lightning_search.backbones.loading import PipelineLoading
from lightning_search.backbones.tiny import tiny_sd3_pipeline, tiny_sd35_pipeline


class StableDiffusion3Backbone(FlowPipelineBackbone):
    """Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``).

    Args:
        pretrained: hub id or folder of a StableDiffusion3Pipeline, ``tiny`` (3.5-like) or ``tiny-sd3``.
        scheduler: replace the pipeline's scheduler: flow_match_euler, dpmsolver++ or unipc (the last two on
            flow sigmas); None keeps it.
        height, width: image size (default: the transformer's sample size x 8, 1024; multiples of 16).
        max_sequence_length: T5 tokens (the pipeline's default 256).
        drop_t5: load without the T5 encoder (its tokens are zeros, as the pipeline does).
        clip_skip: the pipeline's ``clip_skip`` (applied to the prompt, not the negative, as the pipeline).
        torch_dtype, variant, revision, local_files_only: passed to ``from_pretrained``.
    """

    pipeline_classes = ("StableDiffusion3Pipeline",)
    components = ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
    tiny_flavours = {"tiny": tiny_sd35_pipeline, "tiny-sd35": tiny_sd35_pipeline, "tiny-sd3": tiny_sd3_pipeline}
    # diffusers' examples/dreambooth/train_dreambooth_lora_sd3.py default (no --lora_layers): the joint attention
    # projections of both streams (huggingface/diffusers@58eb52c, lines 1248-1260)
    lora_target_modules = [
        "attn.add_k_proj",
        "attn.add_q_proj",
        "attn.add_v_proj",
        "attn.to_add_out",
        "attn.to_k",
        "attn.to_out.0",
        "attn.to_q",
        "attn.to_v",
    ]
    component_arguments = ("drop_t5",)
    default_max_shift = 1.16  # the SD3 pipeline's (FLUX's is 1.15)

    def __init__(
        self,
        pretrained: str = "tiny",
        scheduler: str | None = None,
        height: int | None = None,
        width: int | None = None,
        max_sequence_length: int = 256,
        drop_t5: bool = False,
        clip_skip: int | None = None,
        **loading: Unpack[PipelineLoading],
    ) -> None:
        self._build(locals())

    @classmethod
    def _replacements(cls, torch_dtype: str | None, drop_t5: bool = False) -> dict[str, Any]:
        """``drop_t5``: the pipeline without T5 (``text_encoder_3=None``), as ``from_pretrained`` allows."""
        return {"text_encoder_3": None, "tokenizer_3": None} if drop_t5 else {}

    # -- conditions -----------------------------------------------------------------------------------------
    def encode_prompts(self, prompts: list[str], negatives: list[str | None]) -> tuple[Cond, Cond]:
        pe, ne, pooled, npooled = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt=[n or "" for n in negatives],  # the pipeline's default negative is ""
            clip_skip=self.clip_skip,
            max_sequence_length=self.max_sequence_length,
        )
        return {"prompt_embeds": pe, "pooled": pooled}, {"prompt_embeds": ne, "pooled": npooled}

    # -- the network ----------------------------------------------------------------------------------------
    def call_network(self, x: torch.Tensor, timestep: torch.Tensor, cond: Cond) -> torch.Tensor:
        """x (B, C, h, w); timestep = sigma x 1000 (the scheduler's), as the pipeline passes it -> velocity."""
        pos, net = cond["pos"], self.transformer
        return net(
            hidden_states=x.to(net.dtype),
            timestep=self._batch_timestep(timestep, x),
            encoder_hidden_states=pos["prompt_embeds"],
            pooled_projections=pos["pooled"],
            joint_attention_kwargs=None,
            return_dict=False,
        )[0]
