"""Training objectives: a loss of (backbone, batch) with its logs. Batches hold ``image`` and ``condition``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from lightning_search.backbones.base import Backbone

Logs = dict[str, torch.Tensor]


class Objective(ABC):
    """A training loss. ``reference`` is the frozen reference model where the objective needs one (DPO)."""

    needs_reference: bool = False

    @abstractmethod
    def __call__(
        self, backbone: Backbone, batch: dict[str, Any], reference: Backbone | None = None
    ) -> tuple[torch.Tensor, Logs]:
        """-> (scalar loss, {name: scalar tensor} to log)."""
