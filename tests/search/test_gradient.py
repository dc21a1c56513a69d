"""Gradient search: the ascent step against a hand formula, a toy verifier's score going up, the noise
staying on its sphere, and NFE accounting that counts backward passes."""

import math

import pytest
import torch

from lightning_search.errors import ConfigurationError
from lightning_search.sampling import Sampler, noise_seed, seeded_noise
from lightning_search.search import GradientSearch, SearchConfig, SearchContext, build_search
from lightning_search.search.gradient import BACKWARD_COST
from tests.sampling.helpers import ConstantX0Backbone, MeanVerifier
from tests.search.test_algorithms import IDS, SHAPE, mean_score, toy_context


class _CountRows(torch.autograd.Function):
    """Identity that counts the rows flowing through it forward and backward."""

    @staticmethod
    def forward(ctx, x, counter):
        ctx.counter = counter
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        ctx.counter.backward_rows += grad.shape[0]
        return grad, None


class ContractingBackbone(ConstantX0Backbone):
    """A flow model with velocity -x / 2 through a counting identity: forward and backward rows are the
    forward and backward NFEs (summed over samples)."""

    prediction_type = "velocity"

    def __init__(self) -> None:
        super().__init__(shape=SHAPE)
        self.backward_rows = 0

    def forward(self, x_t, t, cond):
        self.rows_seen += x_t.shape[0]
        return -0.5 * _CountRows.apply(x_t, self)

    def decode(self, x0):
        return torch.sigmoid(x0)


class DetachedVerifier(MeanVerifier):
    """Scores like MeanVerifier but through a non-differentiable path."""

    def score(self, images, conditions, x0_images=None):
        return super().score(images.detach(), conditions)


def test_one_step_matches_the_hand_formula():
    # zero velocity: a sample is its noise, score = mean(sigmoid(n)), gradient = s (1 - s) / d; the step is
    # n' = sqrt(1 - lam^2) n + lam |n| g_perp / |g_perp| with g_perp the part of g orthogonal to n
    lam = 0.3
    result = GradientSearch(iterations=1, step_size=lam, candidate_steps=1).run(toy_context(), [0.0] * len(IDS), IDS)
    for i, sid in enumerate(IDS):
        n = seeded_noise([noise_seed(0, sid, 0, 0)], SHAPE)[0].flatten().double()
        s = torch.sigmoid(n)
        g = s * (1 - s) / n.numel()
        g_perp = g - (g @ n) / (n @ n) * n
        expected = math.sqrt(1 - lam**2) * n + lam * n.norm() * g_perp / g_perp.norm()
        torch.testing.assert_close(result.x0[i].flatten().double(), expected, atol=1e-5, rtol=1e-5)
        assert result.x0[i].norm().item() == pytest.approx(n.norm().item(), rel=1e-5)  # stays on its sphere
        assert result.trace[i][0] == pytest.approx(mean_score(n.float()), abs=1e-6)
        assert result.trace[i][-1] == pytest.approx(result.score[i].item(), abs=1e-6)


def test_gradient_ascent_raises_a_toy_verifiers_score():
    ids = list(range(30))
    ctx = SearchContext(ContractingBackbone(), Sampler("heun", steps=4), MeanVerifier(), 0)
    none = build_search(SearchConfig("none")).run(ctx, [0.0] * len(ids), ids)
    result = GradientSearch(iterations=4, step_size=0.2, candidate_steps=2).run(ctx, [0.0] * len(ids), ids)
    assert (result.score > none.score + 1e-4).all()
    # the few-step sampler's score of the iterates rises too (first vs last iterate)
    for trace in result.trace:
        assert trace[3] > trace[0]


def test_runs_under_inference_mode_like_lightning_predict():
    ctx = toy_context()
    with torch.inference_mode():
        result = GradientSearch(iterations=2, step_size=0.2).run(ctx, [0.0] * len(IDS), IDS)
    baseline = toy_context()
    none = build_search(SearchConfig("none")).run(baseline, [0.0] * len(IDS), IDS)
    assert (result.score > none.score).all()


