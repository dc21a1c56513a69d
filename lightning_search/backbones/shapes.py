"""A small text-to-image flow model for the shapes world, trained from scratch on a CPU.

Text: a word-level tokenizer over the world's vocabulary (``worlds.shapes.vocabulary``) and a small transformer
encoder (``torch.nn.TransformerEncoder``); the null caption (one ``<null>`` token) is the unconditional input of
classifier-free guidance. Image: a compact UNet in pixel space (no VAE; decode = (x + 1) / 2) that works on
2x2 pixel-unshuffled images (32 px -> 16x16 x 12 channels, as ESPCN's sub-pixel layout, Shi et al. 2016),
with two more resolutions (8x8, 4x4). Residual blocks are FiLM-modulated by the timestep plus the pooled
caption; at 8x8 and 4x4 the image attends to the caption's tokens (cross-attention, as in Stable Diffusion's
UNet) and at 4x4 to itself. Flow matching with velocity prediction, like the digits model. Sizes live in a
registry dict, as in facebookresearch/DiT's ``DiT_models``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_search.backbones.digits import timestep_embedding
from lightning_search.backbones.pixel import PixelFlowBackbone
from lightning_search.errors import ConfigurationError, lookup

PAD, NULL = "<pad>", "<null>"


@dataclass(frozen=True)
class ShapesSize:
    channels: tuple[int, int, int]  # at 16x16, 8x8, 4x4 (after the 2x2 pixel-unshuffle)
    text_width: int
    text_layers: int


SHAPES_SIZES: dict[str, ShapesSize] = {
    "shapes-xs": ShapesSize(channels=(16, 16, 16), text_width=16, text_layers=1),  # tests
    "shapes-s": ShapesSize(channels=(32, 64, 64), text_width=64, text_layers=2),  # 0.73 M, 0.066-0.068 GFLOPs per NFE
    "shapes-b": ShapesSize(channels=(56, 112, 112), text_width=64, text_layers=2),  # 2.0 M, 0.198-0.199 GFLOPs per NFE
}


class WordTokenizer:
    """Captions -> (B, max_length) word ids; 0 pads, 1 is the null caption's token, words follow (sorted)."""

    def __init__(self, words: Sequence[str], max_length: int = 12) -> None:
        self.itos = [PAD, NULL, *words]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.itos)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        ids = torch.zeros(len(texts), self.max_length, dtype=torch.long)
        for row, text in enumerate(texts):
            words = text.lower().split()
            if len(words) > self.max_length:
                raise ConfigurationError(f"caption {text!r} has {len(words)} words, more than {self.max_length}")
            for col, word in enumerate(words):
                if word not in self.stoi:
                    raise ConfigurationError(
                        f"word {word!r} of {text!r} is not in the shapes vocabulary ({', '.join(self.itos[2:])})"
                    )
                ids[row, col] = self.stoi[word]
        return ids

    def null(self, batch: int) -> torch.Tensor:
        ids = torch.zeros(batch, self.max_length, dtype=torch.long)
        ids[:, 0] = self.stoi[NULL]
        return ids


def caption_of(condition: Any) -> str:
    """A caption string, or a shapes metadata dict's ``prompt``."""
    if isinstance(condition, str):
        return condition
    if isinstance(condition, dict) and isinstance(condition.get("prompt"), str):
        return condition["prompt"]
    raise ConfigurationError(f"shapes conditions are captions or {{'prompt': caption, ...}}, got {condition!r}")


