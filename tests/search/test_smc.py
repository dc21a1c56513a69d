"""SMC / Feynman-Kac steering: the resamplers against their distributions, the particle loop against a
hand computation on a toy backbone whose samples are their noises, and exact NFE accounting."""

import pytest
import torch

from lightning_search.errors import ConfigurationError
from lightning_search.sampling import Sampler, noise_seed, seeded_noise
from lightning_search.search import SearchConfig, SMCSearch, build_search
from lightning_search.search.smc import (
    effective_sample_size,
    multinomial_resample,
    normalise_log_weights,
    systematic_resample,
)
from tests.sampling.helpers import MeanVerifier, ZeroVelocityBackbone
from tests.search.test_algorithms import IDS, SHAPE, mean_score, toy_context

WEIGHTS = torch.tensor([0.05, 0.10, 0.15, 0.30, 0.40])
ROWS = 2000


def _generators(n, offset=0):
    return [torch.Generator().manual_seed(1234 + offset + i) for i in range(n)]


def _counts(ancestors, k):
    """(B, K) ancestor indices -> (B, K) how many copies of each particle."""
    return torch.nn.functional.one_hot(ancestors, k).sum(dim=1)


def test_multinomial_resampling_keeps_k_particles_and_follows_the_weights():
    k = WEIGHTS.numel()
    ancestors = multinomial_resample(WEIGHTS.expand(ROWS, k), _generators(ROWS))
    assert ancestors.shape == (ROWS, k)
    assert ancestors.min() >= 0 and ancestors.max() < k
    observed = _counts(ancestors, k).sum(dim=0).double()  # over all ROWS x K draws
    expected = WEIGHTS.double() * ROWS * k
    chi2 = ((observed - expected) ** 2 / expected).sum().item()
    assert chi2 < 18.47  # chi-square, 4 degrees of freedom, p = 0.001
    # the same draws against uniform weights: the test can tell the difference
    uniform = torch.full((k,), ROWS * k / k, dtype=torch.float64)
    assert ((observed - uniform) ** 2 / uniform).sum().item() > 100


def test_systematic_resampling_copies_each_particle_floor_or_ceil_of_k_w():
    k = WEIGHTS.numel()
    ancestors = systematic_resample(WEIGHTS.expand(ROWS, k), _generators(ROWS))
    assert ancestors.shape == (ROWS, k)
    counts = _counts(ancestors, k).double()
    kw = WEIGHTS.double() * k  # 0.25, 0.5, 0.75, 1.5, 2.0
    assert (counts >= kw.floor() - 1e-9).all() and (counts <= kw.ceil() + 1e-9).all()
    assert (counts.sum(dim=1) == k).all()
    # unbiased: the mean number of copies is K w (standard error < 0.011 for 2,000 rows)
    torch.testing.assert_close(counts.mean(dim=0), kw, atol=0.05, rtol=0)


def test_resampling_is_seeded_per_row():
    w = WEIGHTS.expand(4, -1)
    for resample in (multinomial_resample, systematic_resample):
        a, b = resample(w, _generators(4)), resample(w, _generators(4))
        assert torch.equal(a, b)
        assert not torch.equal(
            resample(WEIGHTS.expand(64, -1), _generators(64)), resample(WEIGHTS.expand(64, -1), _generators(64, 99))
        )


def test_weights_and_effective_sample_size():
    log_w = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, -float("inf"), float("nan"), -float("inf")], [-float("inf")] * 4])
    w = normalise_log_weights(log_w)
    torch.testing.assert_close(w, torch.tensor([[0.25] * 4, [1.0, 0, 0, 0], [0.25] * 4], dtype=torch.float64))
    torch.testing.assert_close(effective_sample_size(w), torch.tensor([4.0, 1.0, 4.0], dtype=torch.float64))


def test_adaptive_resampling_only_when_the_ess_is_low():
    algorithm = SMCSearch(num_particles=4, ess_threshold=0.5)
    w = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.97, 0.01, 0.01, 0.01]])
    ancestors, resampled = algorithm.resample(w, _generators(2))
    assert resampled.tolist() == [False, True]
    assert ancestors[0].tolist() == [0, 1, 2, 3]
    assert (ancestors[1] == 0).sum() >= 3  # systematic: 4 x 0.97 = 3.88 -> at least 3 copies of particle 0


def test_greedy_smc_matches_a_hand_computation():
    # lambda huge: every particle becomes a copy of the best x0-prediction at t = 0.5; the copies are re-noised
    # to 0.6 with seeds (seed, id, round 1, particle) and stay there (zero velocity); the best copy wins
    k = 4
    algorithm = SMCSearch(num_particles=k, times=[0.5], lam=1e6, renoise=0.1)
    ctx = toy_context()
    result = algorithm.run(ctx, [0.0] * len(IDS), IDS)
    schedule = ctx.backbone.schedule
    for i, sid in enumerate(IDS):
        noises = [seeded_noise([noise_seed(0, sid, 0, j)], SHAPE)[0] for j in range(k)]
        first = max(range(k), key=lambda j: mean_score(noises[j]))
        copies = [
            schedule.renoise(noises[first], 0.5, 0.6, seeded_noise([noise_seed(0, sid, 1, j)], SHAPE)[0])
            for j in range(k)
        ]
        scores = [mean_score(c) for c in copies]
        best = max(range(k), key=scores.__getitem__)
        torch.testing.assert_close(result.x0[i], copies[best], atol=1e-6, rtol=1e-6)
        assert result.chosen[i]["candidate"] == first
        assert result.chosen[i]["seed"] == noise_seed(0, sid, 0, first)
        assert result.trace[i] == pytest.approx([mean_score(noises[first]), scores[best]], abs=1e-6)


