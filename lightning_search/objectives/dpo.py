"""Diffusion-DPO (Wallace et al. 2023, "Diffusion Model Alignment Using Direct Preference Optimization").

Preference batches (the schema every preference DataModule yields)::

    {"image_w": (B, C, H, W) in [0, 1]   the preferred image of each pair,
     "image_l": (B, C, H, W) in [0, 1]   the other one,
     "condition": list of B conditions   (prompts, class ids, ...)}

Winner and loser of a pair share the time t and the noise eps. With L the per-sample denoising MSE (mean over
elements, :meth:`DenoisingLoss.per_sample_loss`) of the trained model and L_ref that of the frozen reference:

    h = -beta / 2 * ((L_w - L_l) - (L_ref_w - L_ref_l))

``sigmoid``: -log sigmoid(h) (the paper's Eq. 14, as diffusers' ``train_diffusion_dpo.py``); ``hinge``:
max(0, 1 - h) (SLiC); ``ipo``: (h / beta - 1 / (2 beta))^2 (Azar et al. 2023, IPO with the log-ratio
difference h / beta). Logged: implicit accuracy (h > 0), the implicit rewards of winner and loser
-beta/2 (L - L_ref) and their margin (= h), and a KL proxy: the mean squared difference of the model's and the
reference's outputs at the same x_t (the KL between their Gaussian reverse steps, up to the time weight).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Generator
from typing_extensions import override

from lightning_search.backbones.base import Backbone, Cond, cond_cat
from lightning_search.errors import ConfigurationError
from lightning_search.objectives.base import Batch, LossAndLogs, Objective
from lightning_search.objectives.denoising import DenoisingLoss

LOSS_TYPES = ("sigmoid", "hinge", "ipo")


def preference_loss(h: torch.Tensor, beta: float, loss_type: str) -> torch.Tensor:
    """Per-pair loss of the scaled implicit reward margin h = -beta/2 ((L_w - L_l) - (L_ref_w - L_ref_l)): (B,)."""
    if loss_type == "sigmoid":
        return -F.logsigmoid(h)
    if loss_type == "hinge":
        return torch.relu(1 - h)
    if loss_type == "ipo":
        return (h / beta - 1 / (2 * beta)) ** 2
    raise ConfigurationError(f"unknown DPO loss_type {loss_type!r}; valid: {', '.join(LOSS_TYPES)}")


def _check_batch(batch: dict[str, Any]) -> None:
    missing = [k for k in ("image_w", "image_l", "condition") if k not in batch]
    if missing:
        raise ConfigurationError(
            f"a preference batch needs image_w, image_l and condition; this one lacks {', '.join(missing)} "
            "(use lightning_search.data.PreferenceDataModule, not an image DataModule, with DPO / SFT)"
        )


class DiffusionDPO(Objective):
    """The Diffusion-DPO loss against a frozen reference model.

    Args:
        beta: the KL weight beta (the paper: 5000 for SD 1.5 and SDXL with the per-sample MSE as a mean over
            latent elements; under Adam the learning rate x steps matters more than beta).
        loss_type: ``sigmoid`` (DPO), ``hinge`` or ``ipo``.
        time_sampling, t_min: as :class:`DenoisingLoss` (t is shared by winner and loser).
        drop_conditions: replace conditions by the null one at the backbone's ``condition_dropout`` rate (for
            classifier-free guidance); off by default, as in the paper's training code.
    """

    needs_reference = True

    def __init__(
        self,
        beta: float = 5000.0,
        loss_type: Literal["sigmoid", "hinge", "ipo"] = "sigmoid",
        time_sampling: Literal["uniform", "logit_normal"] = "uniform",
        t_min: float = 1e-3,
        drop_conditions: bool = False,
    ) -> None:
        if loss_type not in LOSS_TYPES:
            raise ConfigurationError(f"unknown DPO loss_type {loss_type!r}; valid: {', '.join(LOSS_TYPES)}")
        if beta <= 0:
            raise ConfigurationError(f"DPO beta must be > 0, got {beta}")
        self.beta, self.loss_type, self.drop = beta, loss_type, drop_conditions
        self.noise = DenoisingLoss(time_sampling, t_min)

    @staticmethod
    def outputs_and_targets(
        backbone: Backbone, x0: torch.Tensor, cond: Cond, t: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(network output, regression target), both (B, *latent) float32: the terms of ``per_sample_loss``."""
        x_t = backbone.schedule.add_noise(x0, eps, t)
        target = backbone.schedule.target(x0, eps, t, backbone.prediction_type)
        return backbone(x_t, t, cond).float(), target.float()

    def losses(
        self, backbone: Backbone, reference: Backbone, batch: dict[str, Any], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (L_w, L_l, L_ref_w, L_ref_l, KL proxy per pair), each (B,); winner and loser in one batch of 2B."""
        _check_batch(batch)
        x_w, x_l = backbone.encode_images(batch["image_w"]), backbone.encode_images(batch["image_l"])
        cond = backbone.encode_conditions(batch["condition"])
        if self.drop:
            cond = backbone.drop_conditions(cond, generator)
        b = x_w.shape[0]
        t = self.noise.sample_time(b, x_w.device, generator)
        eps = torch.empty_like(x_w).normal_(generator=generator)  # randn_like's memory layout
        x0, cond2, t2, eps2 = torch.cat([x_w, x_l]), cond_cat([cond, cond]), torch.cat([t, t]), torch.cat([eps, eps])
        out, target = self.outputs_and_targets(backbone, x0, cond2, t2, eps2)
        with torch.no_grad():
            ref_out, _ = self.outputs_and_targets(reference, x0, cond2, t2, eps2)
        model = (out - target).pow(2).flatten(1).mean(1)
        ref = (ref_out - target).pow(2).flatten(1).mean(1)
        kl = (out.detach() - ref_out).pow(2).flatten(1).mean(1)
        return model[:b], model[b:], ref[:b], ref[b:], 0.5 * (kl[:b] + kl[b:])

    @override
    def loss(
        self, backbone: Backbone, batch: Batch, reference: Backbone | None, generator: Generator | None
    ) -> LossAndLogs:
        l_w, l_l, ref_w, ref_l, kl = self.losses(backbone, reference, batch, generator)
        h = -0.5 * self.beta * ((l_w - l_l) - (ref_w - ref_l))
        loss = preference_loss(h, self.beta, self.loss_type).mean()
        reward_w = (-0.5 * self.beta * (l_w - ref_w)).detach()
        reward_l = (-0.5 * self.beta * (l_l - ref_l)).detach()
        return loss, {
            "loss": loss.detach(),
            "implicit_acc": (h > 0).float().mean().detach(),
            "reward_w": reward_w.mean(),
            "reward_l": reward_l.mean(),
            "reward_margin": (reward_w - reward_l).mean(),
            "kl": kl.mean(),
            "mse_w": l_w.detach().mean(),
            "mse_l": l_l.detach().mean(),
        }
