"""What the rectified-flow families (FLUX.1, SD3 / 3.5) share: the schedule, the sampling grid and its shift,
and the one scheduler swap that keeps a flow model on flow sigmas.

Rectified flow: ``x_t = (1 - t) x0 + t eps`` (:class:`FlowSchedule`, t = sigma) and the network predicts the
velocity ``eps - x0``; the scheduler's timestep is ``sigma x num_train_timesteps``. Both pipelines sample with
``FlowMatchEulerDiscreteScheduler`` and, under ``use_dynamic_shifting``, shift its grid by ``mu``, linear in
the image's token count (``calculate_shift``, the same function in both pipelines).

Scheduler swap: ``flow_match_euler``, or DPM-Solver++ / UniPC on flow sigmas (``use_flow_sigmas``,
``prediction_type="flow_prediction"``, the pipeline's shift as ``flow_shift``), as diffusers' docs suggest for
flow models; ``use_dynamic_shifting`` carries over, and both solvers then take ``mu`` (``flow_shift = exp(mu)``).
A VP scheduler (ddim, euler, ...) would integrate the wrong ODE and is refused.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch

from lightning_search.backbones.pipeline import SCHEDULER_NAMES, PipelineBackbone, make_scheduler
from lightning_search.backbones.schedules import FlowSchedule
from lightning_search.errors import lookup

# Schedulers that integrate a flow model (names of SCHEDULER_NAMES): the pipelines' own, or multistep solvers
# on flow sigmas.
FLOW_SCHEDULERS = ("flow_match_euler", "dpmsolver++", "unipc")


def flow_scheduler(name: str, config: Any):
    """A flow scheduler ``name`` built from a flow scheduler's config, with the same shift."""
    import diffusers

    cls = getattr(diffusers, SCHEDULER_NAMES[lookup({n: n for n in FLOW_SCHEDULERS}, "flow scheduler", name)])
    config = dict(config)
    shift = config.get("shift", config.get("flow_shift", 3.0))
    if name == "flow_match_euler":
        config["shift"] = shift
    else:
        config.update(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift)
    # keep only the new class's own settings (diffusers warns about every foreign key, at each copy)
    accepted = inspect.signature(cls.__init__).parameters
    return make_scheduler(name, {k: v for k, v in config.items() if k in accepted})


class FlowPipelineBackbone(PipelineBackbone):
    """A :class:`PipelineBackbone` of a rectified-flow pipeline. A family gives :attr:`image_tokens` (the token
    count ``mu`` is computed from), ``default_max_shift`` (its pipeline's ``max_shift`` where the scheduler config
    has none) and, if its pipeline passes its own sigmas, :meth:`pipeline_sigmas`."""

    default_max_shift: ClassVar[float] = 1.15

    def _configure(self) -> None:
        self._flow = FlowSchedule()

    @property
    def schedule(self):  # type: ignore[override]
        return self._flow

    @property
    def prediction_type(self) -> str:  # type: ignore[override]
        return "velocity"

    def _native_size(self) -> tuple[int, int]:
        f = self.vae_scale_factor
        return self.pipe.default_sample_size * f, f * self.patch_size

    @property
    def patch_size(self) -> int:
        """Latent pixels per side of one token."""
        return self.transformer.config.patch_size

    @property
    def image_tokens(self) -> int:
        """The image's token count, from which the pipeline computes ``mu``."""
        _, h, w = self.latent_shape
        return (h // self.patch_size) * (w // self.patch_size)

    # -- the scheduler grid ---------------------------------------------------------------------------------
    def set_scheduler(self, name: str) -> None:
        """flow_match_euler, or DPM-Solver++ / UniPC on flow sigmas with the pipeline scheduler's shift."""
        self.pipe.scheduler = flow_scheduler(name, self.pipe.scheduler.config)

    def pipeline_sigmas(self, num_inference_steps: int) -> Any:
        """The sigmas the pipeline passes to ``set_timesteps`` (None: the scheduler's own)."""
        return None

    def set_timesteps(self, scheduler: Any, num_inference_steps: int, device: torch.device | None = None) -> None:
        """As the pipeline: its sigmas (not on flow sigmas, which the solver computes), and ``mu`` from the token
        count under dynamic shifting. Only then: DPM-Solver++ refuses a ``mu`` without ``use_dynamic_shifting``
        (an assertion in its ``set_timesteps``), and flow-matching Euler and UniPC ignore it."""
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        config, kwargs = scheduler.config, {}
        sigmas = None if config.get("use_flow_sigmas", False) else self.pipeline_sigmas(num_inference_steps)
        if sigmas is not None:
            kwargs["sigmas"] = sigmas
        if config.get("use_dynamic_shifting", None):
            kwargs["mu"] = calculate_shift(
                self.image_tokens,
                config.get("base_image_seq_len", 256),
                config.get("max_image_seq_len", 4096),
                config.get("base_shift", 0.5),
                config.get("max_shift", self.default_max_shift),
            )
        scheduler.set_timesteps(num_inference_steps, device=device, **kwargs)

    def scheduler_times(self, scheduler: Any) -> list[float]:
        return [float(s) for s in scheduler.sigmas]  # t = sigma; the last is 0

    def network_timestep(self, t: torch.Tensor) -> torch.Tensor:
        return t * float(self.scheduler.config.num_train_timesteps)  # the scheduler's timestep = sigma x 1000
