"""Beam search over stochastic branches: it finds the mode brute force finds, counts its NFEs exactly, and is
deterministic per (seed, sample id)."""

import pytest
import torch

from lightning_search.errors import ConfigurationError
from lightning_search.sampling import Sampler
from lightning_search.search import BeamSearch
from tests.search.modes import IDS, brute_force_modes, found, run

SDE = Sampler("ddim", steps=10, eta=1.0)


def test_beam_search_finds_the_mode_brute_force_finds():
    result, b, counted = run(BeamSearch(beams=2, children=4), SDE)
    brute = brute_force_modes()
    assert found(result, b).float().mean() >= 0.95
    assert (b.mode_of(result.x0) == brute).float().mean() >= 0.95
    # a quarter of brute force's 640 NFEs, counted from the network's own calls
    assert (
        result.nfe.tolist()
        == [counted] * len(IDS)
        == [BeamSearch(2, 4).nfe_per_sample(SDE, b)] * len(IDS)
        == [152] * len(IDS)
    )


def test_longer_windows_cost_less_and_the_same_seed_gives_the_same_samples():
    one, b, counted = run(BeamSearch(beams=2, children=4, window=3), SDE, IDS[:20])
    assert one.nfe.tolist() == [counted] * 20 and counted < 152
    again, _, _ = run(BeamSearch(beams=2, children=4, window=3), SDE, IDS[:20])
    torch.testing.assert_close(one.x0, again.x0, rtol=0, atol=0)
    alone, _, _ = run(BeamSearch(beams=2, children=4, window=3), SDE, IDS[7:8])
    torch.testing.assert_close(alone.x0[0], one.x0[7], rtol=0, atol=0)


def test_beam_search_needs_noise_to_branch():
    with pytest.raises(ConfigurationError, match="stochastic sampler"):
        run(BeamSearch(2, 2), Sampler("heun", steps=4), IDS[:2])
