"""The embedded default: a small SiT-style class-conditional flow model on sklearn's 8x8 digits.

An adaLN-Zero residual MLP (DiT / SiT's conditioning on a flattened image): the timestep and class
embeddings modulate each block's normalisation, and every block starts as the identity. Sizes live in a
registry dict, as in facebookresearch/DiT's ``DiT_models``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lightning_search.backbones.pixel import PixelFlowBackbone
from lightning_search.errors import lookup


@dataclass(frozen=True)
class DigitsSize:
    width: int
    depth: int
    mlp_ratio: int


DIGITS_SIZES: dict[str, DigitsSize] = {
    "digits-xs": DigitsSize(width=32, depth=2, mlp_ratio=2),  # ~25k parameters: tests
    "digits-s": DigitsSize(width=64, depth=2, mlp_ratio=2),  # ~84k
    "digits-m": DigitsSize(width=128, depth=2, mlp_ratio=2),  # ~315k: the recipes' default
    "digits-l": DigitsSize(width=192, depth=3, mlp_ratio=2),  # ~950k
}


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled to 0..1000 as in DiT's TimestepEmbedder)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class AdaLNBlock(nn.Module):
    """Residual MLP block whose LayerNorm is shifted, scaled and gated by the condition (adaLN-Zero)."""

    def __init__(self, width: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width * mlp_ratio), nn.SiLU(), nn.Linear(width * mlp_ratio, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(c).chunk(3, dim=-1)
        return h + gate * self.mlp(self.norm(h) * (1 + scale) + shift)


class DigitsFlowNet(nn.Module):
    """x_t (B, 1, 8, 8), t (B,), labels (B,) with ``num_classes`` as the null label -> velocity (B, 1, 8, 8)."""

    def __init__(self, width: int, depth: int, mlp_ratio: int, num_classes: int = 10, pixels: int = 64) -> None:
        super().__init__()
        self.width = width
        self.embed_x = nn.Linear(pixels, width)
        self.embed_t = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.embed_y = nn.Embedding(num_classes + 1, width)
        self.blocks = nn.ModuleList(AdaLNBlock(width, mlp_ratio) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, pixels)
        for zero in (self.final_modulation[1], self.out):
            nn.init.zeros_(zero.weight)
            nn.init.zeros_(zero.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        c = self.embed_t(timestep_embedding(t, self.width)) + self.embed_y(labels)
        h = self.embed_x(x.flatten(1))
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_modulation(c).chunk(2, dim=-1)
        return self.out(self.final_norm(h) * (1 + scale) + shift).view_as(x)


class DigitsBackbone(PixelFlowBackbone):
    """Class-conditional flow model on 8x8 digits in [-1, 1].

    Args:
        size: a name in ``DIGITS_SIZES`` (digits-xs, digits-s, digits-m, digits-l).
        num_classes: number of class labels; label ``num_classes`` is the null (unconditional) label.
        label_dropout: probability of replacing the label by the null label in training (for CFG).
    """

    lora_target_modules = ["embed_x", "mlp.0", "mlp.2", "modulation.1", "final_modulation.1", "out"]

    def __init__(self, size: str = "digits-m", num_classes: int = 10, label_dropout: float = 0.1) -> None:
        super().__init__()
        spec = lookup(DIGITS_SIZES, "digits size", size)
        self.size, self.num_classes, self.condition_dropout = size, num_classes, label_dropout
        self.net = DigitsFlowNet(spec.width, spec.depth, spec.mlp_ratio, num_classes)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (1, 8, 8)

    def encode_conditions(self, conditions: Sequence[int] | torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(conditions, dtype=torch.long, device=self.net.embed_y.weight.device)
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"digit labels must lie in 0..{self.num_classes - 1}, got {labels.tolist()}")
        return labels

    def null_conditions(self, cond: torch.Tensor) -> torch.Tensor:
        return torch.full_like(cond, self.num_classes)
