import pytest
import torch

from lightning_search.backbones.schedules import PREDICTION_TYPES, FlowSchedule, VPSchedule

SCHEDULES = {"flow": FlowSchedule(), "vp": VPSchedule.scaled_linear()}


@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES.keys())
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_x0_prediction_inverts_the_forward_process(schedule, prediction_type):
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 1, 4, 4, generator=gen), torch.randn(6, 1, 4, 4, generator=gen)
    t = torch.tensor([0.05, 0.2, 0.4, 0.6, 0.8, 0.95])
    x_t = schedule.add_noise(x0, eps, t)
    # an oracle network outputs exactly its target; the schedule must recover (x0, eps) from it
    output = schedule.target(x0, eps, t, prediction_type)
    x0_hat, eps_hat = schedule.to_x0_eps(output, x_t, t, prediction_type)
    torch.testing.assert_close(x0_hat, x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(eps_hat, eps, atol=1e-4, rtol=1e-4)


def test_flow_schedule_by_hand():
    s = FlowSchedule()
    x0, eps, t = torch.tensor([2.0]), torch.tensor([-1.0]), torch.tensor([0.25])
    assert s.add_noise(x0, eps, t).item() == pytest.approx(0.75 * 2 - 0.25)
    assert s.target(x0, eps, t, "velocity").item() == pytest.approx(-1.0 - 2.0)  # eps - x0


@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_velocity_is_the_time_derivative_of_the_path(schedule):
    x0, eps = torch.tensor([1.5]), torch.tensor([-0.7])
    for t in (0.1, 0.5, 0.83):
        h = 1e-4
        fd = (schedule.add_noise(x0, eps, torch.tensor(t + h)) - schedule.add_noise(x0, eps, torch.tensor(t - h))) / (
            2 * h
        )
        assert schedule.velocity(x0, eps, torch.tensor(t)).item() == pytest.approx(fd.item(), rel=2e-2, abs=1e-3)


@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_renoising_keeps_the_marginal(schedule):
    # data x0 ~ N(mu, s0^2): x_t ~ N(alpha mu, alpha^2 s0^2 + sigma^2) for every t
    gen = torch.Generator().manual_seed(1)
    n, mu, s0 = 200_000, 0.7, 0.5
    t_a, t_b = 0.3, 0.65
    x0 = mu + s0 * torch.randn(n, generator=gen, dtype=torch.float64)
    x_a = schedule.add_noise(x0, torch.randn(n, generator=gen, dtype=torch.float64), torch.tensor(t_a))
    x_b = schedule.renoise(x_a, t_a, t_b, torch.randn(n, generator=gen, dtype=torch.float64))
    a, s = schedule.alpha(torch.tensor(t_b)).item(), schedule.sigma(torch.tensor(t_b)).item()
    assert x_b.mean().item() == pytest.approx(a * mu, abs=5e-3)
    assert x_b.var().item() == pytest.approx(a**2 * s0**2 + s**2, rel=1e-2)


def test_renoising_backwards_in_time_is_rejected():
    with pytest.raises(ValueError, match="noisier"):
        FlowSchedule().renoise(torch.zeros(1), 0.5, 0.4, torch.zeros(1))


def test_vp_schedule_matches_diffusers_alphas_cumprod():
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    s = VPSchedule(scheduler.alphas_cumprod)
    for k in (0, 10, 500, 999):
        t = torch.tensor((k + 1) / 1000)
        assert s.alpha(t).item() ** 2 == pytest.approx(scheduler.alphas_cumprod[k].item(), rel=1e-5)
        assert s.timestep(t).item() == pytest.approx(k)
    assert s.alpha(torch.tensor(0.0)).item() == 1.0
