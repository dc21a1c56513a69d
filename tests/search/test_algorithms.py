"""Each algorithm against a brute-force computation on a toy backbone whose samples are their noises."""

import math

import pytest
import torch

from lightning_search.errors import ConfigurationError, UnknownNameError
from lightning_search.sampling import Sampler, noise_seed, seeded_noise
from lightning_search.search import (
    ALGORITHMS,
    PathSearch,
    RandomSearch,
    SearchConfig,
    SearchContext,
    ZeroOrderSearch,
    build_search,
)
from tests.sampling.helpers import MeanVerifier, ZeroVelocityBackbone

SHAPE = (1, 2, 2)
IDS = [3, 17, 40]


def toy_context(verifier=None, seed=0, sampler=None):
    backbone = ZeroVelocityBackbone(shape=SHAPE)
    return SearchContext(backbone, sampler or Sampler("euler", steps=4), verifier or MeanVerifier(), seed)


def mean_score(x):
    return torch.sigmoid(x).mean().item()


def noise_of(seed, sample_id, round_, candidate):
    return seeded_noise([noise_seed(seed, sample_id, round_, candidate)], SHAPE)[0]


def test_random_search_picks_the_argmax():
    ctx = toy_context()
    result = RandomSearch(num_candidates=6).run(ctx, [0.0] * len(IDS), IDS)
    for i, sid in enumerate(IDS):
        scores = [mean_score(noise_of(0, sid, 0, c)) for c in range(6)]
        best = max(range(6), key=scores.__getitem__)
        assert result.chosen[i]["candidate"] == best
        assert result.chosen[i]["seed"] == noise_seed(0, sid, 0, best)
        assert result.score[i].item() == pytest.approx(scores[best], abs=1e-6)
        torch.testing.assert_close(result.x0[i], noise_of(0, sid, 0, best))


def test_random_search_redenoises_the_winner_with_the_full_steps():
    ctx = toy_context(sampler=Sampler("heun", steps=5))
    result = RandomSearch(num_candidates=4, candidate_steps=2).run(ctx, [0.0], [5])
    # 4 candidates x 2 Heun steps (4 NFE) + the winner again with 5 steps (10 NFE)
    assert result.nfe.tolist() == [4 * 4 + 10]
    assert result.verifier_calls.tolist() == [5]


def test_zero_order_search_follows_the_pivot_rule():
    lam, n_nb, iters = 0.3, 3, 4
    ctx = toy_context()
    result = ZeroOrderSearch(n_nb, iters, lam).run(ctx, [0.0] * len(IDS), IDS)
    for i, sid in enumerate(IDS):
        pivot = noise_of(0, sid, 0, 0)
        best = mean_score(pivot)
        trace = [best]
        for k in range(1, iters + 1):
            neighbours = [math.sqrt(1 - lam**2) * pivot + lam * noise_of(0, sid, k, j) for j in range(n_nb)]
            scores = [mean_score(y) for y in neighbours]
            j = max(range(n_nb), key=scores.__getitem__)
            if scores[j] > best:
                pivot, best = neighbours[j], scores[j]
            trace.append(best)
        torch.testing.assert_close(result.x0[i], pivot, atol=1e-6, rtol=1e-6)
        assert result.trace[i] == pytest.approx(trace, abs=1e-6)
        assert result.trace[i] == sorted(result.trace[i])  # the pivot's score never drops


