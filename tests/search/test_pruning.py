"""Early pruning: the candidates kept are the best by their early x0-predictions (hand-computed), the NFEs are
the network's own calls, and on the mode problem it matches brute force at a fraction of its cost."""

import torch

from lightning_search.sampling import Sampler
from lightning_search.search import EarlyPruningSearch, RandomSearch, SearchContext
from tests.search.modes import IDS, NearTheRareMode, backbone, found, run

ODE = Sampler("ddim", steps=10)


def test_pruning_keeps_the_candidates_with_the_best_early_predictions():
    """Brute force by hand: every candidate's x0-prediction at the last step before t = 0.7 and its final
    sample, from the plain sampler; the result is the best final sample among the 4 best early ones."""
    ids = IDS[:15]
    result, b, _ = run(EarlyPruningSearch(16, [0.7], [4]), ODE, ids)
    ctx = SearchContext(backbone(), ODE, NearTheRareMode(), seed=0)
    seeds = ctx.seeds(ids, 0, 16)
    early = ctx.integrate(ctx.noise(seeds), torch.zeros(len(ids)), seeds, t_end=0.7, x0_at=(0.7,))
    final = ctx.integrate(ctx.noise(seeds), torch.zeros(len(ids)), seeds)
    early_scores = ctx.score(ctx.decode(early.x0[0.7]), [0] * len(ids))
    final_scores = ctx.score(ctx.decode(final.x), [0] * len(ids))
    for i in range(len(ids)):
        kept = early_scores[i].topk(4).indices
        best = kept[final_scores[i, kept].argmax()]
        assert result.chosen[i]["candidate"] == int(best)
        torch.testing.assert_close(result.x0[i], final.x[i, best], rtol=0, atol=1e-6)


def test_pruning_matches_brute_force_at_a_fraction_of_its_nfes():
    search = EarlyPruningSearch(32, [0.7], [4])
    result, b, counted = run(search, ODE)
    assert found(result, b).float().mean() >= 0.93
    # 32 candidates x 3 steps to t = 0.7, 4 x the 7 steps after: 124 NFEs (brute force: 640)
    assert result.nfe.tolist() == [counted] * len(IDS) == [search.nfe_per_sample(ODE, b)] * len(IDS) == [124] * len(IDS)
    assert (result.verifier_calls == 32 + 4).all()


def test_two_pruning_times():
    search = EarlyPruningSearch(16, [0.8, 0.5], [8, 2])
    result, _, counted = run(search, ODE, IDS[:10])
    assert result.nfe.tolist() == [counted] * 10 == [16 * 2 + 8 * 3 + 2 * 5] * 10
    plain, _, _ = run(RandomSearch(16), ODE, IDS[:10])
    assert (result.score <= plain.score + 1e-6).all()  # pruning can only lose the best candidate, never beat it
