import pytest
import torch

from lightning_search.errors import UnknownNameError
from lightning_search.sampling import Sampler, noise_seed, seeded_noise, time_grid
from tests.sampling.helpers import ConstantX0Backbone, vp_constant_backbone


@pytest.mark.parametrize("solver", ["euler", "heun", "ddim"])
def test_every_solver_lands_on_the_exact_solution(solver):
    b = ConstantX0Backbone()
    out = Sampler(solver=solver, steps=4).sample(b, torch.randn(3, 1, 2, 2), b.encode_conditions([0.2, 0.5, 0.9]))
    torch.testing.assert_close(out.x, torch.tensor([0.2, 0.5, 0.9]).view(3, 1, 1, 1).expand(3, 1, 2, 2))


def test_ddim_on_vp_lands_on_x0_and_stops_anywhere():
    b = vp_constant_backbone()
    noise = torch.randn(2, 1, 2, 2)
    out = Sampler(solver="ddim", steps=5).sample(b, noise, b.encode_conditions([0.3, 0.6]), t_start=1.0, t_end=0.4)
    # with x0 = c fixed, DDIM keeps the implied eps = (x_1 - alpha_1 c) / sigma_1 and lands on
    # alpha(t_end) c + sigma(t_end) eps exactly
    s, c = b.schedule, torch.tensor([0.3, 0.6]).view(2, 1, 1, 1)
    one, t_end = torch.tensor(1.0), torch.tensor(0.4)
    eps = (noise - s.alpha(one) * c) / s.sigma(one)
    torch.testing.assert_close(out.x, s.alpha(t_end) * c + s.sigma(t_end) * eps, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "solver,steps,guidance,expected",
    [("euler", 7, 1.0, 7), ("ddim", 7, 1.0, 7), ("heun", 5, 1.0, 10), ("heun", 5, 3.0, 20), ("euler", 4, 2.0, 8)],
)
def test_nfe_is_the_number_of_forward_passes_per_sample(solver, steps, guidance, expected):
    b = ConstantX0Backbone()
    b.prediction_type = "velocity"  # full Heun on a velocity model
    sampler = Sampler(solver=solver, steps=steps, guidance_scale=guidance, micro_batch_size=4)
    out = sampler.sample(b, torch.randn(6, 1, 2, 2), b.encode_conditions([0.1] * 6))
    assert out.nfe == expected == sampler.nfe(b)
    assert b.rows_seen == expected * 6  # guided calls carry the doubled batch


def test_heun_skips_the_last_correction_for_non_velocity_models():
    b = ConstantX0Backbone()  # predicts 'sample'
    sampler = Sampler(solver="heun", steps=5)
    out = sampler.sample(b, torch.randn(2, 1, 2, 2), b.encode_conditions([0.1, 0.2]))
    assert out.nfe == 9 == sampler.nfe(b) == b.rows_seen / 2


def test_micro_batches_do_not_change_the_result(trained_backbone):
    b = trained_backbone
    noise = seeded_noise([noise_seed(0, i) for i in range(10)], b.latent_shape)
    cond = b.encode_conditions(list(range(10)))
    whole = Sampler(steps=3, guidance_scale=2.0, micro_batch_size=1024).sample(b, noise, cond).x
    pieces = Sampler(steps=3, guidance_scale=2.0, micro_batch_size=6).sample(b, noise, cond).x
    torch.testing.assert_close(whole, pieces, atol=1e-6, rtol=1e-5)


def test_x0_predictions_at_requested_times():
    b = ConstantX0Backbone()
    out = Sampler(solver="euler", steps=5).sample(
        b, torch.randn(2, 1, 2, 2), b.encode_conditions([0.25, 0.75]), x0_at=[0.4, 0.61]
    )
    assert set(out.x0) == {0.4, 0.61}
    torch.testing.assert_close(out.x0[0.4][:, 0, 0, 0], torch.tensor([0.25, 0.75]))


def test_time_grid_and_shift():
    assert time_grid(4) == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    shifted = time_grid(2, shift=3.0)
    assert shifted == pytest.approx([1.0, 3 * 0.5 / (1 + 2 * 0.5), 0.0])
    with pytest.raises(ValueError):
        time_grid(0)


def test_unknown_solver_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="euler, euler_maruyama, heun"):
        Sampler(solver="rk45")


def test_guidance_combines_conditional_and_unconditional_outputs():
    b = ConstantX0Backbone()
    # cond predicts x0 = c, uncond predicts 0: guided x0 = w c, and the exact ODE lands on it
    out = Sampler(solver="euler", steps=3, guidance_scale=1.5).sample(
        b, torch.randn(1, 1, 2, 2), b.encode_conditions([0.4])
    )
    torch.testing.assert_close(out.x, torch.full((1, 1, 2, 2), 0.6))
