"""Training objectives: a loss of (backbone, batch) with its logs. Batches hold ``image`` and ``condition``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Generator

from lightning_search.backbones.base import Backbone
from lightning_search.errors import ConfigurationError

Logs = dict[str, torch.Tensor]
LossAndLogs = tuple[torch.Tensor, Logs]
Batch = dict[str, Any]


class Objective(ABC):
    """A training loss. ``reference`` is the frozen reference model where the objective needs one (DPO).

    ``generator`` is where every random draw of the loss comes from (times, noises, condition dropout):
    ``DiffusionModule`` seeds one per training step from (seed, step, batch, rank), so that a fit stopped
    and resumed draws exactly what an uninterrupted one draws. None: torch's global generator.
    """

    needs_reference: bool = False

    def __call__(
        self,
        backbone: Backbone,
        batch: Batch,
        reference: Backbone | None = None,
        generator: Generator | None = None,
    ) -> LossAndLogs:
        """-> (scalar loss, {name: scalar tensor} to log); refuses to run without the reference it needs."""
        if self.needs_reference and reference is None:
            raise ConfigurationError(
                f"{type(self).__name__} needs a reference model: train through DiffusionModule (LoRA adapters "
                "disabled, or a frozen copy for a full fine-tune), or pass reference= yourself"
            )
        return self.loss(backbone, batch, reference, generator)

    @abstractmethod
    def loss(
        self, backbone: Backbone, batch: Batch, reference: Backbone | None, generator: Generator | None
    ) -> LossAndLogs:
        """The loss and its logs; ``reference`` is never None when ``needs_reference`` is set."""
