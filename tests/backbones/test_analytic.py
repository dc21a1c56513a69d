"""The analytic backbone's closed forms against Monte Carlo, so that tests built on it rest on checked ground."""

from __future__ import annotations

import pytest
import torch

from lightning_search.backbones.analytic import GaussianMixtureBackbone
from lightning_search.sampling import Sampler

MEANS = ((-2.0, 0.0), (2.0, 1.0))
WEIGHTS = (0.3, 0.7)


def mixture(schedule: str, prediction_type: str) -> GaussianMixtureBackbone:
    return GaussianMixtureBackbone(MEANS, std=0.2, weights=WEIGHTS, schedule=schedule, prediction_type=prediction_type)


def draw_data(b: GaussianMixtureBackbone, n: int, gen: torch.Generator) -> torch.Tensor:
    k = torch.multinomial(torch.tensor(WEIGHTS), n, replacement=True, generator=gen)
    return torch.tensor(MEANS, dtype=torch.float64)[k] + 0.2 * torch.randn(n, 2, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("schedule", ["flow", "vp"])
def test_posterior_mean_equals_importance_sampling(schedule):
    """E[x0 | x_t] by self-normalised importance sampling from the data (no use of the closed form)."""
    b = mixture(schedule, "epsilon")
    gen = torch.Generator().manual_seed(0)
    x0 = draw_data(b, 400_000, gen)
    for t in (0.2, 0.5, 0.8):
        tt = torch.tensor(t, dtype=torch.float64)
        a, s = float(b.schedule.alpha(tt)), float(b.schedule.sigma(tt))
        x_t = torch.tensor([[0.5, 0.3], [-1.0, 0.0]], dtype=torch.float64)
        log_w = -((x_t[:, None] - a * x0[None]) ** 2).sum(-1) / (2 * s**2)  # p(x_t | x0), up to a constant
        w = torch.softmax(log_w, dim=1)
        expected = w @ x0
        ours, _ = b.posterior(x_t, torch.full((2,), t))
        torch.testing.assert_close(ours, expected, atol=0.02, rtol=0.02)


@pytest.mark.parametrize("schedule", ["flow", "vp"])
def test_marginal_moments_equal_the_sampled_marginal(schedule):
    b = mixture(schedule, "epsilon")
    gen = torch.Generator().manual_seed(1)
    for t in (0.0, 0.3, 0.7, 1.0):
        x = b.sample_marginal(t, 200_000, gen).double()
        mean, var = b.marginal_moments(t)
        torch.testing.assert_close(x.mean(0), mean, atol=0.01, rtol=0)
        torch.testing.assert_close(x.var(0), var, atol=0.0, rtol=0.01)


@pytest.mark.parametrize(
    ("schedule", "prediction_type"), [("flow", "velocity"), ("vp", "epsilon"), ("vp", "v_prediction")]
)
def test_the_exact_ode_carries_noise_to_the_data(schedule, prediction_type):
    """With an exact denoiser the probability-flow ODE maps q_1 onto the mixture: modes in their weights,
    spread as the data's (Heun, 40 steps)."""
    b = mixture(schedule, prediction_type)
    gen = torch.Generator().manual_seed(2)
    noise = b.sample_marginal(1.0, 6000, gen)
    x = Sampler("heun", steps=40).sample(b, noise, b.encode_conditions([0] * 6000)).x
    modes = b.mode_of(x)
    assert (modes == 1).float().mean().item() == pytest.approx(WEIGHTS[1], abs=0.02)
    _, var = b.marginal_moments(0.0)
    torch.testing.assert_close(x.double().var(0), var, atol=0.0, rtol=0.05)
    within = x.double() - torch.tensor(MEANS, dtype=torch.float64)[modes]
    assert within.std(0).tolist() == pytest.approx([0.2, 0.2], rel=0.1)
