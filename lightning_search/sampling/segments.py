"""Where a run of the sampler starts, stops and steps: the one rule for every solver and every grid.

A sampler with ``steps`` steps has a *full grid*: the ``steps + 1`` times from t = 1 (or the scheduler's
first timestep) down to 0 at which the pipeline itself evaluates the network, uniform or shifted (SD3 / FLUX)
or "leading"-spaced (SD, SDXL) as its scheduler makes it. Search cuts that run into segments (search over
paths, SMC, beam search). A segment from ``t_start`` to ``t_end``:

- steps through the full grid's own points between the two times, so every part of a cut run has the
  pipeline's step density there, whatever the grid's shape (a shifted FLUX grid spends most of its steps at
  high noise: a segment 1 -> 0.6 may take 8 of 30 steps, not 12);
- starts and ends at the requested times when the solver can start anywhere (our ODE solvers work in
  continuous t), and at the nearest grid points when it cannot (a diffusers scheduler evaluates its network
  only at its timesteps): within half a grid step either way, and a segment that asks for t = 0 ends at 0;
- so a run cut at grid points equals the uncut run (bitwise for single-step solvers).

Search algorithms move along the grid with :func:`move`, which rounds to the grid where the solver needs it
and then uses the times actually reached for re-noising and x0-predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lightning_search.errors import ConfigurationError


@dataclass(frozen=True)
class Segment:
    """A run from ``times[0]`` to ``times[-1]`` through the solver steps between consecutive times.

    grid_steps: the steps of the full grid (t = 1 to 0) the segment belongs to; first: the index of
    ``times[0]`` on that grid (None for solvers that start anywhere).
    """

    times: tuple[float, ...]
    grid_steps: int
    first: int | None = None

    @property
    def steps(self) -> int:
        return len(self.times) - 1

    @property
    def t_start(self) -> float:
        return self.times[0]

    @property
    def t_end(self) -> float:
        return self.times[-1]


def check_interval(t_start: float, t_end: float) -> None:
    if not 0 <= t_end <= t_start <= 1:
        raise ConfigurationError(f"need 0 <= t_end <= t_start <= 1, got t_start={t_start}, t_end={t_end}")


def nearest_index(grid: Sequence[float], t: float) -> int:
    """The index of the grid time nearest to t (the noisier one on a tie); t beyond an end snaps to it."""
    if t >= grid[0]:
        return 0
    if t <= grid[-1]:
        return len(grid) - 1
    return min(range(len(grid)), key=lambda i: (abs(grid[i] - t), i))


def spacing_at(grid: Sequence[float], t: float) -> float:
    """The length of the grid interval that contains t (the first or last one beyond the ends)."""
    for i in range(len(grid) - 1):
        if grid[i + 1] <= t <= grid[i]:
            return grid[i] - grid[i + 1]
    return grid[0] - grid[1] if t > grid[0] else grid[-2] - grid[-1]


def plan(grid: Sequence[float], t_start: float, t_end: float, exact_endpoints: bool) -> Segment:
    """The segment from t_start to t_end on ``grid`` (``steps + 1`` decreasing times ending at 0)."""
    check_interval(t_start, t_end)
    steps = len(grid) - 1
    if not exact_endpoints:
        first, last = nearest_index(grid, t_start), nearest_index(grid, t_end)
        return Segment(tuple(grid[first : last + 1]), steps, first)
    if t_start == t_end:
        return Segment((t_start,), steps)
    # interior grid points, without those closer than half a step to an end (a sliver step would spend a
    # whole NFE on almost no progress)
    lo = t_end + 0.5 * spacing_at(grid, t_end)
    hi = t_start - 0.5 * spacing_at(grid, t_start)
    interior = [g for g in grid if lo < g < hi]
    return Segment((t_start, *interior, t_end), steps)


def snap(grid: Sequence[float], t: float, exact_endpoints: bool) -> float:
    """t itself (clamped to [0, grid[0]]) for solvers that start anywhere, else the nearest grid time."""
    return min(grid[0], max(0.0, t)) if exact_endpoints else grid[nearest_index(grid, t)]


def move(grid: Sequence[float], t: float, dt: float, exact_endpoints: bool) -> float:
    """The time reached from t by dt (> 0: noisier, < 0: cleaner), clamped to [0, grid[0]].

    On a grid the solver must snap to, the target is rounded to the nearest grid point and a non-zero move
    goes at least one grid step, so re-noising always re-noises and integrating always progresses.
    """
    target = min(grid[0], max(0.0, t + dt))
    if exact_endpoints or dt == 0:
        return target
    i, j = nearest_index(grid, t), nearest_index(grid, target)
    j = min(j, max(i - 1, 0)) if dt > 0 else max(j, min(i + 1, len(grid) - 1))
    return grid[j]
