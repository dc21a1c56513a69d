"""Search runs on every diffusers family through the scheduler sampler: random (best-of-N), zero-order and
paths search, with a toy verifier and with the self-supervised verifier (x0-predictions of the scheduler's
own parameterisation); re-noising uses each backbone's schedule. NFEs are counted exactly."""

from __future__ import annotations

import pytest
import torch

from lightning_search.sampling import Sampler
from lightning_search.search import PathSearch, RandomSearch, SearchContext, ZeroOrderSearch
from lightning_search.verifiers import SelfSupervisedVerifier
from tests.sampling.helpers import MeanVerifier

FAMILIES = ["sd", "sdxl", "pixart", "flux", "dit", "sd3"]
CONDITIONS = {"dit": [207, 3]}
TEXT = ["a red car", {"prompt": "two dogs", "negative_prompt": "blurry"}]


def _setup(request, family: str):
    backbone = request.getfixturevalue(family)
    scheduler = {"sd": "ddim", "sdxl": "euler", "pixart": "dpmsolver++", "dit": "ddim"}.get(family)
    if scheduler:
        backbone.set_scheduler(scheduler)
    guidance = 1.0 if family == "flux" else 2.0  # FLUX-dev: distilled guidance, no CFG
    return backbone, Sampler(solver="scheduler", steps=3, guidance_scale=guidance), CONDITIONS.get(family, TEXT)


@pytest.mark.parametrize("family", FAMILIES)
def test_random_search_picks_the_best_candidate(request, family):
    backbone, sampler, conditions = _setup(request, family)
    verifier = MeanVerifier()
    search = RandomSearch(num_candidates=3, candidate_steps=2)
    ctx = SearchContext(backbone, sampler, verifier, seed=11)
    with torch.no_grad():
        result = search.run(ctx, conditions, [0, 1])
        # brute force: every candidate integrated with 2 steps, scored; the best noise re-denoised with 3
        noise = ctx.noise(result.candidate_seeds)
        for i, condition in enumerate(conditions):
            cond = backbone.encode_conditions([condition] * 3)
            scores = verifier.score(
                backbone.decode(sampler.sample(backbone, noise[i], cond, steps=2).x), [condition] * 3
            )
            best = int(scores.argmax())
            assert result.chosen[i]["candidate"] == best
            one = backbone.encode_conditions([condition])
            final = backbone.decode(sampler.sample(backbone, noise[i, best : best + 1], one).x)
            torch.testing.assert_close(result.images[i], final[0], atol=1e-5, rtol=1e-5)
    per_step = 2 if sampler.guided else 1
    assert result.nfe.tolist() == [(3 * 2 + 3) * per_step] * 2 == [search.nfe_per_sample(sampler, backbone)] * 2
    assert result.images.shape == (2, 3, backbone.height, backbone.width)


@pytest.mark.parametrize("family", FAMILIES)
def test_paths_and_zero_order_search_count_every_nfe(request, family):
    backbone, sampler, conditions = _setup(request, family)
    ctx = SearchContext(backbone, sampler, MeanVerifier(), seed=3)
    for search in (
        PathSearch(num_paths=2, branches=2, start=0.6, forward=0.1, backward=0.35),
        ZeroOrderSearch(num_neighbors=2, iterations=1, step_size=0.5, candidate_steps=2),
    ):
        with torch.no_grad():
            result = search.run(ctx, conditions, [5, 6])
        assert result.nfe.tolist() == [search.nfe_per_sample(sampler, backbone)] * 2
        assert 0 <= result.images.min() and result.images.max() <= 1


def test_renoising_uses_the_backbone_schedule(sd, flux):
    """x_b = (a_b / a_a) x_a + sqrt(s_b^2 - (a_b / a_a)^2 s_a^2) eps, with a, s of the scheduler's own schedule."""
    x, eps = torch.randn(1, *sd.latent_shape), torch.randn(1, *sd.latent_shape)
    abar = sd.scheduler.alphas_cumprod.double()
    a_a, a_b = abar[399].sqrt(), abar[699].sqrt()  # t = 0.4 and 0.7
    expected = (a_b / a_a) * x + ((1 - abar[699]) - (a_b / a_a) ** 2 * (1 - abar[399])).sqrt() * eps
    torch.testing.assert_close(sd.schedule.renoise(x, 0.4, 0.7, eps), expected.float(), atol=1e-6, rtol=1e-5)
    x, eps = torch.randn(1, *flux.latent_shape), torch.randn(1, *flux.latent_shape)
    expected = (0.3 / 0.6) * x + (0.7**2 - (0.3 / 0.6) ** 2 * 0.4**2) ** 0.5 * eps
    torch.testing.assert_close(flux.schedule.renoise(x, 0.4, 0.7, eps), expected, atol=1e-6, rtol=1e-5)


def test_self_supervised_verifier_guides_search_on_pixart(pixart):
    pixart.set_scheduler("dpmsolver++")
    verifier = SelfSupervisedVerifier(clip_model="tiny", t=0.4)
    ctx = SearchContext(pixart, Sampler(solver="scheduler", steps=4, guidance_scale=2.0), verifier, seed=0)
    with torch.no_grad():
        result = RandomSearch(num_candidates=2).run(ctx, TEXT[:1], [0])
    assert torch.isfinite(result.score).all() and -1 <= float(result.score[0]) <= 1
