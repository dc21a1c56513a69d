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
from typing import Any, Unpack

import torch

from lightning_search.backbones.base import Cond
from lightning_search.backbones.loading import PipelineLoading
from lightning_search.backbones.pipeline import PipelineBackbone
from lightning_search.backbones.tiny import tiny_dit_pipeline
from lightning_search.errors import ConfigurationError

NULL_CLASS = 1000  # DiTPipeline's unconditional label


class DiTBackbone(PipelineBackbone):
    """DiT (``DiTPipeline``).

    Args:
        pretrained: hub id or folder of a DiTPipeline (``facebook/DiT-XL-2-256``), or ``tiny``.
        scheduler: replace the pipeline's scheduler (ddim, euler, dpmsolver++, unipc); None keeps it.
        torch_dtype, variant, revision, local_files_only: passed to ``from_pretrained``.
    """

    pipeline_classes = ("DiTPipeline",)
    components = ("transformer", "vae")
    tiny_flavours = {"tiny": tiny_dit_pipeline}

    def __init__(
        self,
        pretrained: str = "tiny",
        scheduler: str | None = None,
        **loading: Unpack[PipelineLoading],
    ) -> None:
        self._build(locals())

    def _default_size(self, height, width):
        size = self.pipe.transformer.config.sample_size * self.vae_scale_factor
        return size, size  # DiT samples at its training size only

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
        timestep = self._batch_timestep(timestep, x)
        out = net(x.to(net.dtype), timestep=timestep, class_labels=cond["pos"], return_dict=False)[0]
        return self._drop_learned_variance(out, net)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """As DiTPipeline: ``vae.decode(x0 / scaling_factor)``, then ``(x / 2 + 0.5).clamp(0, 1)``."""
        vae = self.vae
        samples = vae.decode(1 / vae.config.scaling_factor * x0.to(vae.dtype), return_dict=False)[0]
        return (samples / 2 + 0.5).clamp(0, 1).float()
