"""Training losses; one file per objective."""

from lightning_search.objectives.base import Objective
from lightning_search.objectives.denoising import DenoisingLoss
from lightning_search.objectives.dpo import DiffusionDPO
from lightning_search.objectives.grpo import GRPO
from lightning_search.objectives.sft import PreferredSFT

__all__ = ["GRPO", "DenoisingLoss", "DiffusionDPO", "Objective", "PreferredSFT"]
