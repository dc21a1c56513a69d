"""The shared pipeline wrapper: every family's network call is visible to forward and full backward hooks, and
the one load path (typed constructor -> settings, ``from_pipeline``, the checkpoint's pipeline class)."""

from __future__ import annotations

import pytest
import torch

from lightning_search.backbones.pixart import PixArtBackbone
from lightning_search.backbones.stable_diffusion import StableDiffusionXLBackbone
from lightning_search.errors import CheckpointError, ConfigurationError
from lightning_search.lora import denoiser
from tests.backbones.helpers import PROMPTS, noise_for

FAMILIES = ["sd", "sdxl", "pixart", "flux", "dit", "sd3"]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_denoiser_call_is_seen_by_forward_and_full_backward_hooks(request, family):
    """A network called with ``return_dict=True`` returns a dataclass, whose tensors
    ``register_full_backward_hook`` does not wrap: the hook would never fire (gradient search and NFE counting
    rely on it). Each family calls its network so that the hooks see a tuple of tensors and the backward pass."""
    backbone = request.getfixturevalue(family)
    network = denoiser(backbone)[1]
    outputs, backward = [], []
    handles = [
        network.register_forward_hook(lambda module, args, out: outputs.append(out)),
        network.register_full_backward_hook(lambda module, grad_in, grad_out: backward.append(grad_out)),
    ]
    cond = backbone.encode_conditions([207, 3] if family == "dit" else PROMPTS)
    x = noise_for(backbone, 2).requires_grad_(True)
    try:
        velocity_or_eps = backbone(x, torch.full((2,), 0.5), cond)
        velocity_or_eps.square().mean().backward()
    finally:
        for handle in handles:
            handle.remove()
        network.zero_grad(set_to_none=True)  # the session's fixture keeps no gradients
    assert len(outputs) == 1 and type(outputs[0]) is tuple and isinstance(outputs[0][0], torch.Tensor)
    assert len(backward) == 1 and backward[0][0].shape[0] == 2
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_from_pipeline_takes_the_constructor_defaults_and_names_unknown_settings(sdxl):
    """Settings not given take the ``__init__`` defaults, so wrapping a pipeline equals constructing."""
    wrapped = StableDiffusionXLBackbone.from_pipeline(sdxl.pipe, clip_skip=2)
    assert (wrapped.guidance_rescale, wrapped.clip_skip) == (0.0, 2)
    assert wrapped.crops_coords_top_left == (0, 0) and wrapped.original_size == wrapped.target_size == (32, 32)
    assert wrapped.unet is sdxl.unet and type(wrapped.scheduler) is type(sdxl.scheduler)
    with pytest.raises(ConfigurationError, match="no setting guidance_scale.*guidance_rescale, clip_skip"):
        StableDiffusionXLBackbone.from_pipeline(sdxl.pipe, guidance_scale=5.0)


def test_a_checkpoint_holding_another_pipeline_class_is_refused(dit, tmp_path):
    dit.pipe.save_pretrained(tmp_path / "dit")
    with pytest.raises(CheckpointError, match="holds a DiTPipeline; PixArtBackbone takes PixArtSigmaPipeline or"):
        PixArtBackbone(str(tmp_path / "dit"))


@pytest.mark.parametrize(
    "class_path",
    ["StableDiffusionBackbone", "StableDiffusionXLBackbone", "StableDiffusion3Backbone", "PixArtBackbone",
     "FluxBackbone", "DiTBackbone"],
)  # fmt: skip
def test_loading_settings_in_a_config_reach_from_pretrained(class_path, monkeypatch):
    """The loading settings every family takes (``**loading``) are parsed from a config like its own settings
    and passed to ``from_pretrained``; a misspelt one is refused by the parser and by the constructor."""
    from jsonargparse import ArgumentParser

    from lightning_search.backbones import base, pipeline

    seen = {}

    def fake_load(loader, pretrained, **kwargs):
        seen.update(kwargs)
        raise CheckpointError("stop here")

    monkeypatch.setattr(pipeline, "load_pipeline", fake_load)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--backbone", type=base.Backbone)
    init = {"pretrained": "org/model", "torch_dtype": "bfloat16", "variant": "fp16", "local_files_only": True}
    config = parser.parse_args(
        [f"--backbone={{class_path: lightning_search.backbones.{class_path}, init_args: {init}}}"]
    )
    with pytest.raises(CheckpointError, match="stop here"):
        parser.instantiate(config)
    assert {k: seen[k] for k in ("torch_dtype", "variant", "revision", "local_files_only")} == {
        "torch_dtype": "bfloat16", "variant": "fp16", "revision": None, "local_files_only": True}  # fmt: skip
    with pytest.raises(Exception, match="torch_dtyp"):
        parser.parse_args(
            [f"--backbone={{class_path: lightning_search.backbones.{class_path}, init_args: {{torch_dtyp: x}}}}"]
        )
    cls = getattr(__import__("lightning_search.backbones", fromlist=[class_path]), class_path)
    with pytest.raises(ConfigurationError, match="no setting torch_dtyp; its loading settings: torch_dtype"):
        cls("org/model", torch_dtyp="bfloat16")
