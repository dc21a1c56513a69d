"""Training losses; one file per objective."""

from lightning_search.objectives.base import Objective
from lightning_search.objectives.denoising import DenoisingLoss

__all__ = ["DenoisingLoss", "Objective"]
