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

import torch

from lightning_search.backbones.base import Cond
from lightning_search.backbones.pipeline import (
    PipelineBackbone,
    load_pipeline,
    resolve_dtype,
    tiny_modules,
    tiny_t5_encoder,
    tiny_t5_tokenizer,
    tiny_vae,
)
from lightning_search.errors import CheckpointError, ConfigurationError, lookup


def _tiny_pixart(pipeline_name: str):
    import diffusers
    from diffusers import DPMSolverMultistepScheduler, PixArtTransformer2DModel

    tokenizer = tiny_t5_tokenizer()
    transformer = PixArtTransformer2DModel(
        sample_size=16,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=16,
        out_channels=8,  # learned variance, as the real models
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )
    # PixArt's published scheduler: DPM-Solver++ (2nd order) on the linear-beta DDPM schedule
    scheduler = DPMSolverMultistepScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02)
    return getattr(diffusers, pipeline_name)(
        tokenizer=tokenizer,
        text_encoder=tiny_t5_encoder(tokenizer, 32),
        vae=tiny_vae(),
        transformer=transformer,
        scheduler=scheduler,
    )


def tiny_pixart_sigma_pipeline():
    """A random PixArtSigmaPipeline at 32 x 32 px (latents 4 x 16 x 16)."""
    return _tiny_pixart("PixArtSigmaPipeline")


def tiny_pixart_alpha_pipeline():
    """A random PixArtAlphaPipeline at 32 x 32 px."""
    return _tiny_pixart("PixArtAlphaPipeline")


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
        torch_dtype: str | None = None,
        variant: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
    ) -> None:
        from diffusers import DiffusionPipeline, PixArtAlphaPipeline, PixArtSigmaPipeline

        if pretrained.startswith("tiny"):
            pipe = tiny_modules(lookup(self.tiny_flavours, "tiny PixArt flavour", pretrained))
            dtype = resolve_dtype(torch_dtype)
            pipe = pipe.to(dtype=dtype) if dtype is not None else pipe
        else:
            pipe = load_pipeline(
                DiffusionPipeline,
                pretrained,
                torch_dtype=torch_dtype,
                variant=variant,
                revision=revision,
                local_files_only=local_files_only,
            )
            if not isinstance(pipe, (PixArtAlphaPipeline, PixArtSigmaPipeline)):
                raise CheckpointError(f"{pretrained!r} holds a {type(pipe).__name__}, not a PixArt pipeline")
        self._setup(
            pipe,
            scheduler=scheduler,
            height=height,
            width=width,
            max_sequence_length=max_sequence_length,
            clean_caption=clean_caption,
        )

    def _setup(self, pipe, **kwargs):
        from diffusers import PixArtSigmaPipeline

        max_sequence_length = kwargs.pop("max_sequence_length", None)
        self.clean_caption = kwargs.pop("clean_caption", True)
        super()._setup(pipe, **kwargs)
        self.is_sigma = isinstance(pipe, PixArtSigmaPipeline)
        self.max_sequence_length = max_sequence_length or (300 if self.is_sigma else 120)

    def _default_size(self, height, width):
        f = self.vae_scale_factor
        default = self.pipe.transformer.config.sample_size * f
        height, width = height or default, width or default
        multiple = f * self.pipe.transformer.config.patch_size
        if height % multiple or width % multiple:
            raise ConfigurationError(f"height and width must be multiples of {multiple}, got {height}x{width}")
        return height, width

    @property
    def latent_shape(self) -> tuple[int, ...]:
        f = self.vae_scale_factor
        return (self.transformer.config.in_channels, self.height // f, self.width // f)

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
        pos = cond["pos"]
        net = self.transformer
        timestep = torch.as_tensor(timestep, device=x.device)
        timestep = (timestep[None] if timestep.dim() == 0 else timestep).expand(x.shape[0])
        out = net(
            x.to(net.dtype),
            encoder_hidden_states=pos["prompt_embeds"],
            encoder_attention_mask=pos["attention_mask"],
            timestep=timestep,
            added_cond_kwargs=self._added_cond_kwargs(x.shape[0], pos["prompt_embeds"]),
            return_dict=False,
        )[0]
        if net.config.out_channels // 2 == net.config.in_channels:  # learned variance: keep epsilon
            out = out.chunk(2, dim=1)[0]
        return out

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        image = vae.decode(x0.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
        return self._postprocess(image)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self._vae_encode(images) * self.vae.config.scaling_factor
