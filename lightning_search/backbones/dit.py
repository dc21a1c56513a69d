"""Class-conditional DiT on ImageNet (DiTTransformer2DModel + SD's VAE), the paper's ImageNet backbone family.

A variance-preserving epsilon model with learned variance on the linear-beta DDPM schedule; conditions are
ImageNet class ids 0..999 (or label names from the pipeline's ``id2label``); the unconditional class is 1000,
as DiTPipeline hard-codes it. Guidance acts on epsilon only (the variance half is dropped), as the pipeline.

Real models (GPU):
    DiTBackbone("facebook/DiT-XL-2-256")   # 256 px, ~2.7 GB in float32
    DiTBackbone("facebook/DiT-XL-2-512")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lightning_search.backbones.base import Cond
from lightning_search.backbones.pipeline import PipelineBackbone, tiny_vae
from lightning_search.errors import ConfigurationError

NULL_CLASS = 1000  # DiTPipeline's unconditional label


def tiny_dit_pipeline():
    """A random DiTPipeline at 32 x 32 px (latents 4 x 16 x 16), 1,000 classes plus the null class."""
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    transformer = DiTTransformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        out_channels=8,  # learned variance, as DiT-XL/2
        num_layers=2,
        num_attention_heads=2,
        attention_head_dim=8,
        num_embeds_ada_norm=1000,  # must be 1000: the pipeline's null class is 1000
        norm_type="ada_norm_zero",
    )
    # facebook/DiT-XL-2-256's scheduler config (linear betas, 1000 steps, epsilon)
    scheduler = DDIMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, clip_sample=False)
    return DiTPipeline(transformer=transformer, vae=tiny_vae(), scheduler=scheduler)


class DiTBackbone(PipelineBackbone):
    """DiT (``DiTPipeline``).

    Args:
        pretrained: hub id or folder of a DiTPipeline (``facebook/DiT-XL-2-256``), or ``tiny``.
        scheduler: replace the pipeline's scheduler (ddim, euler, dpmsolver++, unipc); None keeps it.
        torch_dtype, variant, revision, local_files_only: passed to ``from_pretrained``.
    """

    components = ("transformer", "vae")
    tiny_flavours = {"tiny": tiny_dit_pipeline}

    def __init__(
        self,
        pretrained: str = "tiny",
        scheduler: str | None = None,
        torch_dtype: str | None = None,
        variant: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
    ) -> None:
        from diffusers import DiTPipeline

        pipe = self._load(
            pretrained,
            DiTPipeline,
            torch_dtype=torch_dtype,
            variant=variant,
            revision=revision,
            local_files_only=local_files_only,
        )
        self._setup(pipe, scheduler=scheduler)

    def _default_size(self, height, width):
        size = self.pipe.transformer.config.sample_size * self.vae_scale_factor
        return size, size

    @property
    def latent_shape(self) -> tuple[int, ...]:
        config = self.transformer.config
        return (config.in_channels, config.sample_size, config.sample_size)

    def encode_conditions(self, conditions: Sequence[Any] | torch.Tensor) -> Cond:
        """Class ids 0..999 (or ImageNet label names) -> {"pos": labels (B,), "neg": null labels (B,)}."""
        labels = []
        for c in conditions.tolist() if isinstance(conditions, torch.Tensor) else conditions:
            if isinstance(c, str):
                if c not in self.pipe.labels:
                    raise ConfigurationError(
                        f"unknown ImageNet label {c!r}: this checkpoint has "
                        f"{'no label names' if not self.pipe.labels else 'names such as ' + ', '.join(list(self.pipe.labels)[:5])}; "
                        "pass class ids 0..999"
                    )
                c = self.pipe.labels[c]
            labels.append(int(c))
        pos = torch.tensor(labels, dtype=torch.long, device=self.device)
        if pos.numel() and (pos.min() < 0 or pos.max() >= NULL_CLASS):
            raise ConfigurationError(f"DiT class ids must lie in 0..{NULL_CLASS - 1}, got {labels}")
        return {"pos": pos, "neg": torch.full_like(pos, NULL_CLASS)}

    def call_network(self, x: torch.Tensor, timestep: torch.Tensor, cond: Cond) -> torch.Tensor:
        net = self.transformer
        timestep = torch.as_tensor(timestep, device=x.device)
        timestep = (timestep[None] if timestep.dim() == 0 else timestep).expand(x.shape[0])
        out = net(x.to(net.dtype), timestep=timestep, class_labels=cond["pos"], return_dict=False)[0]
        channels = net.config.in_channels
        return out[:, :channels] if net.config.out_channels // 2 == channels else out

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """As DiTPipeline: ``vae.decode(x0 / scaling_factor)``, then ``(x / 2 + 0.5).clamp(0, 1)``."""
        vae = self.vae
        samples = vae.decode(1 / vae.config.scaling_factor * x0.to(vae.dtype)).sample
        return (samples / 2 + 0.5).clamp(0, 1).float()

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self._vae_encode(images) * self.vae.config.scaling_factor
