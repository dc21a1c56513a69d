"""HPSv2 / HPSv2.1 (Wu et al. 2023, Human Preference Score v2): open_clip ViT-H-14 fine-tuned on HPD v2;
score = cos(E_image, E_text) (``hpsv2.score``: normalised features, ``image_features @ text_features.T``,
diagonal; real values about 0.2-0.35).

Weights: ``HPS_v2_compressed.pt`` / ``HPS_v2.1_compressed.pt`` of the hub repo ``xswu/HPSv2`` (a dict with the
full CLIP ``state_dict``, read with ``torch.load(weights_only=True)``), or a local file / folder. The HPS eval
transform resizes the longest side to 224 and pads (its ``ResizeMaxSize``), which is open_clip's
``resize_mode="longest"``; for square images it equals resize + centre crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lightning_search.errors import ConfigurationError
from lightning_search.verifiers.base import Verifier
from lightning_search.verifiers.clip_models import (
    TINY,
    Preprocess,
    hub_file,
    load_open_clip,
    load_weights,
    model_dtype_device,
    unique_texts,
)

DEFAULT_REPO = "xswu/HPSv2"
HPS_FILES = {"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}


class HPSVerifier(Verifier):
    """HPS of each image for its prompt (higher is better).

    Args:
        version: ``"v2.1"`` (default, the newer release) or ``"v2.0"``.
        checkpoint: hub repo id, local folder or local file of the HPS weights; ``"tiny"`` builds a small
            random open_clip CLIP (seeded) for tests.
        clip_model: the open_clip architecture the checkpoint fits (ViT-H-14 for every HPS release).
    """

    channels = 3

    def __init__(
        self,
        version: str = "v2.1",
        checkpoint: str = DEFAULT_REPO,
        clip_model: str = "ViT-H-14",
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if version not in HPS_FILES:
            raise ConfigurationError(f"unknown HPS version {version!r}; valid: {', '.join(HPS_FILES)}")
        if checkpoint == TINY:
            self.clip, self.tokenizer = load_open_clip(TINY, seed=seed)
            self.preprocess = Preprocess(size=self.preprocess_size(), resize_mode="longest")
        else:
            # Resolve the weights first: offline, a missing checkpoint fails before building ViT-H (1B params).
            path = hub_file(checkpoint, HPS_FILES[version], cache_dir=cache_dir)
            self.clip, self.tokenizer = load_open_clip(clip_model, None, cache_dir=cache_dir)
            load_weights(self.clip, path, f"open_clip {clip_model}")
            self.preprocess = Preprocess(size=self.preprocess_size(), resize_mode="longest")
        self.clip.requires_grad_(False).eval()

    def preprocess_size(self) -> int:
        size = self.clip.visual.image_size
        return int(size if isinstance(size, int) else size[-1])

    def score(
        self, images: torch.Tensor, conditions: Sequence[Any], x0_images: torch.Tensor | None = None
    ) -> torch.Tensor:
        dtype, device = model_dtype_device(self.clip)
        image = F.normalize(self.clip.encode_image(self.preprocess(images.float()).to(dtype)).float(), dim=-1)
        texts, inverse = unique_texts(conditions)
        text = F.normalize(self.clip.encode_text(self.tokenizer(texts).to(device)).float(), dim=-1)
        return (image * text[inverse.to(device)]).sum(-1)
