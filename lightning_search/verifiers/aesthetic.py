"""The LAION aesthetic predictor v2 ("improved aesthetic predictor", Schuhmann 2022): an MLP on the
L2-normalised CLIP ViT-L/14 image embedding, trained to regress 1-10 ratings (SAC + LOGOS + AVA). One of the
paper's text-to-image verifiers (Ma et al. 2025, Sec. 5); it ignores the prompt.

Head weights: ``sac+logos+ava1-l14-linearMSE.pth`` from github.com/christophschuhmann/improved-aesthetic-predictor,
mirrored on the hub as ``trl-lib/ddpo-aesthetic-predictor`` / ``aesthetic-model.pth`` (the file TRL's DDPO
example loads; the default here). Pass a local file or folder instead when offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_search.errors import CheckpointError
from lightning_search.verifiers.base import Verifier
from lightning_search.verifiers.clip_models import (
    TINY,
    Preprocess,
    load_hub_weights,
    load_open_clip,
    model_dtype_device,
)

DEFAULT_HEAD = "trl-lib/ddpo-aesthetic-predictor"
DEFAULT_HEAD_FILE = "aesthetic-model.pth"


class LinearStackMLP(nn.Module):
    """The aesthetic predictor's head, also ImageReward's: 5 linear layers with dropout between them and
    *no* nonlinearity (the released code comments the ReLUs out; the weights were trained that way).
    Parameter names ``layers.{0,2,4,6,7}`` match the released state dicts.

    x: (B, input_size) -> (B, 1)
    """

    def __init__(self, input_size: int = 768) -> None:
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def load_head(head: nn.Module, source: str, filename: str, prefix: str = "", cache_dir: str | None = None) -> None:
    """Load a head's weights (safetensors or weights-only torch file) from a file, a folder or a hub repo."""
    load_hub_weights(head, source, filename, f"the {type(head).__name__} head", prefix=prefix, cache_dir=cache_dir)


class AestheticVerifier(Verifier):
    """Score = the aesthetic head's rating (about 1-10) of the normalised CLIP image embedding.

    Args:
        clip_model, clip_pretrained: the CLIP image encoder (OpenAI ViT-L/14 as released); ``"tiny"`` builds a
            small random CLIP and a random head of matching width (seeded) for tests.
        head: the head weights: hub repo id, local folder, or local file.
        head_file: the file name inside the repo or folder.
    """

    channels = 3

    def __init__(
        self,
        clip_model: str = "ViT-L-14",
        clip_pretrained: str | None = "openai",
        head: str | None = DEFAULT_HEAD,
        head_file: str = DEFAULT_HEAD_FILE,
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        clip, _ = load_open_clip(clip_model, clip_pretrained, cache_dir=cache_dir, seed=seed)
        self.visual = clip.visual
        self.preprocess = Preprocess.from_open_clip(clip)
        embed_dim = int(clip.visual.output_dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = LinearStackMLP(embed_dim)
        if clip_model != TINY:
            if head is None:
                raise CheckpointError("AestheticVerifier needs head= (hub id, folder or file) for real CLIP weights")
            load_head(self.head, head, head_file, cache_dir=cache_dir)
        self.requires_grad_(False).eval()

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1] -> L2-normalised CLIP image embeddings (B, D) in the model dtype."""
        dtype, _ = model_dtype_device(self.visual)
        return F.normalize(self.visual(self.preprocess(images.float()).to(dtype)), dim=-1)

    def score(
        self, images: torch.Tensor, conditions: Sequence[Any], x0_images: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.head(self.embed(images)).squeeze(-1)
