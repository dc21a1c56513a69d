"""Search over paths and SMC on the real models' grids (``real_grids.CASES``): from the network calls and
the re-noisings they make (recorded, not computed), every segment starts and ends within half a grid step
of the time the algorithm asked for, re-noising and x0-predictions happen where the segments really are,
and the last segment ends at t = 0."""

from __future__ import annotations

import pytest
import torch

from lightning_search.sampling import Sampler
from lightning_search.search import PathSearch, SearchContext, SMCSearch
from tests.backbones.real_grids import CASES, NetworkLog, configure, half_step, reference_grid, timestep_to_t
from tests.sampling.helpers import MeanVerifier

FORWARD, BACKWARD, START = 0.1, 0.25, 0.7  # paths
TIMES, RENOISE = (0.6, 0.3), 0.1  # smc


def runs_of(events, grid):
    """Split the log into runs of consecutive scheduler steps: [(start, reached, what came after)]."""
    out, current = [], []
    for event in [*events, ("end",)]:
        if event[0] == "step":
            current.append(event[1])
            continue
        if current:
            first = min(range(len(grid)), key=lambda i: abs(grid[i] - current[0]))
            assert current == pytest.approx(grid[first : first + len(current)], abs=1e-6)  # on the grid
            out.append((current[0], grid[first + len(current)], event))
            current = []
    return out


def near(actual: float, asked: float, grid) -> bool:
    asked = min(max(asked, 0.0), grid[0])
    return abs(actual - asked) <= half_step(grid, asked) + 1e-9


def run(backbone, search, case):
    conditions = [0] if case.fixture == "dit" else ["a photo"]
    ctx = SearchContext(backbone, Sampler(solver="scheduler", steps=case.steps), MeanVerifier(), seed=0)
    with torch.no_grad():
        return search.run(ctx, conditions, [0])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_paths_segments_on_the_real_grid(request, monkeypatch, case):
    backbone = configure(request, monkeypatch, case)
    grid = reference_grid(case)
    log = NetworkLog(backbone, monkeypatch, timestep_to_t(case))
    run(backbone, PathSearch(num_paths=2, branches=2, start=START, forward=FORWARD, backward=BACKWARD), case)
    segments = runs_of(log.events, grid)
    renoisings = [e for e in log.events if e[0] == "renoise"]
    assert len(segments) == len(renoisings) + 1 >= 3
    start, reached, after = segments[0]  # noise -> the start of branching
    assert start == grid[0] and near(reached, START, grid)
    assert after[0] == "renoise" and after[1] == pytest.approx(reached)
    for (t_a, t_b), (start, reached, after) in zip([r[1:] for r in renoisings], segments[1:]):
        assert near(t_b, t_a + FORWARD, grid), (t_a, t_b)  # re-noised by delta_f, rounded to the grid
        assert start == pytest.approx(t_b)  # and integrated back from there
        assert near(reached, t_b - BACKWARD, grid), (t_b, reached)
        if after[0] == "x0":  # scored where the segment really ended
            assert after[1] == pytest.approx(reached)
    assert segments[-1][1] == 0.0 and segments[-1][2] == ("end",)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_smc_segments_on_the_real_grid(request, monkeypatch, case):
    backbone = configure(request, monkeypatch, case)
    grid = reference_grid(case)
    log = NetworkLog(backbone, monkeypatch, timestep_to_t(case))
    run(backbone, SMCSearch(num_particles=2, times=TIMES, renoise=RENOISE), case)
    segments = runs_of(log.events, grid)
    scored = [e[1] for e in log.events if e[0] == "x0"]
    renoisings = [e[1:] for e in log.events if e[0] == "renoise"]
    assert len(scored) == len(renoisings) == len(TIMES)
    for asked, t, (t_a, t_b) in zip(TIMES, scored, renoisings):
        assert near(t, asked, grid) and t_a == pytest.approx(t), (asked, t, t_a)
        assert near(t_b, t_a + RENOISE, grid) and t_b > t_a, (t_a, t_b)
    # runs of steps between the scorings and re-noisings: 1 -> t1, then from each re-noised time back through
    # the scheduled time and on to the next one (one run: nothing happens in between), the last to t = 0
    starts = [start for start, _, _ in segments]
    ends = [reached for _, reached, _ in segments]
    assert starts == pytest.approx([grid[0], *(t_b for _, t_b in renoisings)])
    assert ends == pytest.approx([*scored, 0.0]) and ends[-1] == 0.0
