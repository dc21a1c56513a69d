"""The CLIP analogue of the shapes world: a small contrastive image-text model, and its LightningModule.

Image tower: a small CNN (four 3x3 convolutions, three of them strided: 32 px -> 4x4 x 128, flattened so that
where things are survives) projected to ``embed_dim``. Text tower: word embeddings over the world's vocabulary
plus learned positions, a ``torch.nn.TransformerEncoder``, mean-pooled and projected. Both embeddings are
L2-normalised and compared by cosine similarity with a learned temperature, as in CLIP (Radford et al. 2021).

Trained by ``lightning-search fit --config recipes/shapes/clip.yaml`` on the world's training captions, rendered
from another image stream than the generator's (``ShapesDataModule(split="verifier")``). It is the verifier
search and RL use; the exact judge stays held out, so where the CLIP analogue is wrong (counts, which colour
belongs to which shape, unseen combinations) search can be seen to hack it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from typing_extensions import override

from lightning_search.backbones.shapes import TextEncoder, WordTokenizer, caption_of
from lightning_search.errors import CheckpointError, ConfigurationError


class ShapesClip(nn.Module):
    """images (B, 3, 32, 32) in [0, 1] and captions -> L2-normalised embeddings (B, embed_dim) each."""

    def __init__(self, embed_dim: int = 64, width: int = 32, text_width: int = 64, text_layers: int = 2,
                 image_size: int = 32, max_length: int = 12) -> None:  # fmt: skip
        super().__init__()
        from lightning_search.worlds.shapes import vocabulary

        if image_size % 8:
            raise ConfigurationError(f"the shapes CLIP needs an image size divisible by 8, got {image_size}")
        self.tokenizer = WordTokenizer(vocabulary(), max_length)
        self.image_tower = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(4 * width, 4 * width, 3, stride=2, padding=1), nn.GELU(),
            nn.Flatten(), nn.Linear(4 * width * (image_size // 8) ** 2, embed_dim),
        )  # fmt: skip
        self.text_tower = TextEncoder(len(self.tokenizer), text_width, text_layers, max_length)
        self.text_projection = nn.Linear(text_width, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_tower(images * 2 - 1), dim=-1)

    def encode_text(self, captions: Sequence[str]) -> torch.Tensor:
        ids = self.tokenizer([caption_of(c) for c in captions]).to(self.text_projection.weight.device)
        return F.normalize(self.text_projection(self.text_tower(ids)[2]), dim=-1)


def multi_positive_clip_loss(image: torch.Tensor, text: torch.Tensor, captions: Sequence[str], scale: torch.Tensor):
    """CLIP's symmetric InfoNCE where every pair with the same caption is a positive.

    The world has a few hundred captions, so a batch repeats them; open_clip's ``ClipLoss`` assumes one
    positive per row and would push an image away from its own caption's duplicates. Targets are instead
    spread evenly over the rows with an equal caption (as in supervised contrastive learning, Khosla et al.
    2020). image, text: (B, D) normalised; returns (loss, in-batch image-to-text accuracy).
    """
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    label = torch.tensor([ids[c] for c in captions], device=image.device)
    same = (label[:, None] == label[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    logits = scale.exp().clamp(max=100.0) * image @ text.T
    loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    accuracy = same.gather(1, logits.argmax(1, keepdim=True)).mean()
    return loss, accuracy


class ContrastiveModule(LightningModule):
    """Trains :class:`ShapesClip` on batches of ``image`` and ``condition`` (captions).

    Args:
        embed_dim, width, text_width, text_layers, image_size: the model's sizes (:class:`ShapesClip`).
        noise_std: Gaussian pixel noise of up to this std added to training images (a generated image is
            never as clean as a render).
        optimizer: e.g. ``torch.optim.AdamW`` with its arguments.
    """

    def __init__(
        self,
        embed_dim: int = 64,
        width: int = 32,
        text_width: int = 64,
        text_layers: int = 2,
        image_size: int = 32,
        noise_std: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer"])
        self.net = ShapesClip(embed_dim, width, text_width, text_layers, image_size)
        from lightning_search.factories import plain_callable

        self.optimizer = plain_callable(optimizer)

    @override
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images = batch["image"]
        if self.hparams.noise_std > 0:
            std = torch.rand(images.shape[0], 1, 1, 1, device=images.device) * self.hparams.noise_std
            images = (images + std * torch.randn_like(images)).clamp(0, 1)
        captions = list(batch["condition"])
        image, text = self.net.encode_image(images), self.net.encode_text(captions)
        loss, accuracy = multi_positive_clip_loss(image, text, captions, self.net.logit_scale)
        self.log_dict({"train/loss": loss, "train/accuracy": accuracy}, prog_bar=True, batch_size=len(captions))
        return loss

    @override
    def configure_optimizers(self):
        return self.optimizer(self.parameters())


def load_contrastive(path: str | Path, map_location: str | torch.device = "cpu") -> ShapesClip:
    """A trained :class:`ShapesClip` (eval mode, frozen) from a Lightning checkpoint, read weights-only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"shapes CLIP checkpoint {str(path)!r} not found; train it first with "
            "`lightning-search fit --config recipes/shapes/clip.yaml`, or point to an existing .ckpt"
        )
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    h = ckpt.get("hyper_parameters", {})
    keys = ("embed_dim", "width", "text_width", "text_layers", "image_size")
    net = ShapesClip(**{k: h[k] for k in keys if k in h})
    net.load_state_dict({k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    return net.eval().requires_grad_(False)
