"""One sampler over any backbone: solvers from any t_start to any t_end, guidance, micro-batches, NFEs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from lightning_search.backbones.base import Backbone, Cond, cond_cat, cond_index
from lightning_search.errors import ConfigurationError, lookup
from lightning_search.sampling.solvers import SOLVERS, time_grid


@dataclass
class SampleOutput:
    """x: (B, *latent) at t_end; x0: {requested t: x0-prediction (B, *latent)}; nfe: per sample."""

    x: torch.Tensor
    x0: dict[float, torch.Tensor] = field(default_factory=dict)
    nfe: int = 0


@dataclass
class Sampler:
    """How to integrate the probability-flow ODE.

    Args:
        solver: ``euler``, ``heun`` or ``ddim`` (our ODE solvers), or ``scheduler``: the backbone's own
            diffusers scheduler, which reproduces its pipeline (``sampling/scheduler.py``).
        steps: solver steps from t = 1 to t = 0 (Heun spends 2 NFEs per step, the others 1).
        guidance_scale: classifier-free guidance weight; 1 disables guidance (1 NFE per call, not 2).
        micro_batch_size: at most this many rows (after guidance doubling) per network call.
        time_shift: SD3 / FLUX time shift of the grid (1 = uniform in t).
    """

    solver: str = "heun"
    steps: int = 5
    guidance_scale: float = 1.0
    micro_batch_size: int = 2048
    time_shift: float = 1.0

    def __post_init__(self) -> None:
        lookup({**SOLVERS, "scheduler": None}, "solver", self.solver)
        if self.steps < 1 or self.micro_batch_size < 1:
            raise ConfigurationError(
                f"sampler steps and micro_batch_size must be >= 1, got {self.steps}, {self.micro_batch_size}"
            )

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1.0

    def nfe(self, steps: int | None = None, t_end: float = 0.0, prediction_type: str = "velocity") -> int:
        """NFEs per sample of a run of ``steps`` steps ending at ``t_end`` (guidance doubles it)."""
        steps = self.steps if steps is None else steps
        per_step = 2 if self.solver == "heun" else 1
        evals = per_step * steps
        if self.solver == "heun" and t_end <= 0 and prediction_type != "velocity":
            evals -= 1
        return evals * (2 if self.guided else 1)

    def sample(
        self,
        backbone: Backbone,
        noise: torch.Tensor,
        cond: Cond,
        *,
        t_start: float = 1.0,
        t_end: float = 0.0,
        steps: int | None = None,
        x0_at: Sequence[float] = (),
        null_cond: Cond | None = None,
    ) -> SampleOutput:
        """Integrate from ``t_start`` to ``t_end`` over ``noise`` (B, *latent) with encoded ``cond`` (B rows).

        ``steps`` counts steps over this interval (default: the sampler's own steps scaled to its length,
        at least one). ``x0_at`` asks for the x0-predictions at the grid points nearest to those times.
        Rows are processed in micro-batches; the result does not depend on the micro-batch size.
        """
        if self.solver == "scheduler":
            from lightning_search.sampling.scheduler import sample_with_scheduler

            return sample_with_scheduler(
                self, backbone, noise, cond, t_start=t_start, t_end=t_end, steps=steps, x0_at=x0_at, null_cond=null_cond
            )
        if steps is None:
            steps = max(1, round(self.steps * (t_start - t_end)))
        grid = time_grid(t_start, t_end, steps, self.time_shift)
        # the x0-prediction at t is produced by the step that starts at the grid point nearest to t
        record = {min(range(steps), key=lambda i: abs(grid[i] - t)): t for t in x0_at}
        if null_cond is None and self.guided:
            null_cond = backbone.null_conditions(cond)
        chunks: list[SampleOutput] = []
        for idx in self._chunks(noise.shape[0]):
            chunks.append(
                self._integrate(
                    backbone,
                    noise[idx],
                    cond_index(cond, idx),
                    None if null_cond is None else cond_index(null_cond, idx),
                    grid,
                    record,
                )
            )
        x0 = {t: torch.cat([c.x0[t] for c in chunks]) for t in x0_at}
        return SampleOutput(torch.cat([c.x for c in chunks]), x0, chunks[0].nfe if chunks else 0)

    def _denoiser(self, backbone: Backbone, cond: Cond, null_cond: Cond | None):
        """``denoise(x_t, t) -> (x0, eps)`` with classifier-free guidance on one doubled batch."""
        guided = self.guided
        both = cond_cat([cond, null_cond]) if guided else cond

        def denoise(x_t: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
            tt = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=x_t.dtype)
            if guided:
                out = backbone(torch.cat([x_t, x_t]), torch.cat([tt, tt]), both)
                c, u = out.chunk(2)
                out = backbone.combine_guidance(c, u, self.guidance_scale)
            else:
                out = backbone(x_t, tt, cond)
            return backbone.to_x0_eps(out, x_t, tt)

        return denoise

    def _chunks(self, n: int) -> list[slice]:
        rows = max(1, self.micro_batch_size // (2 if self.guided else 1))
        return [slice(i, i + rows) for i in range(0, n, rows)]

    def predict_x0(
        self, backbone: Backbone, x: torch.Tensor, t: float, cond: Cond, null_cond: Cond | None = None
    ) -> tuple[torch.Tensor, int]:
        """The (guided) x0-prediction at states x (B, *latent) at time t -> (x0, NFE per sample)."""
        if null_cond is None and self.guided:
            null_cond = backbone.null_conditions(cond)
        parts = []
        for idx in self._chunks(x.shape[0]):
            nc = None if null_cond is None else cond_index(null_cond, idx)
            parts.append(self._denoiser(backbone, cond_index(cond, idx), nc)(x[idx], t)[0])
        return torch.cat(parts), 2 if self.guided else 1

    def _integrate(self, backbone, x, cond, null_cond, grid, record) -> SampleOutput:
        guided = self.guided
        denoise = self._denoiser(backbone, cond, null_cond)
        step = SOLVERS[self.solver]
        exact_end = backbone.prediction_type == "velocity"
        x0_preds: dict[float, torch.Tensor] = {}
        nfe = 0
        for i, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
            x, x0, calls = step(denoise, backbone.schedule, x, t, t_next, exact_end)
            nfe += calls
            if i in record:
                x0_preds[record[i]] = x0
        return SampleOutput(x, x0_preds, nfe * (2 if guided else 1))

    def renoise(self, backbone: Backbone, x: torch.Tensor, t_a: float, t_b: float, eps: torch.Tensor) -> torch.Tensor:
        """Re-noise states from t_a to the noisier t_b with fresh noise ``eps`` (no network call)."""
        return backbone.schedule.renoise(x, t_a, t_b, eps)