class TextEncoder(nn.Module):
    """Word ids (B, L) -> token features (B, L, D), padding mask (B, L) True at pads, pooled (B, D)."""

    def __init__(self, vocab_size: int, width: int, layers: int, max_length: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.position = nn.Parameter(torch.randn(max_length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, max(1, width // 16), 2 * width, dropout=0.0, batch_first=True,
                                           norm_first=True)  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pad = ids == 0
        h = self.norm(self.encoder(self.embed(ids) + self.position, src_key_padding_mask=pad))
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        return h, pad, (h * keep).sum(1) / keep.sum(1).clamp_min(1.0)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the second normalisation scaled and shifted by the embedding (FiLM)."""

    def __init__(self, c_in: int, c_out: int, emb: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(min(8, c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(min(8, c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.film = nn.Linear(emb, 2 * c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return self.skip(x) + h


class Attention(nn.Module):
    """Pre-norm multi-head attention of the image tokens to themselves (text None) or to the caption."""

    def __init__(self, channels: int, text_width: int | None = None) -> None:
        super().__init__()
        kdim = text_width or channels
        self.norm = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, max(1, channels // 16), kdim=kdim, vdim=kdim, batch_first=True)

    def forward(self, x: torch.Tensor, text: torch.Tensor | None = None, pad: torch.Tensor | None = None):
        b, c, h, w = x.shape
        q = x.flatten(2).transpose(1, 2)
        n = self.norm(q)
        kv = n if text is None else text
        out, _ = self.attn(n, kv, kv, key_padding_mask=pad, need_weights=False)
        return (q + out).transpose(1, 2).reshape(b, c, h, w)


class ShapesUNet(nn.Module):
    """x_t (B, 3, 32, 32), t (B,), word ids (B, L) -> velocity (B, 3, 32, 32)."""

    def __init__(self, spec: ShapesSize, vocab_size: int, max_length: int) -> None:
        super().__init__()
        c0, c1, c2 = spec.channels
        d = spec.text_width
        emb = 4 * c0
        self.text = TextEncoder(vocab_size, d, spec.text_layers, max_length)
        self.embed_t = nn.Sequential(nn.Linear(c0, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.embed_text = nn.Linear(d, emb)
        self.inp = nn.Conv2d(12, c0, 3, padding=1)
        self.down0 = ResBlock(c0, c0, emb)
        self.pool1, self.down1 = nn.Conv2d(c0, c1, 3, stride=2, padding=1), ResBlock(c1, c1, emb)
        self.cross1 = Attention(c1, d)
        self.pool2, self.mid1 = nn.Conv2d(c1, c2, 3, stride=2, padding=1), ResBlock(c2, c2, emb)
        self.self2, self.cross2, self.mid2 = Attention(c2), Attention(c2, d), ResBlock(c2, c2, emb)
        self.unpool2, self.up1 = nn.ConvTranspose2d(c2, c1, 2, stride=2), ResBlock(2 * c1, c1, emb)
        self.cross_up1 = Attention(c1, d)
        self.unpool1, self.up0 = nn.ConvTranspose2d(c1, c0, 2, stride=2), ResBlock(2 * c0, c0, emb)
        self.out_norm, self.out = nn.GroupNorm(min(8, c0), c0), nn.Conv2d(c0, 12, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # the network starts as the zero velocity
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        tokens, pad, pooled = self.text(ids)
        emb = self.embed_t(timestep_embedding(t, self.embed_t[0].in_features)) + self.embed_text(pooled)
        h0 = self.down0(self.inp(F.pixel_unshuffle(x, 2)), emb)
        h1 = self.cross1(self.down1(self.pool1(h0), emb), tokens, pad)
        h = self.mid1(self.pool2(h1), emb)
        h = self.mid2(self.cross2(self.self2(h), tokens, pad), emb)
        h = self.cross_up1(self.up1(torch.cat([self.unpool2(h), h1], dim=1), emb), tokens, pad)
        h = self.up0(torch.cat([self.unpool1(h), h0], dim=1), emb)
        return F.pixel_shuffle(self.out(F.silu(self.out_norm(h))), 2)


class ShapesBackbone(PixelFlowBackbone):
    """Text-conditional flow model on 32x32 RGB shapes scenes in [-1, 1].

    Args:
        size: a name in ``SHAPES_SIZES`` (shapes-xs for tests, shapes-s, shapes-b).
        caption_dropout: probability of the null caption in training (classifier-free guidance).
        max_length: caption length in words (the world's longest caption has 10).
        image_size: image side; the UNet needs a multiple of 8.
    """

    # modules called as modules: nn.MultiheadAttention reads out_proj.weight directly, so LoRA there would be inert
    lora_target_modules = ["film", "embed_text", "conv1", "conv2"]

    def __init__(
        self, size: str = "shapes-s", caption_dropout: float = 0.1, max_length: int = 12, image_size: int = 32
    ) -> None:
        super().__init__()
        # imported here: the data layer pulls in Lightning and the verifiers, which backbones do not need
        from lightning_search.worlds.shapes import vocabulary

        if image_size % 8:
            raise ConfigurationError(f"shapes image_size must be a multiple of 8, got {image_size}")
        spec = lookup(SHAPES_SIZES, "shapes size", size)
        self.size, self.condition_dropout, self.image_size = size, caption_dropout, image_size
        self.tokenizer = WordTokenizer(vocabulary(), max_length)
        self.net = ShapesUNet(spec, len(self.tokenizer), max_length)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (3, self.image_size, self.image_size)

    def encode_conditions(self, conditions: Sequence[Any]) -> torch.Tensor:
        device = self.net.inp.weight.device
        return self.tokenizer([caption_of(c) for c in conditions]).to(device)

    def null_conditions(self, cond: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.null(cond.shape[0]).to(cond.device)
