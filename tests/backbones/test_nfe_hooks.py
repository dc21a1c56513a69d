"""The NFEs every algorithm reports on every family equal the forward passes of the denoising network itself,
counted by hooks on the UNet / transformer (rows per call: a guided call carries two rows per sample, as
the pipelines run it), backward passes (gradient search) counted the same way and charged at
``BACKWARD_COST``. Nothing here uses the formulas the algorithms count with."""

from __future__ import annotations

import pytest
import torch

from lightning_search.lora import denoiser
from lightning_search.sampling import Sampler
from lightning_search.search import SearchConfig, SearchContext, build_search
from lightning_search.search.gradient import BACKWARD_COST
from tests.sampling.helpers import MeanVerifier

FAMILIES = ["sd", "sdxl", "pixart", "flux", "dit"]
CONFIGS = [
    SearchConfig("none"),
    SearchConfig("random", "v", num_candidates=3, candidate_steps=2),
    SearchConfig("zero_order", "v", num_candidates=2, iterations=2, candidate_steps=2),
    SearchConfig("paths", "v", num_candidates=2, branches=2, path_start=0.7, path_forward=0.2, path_backward=0.45),
    SearchConfig("smc", "v", num_candidates=2, smc_times=[0.5], smc_renoise=0.2),
    SearchConfig("gradient", "v", iterations=1, candidate_steps=1),
    SearchConfig("pruning", "v", num_candidates=4, prune_times=[0.4], prune_keep=[2]),
    SearchConfig("evolution", "v", num_candidates=3, iterations=2, elites=1, evo_state_time=0.5),
]
# algorithms that branch by the sampler's noise, on our stochastic solver (DDIM with eta = 1)
STOCHASTIC = [
    SearchConfig("beam", "v", num_candidates=2, branches=2),
    SearchConfig("budget_forcing", "v", num_candidates=2, budget=48),
    SearchConfig("smc", "v", num_candidates=2, smc_times=[0.5], smc_renoise=0.0),
]


class RowCounter:
    def __init__(self, network: torch.nn.Module) -> None:
        self.forward = self.backward = 0
        self.handles = [
            network.register_forward_hook(self._count_forward, with_kwargs=True),
            network.register_full_backward_hook(self._count_backward),
        ]

    def _count_forward(self, module, args, kwargs, output):
        # the latents: the first tensor argument (FLUX's transformer takes them as hidden_states=)
        self.forward += next(a.shape[0] for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))

    def _count_backward(self, module, grad_input, grad_output):
        self.backward += next(g.shape[0] for g in grad_output if g is not None)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize("config", CONFIGS + STOCHASTIC, ids=lambda c: c.algorithm)
@pytest.mark.parametrize("family", FAMILIES)
def test_reported_nfe_equals_hooked_forward_passes(request, family, config):
    backbone = request.getfixturevalue(family)
    backbone.set_scheduler({"flux": "flow_match_euler", "pixart": "dpmsolver++", "sdxl": "euler"}.get(family, "ddim"))
    guidance = 1.0 if family == "flux" else 2.0  # FLUX-dev: distilled guidance, one row per sample
    if config in STOCHASTIC:
        sampler = Sampler(solver="ddim", steps=3, eta=1.0, guidance_scale=guidance)
    else:
        sampler = Sampler(solver="scheduler", steps=3, guidance_scale=guidance)
    conditions = [207, 3] if family == "dit" else ["a red car", {"prompt": "two dogs", "negative_prompt": "blurry"}]
    ctx = SearchContext(backbone, sampler, MeanVerifier(), seed=1)
    algorithm = build_search(config)
    counter = RowCounter(denoiser(backbone)[1])
    try:
        if config.algorithm == "gradient":
            result = algorithm.run(ctx, conditions, [0, 1])
        else:
            with torch.no_grad():
                result = algorithm.run(ctx, conditions, [0, 1])
    finally:
        counter.remove()
    counted = (counter.forward + BACKWARD_COST * counter.backward) / len(conditions)
    assert (counter.backward > 0) == (config.algorithm == "gradient")
    if config.algorithm == "budget_forcing":  # adaptive: exact per sample, at most the budget
        assert result.nfe.float().mean().item() == counted and (result.nfe <= config.budget).all()
        return
    assert result.nfe.tolist() == [counted] * len(conditions)
    assert counted == algorithm.nfe_per_sample(sampler, backbone)