def test_without_renoising_copies_stay_copies():
    # the reason for re-noising: a flow sampler is deterministic, so greedy resampling without it ends with
    # K identical particles, and the result is just the best initial noise
    algorithm = SMCSearch(num_particles=4, times=[0.5], lam=1e6, renoise=0.0)
    result = algorithm.run(toy_context(), [0.0] * len(IDS), IDS)
    for i, sid in enumerate(IDS):
        noises = [seeded_noise([noise_seed(0, sid, 0, j)], SHAPE)[0] for j in range(4)]
        best = max(range(4), key=lambda j: mean_score(noises[j]))
        torch.testing.assert_close(result.x0[i], noises[best], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("potential", ["difference", "max", "sum"])
def test_smc_beats_the_mean_particle_on_a_toy_verifier(potential):
    # lambda = 4 on a mean-of-sigmoid score: selection must raise the chosen score above the no-search mean
    ids = list(range(40))
    config = SearchConfig("smc", "v", num_candidates=6, smc_potential=potential, smc_lambda=4.0)
    result = build_search(config).run(toy_context(), [0.0] * len(ids), ids)
    baseline = build_search(SearchConfig("none")).run(toy_context(), [0.0] * len(ids), ids)
    baseline_score = torch.sigmoid(baseline.x0).flatten(1).mean(1)
    assert result.score.mean() > baseline_score.mean() + 0.05


def test_nan_scores_never_win():
    ids = list(range(20))
    config = SearchConfig("smc", "v", num_candidates=4, smc_times=[0.6, 0.3])
    result = build_search(config).run(toy_context(MeanVerifier(nan_above=0.5)), [0.0] * len(ids), ids)
    assert not torch.isnan(result.score).any()
    finite = torch.isfinite(result.score)
    assert finite.any()
    assert (torch.sigmoid(result.x0).flatten(1).mean(1)[finite] <= 0.5).all()


def test_same_seed_same_result_other_seed_other_result():
    algorithm = build_search(SearchConfig("smc", "v", num_candidates=4, smc_resampling="multinomial"))
    a = algorithm.run(toy_context(seed=1), [0.0] * len(IDS), IDS)
    b = algorithm.run(toy_context(seed=1), [0.0] * len(IDS), IDS)
    c = algorithm.run(toy_context(seed=2), [0.0] * len(IDS), IDS)
    torch.testing.assert_close(a.x0, b.x0, rtol=0, atol=0)
    assert not torch.equal(a.x0, c.x0)
    alone = algorithm.run(toy_context(seed=1), [0.0], [IDS[1]])
    torch.testing.assert_close(a.x0[1], alone.x0[0], rtol=0, atol=0)


CONFIGS = [
    SearchConfig("smc", "v", num_candidates=3),
    SearchConfig("smc", "v", num_candidates=2, smc_times=[0.7, 0.45, 0.1], smc_renoise=0.25),
    SearchConfig("smc", "v", num_candidates=3, smc_times=[0.9], smc_renoise=0.3),  # re-noised to t = 1
    SearchConfig("smc", "v", num_candidates=2, smc_renoise=0.0, smc_ess_threshold=0.5),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.num_candidates}-{c.smc_times}-{c.smc_renoise}")
@pytest.mark.parametrize("guidance", [1.0, 2.0])
@pytest.mark.parametrize("solver", ["heun", "euler"])
def test_reported_nfe_equals_counted_forward_passes(config, guidance, solver):
    sampler = Sampler(solver, steps=5, guidance_scale=guidance, micro_batch_size=7)
    ctx = toy_context(sampler=sampler)
    algorithm = build_search(config)
    result = algorithm.run(ctx, [0.5] * len(IDS), IDS)
    counted = ctx.backbone.rows_seen / len(IDS)
    assert result.nfe.tolist() == [counted] * len(IDS)
    assert counted == algorithm.nfe_per_sample(sampler, ctx.backbone)
    assert ctx.verifier.images_scored == result.verifier_calls.sum().item()
    assert result.verifier_calls.tolist() == [config.num_candidates * (len(config.smc_times) + 1)] * len(IDS)


def test_digits_budget_of_ten_particles_is_160_nfe():
    # the sweep's matched-NFE point: Heun x 5 steps, resampling at 0.6 and 0.2, re-noising by 0.1
    # 10 x (10 path + 2 x 1 x0-predictions + 2 x 2 re-noise segments) = 160
    assert SMCSearch(num_particles=10).nfe_per_sample(Sampler("heun", steps=5), ZeroVelocityBackbone()) == 160


@pytest.mark.parametrize(
    "config,match",
    [
        (SearchConfig("smc", "v", num_candidates=0), "num_candidates must be >= 1"),
        (SearchConfig("smc", "v", smc_times=[0.5, 1.0]), r"\(0, 1\)"),
        (SearchConfig("smc", "v", smc_potential="min"), "difference, max, sum"),
        (SearchConfig("smc", "v", smc_resampling="stratified"), "multinomial, systematic"),
        (SearchConfig("smc", "v", smc_ess_threshold=1.5), r"\[0, 1\]"),
    ],
)
def test_bad_settings_are_rejected_with_the_numbers(config, match):
    with pytest.raises(ConfigurationError, match=match):
        build_search(config)
