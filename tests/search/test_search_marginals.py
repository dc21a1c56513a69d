"""Search over paths and SMC on the analytic backbone: every state they re-noise or score at a time t has
the marginal q_t (closed form), on our ODE grid and on FLUX.1-dev's shifted scheduler grid at 1024 px.

With a verifier that prefers nothing (a constant) and SMC's lambda = 0, selection is independent of the
states, so an exact denoiser and correct times keep every intermediate state on the marginal of its time.
A segment that ran to another time than the one the algorithm then re-noises from or scores at (the
fidelity bug on non-uniform grids) puts states at time t with the spread of another time.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from lightning_search.backbones.analytic import GaussianMixtureBackbone
from lightning_search.sampling import Sampler
from lightning_search.search import PathSearch, SearchContext, SMCSearch
from lightning_search.verifiers.base import Verifier
from tests.backbones.real_grids import FLUX_DEV, flux_mu


class Indifferent(Verifier):
    """Every image scores 0: search selects independently of the states."""

    def score(self, images, conditions, x0_images=None):
        return torch.zeros(images.shape[0], device=images.device)


def flux_analytic() -> GaussianMixtureBackbone:
    config = {k: v for k, v in FLUX_DEV.items() if not k.startswith("_")}
    return GaussianMixtureBackbone(scheduler=FlowMatchEulerDiscreteScheduler(**config), mu=flux_mu(FLUX_DEV, 1024))


SETUPS = {
    "heun-10": (GaussianMixtureBackbone, Sampler("heun", steps=10)),
    "flux-dev-1024-30": (flux_analytic, Sampler("scheduler", steps=30)),
}
ALGORITHMS = {
    "paths": PathSearch(num_paths=2, branches=2, start=0.6, forward=0.1, backward=0.2),
    "smc": SMCSearch(num_particles=2, times=(0.6, 0.2), lam=0.0, renoise=0.1),
}


def observe(monkeypatch, backbone: GaussianMixtureBackbone):
    """Record (what, t, states) of every x0-prediction and both sides of every re-noising."""
    seen = []
    predict_x0, renoise = Sampler.predict_x0, backbone.schedule.renoise

    def logged_predict_x0(self, b, x, t, cond, null_cond=None):
        seen.append(("scored at", t, x.clone()))
        return predict_x0(self, b, x, t, cond, null_cond)

    def logged_renoise(x, t_a, t_b, eps):
        out = renoise(x, t_a, t_b, eps)
        seen.extend([("re-noised from", t_a, x.clone()), ("re-noised to", t_b, out.clone())])
        return out

    monkeypatch.setattr(Sampler, "predict_x0", logged_predict_x0)
    monkeypatch.setattr(backbone.schedule, "renoise", logged_renoise)
    return seen


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=str)
@pytest.mark.parametrize("setup", SETUPS, ids=str)
def test_every_state_has_the_marginal_of_its_time(monkeypatch, setup, algorithm):
    make, sampler = SETUPS[setup]
    backbone, search = make(), ALGORITHMS[algorithm]
    seen = observe(monkeypatch, backbone)
    ids = list(range(2000))
    result = search.run(SearchContext(backbone, sampler, Indifferent(), seed=0), [0] * len(ids), ids)
    checked = 0
    for what, t, x in seen:
        if t < 0.15:  # near t = 0 the within-mode spread is the solver's discretisation, not the times
            continue
        _, var = backbone.marginal_moments(t)
        err = (x.reshape(-1, 2).double().var(0) / var - 1).abs().max().item()
        assert err < 0.08, f"{what} t = {t:.3f}: variance off by {err:.0%}"
        checked += 1
    assert checked >= 4
    # the finished samples are draws of the data: both modes, in their weights
    assert backbone.mode_of(result.x0).float().mean().item() == pytest.approx(0.5, abs=0.04)
