"""PixArt-Alpha and PixArt-Sigma (PixArtTransformer2DModel, a T5 text encoder, SD's VAE).

Variance-preserving epsilon models with learned variance (the second half of the output channels is
dropped, as the pipelines do); T5 prompts padded to a fixed length with an attention mask; the negative
prompt defaults to "" (PixArt-Sigma's recommendation). PixArt-Alpha at 1024 px also conditions on
resolution and aspect ratio. Sample at one of the model's aspect-ratio bins (e.g. 1024 x 1024): the
pipelines' ``use_resolution_binning`` resizes other sizes, which the framework does not do.

Real models (GPU):
    PixArtBackbone("PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", torch_dtype="bfloat16")
    PixArtBackbone("PixArt-alpha/PixArt-XL-2-1024-MS", torch_dtype="float16")     # PixArt-Alpha
"""

from __future__ import annotations

from typing import Unpack

import torch

from lightning_search.backbones.base import Cond
from lightning_search.backbones.loading import PipelineLoading
from lightning_search.backbones.pipeline import PipelineBackbone
from lightning_search.backbones.tiny import tiny_pixart_alpha_pipeline, tiny_pixart_sigma_pipeline


class PixArtBackbone(PipelineBackbone):
    """PixArt-Alpha / PixArt-Sigma (``PixArtAlphaPipeline`` / ``PixArtSigmaPipeline``, chosen by the checkpoint).

    Args:
        pretrained: hub id or folder of a PixArt pipeline, ``tiny`` (a random Sigma) or ``tiny-alpha``.
        scheduler: replace the pipeline's scheduler (ddim, euler, dpmsolver++, unipc); None keeps it.
        height, width: image size (default: the transformer's sample size x 8, e.g. 1024).
        max_sequence_length: T5 tokens (default: the pipeline's, 300 for Sigma and 120 for Alpha).
        clean_caption: the pipelines' caption cleaning (needs bs4 and ftfy; without them it is skipped, as
            the pipelines do).
        torch_dtype, variant, revision, local_files_only: passed to ``from_pretrained``.
    """

    pipeline_classes = ("PixArtSigmaPipeline", "PixArtAlphaPipeline")
    components = ("transformer", "vae", "text_encoder")
    tiny_flavours = {"tiny": tiny_pixart_sigma_pipeline, "tiny-sigma": tiny_pixart_sigma_pipeline,
                     "tiny-alpha": tiny_pixart_alpha_pipeline}  # fmt: skip

    def __init__(
        self,
        pretrained: str = "tiny",
        scheduler: str | None = None,
        height: int | None = None,
        width: int | None = None,
        max_sequence_length: int | None = None,
        clean_caption: bool = True,
        **loading: Unpack[PipelineLoading],
    ) -> None:
        self._build(locals())

    def _configure(self) -> None:
        from diffusers import PixArtSigmaPipeline

        self.is_sigma = isinstance(self.pipe, PixArtSigmaPipeline)
        self.max_sequence_length = self.max_sequence_length or (300 if self.is_sigma else 120)

    def _native_size(self) -> tuple[int, int]:
        f, config = self.vae_scale_factor, self.pipe.transformer.config
        return config.sample_size * f, f * config.patch_size

    def encode_prompts(self, prompts: list[str], negatives: list[str | None]) -> tuple[Cond, Cond]:
        pe, pm, ne, nm = self.pipe.encode_prompt(
            prompts,
            True,
            negative_prompt=[n or "" for n in negatives],  # the pipelines' default negative prompt is ""
            device=self.device,
            clean_caption=self.clean_caption,
            max_sequence_length=self.max_sequence_length,
        )
        return {"prompt_embeds": pe, "attention_mask": pm}, {"prompt_embeds": ne, "attention_mask": nm}

    def _added_cond_kwargs(self, batch: int, like: torch.Tensor) -> dict:
        """PixArt-Alpha 1024 px (sample_size 128) conditions on resolution and aspect ratio; Sigma does not."""
        if self.is_sigma or self.transformer.config.sample_size != 128:
            return {"resolution": None, "aspect_ratio": None}
        resolution = torch.tensor([self.height, self.width]).repeat(batch, 1).to(like)
        aspect_ratio = torch.tensor([float(self.height / self.width)]).repeat(batch, 1).to(like)
        return {"resolution": resolution, "aspect_ratio": aspect_ratio}

    def call_network(self, x: torch.Tensor, timestep: torch.Tensor, cond: Cond) -> torch.Tensor:
        pos, net = cond["pos"], self.transformer
        out = net(
            x.to(net.dtype),
            encoder_hidden_states=pos["prompt_embeds"],
            encoder_attention_mask=pos["attention_mask"],
            timestep=self._batch_timestep(timestep, x),
            added_cond_kwargs=self._added_cond_kwargs(x.shape[0], pos["prompt_embeds"]),
            return_dict=False,
        )[0]
        return self._drop_learned_variance(out, net)
