"""Evolutionary search: elites survive, it finds the mode brute force finds (from noises and from states),
and its NFEs are the network's own calls."""

import torch

from lightning_search.sampling import Sampler
from lightning_search.search import EvolutionarySearch
from tests.search.modes import IDS, brute_force_modes, found, run

ODE = Sampler("ddim", steps=10)


def test_evolving_noises_finds_the_mode_brute_force_finds():
    search = EvolutionarySearch(population=8, generations=4, elites=2, mutation=0.5)
    result, b, counted = run(search, ODE)
    assert found(result, b).float().mean() >= 0.93
    assert (b.mode_of(result.x0) == brute_force_modes()).float().mean() >= 0.93
    assert result.nfe.tolist() == [counted] * len(IDS) == [search.nfe_per_sample(ODE, b)] * len(IDS) == [260] * len(IDS)
    # the best ever is kept: scores never fall from one generation to the next
    assert all(tr == sorted(tr) for tr in result.trace)


def test_evolving_intermediate_states_costs_only_the_steps_below_them():
    search = EvolutionarySearch(population=8, generations=4, elites=2, mutation=0.7, state_time=0.6)
    result, b, counted = run(search, ODE)
    assert found(result, b).float().mean() >= 0.9
    # 8 full samples + 3 generations x 6 children x the 6 steps below t = 0.6
    assert result.nfe.tolist() == [counted] * len(IDS) == [8 * 10 + 3 * 6 * 6] * len(IDS)


def test_one_generation_is_best_of_population():
    from lightning_search.search import RandomSearch

    evo, _, _ = run(EvolutionarySearch(population=6, generations=1, elites=1), ODE, IDS[:30])
    rnd, _, _ = run(RandomSearch(6), ODE, IDS[:30])
    torch.testing.assert_close(evo.x0, rnd.x0, rtol=0, atol=0)