def test_paths_search_keeps_the_best_branch():
    # one round: paths stay at their noise to t = 0.1, are re-noised to 0.15 and integrated to 0
    n, m = 2, 3
    ctx = toy_context()
    algorithm = PathSearch(num_paths=n, branches=m, start=0.1, forward=0.05, backward=0.15)
    start, rounds = algorithm.schedule(ctx.sampler, ctx.backbone)
    assert (start, rounds) == (0.1, [(0.1, pytest.approx(0.15), 0.0)])
    result = algorithm.run(ctx, [0.0] * len(IDS), IDS)
    schedule = ctx.backbone.schedule
    for i, sid in enumerate(IDS):
        branches = []
        for j in range(n * m):
            start = noise_of(0, sid, 0, j // m)
            branches.append(schedule.renoise(start, 0.1, 0.15, noise_of(0, sid, 1, j)))
        scores = [mean_score(x) for x in branches]
        best = max(range(n * m), key=scores.__getitem__)
        torch.testing.assert_close(result.x0[i], branches[best], atol=1e-6, rtol=1e-6)
        assert result.chosen[i]["candidate"] == best // m


@pytest.mark.parametrize("name", ["random", "zero_order", "paths"])
def test_nan_scores_never_win(name):
    # NaN for every image brighter than 0.5, i.e. for the would-be winners: a finite candidate must win,
    # and a sample whose candidates were all NaN reports -inf, never NaN
    ids = list(range(20))
    config = SearchConfig(algorithm=name, verifier="v", num_candidates=4, iterations=2, step_size=0.5)
    result = build_search(config).run(toy_context(MeanVerifier(nan_above=0.5)), [0.0] * len(ids), ids)
    assert not torch.isnan(result.score).any()
    finite = torch.isfinite(result.score)
    assert finite.sum() >= len(ids) // 2
    brightness = torch.sigmoid(result.x0).flatten(1).mean(1)
    assert (brightness[finite] <= 0.5).all()
    assert (result.score[~finite] == float("-inf")).all()


@pytest.mark.parametrize("name", ["random", "zero_order", "paths"])
def test_same_seed_same_choice_other_seed_other_choice(name):
    config = SearchConfig(algorithm=name, verifier="v", num_candidates=4, iterations=2, step_size=0.5)
    algorithm = build_search(config)
    a = algorithm.run(toy_context(seed=1), [0.0] * len(IDS), IDS)
    b = algorithm.run(toy_context(seed=1), [0.0] * len(IDS), IDS)
    c = algorithm.run(toy_context(seed=2), [0.0] * len(IDS), IDS)
    torch.testing.assert_close(a.x0, b.x0, rtol=0, atol=0)
    assert a.chosen == b.chosen
    assert not torch.equal(a.x0, c.x0)


def test_results_do_not_depend_on_the_batch():
    algorithm = RandomSearch(num_candidates=5)
    together = algorithm.run(toy_context(), [0.0] * len(IDS), IDS)
    alone = algorithm.run(toy_context(), [0.0], [IDS[1]])
    torch.testing.assert_close(together.x0[1], alone.x0[0], rtol=0, atol=0)


CONFIGS = [
    SearchConfig("none"),
    SearchConfig("random", "v", num_candidates=3),
    SearchConfig("random", "v", num_candidates=3, candidate_steps=2),
    SearchConfig("zero_order", "v", num_candidates=2, iterations=3),
    SearchConfig("zero_order", "v", num_candidates=2, iterations=2, candidate_steps=1),
    SearchConfig("paths", "v", num_candidates=2, branches=2, path_start=0.8, path_forward=0.1, path_backward=0.25),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.algorithm}-{c.candidate_steps}")
@pytest.mark.parametrize("guidance", [1.0, 2.0])
@pytest.mark.parametrize("solver", ["heun", "euler"])
def test_reported_nfe_equals_counted_forward_passes(config, guidance, solver):
    sampler = Sampler(solver, steps=5, guidance_scale=guidance, micro_batch_size=7)
    ctx = toy_context(sampler=sampler)
    algorithm = build_search(config)
    result = algorithm.run(ctx, [0.5] * len(IDS), IDS)
    counted = ctx.backbone.rows_seen / len(IDS)  # guided calls carry doubled batches: 2 NFE per sample
    assert result.nfe.tolist() == [counted] * len(IDS)
    assert counted == algorithm.nfe_per_sample(sampler, ctx.backbone)
    if config.algorithm != "none":
        assert ctx.verifier.images_scored == result.verifier_calls.sum().item()


def test_unknown_algorithm_lists_the_valid_ones():
    with pytest.raises(UnknownNameError) as info:
        build_search(SearchConfig("tree"))
    for name in ALGORITHMS:
        assert name in str(info.value)


def test_search_without_a_verifier_is_rejected():
    with pytest.raises(ConfigurationError, match="--search.verifier"):
        build_search(SearchConfig("random", None, num_candidates=4))


@pytest.mark.parametrize(
    "config,match",
    [
        (SearchConfig("random", "v", num_candidates=0), "num_candidates must be >= 1, got 0"),
        (SearchConfig("zero_order", "v", step_size=1.5), r"\(0, 1\)"),
        (SearchConfig("paths", "v", path_forward=0.3, path_backward=0.2), "path_forward < path_backward"),
    ],
)
def test_bad_settings_are_rejected_with_the_numbers(config, match):
    with pytest.raises(ConfigurationError, match=match):
        build_search(config)
