"""One sampler over any backbone: our ODE solvers or the pipeline's scheduler, run over any segment of the
sampling grid, with guidance, micro-batches, x0-predictions along the way and an exact NFE count.

The prelude every run shares lives here once (the grid and the segment, the null condition, micro-batching,
gathering x0-predictions, counting NFEs); what differs between the two kinds of solver is one function each:
:func:`_ode_window` (our solvers, ``solvers.py``) and ``scheduler.run_window`` (a diffusers scheduler).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from lightning_search.backbones.base import Backbone, Cond, cond_cat, cond_index
from lightning_search.errors import ConfigurationError, lookup
from lightning_search.sampling import scheduler as scheduler_solver
from lightning_search.sampling import segments
from lightning_search.sampling.noise import step_noise
from lightning_search.sampling.segments import Segment
from lightning_search.sampling.solvers import SOLVERS, STOCHASTIC_SOLVERS, time_grid

SCHEDULER = "scheduler"  # the solver name that drives the backbone's own diffusers scheduler


@dataclass
class Transition:
    """One stochastic step from t to t_next: x (B, *latent) -> x_next = mean + std * z, z ~ N(0, I)."""

    t: float
    t_next: float
    x: torch.Tensor
    x_next: torch.Tensor
    mean: torch.Tensor
    std: float

    def log_prob(self, mean: torch.Tensor | None = None) -> torch.Tensor:
        """log N(x_next; mean, std^2 I) per row (B,), float64; ``mean`` defaults to the step's own (pass the
        mean of another model, e.g. the policy being trained, for a likelihood ratio)."""
        return gaussian_log_prob(self.x_next, self.mean if mean is None else mean, self.std)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """Sum over all but the first dimension of log N(x; mean, std^2): (B,), float64."""
    d = x[0].numel()
    z2 = ((x.double() - mean.double()) ** 2).flatten(1).sum(1) / std**2
    return -0.5 * z2 - d * math.log(std) - 0.5 * d * math.log(2 * math.pi)


@dataclass
class SampleOutput:
    """x: (B, *latent) at ``times[-1]``; x0: {requested t: x0-prediction (B, *latent)}; nfe: per sample;
    times: the times the run actually stepped through (its segment on the grid); transitions: the stochastic
    steps, when asked for (``keep_transitions``)."""

    x: torch.Tensor
    x0: dict[float, torch.Tensor] = field(default_factory=dict)
    nfe: int = 0
    times: tuple[float, ...] = ()
    transitions: list[Transition] = field(default_factory=list)


@dataclass
class Sampler:
    """How to integrate the probability-flow ODE.

    Args:
        solver: ``euler``, ``heun`` or ``ddim`` (our ODE solvers), or ``scheduler``: the backbone's own
            diffusers scheduler, which reproduces its pipeline (``sampling/scheduler.py``).
        steps: solver steps from t = 1 to t = 0 (Heun spends 2 NFEs per step, the others 1).
        guidance_scale: classifier-free guidance weight; 1 disables guidance (1 NFE per call, not 2).
        micro_batch_size: at most this many rows (after guidance doubling) per network call.
        time_shift: SD3 / FLUX time shift of our solvers' grid (1 = uniform in t; a scheduler has its own).
        eta: the noise scale of the stochastic solvers ``ddim`` (eta in [0, 1]; 1 = DDPM) and
            ``euler_maruyama`` (eta >= 0; 1 = the reverse-time SDE); 0 is the probability-flow ODE.

    A stochastic run draws the noise of each step from a generator seeded by the trajectory's seed and the
    step's time (``noise.step_seed``): callers pass one seed per row (``seeds=``), and the result does not
    depend on batching. Diffusers' stochastic schedulers (DDPM, Euler ancestral, DPM-Solver++ SDE) are fed the
    same per-row generators.
    """

    solver: str = "heun"
    steps: int = 5
    guidance_scale: float = 1.0
    micro_batch_size: int = 2048
    time_shift: float = 1.0
    eta: float = 0.0

    def __post_init__(self) -> None:
        lookup({**SOLVERS, **STOCHASTIC_SOLVERS, SCHEDULER: None}, "solver", self.solver)
        if self.steps < 1 or self.micro_batch_size < 1:
            raise ConfigurationError(
                f"sampler steps and micro_batch_size must be >= 1, got {self.steps}, {self.micro_batch_size}"
            )
        if self.eta < 0 or (self.solver == "ddim" and self.eta > 1):
            raise ConfigurationError(f"sampler eta must lie in [0, 1] for ddim and be >= 0 otherwise, got {self.eta}")
        if self.eta > 0 and self.solver not in STOCHASTIC_SOLVERS:
            raise ConfigurationError(
                f"eta = {self.eta} needs a stochastic solver ({', '.join(STOCHASTIC_SOLVERS)}); {self.solver!r} is "
                "an ODE solver (a stochastic diffusers scheduler takes its noise from its own class)"
            )

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1.0

    def stochastic(self, backbone: Backbone) -> bool:
        """Whether a run adds noise along the way (then every row needs a seed)."""
        if self.solver == SCHEDULER:
            return scheduler_solver.is_stochastic(scheduler_solver.check_scheduler(backbone))
        return self.solver in STOCHASTIC_SOLVERS and self.eta > 0

    @property
    def exact_endpoints(self) -> bool:
        """Our solvers start and stop at any t; a scheduler only at its timesteps (``segments.py``)."""
        return self.solver != SCHEDULER

    # -- the grid ----------------------------------------------------------------------------------------
    def grid(self, backbone: Backbone, steps: int | None = None) -> list[float]:
        """The full grid of a run from noise to data in ``steps`` steps (default: the sampler's): steps + 1
        decreasing times ending at 0."""
        steps = self.steps if steps is None else steps
        if steps < 1:
            raise ConfigurationError(f"a sampler needs at least one step, got steps={steps}")
        if self.solver == SCHEDULER:
            return scheduler_solver.scheduler_grid(backbone, steps)
        return time_grid(steps, self.time_shift)

    def segment(
        self, backbone: Backbone, t_start: float = 1.0, t_end: float = 0.0, steps: int | None = None
    ) -> Segment:
        """The part of the ``steps``-step grid a run from t_start to t_end steps through (``segments.py``)."""
        return segments.plan(self.grid(backbone, steps), t_start, t_end, self.exact_endpoints)

    def snap(self, backbone: Backbone, t: float, steps: int | None = None) -> float:
        """The time a run asked to start or stop at t really does (``segments.snap``)."""
        return segments.snap(self.grid(backbone, steps), t, self.exact_endpoints)

    def move(self, backbone: Backbone, t: float, dt: float, steps: int | None = None) -> float:
        """The time a search reaches from t by dt (> 0 noisier), on the grid where the solver needs it."""
        return segments.move(self.grid(backbone, steps), t, dt, self.exact_endpoints)

    def segment_nfe(self, segment: Segment, prediction_type: str) -> int:
        """NFEs per sample of running ``segment`` (guidance doubles every call)."""
        evals = segment.steps
        if self.solver == "heun":
            evals *= 2
            if segment.steps and segment.t_end <= 0 and prediction_type != "velocity":
                evals -= 1  # Heun's last step to t = 0 is an Euler step (solvers.heun_step)
        return evals * (2 if self.guided else 1)

    def nfe(self, backbone: Backbone, t_start: float = 1.0, t_end: float = 0.0, steps: int | None = None) -> int:
        """NFEs per sample of a run from t_start to t_end on the ``steps``-step grid."""
        return self.segment_nfe(self.segment(backbone, t_start, t_end, steps), backbone.prediction_type)

    # -- sampling ----------------------------------------------------------------------------------------
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
        seeds: Sequence[int] | None = None,
        keep_transitions: bool = False,
    ) -> SampleOutput:
        """Integrate states ``noise`` (B, *latent) at ``t_start`` to ``t_end`` with encoded ``cond`` (B rows).

        The run is a segment of the ``steps``-step grid (default: the sampler's steps); ``x0_at`` asks for
        the x0-predictions made at the grid points nearest to those times. ``seeds``: one per row, the
        trajectories' seeds for the noise of a stochastic sampler; ``keep_transitions``: also return its
        steps' means and stds (our stochastic solvers). Rows are processed in micro-batches; the result does
        not depend on the micro-batch size.
        """
        stochastic = self.stochastic(backbone)
        if stochastic and (seeds is None or len(seeds) != noise.shape[0]):
            raise ConfigurationError(
                f"a stochastic sampler ({self.solver}, eta {self.eta}) needs one seed per row for its noises: pass "
                f"seeds= ({noise.shape[0]} rows, got {'none' if seeds is None else len(seeds)})"
            )
        if keep_transitions and not (stochastic and self.solver in STOCHASTIC_SOLVERS):
            raise ConfigurationError(
                f"keep_transitions needs one of our stochastic solvers ({', '.join(STOCHASTIC_SOLVERS)}) with eta > 0"
            )
        segment = self.segment(backbone, t_start, t_end, steps)
        # the x0-prediction at t is the one made by the step that starts at the segment time nearest to t
        record = {min(range(max(segment.steps, 1)), key=lambda i: abs(segment.times[i] - t)): t for t in x0_at}
        if segment.steps == 0:
            return SampleOutput(noise, {}, 0, segment.times)
        if null_cond is None and self.guided:
            null_cond = backbone.null_conditions(cond)
        rows = max(1, self.micro_batch_size // (2 if self.guided else 1))
        xs, x0s, steps_taken = [], [], []
        for start in range(0, noise.shape[0], rows):
            idx = slice(start, start + rows)
            nc = None if null_cond is None else cond_index(null_cond, idx)
            row_seeds = None if seeds is None else list(seeds[idx])
            if self.solver == SCHEDULER:
                x, x0 = scheduler_solver.run_window(
                    backbone, noise[idx], cond_index(cond, idx), nc, segment, self.guidance_scale, record,
                    row_seeds if stochastic else None,
                )  # fmt: skip
                taken = []
            else:
                x, x0, taken = self._ode_window(
                    backbone, noise[idx], cond_index(cond, idx), nc, segment, record, row_seeds if stochastic else None
                )
            xs.append(x)
            x0s.append(x0)
            steps_taken.append(taken)
        x0 = {t: torch.cat([part[t] for part in x0s]) for t in x0_at}
        transitions = []
        if keep_transitions:  # the micro-batches' steps, joined row-wise
            for parts in zip(*steps_taken):
                first = parts[0]
                transitions.append(
                    Transition(first.t, first.t_next, *(torch.cat([getattr(p, k) for p in parts]) for k in ("x", "x_next", "mean")), first.std)
                )  # fmt: skip
        nfe = self.segment_nfe(segment, backbone.prediction_type)
        return SampleOutput(torch.cat(xs), x0, nfe, segment.times, transitions)

    def _denoiser(self, backbone: Backbone, cond: Cond, null_cond: Cond | None):
        """``denoise(x_t, t) -> (x0, eps)`` in the one convention, with classifier-free guidance on one
        doubled batch when ``null_cond`` is given."""
        both = cond if null_cond is None else cond_cat([cond, null_cond])

        def denoise(x_t: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
            tt = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=x_t.dtype)
            if null_cond is not None:
                c, u = backbone(torch.cat([x_t, x_t]), torch.cat([tt, tt]), both).chunk(2)
                out = backbone.combine_guidance(c, u, self.guidance_scale)
            else:
                out = backbone(x_t, tt, cond)
            return backbone.to_x0_eps(out, x_t, tt)

        return denoise

    def _ode_window(self, backbone, x, cond, null_cond, segment: Segment, record: dict[int, float], seeds):
        """Our solvers over one micro-batch -> (x at the segment's end, {t: x0}, stochastic transitions)."""
        denoise = self._denoiser(backbone, cond, null_cond)
        exact_end = backbone.prediction_type == "velocity"
        x0_preds: dict[float, torch.Tensor] = {}
        taken: list[Transition] = []
        for i, (t, t_next) in enumerate(zip(segment.times[:-1], segment.times[1:])):
            if seeds is None:  # eta = 0: the ODE step (Euler-Maruyama without noise is Euler)
                step = SOLVERS["euler" if self.solver == "euler_maruyama" else self.solver]
                x, x0, _ = step(denoise, backbone.schedule, x, t, t_next, exact_end)
            else:
                z = step_noise(seeds, t, x.shape[1:], x.device, x.dtype)
                x_next, x0, mean, std = STOCHASTIC_SOLVERS[self.solver](
                    denoise, backbone.schedule, x, t, t_next, self.eta, z
                )
                taken.append(Transition(t, t_next, x, x_next, mean, std))
                x = x_next
            if i in record:
                x0_preds[record[i]] = x0
        return x, x0_preds, taken

    def step_distribution(
        self, backbone: Backbone, x: torch.Tensor, t: float, t_next: float, cond: Cond, null_cond: Cond | None = None
    ) -> tuple[torch.Tensor, float]:
        """The (mean, std) of the stochastic step from states x at t to t_next under the backbone as it is now
        (differentiable: GRPO's policy log-probabilities). (B, *latent), float."""
        if self.solver not in STOCHASTIC_SOLVERS:
            raise ConfigurationError(f"step_distribution needs a stochastic solver ({', '.join(STOCHASTIC_SOLVERS)})")
        if null_cond is None and self.guided:
            null_cond = backbone.null_conditions(cond)
        denoise = self._denoiser(backbone, cond, null_cond if self.guided else None)
        _, _, mean, std = STOCHASTIC_SOLVERS[self.solver](
            denoise, backbone.schedule, x, t, t_next, self.eta, torch.zeros_like(x)
        )
        return mean, std

    def predict_x0(
        self, backbone: Backbone, x: torch.Tensor, t: float, cond: Cond, null_cond: Cond | None = None
    ) -> tuple[torch.Tensor, int]:
        """The (guided) x0-prediction at states x (B, *latent) at time t -> (x0, NFE per sample)."""
        if null_cond is None and self.guided:
            null_cond = backbone.null_conditions(cond)
        rows = max(1, self.micro_batch_size // (2 if self.guided else 1))
        parts = []
        for start in range(0, x.shape[0], rows):
            idx = slice(start, start + rows)
            nc = None if null_cond is None else cond_index(null_cond, idx)
            parts.append(self._denoiser(backbone, cond_index(cond, idx), nc)(x[idx], t)[0])
        return torch.cat(parts), 2 if self.guided else 1
