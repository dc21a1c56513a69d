"""LoRA through peft: only adapters train, the reference is the adapter-free network, and adapters round-trip
through diffusers' file format: into a fresh module (merged or not) and into a plain diffusers pipeline."""

from __future__ import annotations

import pytest
import torch

from lightning_search import DiffusionModule
from lightning_search.backbones import DigitsBackbone
from lightning_search.backbones.pipeline import tiny_modules
from lightning_search.backbones.stable_diffusion import StableDiffusionBackbone, tiny_sd_pipeline
from lightning_search.callbacks import SaveLoraAdapter
from lightning_search.errors import CheckpointError, ConfigurationError
from lightning_search.lora import (
    ADAPTER_FILE,
    LoraSettings,
    adapters_disabled,
    lora_parameters,
    save_lora_adapter,
)
from lightning_search.objectives import DiffusionDPO
from lightning_search.sampling import Sampler


def _pairs(n: int = 4) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"image_w": torch.rand(n, 1, 8, 8, generator=g), "image_l": torch.rand(n, 1, 8, 8, generator=g),
            "condition": list(range(n))}  # fmt: skip


def _randomise_adapters(backbone, seed: int = 0) -> None:
    """Non-zero B matrices (a fresh adapter is the identity), as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in lora_parameters(backbone):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_gradients_reach_only_lora_parameters(digits_setup):
    module = DiffusionModule(DigitsBackbone("digits-xs"), objective=DiffusionDPO(), lora=LoraSettings(rank=2),
                             init_weights=str(digits_setup.generator))  # fmt: skip
    _randomise_adapters(module.backbone)
    module.training_step(_pairs(), 0).backward()
    named = dict(module.named_parameters())
    with_grad = {n for n, p in named.items() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad and all("lora_" in n for n in with_grad)
    assert {n for n, p in named.items() if p.requires_grad} == {n for n in named if "lora_" in n}
    optimizer = module.configure_optimizers()
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == sum(
        p.numel() for n, p in named.items() if "lora_" in n
    )


def test_reference_is_the_base_network_without_a_copy(trained_backbone, digits_setup):
    module = DiffusionModule(DigitsBackbone("digits-xs"), objective=DiffusionDPO(), lora={"rank": 2},
                             init_weights=str(digits_setup.generator))  # fmt: skip
    x, t, c = torch.randn(5, 1, 8, 8), torch.rand(5), torch.arange(5)
    _randomise_adapters(module.backbone)
    with torch.no_grad():
        base, tuned, ref = trained_backbone(x, t, c), module.backbone(x, t, c), module.reference()(x, t, c)
    assert torch.equal(ref, base) and not torch.allclose(tuned, base)
    assert module._frozen_reference is None  # no second network in memory
    assert all(p.requires_grad for _, p in lora_parameters(module.backbone))  # switched back on after the call
    with adapters_disabled(module.backbone):
        assert not any(p.requires_grad for _, p in lora_parameters(module.backbone))


def test_full_fine_tune_reference_is_a_frozen_copy_outside_the_state_dict(digits_setup, trained_backbone):
    module = DiffusionModule(DigitsBackbone("digits-xs"), objective=DiffusionDPO(),
                             init_weights=str(digits_setup.generator))  # fmt: skip
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    module.training_step(_pairs(), 0).backward()
    optimizer.step()
    x, t, c = torch.randn(3, 1, 8, 8), torch.rand(3), torch.arange(3)
    with torch.no_grad():
        assert torch.equal(module.reference()(x, t, c), trained_backbone(x, t, c))
        assert not torch.allclose(module.backbone(x, t, c), trained_backbone(x, t, c))
    assert all(k.startswith("backbone.") for k in module.state_dict())
    assert len(module.state_dict()) == len(trained_backbone.state_dict())


@pytest.mark.parametrize("merge", [False, True])
def test_digits_adapter_round_trip(tmp_path, digits_setup, merge):
    module = DiffusionModule(DigitsBackbone("digits-xs"), lora=LoraSettings(rank=3, alpha=6.0),
                             init_weights=str(digits_setup.generator))  # fmt: skip
    _randomise_adapters(module.backbone)
    save_lora_adapter(module.backbone, tmp_path / "adapter", module.lora_metadata)
    fresh = DiffusionModule(DigitsBackbone("digits-xs"), init_weights=str(digits_setup.generator),
                            lora_path=str(tmp_path / "adapter"), merge_lora=merge)  # fmt: skip
    x, t, c = torch.randn(6, 1, 8, 8), torch.rand(6), torch.arange(6)
    with torch.no_grad():
        expected, got = module.backbone(x, t, c), fresh.backbone(x, t, c)
    if merge:
        assert not any("lora_" in k for k in fresh.state_dict())
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    else:
        assert torch.equal(got, expected)


def test_adapter_mismatch_and_conflicting_settings_are_explained(tmp_path, digits_setup):
    small = DiffusionModule(DigitsBackbone("digits-xs"), lora={"rank": 2})
    save_lora_adapter(small.backbone, tmp_path / "xs", small.lora_metadata)
    with pytest.raises(CheckpointError, match="digits-|size|does not"):
        DiffusionModule(DigitsBackbone("digits-s"), lora_path=str(tmp_path / "xs"))
    with pytest.raises(CheckpointError, match="no LoRA adapter"):
        DiffusionModule(DigitsBackbone("digits-xs"), lora_path=str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="not both"):
        DiffusionModule(DigitsBackbone("digits-xs"), lora={"rank": 2}, lora_path=str(tmp_path / "xs"))
    with pytest.raises(ConfigurationError, match="do not match"):
        DiffusionModule(DigitsBackbone("digits-xs"), lora={"rank": 2, "target_modules": ["to_q"]})


@pytest.fixture(scope="module")
def tiny_sd_with_adapter(tmp_path_factory):
    """A tiny SD module with a rank-4, alpha-8 adapter (scale 2: the config must travel with the weights)."""
    module = DiffusionModule(StableDiffusionBackbone("tiny", scheduler="ddim"), lora=LoraSettings(rank=4, alpha=8.0))
    _randomise_adapters(module.backbone)
    folder = tmp_path_factory.mktemp("sd_lora")
    trainer = type("T", (), {"fast_dev_run": False, "is_global_zero": True})()
    SaveLoraAdapter(str(folder)).on_train_end(trainer, module)  # the callback that ends a fit
    return module, folder


def _sd_images(backbone, noise, prompts):
    sampler = Sampler(solver="scheduler", steps=3, guidance_scale=4.0)
    with torch.no_grad():
        return backbone.decode(sampler.sample(backbone, noise.clone(), backbone.encode_conditions(prompts)).x)


def test_sd_adapter_loads_into_a_plain_diffusers_pipeline(tiny_sd_with_adapter):
    module, folder = tiny_sd_with_adapter
    assert (folder / ADAPTER_FILE).is_file()
    prompts = ["a red car", "two dogs"]
    noise = torch.randn(2, *module.backbone.latent_shape, generator=torch.Generator().manual_seed(0))
    ours = _sd_images(module.backbone, noise, prompts)
    pipe = tiny_modules(tiny_sd_pipeline)  # the same random base weights, built afresh
    from diffusers import DDIMScheduler

    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    out = pipe(prompts, latents=noise.clone(), num_inference_steps=3, guidance_scale=4.0, output_type="pt").images
    pipe.load_lora_weights(str(folder))
    tuned = pipe(prompts, latents=noise.clone(), num_inference_steps=3, guidance_scale=4.0, output_type="pt").images
    assert (tuned - out).abs().max() > 1e-3  # the adapter changes the pipeline's output ...
    assert (tuned - ours).abs().max() <= 1e-4  # ... to exactly ours


@pytest.mark.parametrize("merge", [False, True])
def test_sd_adapter_loads_into_a_fresh_module(tiny_sd_with_adapter, merge):
    module, folder = tiny_sd_with_adapter
    prompts = ["a red car", "two dogs"]
    noise = torch.randn(2, *module.backbone.latent_shape, generator=torch.Generator().manual_seed(1))
    fresh = DiffusionModule(StableDiffusionBackbone("tiny", scheduler="ddim"), lora_path=str(folder), merge_lora=merge)
    expected, got = _sd_images(module.backbone, noise, prompts), _sd_images(fresh.backbone, noise, prompts)
    assert (got - expected).abs().max() <= (1e-4 if merge else 0.0)
