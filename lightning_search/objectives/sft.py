"""SFT on the preferred images: the baseline of Diffusion-DPO (Wallace et al. 2023, Sec. 5 "SFT on winners").

The plain denoising loss on ``image_w`` of a preference batch (``image_w``, ``image_l``, ``condition``; see
``objectives/dpo.py``); the losers are ignored.
"""

from __future__ import annotations

from typing import Any

import torch

from lightning_search.errors import ConfigurationError
from lightning_search.objectives.denoising import DenoisingLoss


class PreferredSFT(DenoisingLoss):
    """Denoising regression on the winners of preference pairs (arguments as :class:`DenoisingLoss`)."""

    def training_images(self, batch: dict[str, Any]) -> torch.Tensor:
        """The winners ``image_w`` (B, C, H, W) in [0, 1] of a preference batch."""
        if "image_w" not in batch:
            raise ConfigurationError("SFT on preferences needs batches with image_w (a PreferenceDataModule)")
        return batch["image_w"]
