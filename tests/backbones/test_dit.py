"""DiT on ImageNet classes: DDIM sampling reproduces DiTPipeline (whose noise draw is patched: it takes
no latents=), with guidance on epsilon only and the null class 1000."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from lightning_search.errors import ConfigurationError
from tests.backbones.helpers import PARITY_ATOL, framework_images, max_abs_diff, noise_for


def _pipe_images(backbone, labels, noise, steps, guidance_scale):
    with mock.patch("diffusers.pipelines.dit.pipeline_dit.randn_tensor", return_value=noise.clone()):
        return backbone.pipe(labels, num_inference_steps=steps, guidance_scale=guidance_scale, output_type="pt").images


@pytest.mark.parametrize("guidance_scale", [4.0, 1.0])
def test_dit_ddim_matches_the_pipeline(dit, guidance_scale):
    dit.set_scheduler("ddim")
    labels = [207, 360]
    noise = noise_for(dit, 2)
    ref = _pipe_images(dit, labels, noise, 6, guidance_scale)
    ours, out = framework_images(dit, labels, noise, 6, guidance_scale)
    assert max_abs_diff(ours, ref) <= PARITY_ATOL
    assert out.nfe == (12 if guidance_scale > 1 else 6)
    assert max_abs_diff(ref[0], ref[1]) > 1e-2


def test_dit_conditions(dit):
    cond = dit.encode_conditions([1, 999])
    assert cond["pos"].tolist() == [1, 999] and dit.null_conditions(cond)["pos"].tolist() == [1000, 1000]
    with pytest.raises(ConfigurationError, match="0..999"):
        dit.encode_conditions([1000])
    with pytest.raises(ConfigurationError, match="class ids"):
        dit.encode_conditions(["golden retriever"])  # the tiny twin has no label names
    k = torch.tensor([10, 700])
    t = (k + 1).double() / 1000
    torch.testing.assert_close(dit.schedule.alpha(t) ** 2, dit.scheduler.alphas_cumprod[k].double())
