"""Segments on the real models' sampling grids (FLUX.1-dev / schnell at 512 and 1024 px, SDXL, SD 1.5,
PixArt-Sigma, DiT), built from their scheduler configs: the sampler runs at the times it is asked for.

The network is replaced by a recorder, so what is checked is when the sampler calls it: the first call of
a segment is within half a grid step of the requested start, the grid time after the last call (where the
segment's state is) within half a grid step of the requested end, and a segment that asks for t = 0 ends at 0.
"""

from __future__ import annotations

import pytest
import torch

from lightning_search.sampling import Sampler
from tests.backbones.real_grids import CASES, NetworkLog, configure, half_step, reference_grid, timestep_to_t

# the table (FLUX.1-dev at 1024 px, 30 steps) and a few more, for every case
SEGMENTS = [(1.0, 0.6), (0.6, 0.2), (0.3, 0.2), (0.2, 0.0), (1.0, 0.0), (0.45, 0.05)]


def run_segment(backbone, sampler, t_start, t_end):
    cond = backbone.encode_conditions([0] if backbone.__class__.__name__ == "DiTBackbone" else ["a photo"])
    noise = torch.zeros(1, *backbone.latent_shape)
    with torch.no_grad():
        return sampler.sample(backbone, noise, cond, t_start=t_start, t_end=t_end)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_sampler_grid_is_the_pipeline_grid(request, monkeypatch, case):
    backbone = configure(request, monkeypatch, case)
    ours = Sampler(solver="scheduler", steps=case.steps).grid(backbone)
    assert ours == pytest.approx(reference_grid(case), abs=1e-6)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_segments_run_at_the_requested_times(request, monkeypatch, case):
    backbone = configure(request, monkeypatch, case)
    grid = reference_grid(case)
    sampler = Sampler(solver="scheduler", steps=case.steps)
    for t_start, t_end in SEGMENTS:
        log = NetworkLog(backbone, monkeypatch, timestep_to_t(case))
        out = run_segment(backbone, sampler, t_start, t_end)
        calls = log.steps()
        if not calls:  # an interval shorter than a grid step: both ends round to the same grid time
            (reached,) = out.times
            assert min(abs(g - reached) for g in grid) < 1e-6 and out.nfe == 0
            calls, start = [], reached
        else:  # consecutive grid times, one network call each, from the first call on
            first = min(range(len(grid)), key=lambda i: abs(grid[i] - calls[0]))
            assert calls == pytest.approx(grid[first : first + len(calls)], abs=1e-6)
            reached, start = grid[first + len(calls)], calls[0]  # the state is at the grid time after the last call
        assert abs(start - min(t_start, grid[0])) <= half_step(grid, t_start) + 1e-9, (t_start, start)
        assert abs(reached - t_end) <= half_step(grid, t_end) + 1e-9, (t_end, reached)
        if t_end == 0:
            assert reached == 0.0
        assert out.times == pytest.approx((*calls, reached) if calls else (reached,), abs=1e-6)
        assert out.nfe == len(calls)


def test_flux_dev_1024_table(request, monkeypatch):
    """The issue's measurements, re-measured: on FLUX.1-dev at 1024 px (30 steps, mu = 1.15) every asked
    segment now runs between the grid points nearest to the asked times."""
    case = CASES[0]
    backbone = configure(request, monkeypatch, case)
    sampler = Sampler(solver="scheduler", steps=30)
    runs = {}
    for t_start, t_end in [(1.0, 0.6), (0.6, 0.2), (0.3, 0.2), (0.2, 0.0)]:
        log = NetworkLog(backbone, monkeypatch, timestep_to_t(case))
        runs[(t_start, t_end)] = run_segment(backbone, sampler, t_start, t_end).times
        assert log.steps() == pytest.approx(runs[(t_start, t_end)][:-1])
    grid = reference_grid(case)
    for (t_start, t_end), times in runs.items():
        print(f"asked {t_start} -> {t_end}: runs {times[0]:.3f} -> {times[-1]:.3f} in {len(times) - 1} steps")
        assert abs(times[0] - t_start) <= half_step(grid, t_start)
        assert abs(times[-1] - t_end) <= half_step(grid, t_end)
    # the shifted grid spends its steps at high noise: 1 -> 0.6 takes 20 of the 30 steps (the old rule, steps
    # x interval length, gave it 12 and stopped at 0.798), 0.2 -> 0 only 2
    assert [len(times) - 1 for times in runs.values()] == [20, 8, 2, 2]
