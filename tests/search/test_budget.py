"""Budget forcing: never spends more than its budget per sample, rolls unused budget forward (samples spend
different amounts, counted exactly), and finds the mode brute force finds with a quarter of its NFEs."""

import pytest
import torch

from lightning_search.errors import ConfigurationError
from lightning_search.sampling import Sampler
from lightning_search.search import BudgetForcingSearch
from tests.search.modes import IDS, brute_force_modes, found, run

SDE = Sampler("ddim", steps=10, eta=1.0)


def test_budget_forcing_finds_the_mode_within_its_budget():
    result, b, counted = run(BudgetForcingSearch(budget=160, children=2), SDE)
    assert found(result, b).float().mean() >= 0.95
    assert (b.mode_of(result.x0) == brute_force_modes()).float().mean() >= 0.95
    assert (result.nfe <= 160).all()
    assert result.nfe.float().mean().item() == pytest.approx(counted)  # exact, summed over samples


def test_unused_budget_rolls_forward():
    """With three rounds' worth per window, a sample whose first child improves moves on and spends the rest
    later. The last window's children cost 1 NFE (no x0-prediction at t = 0), the others 2, so samples that
    spent their budget at different times scored different numbers of children: the spending adapted."""
    search = BudgetForcingSearch(budget=10 * 3 * 4, children=2)
    result, _, counted = run(search, SDE, IDS[:40])
    assert (result.nfe <= 120).all()
    assert result.nfe.float().mean().item() == pytest.approx(counted)
    assert len(set(result.verifier_calls.tolist())) > 1
    at_least = BudgetForcingSearch(budget=38, children=2)  # exactly one round per window: nothing to adapt
    minimal, _, _ = run(at_least, SDE, IDS[:40])
    assert minimal.nfe.tolist() == [38] * 40 and minimal.verifier_calls.tolist() == [20] * 40


def test_a_budget_below_one_round_per_window_is_refused():
    with pytest.raises(ConfigurationError, match="at least 38 NFEs"):
        BudgetForcingSearch(budget=20, children=2).nfe_per_sample(SDE, run.__globals__["backbone"]())


def test_the_same_seed_gives_the_same_samples():
    a, _, _ = run(BudgetForcingSearch(budget=100, children=2), SDE, IDS[:10])
    c, _, _ = run(BudgetForcingSearch(budget=100, children=2), SDE, IDS[:10])
    torch.testing.assert_close(a.x0, c.x0, rtol=0, atol=0)
