"""A backbone whose denoiser is exact: data drawn from a Gaussian mixture, so every quantity is in closed form.

Data ``x0 ~ sum_k w_k N(mu_k, tau^2 I)`` in a few dimensions. Under the schedule ``x_t = alpha x0 + sigma eps``
the marginal at every t is again a mixture, ``q_t = sum_k w_k N(alpha mu_k, (alpha^2 tau^2 + sigma^2) I)``,
and the posterior mean is exact:

    E[x0 | x_t] = sum_k r_k(x_t) (mu_k + alpha tau^2 / v (x_t - alpha mu_k)),   v = alpha^2 tau^2 + sigma^2,

with responsibilities ``r_k ∝ w_k N(x_t; alpha mu_k, v I)``. The network "output" in any parameterisation
(velocity, epsilon, v, x0) follows from (E[x0 | x_t], E[eps | x_t]) through the schedule. An exact denoiser
makes the probability-flow ODE carry q_1 to the data distribution, so a sampler or a search algorithm that
runs a segment at the wrong times, or re-noises at the wrong time, changes a marginal measurably
(``marginal_moments``). Used by the sampling and search tests; also a quick way to try an algorithm.

With ``scheduler=`` (a diffusers scheduler) the backbone is also :class:`SchedulerDriven`: the grid is the
scheduler's, set the way the pipelines set it (flow-matching schedulers get the FLUX / SD3 pipelines' sigmas
``linspace(1, 1/n, n)`` and the shift ``mu``), and its network is called at the scheduler's timesteps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_search.backbones.base import Backbone, Cond
from lightning_search.backbones.schedules import FlowSchedule, Schedule, VPSchedule
from lightning_search.errors import ConfigurationError


class GaussianMixtureBackbone(Backbone):
    """Exact denoiser of a Gaussian mixture (module docstring). Conditions are ignored (unconditional).

    Args:
        means: (K, D) component means mu_k.
        std: tau, the components' standard deviation.
        weights: (K,) mixture weights (default: equal).
        schedule: ``flow`` (alpha = 1 - t, sigma = t), ``vp`` (Stable Diffusion's scaled-linear schedule) or a
            :class:`Schedule`.
        prediction_type: what the "network" outputs: velocity, epsilon, v_prediction or sample.
        scheduler: optional diffusers scheduler (makes the backbone scheduler-driven); a VP scheduler's own
            ``alphas_cumprod`` then define the schedule.
        mu: the flow-matching shift of a scheduler with ``use_dynamic_shifting`` (FLUX at 1024 px: ~1.15).
    """

    def __init__(
        self,
        means: Sequence[Sequence[float]] = ((-2.0, 0.0), (2.0, 0.0)),
        std: float = 0.1,
        weights: Sequence[float] | None = None,
        schedule: str | Schedule = "flow",
        prediction_type: str = "velocity",
        scheduler: Any = None,
        mu: float | None = None,
    ) -> None:
        super().__init__()
        means_t = torch.as_tensor(means, dtype=torch.float64)
        if means_t.dim() != 2 or std <= 0:
            raise ConfigurationError(f"means must be (K, D) and std > 0, got shape {tuple(means_t.shape)}, std {std}")
        w = torch.ones(len(means_t), dtype=torch.float64) if weights is None else torch.as_tensor(weights).double()
        self.register_buffer("means", means_t)
        self.register_buffer("log_weights", (w / w.sum()).log())
        self.dummy = nn.Parameter(torch.zeros(()))  # device and dtype for the sampler; never trained
        self.std, self.prediction_type, self.mu = float(std), prediction_type, mu
        self.__dict__["_scheduler"] = scheduler
        if scheduler is not None and hasattr(scheduler, "alphas_cumprod") and schedule == "vp":
            self.schedule = VPSchedule(scheduler.alphas_cumprod)
        elif isinstance(schedule, Schedule):
            self.schedule = schedule
        else:
            self.schedule = {"flow": FlowSchedule, "vp": VPSchedule.scaled_linear}[schedule]()
        self.calls: list[tuple[float, int]] = []  # (t, rows) of every network evaluation, for tests
        self.states: list[tuple[float, torch.Tensor]] | None = None  # set to [] to also keep the inputs

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.means.shape[1],)

    # -- closed forms ---------------------------------------------------------------------------------------
    def posterior(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E[x0 | x_t], E[eps | x_t]) at times t (B,), in float64 then cast to x_t's dtype."""
        x = x_t.double()
        tt = torch.as_tensor(t, dtype=torch.float64, device=x.device).reshape(-1)
        a = self.schedule.alpha(tt).double().reshape(-1, 1)
        s = self.schedule.sigma(tt).double().reshape(-1, 1)
        v = a**2 * self.std**2 + s**2  # (B, 1)
        diff = x[:, None, :] - a[:, :, None] * self.means[None]  # (B, K, D)
        logits = self.log_weights[None] - 0.5 * (diff**2).sum(-1) / v  # (B, K)
        r = torch.softmax(logits, dim=1)
        per_component = self.means[None] + (a * self.std**2 / v)[:, :, None] * diff
        x0 = (r[:, :, None] * per_component).sum(1)
        eps = torch.where(s > 0, (x - a * x0) / s.clamp_min(1e-12), torch.zeros_like(x))
        return x0.to(x_t.dtype), eps.to(x_t.dtype)

    def marginal_moments(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (D,) and per-dimension variance (D,) of q_t in closed form."""
        tt = torch.tensor(t, dtype=torch.float64)
        a, s = float(self.schedule.alpha(tt)), float(self.schedule.sigma(tt))
        w = self.log_weights.exp()[:, None]
        mean = a * (w * self.means).sum(0)
        second = (w * (a**2 * self.means**2)).sum(0) + a**2 * self.std**2 + s**2
        return mean, second - mean**2

    def sample_marginal(self, t: float, n: int, generator: torch.Generator) -> torch.Tensor:
        """n draws of q_t (n, D): exact samples to compare a sampler's states with."""
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        x0 = self.means[k] + self.std * torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        eps = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return self.schedule.add_noise(x0, eps, torch.tensor(t, dtype=torch.float64)).float()

    def mode_of(self, x0: torch.Tensor) -> torch.Tensor:
        """The index of the nearest component mean for each sample x0 (B, D) -> (B,)."""
        return torch.cdist(x0.double(), self.means).argmin(dim=1)

    # -- the Backbone interface -------------------------------------------------------------------------------
    def encode_conditions(self, conditions: Sequence[Any] | torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(conditions), device=self.dummy.device)

    def null_conditions(self, cond: Cond) -> Cond:
        return cond

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        self.calls.append((float(t.reshape(-1)[0]), x_t.shape[0]))
        if self.states is not None:
            self.states.append((float(t.reshape(-1)[0]), x_t.detach().clone()))
        x0, eps = self.posterior(x_t, t)
        return self.schedule.target(x0, eps, t.to(x_t.dtype), self.prediction_type)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """A latent as a 1 x 1 x D "image" in [0, 1] (a logistic squash), so verifiers can score it."""
        return torch.sigmoid(x0.float())[:, None, None, :]

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        p = images[:, 0, 0, :].double().clamp(1e-6, 1 - 1e-6)
        return (p.log() - (1 - p).log()).float()

    # -- scheduler-driven (SchedulerDriven) -----------------------------------------------------------------
    @property
    def scheduler(self) -> Any:
        return self.__dict__["_scheduler"]

    def _is_flow(self, scheduler: Any) -> bool:
        return "FlowMatch" in type(scheduler).__name__

    def set_timesteps(self, scheduler: Any, num_inference_steps: int, device: torch.device | None = None) -> None:
        if self._is_flow(scheduler):
            sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
            mu = self.mu if scheduler.config.get("use_dynamic_shifting", False) else None
            scheduler.set_timesteps(num_inference_steps, device=device, sigmas=sigmas, mu=mu)
        else:
            scheduler.set_timesteps(num_inference_steps, device=device)

    def scheduler_times(self, scheduler: Any) -> list[float]:
        if self._is_flow(scheduler):
            return [float(s) for s in scheduler.sigmas]
        num_train = scheduler.config.num_train_timesteps
        return [(float(k) + 1.0) / num_train for k in scheduler.timesteps] + [0.0]

    def call_network(self, x: torch.Tensor, timestep: torch.Tensor, cond: Cond) -> torch.Tensor:
        timestep = torch.as_tensor(timestep, dtype=torch.float64)
        if self._is_flow(self.scheduler):
            t = timestep / self.scheduler.config.num_train_timesteps
        else:
            t = (timestep + 1.0) / self.scheduler.config.num_train_timesteps
        return self(x, t.expand(x.shape[0]).to(x.device), cond)
