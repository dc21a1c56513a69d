"""Training objectives: a loss of (backbone, batch) with its logs. Batches hold ``image`` and ``condition``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from lightning_search.backbones.base import Backbone

Logs = dict[str, torch.Tensor]


class Objective(ABC):
    """A training loss. ``reference`` is the frozen reference model where the objective needs one (DPO).

    ``generator`` is where every random draw of the loss comes from (times, noises, condition dropout):
    ``DiffusionModule`` seeds one per training step from (seed, step, batch, rank), so that a fit stopped
    and resumed draws exactly what an uninterrupted one draws. None: torch's global generator.
    """

    needs_reference: bool = False

    @abstractmethod
    def __call__(
        self,
        backbone: Backbone,
        batch: dict[str, Any],
        reference: Backbone | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, Logs]:
        """-> (scalar loss, {name: scalar tensor} to log)."""
