"""Stochastic sampling: eta -> 0 is the ODE, eta > 0 keeps the forward process's marginals (analytic backbone),
noises are seeded per trajectory and step (batching and cutting change nothing), transitions are the
Gaussians they claim, and diffusers' stochastic schedulers are driven with the same seeded generators as
``pipe(..., generator=[...])``."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_search.backbones.analytic import GaussianMixtureBackbone
from lightning_search.errors import ConfigurationError
from lightning_search.sampling import Sampler, noise_seed
from lightning_search.sampling.noise import step_noise

SEEDS = [noise_seed(0, i) for i in range(3000)]


def analytic(schedule="flow", prediction_type="velocity"):
    return GaussianMixtureBackbone(schedule=schedule, prediction_type=prediction_type)


@pytest.mark.parametrize(("solver", "ode"), [("ddim", "ddim"), ("euler_maruyama", "euler")])
def test_vanishing_noise_is_the_ode(solver, ode):
    b = analytic()
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    cond = b.encode_conditions([0] * 64)
    ours = Sampler(solver, steps=12, eta=1e-7).sample(b, x, cond, seeds=SEEDS[:64]).x
    reference = Sampler(ode, steps=12).sample(b, x, cond).x
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("solver", "eta", "steps", "schedule", "prediction_type", "rtol"),
    [
        ("ddim", 1.0, 100, "flow", "velocity", 0.07),
        ("ddim", 0.5, 100, "vp", "epsilon", 0.07),
        # Euler-Maruyama is first order, and g^2 dt is large just below t = 1 (flow): a looser bound
        ("euler_maruyama", 1.0, 200, "flow", "velocity", 0.15),
        ("euler_maruyama", 0.7, 200, "vp", "v_prediction", 0.12),
    ],
)
def test_noisy_samplers_keep_the_marginals_at_every_time(solver, eta, steps, schedule, prediction_type, rtol):
    """A statistical test with a fixed seed: the states of 3,000 trajectories at each step have the per-
    dimension variance of q_t (closed form), and the finished samples fall in the modes by their weights."""
    b = analytic(schedule, prediction_type)
    x = b.sample_marginal(1.0, 3000, torch.Generator().manual_seed(1))
    out = Sampler(solver, steps=steps, eta=eta).sample(
        b, x, b.encode_conditions([0] * 3000), seeds=SEEDS, keep_transitions=True
    )
    assert len(out.transitions) == steps
    checked = 0
    for step in out.transitions[:: steps // 10]:
        if step.t_next < 0.1:  # near t = 0 the within-mode spread is the discretisation's
            continue
        _, var = b.marginal_moments(step.t_next)
        torch.testing.assert_close(step.x_next.double().var(0), var, atol=0.0, rtol=rtol)
        checked += 1
    assert checked >= 7
    assert b.mode_of(out.x).float().mean().item() == pytest.approx(0.5, abs=0.03)
    # and the noise mattered: the same start without it lands elsewhere
    assert (out.x - Sampler("ddim", steps=steps).sample(b, x, b.encode_conditions([0] * 3000)).x).abs().mean() > 0.05


def test_transitions_are_the_gaussians_they_claim():
    """x_next = mean + std z with z the seeded noise of that row and step, and log_prob is the hand-written
    Gaussian log-density of it."""
    b = analytic()
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(2))
    seeds = SEEDS[:5]
    out = Sampler("euler_maruyama", steps=6, eta=0.8).sample(
        b, x, b.encode_conditions([0] * 5), seeds=seeds, keep_transitions=True
    )
    for step in out.transitions:
        z = step_noise(seeds, step.t, (2,))
        torch.testing.assert_close(step.x_next, step.mean + step.std * z, atol=1e-6, rtol=0)
        if step.std > 0:
            by_hand = torch.tensor(
                [
                    sum(
                        -0.5 * ((xn - m) / step.std) ** 2 - math.log(step.std) - 0.5 * math.log(2 * math.pi)
                        for xn, m in zip(row_x, row_m)
                    )
                    for row_x, row_m in zip(step.x_next.double().tolist(), step.mean.double().tolist())
                ],
                dtype=torch.float64,
            )
            torch.testing.assert_close(step.log_prob(), by_hand, atol=1e-9, rtol=1e-9)
    # the mean is the one step_distribution recomputes from the state (what GRPO differentiates)
    first = out.transitions[0]
    mean, std = Sampler("euler_maruyama", steps=6, eta=0.8).step_distribution(
        b, first.x, first.t, first.t_next, b.encode_conditions([0] * 5)
    )
    torch.testing.assert_close(mean, first.mean)
    assert math.isclose(std, first.std)


def test_noises_do_not_depend_on_batching_or_on_cutting_the_run():
    b = analytic()
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(3))
    cond = b.encode_conditions([0] * 10)
    sampler = Sampler("ddim", steps=8, eta=1.0)
    whole = sampler.sample(b, x, cond, seeds=SEEDS[:10]).x
    small = Sampler("ddim", steps=8, eta=1.0, micro_batch_size=3).sample(b, x, cond, seeds=SEEDS[:10]).x
    torch.testing.assert_close(small, whole, rtol=0, atol=0)
    alone = sampler.sample(b, x[4:5], cond[4:5], seeds=SEEDS[4:5]).x
    torch.testing.assert_close(alone[0], whole[4], rtol=0, atol=0)
    grid = sampler.grid(b)
    first = sampler.sample(b, x, cond, t_end=grid[3], seeds=SEEDS[:10])
    torch.testing.assert_close(
        sampler.sample(b, first.x, cond, t_start=grid[3], seeds=SEEDS[:10]).x, whole, rtol=0, atol=0
    )
    other = sampler.sample(b, x, cond, seeds=SEEDS[10:20]).x  # other trajectories' seeds: other noises
    assert (other - whole).abs().min() > 0


def test_a_stochastic_run_needs_its_seeds_and_a_stochastic_solver_its_eta():
    b = analytic()
    with pytest.raises(ConfigurationError, match="one seed per row"):
        Sampler("ddim", eta=0.5).sample(b, torch.zeros(2, 2), b.encode_conditions([0, 0]))
    with pytest.raises(ConfigurationError, match="stochastic solver"):
        Sampler("heun", eta=0.5)
    with pytest.raises(ConfigurationError, match=r"\[0, 1\]"):
        Sampler("ddim", eta=1.5)
