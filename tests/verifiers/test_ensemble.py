"""Ensemble = mean rank within candidate sets, on hand-made scores (ties, groups, NaN, weights)."""

from __future__ import annotations

import pytest
import torch

from lightning_search.errors import ConfigurationError, LightningSearchError, UnknownNameError
from lightning_search.verifiers import EnsembleVerifier
from lightning_search.verifiers.ensemble import group_ranks

IMAGES = torch.full((6, 1, 4, 4), 0.5)
CONDS = [0] * 6


def test_ranks_with_ties_and_nan():
    ranks, n = group_ranks(torch.tensor([3.0, 1.0, 3.0, float("nan"), 2.0]))
    # nan lowest (1); 1.0 -> 2; 2.0 -> 3; the two 3.0 share ranks 4 and 5 -> 4.5
    assert ranks.tolist() == [4.5, 2.0, 4.5, 1.0, 3.0]
    assert n.tolist() == [5] * 5


def test_ranks_within_groups():
    scores = torch.tensor([0.1, 0.9, 0.5, 7.0, 7.0, -1.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    ranks, n = group_ranks(scores, groups)
    assert ranks.tolist() == [1.0, 3.0, 2.0, 2.5, 2.5, 1.0]
    assert n.tolist() == [3] * 6


def test_mean_rank_across_verifiers(fixed_verifier):
    a = fixed_verifier([0.1, 0.9, 0.5, 7.0, 7.0, -1.0])  # ranks 1 3 2 | 2.5 2.5 1
    b = fixed_verifier([30.0, 10.0, 20.0, 1.0, 2.0, 3.0])  # ranks 3 1 2 | 1 2 3
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    ens = EnsembleVerifier({"a": a, "b": b})
    torch.testing.assert_close(ens(IMAGES, CONDS, None, groups), torch.tensor([2.0, 2.0, 2.0, 1.75, 2.25, 2.0]))
    weighted = EnsembleVerifier([a, b], weights=[3.0, 1.0])
    expected = (3 * torch.tensor([1, 3, 2, 2.5, 2.5, 1]) + torch.tensor([3.0, 1, 2, 1, 2, 3])) / 4
    torch.testing.assert_close(weighted(IMAGES, CONDS, None, groups), expected)
    normalized = EnsembleVerifier({"a": a, "b": b}, weights={"b": 0.0}, normalize=True)
    torch.testing.assert_close(normalized(IMAGES, CONDS, None, groups), torch.tensor([1, 3, 2, 2.5, 2.5, 1]) / 3)


def test_without_groups_the_batch_is_one_set(fixed_verifier):
    a = fixed_verifier([0.1, 0.9, 0.5, 7.0, 7.0, -1.0])
    ens = EnsembleVerifier({"a": a})
    expected = torch.tensor([2.0, 4.0, 3.0, 5.5, 5.5, 1.0])
    torch.testing.assert_close(ens(IMAGES, CONDS), expected)  # the evaluation call (no groups)
    torch.testing.assert_close(ens.score(IMAGES, CONDS), expected)


def test_members_and_weights_are_checked(fixed_verifier):
    a = fixed_verifier([1.0] * 6, x0_time=0.4)
    with pytest.raises(ConfigurationError, match="unknown members"):
        EnsembleVerifier({"a": a}, weights={"z": 1.0})
    with pytest.raises(ConfigurationError, match="2 weights for 1"):
        EnsembleVerifier([a], weights=[1.0, 2.0])
    with pytest.raises(ConfigurationError, match="non-negative"):
        EnsembleVerifier([a], weights=[-1.0])
    with pytest.raises(ConfigurationError, match="different times"):
        EnsembleVerifier([a, fixed_verifier([1.0] * 6, x0_time=0.6)])
    assert EnsembleVerifier([a, fixed_verifier([1.0] * 6)]).x0_time == 0.4
    with pytest.raises(LightningSearchError, match="groups"):
        EnsembleVerifier([a])(IMAGES, CONDS, None, torch.zeros(3))


def test_members_validate_their_inputs(fixed_verifier):
    ens = EnsembleVerifier([fixed_verifier([1.0] * 6, channels=3), fixed_verifier([1.0] * 6)])
    with pytest.raises(LightningSearchError, match="3-channel"):
        ens(IMAGES, CONDS)


def test_ensemble_of_real_verifiers_in_search_layout(clip_score, hps, images32, prompts):
    """B = 2 prompts x N = 2 candidates, as SearchContext.score passes them."""
    groups = torch.tensor([0, 0, 1, 1])
    ens = EnsembleVerifier({"clip_score": clip_score, "hps": hps})
    scores = ens(images32, prompts, None, groups)
    ref = (group_ranks(clip_score(images32, prompts), groups)[0] + group_ranks(hps(images32, prompts), groups)[0]) / 2
    torch.testing.assert_close(scores, ref.float())
    assert scores.shape == (4,) and torch.all((scores >= 1) & (scores <= 2))


def test_members_by_name_bind_to_the_runs_verifiers(fixed_verifier):
    a = fixed_verifier([0.1, 0.9, 0.5, 7.0, 7.0, -1.0])
    b = fixed_verifier([30.0, 10.0, 20.0, 1.0, 2.0, 3.0], channels=1)
    ens = EnsembleVerifier(["a", b])
    with pytest.raises(LightningSearchError, match="not bound"):
        ens(IMAGES, CONDS)
    run = {"a": a, "ensemble": ens}
    with pytest.raises(UnknownNameError, match="valid verifiers: a"):
        EnsembleVerifier(["zzz"]).resolve_members(run)
    ens.resolve_members(run)
    assert ens.members["a"] is a  # shared with the run, not a second copy
    assert ens.channels is None  # members disagree: each checks its own
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    torch.testing.assert_close(ens(IMAGES, CONDS, None, groups), torch.tensor([2.0, 2.0, 2.0, 1.75, 2.25, 2.0]))
