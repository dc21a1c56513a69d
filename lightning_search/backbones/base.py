"""The one small interface through which sampling, search, verifiers and objectives talk to a model family.

A backbone owns its networks, its schedule (``x_t = alpha(t) x0 + sigma(t) eps``, t = 1 noise, t = 0
data), what its network predicts, how conditions are encoded (with the null condition for
classifier-free guidance) and how a clean latent becomes an image in [0, 1]. It knows nothing of search,
verifiers or Lightning.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from lightning_search.backbones.schedules import Schedule

# A batch of encoded conditions: a tensor or a (nested) dict / tuple of tensors, batch dimension first.
Cond = Any


def cond_index(cond: Cond, index: torch.Tensor | slice) -> Cond:
    """Select rows of an encoded condition batch (tensors are indexed, other leaves passed through)."""
    if isinstance(cond, torch.Tensor):
        return cond[index]
    if isinstance(cond, dict):
        return {k: cond_index(v, index) for k, v in cond.items()}
    if isinstance(cond, (tuple, list)):
        return type(cond)(cond_index(v, index) for v in cond)
    return cond


def cond_cat(conds: Sequence[Cond]) -> Cond:
    """Concatenate encoded condition batches along the batch dimension."""
    first = conds[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(conds))
    if isinstance(first, dict):
        return {k: cond_cat([c[k] for c in conds]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(cond_cat([c[i] for c in conds]) for i in range(len(first)))
    return first


def cond_repeat(cond: Cond, repeats: int) -> Cond:
    """Repeat each row ``repeats`` times in place (row i becomes rows i*repeats .. i*repeats+repeats-1)."""
    if isinstance(cond, torch.Tensor):
        return cond.repeat_interleave(repeats, dim=0)
    if isinstance(cond, dict):
        return {k: cond_repeat(v, repeats) for k, v in cond.items()}
    if isinstance(cond, (tuple, list)):
        return type(cond)(cond_repeat(v, repeats) for v in cond)
    return cond


def cond_where(mask: torch.Tensor, if_true: Cond, if_false: Cond) -> Cond:
    """Row-wise choice between two condition batches of equal size; mask: (B,) bool."""
    if isinstance(if_true, torch.Tensor):
        return torch.where(mask.view(-1, *([1] * (if_true.dim() - 1))), if_true, if_false)
    if isinstance(if_true, dict):
        return {k: cond_where(mask, if_true[k], if_false[k]) for k in if_true}
    if isinstance(if_true, (tuple, list)):
        return type(if_true)(cond_where(mask, a, b) for a, b in zip(if_true, if_false))
    return if_true


def cond_batch_size(cond: Cond) -> int:
    """The batch size of an encoded condition batch (its first tensor leaf's first dimension)."""
    if isinstance(cond, torch.Tensor):
        return cond.shape[0]
    leaves = cond.values() if isinstance(cond, dict) else cond
    for leaf in leaves:
        if isinstance(leaf, (torch.Tensor, dict, tuple, list)):
            return cond_batch_size(leaf)
    raise ValueError("an encoded condition batch holds no tensor")


class Backbone(nn.Module, ABC):
    """A denoising network with its schedule, condition encoder and decoder.

    Subclasses set ``schedule``, ``prediction_type`` (one of ``schedules.PREDICTION_TYPES``) and
    ``lora_target_modules``, and implement the abstract methods.
    """

    schedule: Schedule
    prediction_type: str
    lora_target_modules: list[str] = []
    condition_dropout: float = 0.0  # training-time probability of the null condition, for CFG

    @property
    @abstractmethod
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one sample's latent, e.g. (1, 8, 8) for digits or (4, 64, 64) for SD at 512 px."""

    @abstractmethod
    def encode_conditions(self, conditions: Sequence[Any] | torch.Tensor) -> Cond:
        """Raw conditions (class ids, prompts) -> an encoded batch the network takes."""

    @abstractmethod
    def null_conditions(self, cond: Cond) -> Cond:
        """The unconditional batch matching ``cond`` (same batch size), for classifier-free guidance."""

    @abstractmethod
    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        """One network evaluation. x_t: (B, *latent_shape); t: (B,) in [0, 1] -> output of prediction_type."""

    @abstractmethod
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Clean latents (B, *latent_shape) -> images (B, C, H, W) in [0, 1]."""

    @abstractmethod
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> clean latents x0 (B, *latent_shape): the inverse of decode."""

    def drop_conditions(self, cond: Cond, generator: torch.Generator | None = None) -> Cond:
        """Replace each row by the null condition with probability ``condition_dropout`` (CFG training)."""
        if self.condition_dropout <= 0:
            return cond
        size = cond_batch_size(cond)
        device = next(self.parameters()).device
        drop = torch.rand(size, generator=generator, device=device) < self.condition_dropout
        return cond_where(drop, self.null_conditions(cond), cond)

    def to_x0_eps(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """The network output as an (x0, eps) pair, through the schedule."""
        return self.schedule.to_x0_eps(output, x_t, t, self.prediction_type)

    def combine_guidance(self, cond_out: torch.Tensor, uncond_out: torch.Tensor, scale: float) -> torch.Tensor:
        """Classifier-free guidance on the network output (Ho & Salimans 2022): u + w (c - u).

        Backbones whose pipelines do more (guidance rescale, SDXL) override this.
        """
        return uncond_out + scale * (cond_out - uncond_out)


@runtime_checkable
class SchedulerDriven(Protocol):
    """A backbone that can also be sampled through its diffusers pipeline's own scheduler
    (``Sampler(solver="scheduler")``, ``sampling/scheduler.py``); ``PipelineBackbone`` implements it."""

    @property
    def scheduler(self) -> Any:
        """The pipeline's scheduler: a template, copied fresh for every sampler call."""

    def set_timesteps(self, scheduler: Any, num_inference_steps: int, device: torch.device | None = None) -> None:
        """``scheduler.set_timesteps`` exactly as the pipeline calls it (sigmas, shift, ``mu``)."""

    def scheduler_times(self, scheduler: Any) -> list[float]:
        """The times t of ``scheduler.timesteps`` in the one convention, then the terminal time 0."""

    def call_network(self, x: torch.Tensor, timestep: torch.Tensor, cond: Cond) -> torch.Tensor:
        """One network call as the pipeline makes it, on the scheduler-scaled input at the scheduler's timestep."""
