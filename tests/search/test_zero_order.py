"""Zero-order search: the pivot competes in the same candidate set as its neighbours (rank-based verifiers),
the sphere neighbourhood, restarts, and the ensemble on digits."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_search.sampling import Sampler, noise_seed
from lightning_search.search import RandomSearch, SearchContext, ZeroOrderSearch
from lightning_search.search.zero_order import neighbours
from lightning_search.verifiers import ClassifierVerifier, EnsembleVerifier
from tests.sampling.helpers import MeanVerifier
from tests.search.test_algorithms import IDS, noise_of, toy_context


@pytest.mark.parametrize("normalize", [False, True])
def test_a_rank_based_verifier_makes_the_decisions_of_its_member(normalize):
    """An ensemble of one verifier ranks exactly as that verifier orders: compared within one candidate set
    (pivot and neighbours together), zero-order search must take the same path. Scored apart (the pivot a set
    of one), the pivot was always replaced (raw ranks) or never (normalised ranks)."""
    ids = list(range(12))
    search = ZeroOrderSearch(num_neighbors=3, iterations=4, step_size=0.6)
    plain = search.run(toy_context(MeanVerifier()), [0.0] * len(ids), ids)
    ranked = search.run(toy_context(EnsembleVerifier([MeanVerifier()], normalize=normalize)), [0.0] * len(ids), ids)
    assert [c["round"] for c in ranked.chosen] == [c["round"] for c in plain.chosen]
    torch.testing.assert_close(ranked.x0, plain.x0, rtol=0, atol=0)
    stayed = [c["round"] for c in plain.chosen]
    assert 0 < sum(r < 4 for r in stayed) < len(ids)  # some pivots were kept, some replaced: the test can fail


def test_random_search_reports_the_winners_rank_among_the_candidates():
    """Re-denoised with the full steps, the winner would be a set of one (rank 1 always); its rank among the
    candidates (N = 5: the top rank, 5) is what is reported."""
    ctx = toy_context(EnsembleVerifier([MeanVerifier()]), sampler=Sampler("euler", steps=4))
    result = RandomSearch(num_candidates=5, candidate_steps=2).run(ctx, [0.0] * len(IDS), IDS)
    assert result.score.tolist() == [5.0] * len(IDS)


def test_sphere_neighbours_keep_the_norm_at_the_cosine():
    pivot = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    z = torch.randn(3, 5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    lam = 0.3
    y = neighbours(pivot, z, lam, "sphere")
    n = pivot.flatten(1)[:, None]
    cos = torch.nn.functional.cosine_similarity(y.flatten(2), n, dim=-1)
    torch.testing.assert_close(cos, torch.full((3, 5), math.sqrt(1 - lam**2)), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.flatten(2).norm(dim=-1), n.norm(dim=-1).expand(3, 5), atol=1e-5, rtol=1e-5)
    mixed = neighbours(pivot, z, lam, "mix")  # the paper's form: sqrt(1 - lam^2) n + lam z
    torch.testing.assert_close(mixed, math.sqrt(1 - lam**2) * pivot[:, None] + lam * z)


def test_a_stalled_sample_restarts_from_a_fresh_noise():
    """A verifier that gives every sample the same score but for one noise, the fresh noise a restart draws at
    round 3 (candidate N of that round): with restart_after = 2 the search stalls for two rounds, restarts
    from that noise, scores it as candidate 0 and keeps it; without restarts it never gets there."""
    n_nb, ids = 2, [4, 9, 11]
    targets = {sid: noise_of(0, sid, 3, n_nb) for sid in ids}

    class OnlyTheFreshNoise(MeanVerifier):
        def score(self, images, conditions, x0_images=None):
            wanted = torch.stack([torch.sigmoid(targets[int(c)]) for c in conditions])
            return ((images - wanted).abs().flatten(1).max(1).values < 1e-6).float()

    def run(restart_after):
        search = ZeroOrderSearch(num_neighbors=n_nb, iterations=5, step_size=0.3, restart_after=restart_after)
        return search.run(toy_context(OnlyTheFreshNoise()), [float(s) for s in ids], ids)

    plain, restarted = run(None), run(2)
    assert plain.score.tolist() == [0.0] * 3 and restarted.score.tolist() == [1.0] * 3
    for i, sid in enumerate(ids):
        torch.testing.assert_close(restarted.x0[i], targets[sid], rtol=0, atol=0)
        assert restarted.chosen[i] == {"round": 3, "candidate": 0, "seed": noise_seed(0, sid, 3, n_nb)}
        assert len(restarted.candidate_seeds[i]) == len(plain.candidate_seeds[i]) + 1  # one restart
    assert restarted.nfe.tolist() == plain.nfe.tolist()  # a restart costs no extra network passes


@pytest.mark.slow
def test_zero_order_with_the_ensemble_raises_every_members_score(digits_setup, trained_backbone):
    """On digits, zero-order search guided by the ensemble of the two classifiers raises the mean score of
    both members over no search (the mean rank of the ensemble itself is no measure across sets)."""
    members = {
        "verifier": ClassifierVerifier(str(digits_setup.verifier)),
        "evaluator": ClassifierVerifier(str(digits_setup.evaluator)),
    }
    ensemble = EnsembleVerifier(members)
    ids = list(range(60))
    labels = [i % 10 for i in ids]
    sampler = Sampler("heun", steps=3)
    ctx = SearchContext(trained_backbone, sampler, ensemble, seed=0)
    with torch.no_grad():
        searched = ZeroOrderSearch(num_neighbors=4, iterations=3, step_size=0.5).run(ctx, labels, ids)
        pivots = RandomSearch(num_candidates=1).run(
            SearchContext(trained_backbone, sampler, members["verifier"], seed=0), labels, ids
        )
    for name, member in members.items():
        before = member(pivots.images, labels).mean().item()
        after = member(searched.images, labels).mean().item()
        assert after > before + 0.3, (name, before, after)
