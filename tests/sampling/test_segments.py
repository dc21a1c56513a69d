"""The one segment rule: on a hand-written grid, and on the analytic backbone, where a segment run at the
wrong times shows in the marginal of its states."""

from __future__ import annotations

import pytest
import torch

from lightning_search.backbones.analytic import GaussianMixtureBackbone
from lightning_search.errors import ConfigurationError
from lightning_search.sampling import Sampler, segments

GRID = [1.0, 0.9, 0.7, 0.4, 0.2, 0.0]  # non-uniform on purpose


def test_snapping_segments_use_the_nearest_grid_points():
    seg = segments.plan(GRID, 0.75, 0.25, exact_endpoints=False)
    assert seg.times == (0.7, 0.4, 0.2) and seg.first == 2 and seg.grid_steps == 5
    assert segments.plan(GRID, 1.0, 0.0, exact_endpoints=False).times == tuple(GRID)
    assert segments.plan(GRID, 0.35, 0.31, exact_endpoints=False).steps == 0  # shorter than a step


def test_exact_segments_keep_their_end_points_and_the_grid_between():
    assert segments.plan(GRID, 0.75, 0.25, exact_endpoints=True).times == (0.75, 0.4, 0.25)
    # 0.69 is closer than half the 0.7 -> 0.4 step to the start: no sliver step
    assert segments.plan(GRID, 0.71, 0.0, exact_endpoints=True).times == (0.71, 0.4, 0.2, 0.0)
    assert segments.plan(GRID, 1.0, 0.0, exact_endpoints=True).times == tuple(GRID)


def test_moves_on_a_grid_go_at_least_one_step():
    assert segments.move(GRID, 0.4, 0.1, exact_endpoints=False) == 0.7  # 0.5 rounds to 0.4: one step up
    assert segments.move(GRID, 0.4, 0.25, exact_endpoints=False) == 0.7
    assert segments.move(GRID, 0.4, -0.05, exact_endpoints=False) == 0.2
    assert segments.move(GRID, 0.9, 0.5, exact_endpoints=False) == 1.0  # clamped at the first grid time
    assert segments.move(GRID, 0.4, 0.1, exact_endpoints=True) == pytest.approx(0.5)
    assert segments.move(GRID, 0.05, -0.1, exact_endpoints=True) == 0.0


def test_bad_intervals_are_rejected():
    with pytest.raises(ConfigurationError, match="t_end <= t_start"):
        segments.plan(GRID, 0.2, 0.5, exact_endpoints=True)


def assert_marginal(b: GaussianMixtureBackbone, x: torch.Tensor, t: float, rtol: float = 0.06) -> None:
    """The per-dimension variance of states x (N, D) is q_t's (closed form)."""
    _, var = b.marginal_moments(t)
    torch.testing.assert_close(x.double().var(0), var, atol=0.0, rtol=rtol)


@pytest.mark.parametrize(
    ("schedule", "prediction_type", "solver"), [("flow", "velocity", "heun"), ("vp", "epsilon", "ddim")]
)
def test_segments_end_where_they_say(schedule, prediction_type, solver):
    """1 -> 0.55 -> 0.3 -> 0 in three calls: the states after each call have the marginal of its end time."""
    b = GaussianMixtureBackbone(schedule=schedule, prediction_type=prediction_type)
    gen = torch.Generator().manual_seed(0)
    n = 8000
    cond = b.encode_conditions([0] * n)
    sampler = Sampler(solver, steps=20)
    x = b.sample_marginal(1.0, n, gen)
    for t_start, t_end in [(1.0, 0.55), (0.55, 0.3)]:
        out = sampler.sample(b, x, cond, t_start=t_start, t_end=t_end)
        assert out.times[0] == t_start and out.times[-1] == t_end
        x = out.x
        assert_marginal(b, x, t_end)
    # and not the marginal of a neighbouring time: the check can tell 0.3 from 0.35
    _, var = b.marginal_moments(0.35)
    assert (x.double().var(0)[1] / var[1] - 1).abs() > 0.15


def test_a_shifted_grid_never_warps_a_segment_end():
    """With time_shift = 3 a segment from exact q_0.5 samples to 0.3 lands on q_0.3 (the old grid warped
    0.5 -> 0.3 into 0.75 -> 0.5625)."""
    b = GaussianMixtureBackbone()
    gen = torch.Generator().manual_seed(1)
    x = b.sample_marginal(0.5, 8000, gen)
    out = Sampler("heun", steps=10, time_shift=3.0).sample(
        b, x, b.encode_conditions([0] * 8000), t_start=0.5, t_end=0.3
    )
    assert out.times[0] == 0.5 and out.times[-1] == 0.3
    assert {round(t, 6) for t, _ in b.calls} >= {0.5, 0.3}  # the network was evaluated at both ends
    assert_marginal(b, out.x, 0.3)


@pytest.mark.parametrize("solver", ["euler", "heun", "ddim"])
def test_a_run_cut_at_grid_points_is_the_uncut_run(solver):
    b = GaussianMixtureBackbone()
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(2))
    cond = b.encode_conditions([0] * 64)
    sampler = Sampler(solver, steps=8, time_shift=2.0)
    grid = sampler.grid(b)
    whole = sampler.sample(b, x, cond)
    first = sampler.sample(b, x, cond, t_end=grid[3])
    rest = sampler.sample(b, first.x, cond, t_start=grid[3])
    torch.testing.assert_close(rest.x, whole.x, rtol=0, atol=0)
    assert first.nfe + rest.nfe == whole.nfe