@pytest.mark.parametrize("steps", [1, 3, None])
@pytest.mark.parametrize("guidance", [1.0, 2.0])
@pytest.mark.parametrize("solver", ["heun", "euler"])
def test_reported_nfe_counts_forward_and_backward_passes(steps, guidance, solver):
    sampler = Sampler(solver, steps=5, guidance_scale=guidance, micro_batch_size=2)
    backbone = ContractingBackbone()
    ctx = SearchContext(backbone, sampler, MeanVerifier(), 0)
    algorithm = build_search(SearchConfig("gradient", "v", iterations=2, candidate_steps=steps))
    result = algorithm.run(ctx, [0.5] * len(IDS), IDS)
    forward, backward = backbone.rows_seen / len(IDS), backbone.backward_rows / len(IDS)
    assert backward > 0
    counted = forward + BACKWARD_COST * backward
    assert result.nfe.tolist() == [counted] * len(IDS)
    assert counted == algorithm.nfe_per_sample(sampler, backbone)
    # verifier: 1 forward per iteration (plus backward_cost charged for its backward), the last iterate, and
    # the final scoring of the re-denoised best iterate
    redenoised = int(steps is not None and steps != sampler.steps)
    assert ctx.verifier.images_scored == len(IDS) * (2 + 1 + redenoised)
    assert result.verifier_calls.tolist() == [2 * (1 + BACKWARD_COST) + 1 + redenoised] * len(IDS)


def test_digits_one_step_budget_is_18_nfe():
    # one gradient step through a 1-step Heun sampler (2 NFE forward + 2 x 2 backward), the last iterate's
    # 2-NFE forward (to compare it with the first), + the 10-NFE final sample of the best iterate
    search = GradientSearch(iterations=1, candidate_steps=1)
    assert search.nfe_per_sample(Sampler("heun", steps=5), ContractingBackbone()) == 18


def test_a_verifier_without_gradients_is_rejected():
    with pytest.raises(ConfigurationError, match="differentiable"):
        GradientSearch().run(toy_context(DetachedVerifier()), [0.0], [1])
    declared = MeanVerifier()
    declared.differentiable = False
    with pytest.raises(ConfigurationError, match="differentiable"):
        GradientSearch().run(toy_context(declared), [0.0], [1])


@pytest.mark.parametrize(
    "config,match",
    [
        (SearchConfig("gradient", "v", iterations=0), "iterations must be >= 1, got 0"),
        (SearchConfig("gradient", "v", step_size=0.0), r"\(0, 1\]"),
        (SearchConfig("gradient", "v", candidate_steps=0), "candidate_steps must be >= 1"),
    ],
)
def test_bad_settings_are_rejected_with_the_numbers(config, match):
    with pytest.raises(ConfigurationError, match=match):
        build_search(config)


def test_the_result_is_the_best_iterate():
    """Large normalised steps overshoot a narrow optimum, so some iterates score below earlier ones; the
    result is the best iterate all the same (ReNO keeps the best), checked against every score the verifier
    actually returned."""

    class Peaked(MeanVerifier):
        seen: list[torch.Tensor]

        def score(self, images, conditions, x0_images=None):
            s = -(images.float().mean(dim=(1, 2, 3)) - 0.55).abs()
            self.seen.append(s.detach().clone())
            return s

    verifier = Peaked()
    verifier.seen = []
    ids = list(range(16))
    ctx = SearchContext(ContractingBackbone(), Sampler("euler", steps=2), verifier, 0)
    result = GradientSearch(iterations=4, step_size=0.9, candidate_steps=None).run(ctx, [0.0] * len(ids), ids)
    seen = torch.stack(verifier.seen, dim=1)  # (B, 5): the five iterates, scored as they were made
    assert seen.shape == (len(ids), 5)
    assert (seen[:, 1:] < seen[:, :-1]).any()  # some step made a sample worse: the test can fail
    torch.testing.assert_close(result.score, seen.max(dim=1).values, rtol=0, atol=1e-7)
