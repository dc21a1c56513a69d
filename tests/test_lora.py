"""LoRA through peft: only adapters train, the reference is the adapter-free network, and adapters round-trip
through diffusers' file format: into a fresh module (merged or not) and into a plain diffusers pipeline; and
adapters written by other tools (diffusers' save_lora_weights / save_lora_adapter, peft's save_pretrained) load
as those libraries load them, for every family."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from lightning_search import DiffusionModule
from lightning_search.backbones import (
    DigitsBackbone,
    DiTBackbone,
    FluxBackbone,
    PixArtBackbone,
    StableDiffusion3Backbone,
    StableDiffusionBackbone,
    StableDiffusionXLBackbone,
)
from lightning_search.backbones.pipeline import tiny_modules
from lightning_search.backbones.stable_diffusion import tiny_sd_pipeline
from lightning_search.callbacks import SaveLoraAdapter
from lightning_search.errors import CheckpointError, ConfigurationError
from lightning_search.lora import (
    ADAPTER_FILE,
    LoraSettings,
    adapters_disabled,
    find_lora_adapter,
    has_lora,
    load_lora_adapter,
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
    trainer = type("T", (), {"fast_dev_run": False, "is_global_zero": True, "datamodule": None, "global_step": 7,
                             "callback_metrics": {"train/loss": torch.tensor(0.25)}})()  # fmt: skip
    SaveLoraAdapter(str(folder)).on_train_end(trainer, module)  # the callback that ends a fit
    return module, folder


def test_the_adapter_folder_has_a_model_card(tiny_sd_with_adapter):
    from huggingface_hub import ModelCard

    _, folder = tiny_sd_with_adapter
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "diffusers" and "lora" in card.data.tags
    text = card.text
    assert "StableDiffusionPipeline" in text and "DenoisingLoss" in text and "Training steps:** 7" in text
    assert "| train/loss | 0.25 |" in text and "| r | 4 |" in text and "pipe.load_lora_weights" in text


def test_push_to_hub_is_off_by_default_and_uploads_when_asked(tiny_sd_with_adapter, monkeypatch, tmp_path):
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, private, exist_ok):
            calls.append(("create", repo_id, private))

        def upload_folder(self, folder_path, repo_id, commit_message):
            calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    module, _ = tiny_sd_with_adapter
    trainer = type("T", (), {"fast_dev_run": False, "is_global_zero": True, "datamodule": None, "global_step": 1,
                             "callback_metrics": {}})()  # fmt: skip
    SaveLoraAdapter(str(tmp_path / "off")).on_train_end(trainer, module)
    assert calls == []
    SaveLoraAdapter(str(tmp_path / "on"), push_to_hub=True, repo_id="me/lora").on_train_end(trainer, module)
    assert calls == [("create", "me/lora", True), ("upload", "me/lora", ["README.md", ADAPTER_FILE])]
    with pytest.raises(ConfigurationError, match="repo_id"):
        SaveLoraAdapter(push_to_hub=True)


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


# -- adapters written by other tools ----------------------------------------------------------------------
# Each adapter is written by the library (the pipelines' own save_lora_weights, a model's save_lora_adapter,
# PeftModel.save_pretrained) from a random LoRA (non-zero B) on the tiny twin's base weights, loaded by
# load_lora_adapter into a fresh backbone (merged or not), and compared with the same adapter loaded by the
# library itself (pipe.load_lora_weights / PeftModel.from_pretrained): one denoiser call each, same input.


@dataclass
class Family:
    backbone: Callable[[], object]  # a fresh backbone on the tiny twin's base weights (fixed seed)
    pipeline: str | None = None  # the diffusers pipeline class with save_lora_weights / load_lora_weights
    condition: object = "a red car"


FAMILIES = {
    "sd": Family(lambda: StableDiffusionBackbone("tiny"), "StableDiffusionPipeline"),
    "sdxl": Family(lambda: StableDiffusionXLBackbone("tiny"), "StableDiffusionXLPipeline"),
    "flux": Family(lambda: FluxBackbone("tiny", height=32, width=32, max_sequence_length=16), "FluxPipeline"),
    "sd3": Family(lambda: StableDiffusion3Backbone("tiny", max_sequence_length=16), "StableDiffusion3Pipeline"),
    "pixart": Family(lambda: PixArtBackbone("tiny", clean_caption=False)),
    "dit": Family(lambda: DiTBackbone("tiny"), condition=207),
    "digits": Family(lambda: tiny_modules(lambda: DigitsBackbone("digits-xs")), condition=3),
}
DIFFUSERS_FAMILIES = [name for name, family in FAMILIES.items() if family.pipeline]


def _network(backbone) -> tuple[str, torch.nn.Module]:
    name = backbone.components[0] if getattr(backbone, "components", ()) else "net"
    return name, getattr(backbone, name)


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-zero LoRA weights (a fresh adapter's B is zero: it would change nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _lora_config(backbone, **kwargs):
    from peft import LoraConfig

    targets = list(backbone.lora_target_modules)
    return LoraConfig(r=4, lora_alpha=8.0, init_lora_weights="gaussian", target_modules=targets, **kwargs)


def _denoise(backbone, family: Family) -> torch.Tensor:
    """One denoiser call at a fixed input (t = 0.7 in the one convention)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, *backbone.latent_shape, generator=g)
    with torch.no_grad():
        return backbone(x, torch.full((2,), 0.7), backbone.encode_conditions([family.condition] * 2))


def _assert_loads_like_the_library(family: Family, folder: Path, library_loaded) -> None:
    reference = _denoise(library_loaded, family)
    with adapters_disabled(library_loaded):
        base = _denoise(library_loaded, family)
    assert (reference - base).abs().max() > 1e-3  # the adapter changes the output ...
    for merge in (False, True):
        ours = family.backbone()
        load_lora_adapter(ours, folder, merge=merge)
        assert has_lora(ours) != merge
        torch.testing.assert_close(_denoise(ours, family), reference, atol=1e-5, rtol=1e-5)  # ... to the library's


@pytest.mark.parametrize("family_name", DIFFUSERS_FAMILIES)
def test_pipeline_save_lora_weights_adapters_load_as_the_pipeline_loads_them(family_name, tmp_path):
    import diffusers
    from peft.utils import get_peft_model_state_dict

    family = FAMILIES[family_name]
    pipeline_class = getattr(diffusers, family.pipeline)
    writer = family.backbone()
    prefix, network = _network(writer)
    # SD and FLUX store the LoraConfig in the header (alpha 8, rank 4: scale 2); SDXL and SD3 store none, with
    # per-module ranks (rank_pattern), which the loaders must infer from the weights (alpha = rank)
    with_config = family_name in ("sd", "flux")
    config = _lora_config(writer) if with_config else _lora_config(writer, rank_pattern={"to_q": 2})
    if not with_config:
        config.lora_alpha, config.alpha_pattern = 4, {"to_q": 2}
    network.add_adapter(config)
    _randomise(network)
    layers = {f"{prefix}_lora_layers": get_peft_model_state_dict(network)}
    if with_config:
        layers[f"{prefix}_lora_adapter_metadata"] = config.to_dict()
    pipeline_class.save_lora_weights(str(tmp_path), **layers)
    assert find_lora_adapter(tmp_path) == ("diffusers", tmp_path / ADAPTER_FILE)

    reference = family.backbone()
    reference.pipe.load_lora_weights(str(tmp_path))  # the pipeline's own loader
    torch.testing.assert_close(_denoise(reference, family), _denoise(writer, family))  # the library round-trips
    _assert_loads_like_the_library(family, tmp_path, reference)


@pytest.mark.parametrize("family_name", list(FAMILIES))
def test_peft_save_pretrained_adapters_load_as_peft_loads_them(family_name, tmp_path):
    from peft import PeftModel, get_peft_model

    family = FAMILIES[family_name]
    writer = family.backbone()
    _, network = _network(writer)
    peft_model = get_peft_model(network, _lora_config(writer))  # as Flow-GRPO wraps SD3.5's transformer
    _randomise(peft_model)
    peft_model.save_pretrained(str(tmp_path))
    assert find_lora_adapter(tmp_path) == ("peft", tmp_path)

    reference = family.backbone()
    PeftModel.from_pretrained(_network(reference)[1], str(tmp_path))  # injects the adapter in place
    _assert_loads_like_the_library(family, tmp_path, reference)


def test_model_save_lora_adapter_files_without_prefix_load(tmp_path):
    """A model's own ``save_lora_adapter`` writes keys and config without the component prefix."""
    family = FAMILIES["sd3"]
    writer = family.backbone()
    writer.transformer.add_adapter(_lora_config(writer))
    _randomise(writer.transformer)
    writer.transformer.save_lora_adapter(str(tmp_path))
    reference = family.backbone()
    reference.transformer.load_lora_adapter(str(tmp_path), prefix=None, weight_name=ADAPTER_FILE)
    _assert_loads_like_the_library(family, tmp_path, reference)


def test_text_encoder_lora_in_a_pipeline_file_is_skipped_with_a_warning(tmp_path):
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    writer = StableDiffusionBackbone("tiny")
    writer.unet.add_adapter(_lora_config(writer))
    # transformers' own add_adapter needs peft >= 0.22; peft's injection is what it calls
    inject_adapter_in_model(LoraConfig(r=2, target_modules=["q_proj", "v_proj"]), writer.text_encoder)
    _randomise(writer.unet)
    StableDiffusionPipeline.save_lora_weights(
        str(tmp_path),
        unet_lora_layers=get_peft_model_state_dict(writer.unet),
        text_encoder_lora_layers=get_peft_model_state_dict(writer.text_encoder),
    )
    ours = StableDiffusionBackbone("tiny")
    with pytest.warns(UserWarning, match="ignoring the LoRA weights of text_encoder"):
        load_lora_adapter(ours, tmp_path)
    assert not any("lora_" in n for n, _ in ours.text_encoder.named_parameters())


def test_diffusion_module_loads_a_peft_adapter_for_predict(tmp_path):
    from peft import get_peft_model

    writer = StableDiffusion3Backbone("tiny", max_sequence_length=16)
    peft_model = get_peft_model(writer.transformer, _lora_config(writer))
    _randomise(peft_model)
    peft_model.save_pretrained(str(tmp_path / "lora"))
    module = DiffusionModule(StableDiffusion3Backbone("tiny", max_sequence_length=16), lora_path=str(tmp_path / "lora"))
    assert module.lora_metadata["r"] == 4 and module.lora_metadata["lora_alpha"] == 8
    family = FAMILIES["sd3"]
    expected = _denoise(writer, family)
    torch.testing.assert_close(_denoise(module.backbone, family), expected)
    # written again in diffusers' format (e.g. after more training), the pipeline's own loader reads it
    save_lora_adapter(module.backbone, tmp_path / "diffusers", module.lora_metadata)
    plain = family.backbone()
    plain.pipe.load_lora_weights(str(tmp_path / "diffusers"))
    torch.testing.assert_close(_denoise(plain, family), expected)


def test_unrecognised_folders_name_the_expected_files(tmp_path):
    with pytest.raises(CheckpointError, match="no LoRA adapter .*pytorch_lora_weights.safetensors.*adapter_config"):
        load_lora_adapter(StableDiffusionBackbone("tiny"), tmp_path)
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    with pytest.raises(CheckpointError, match="no adapter_model.safetensors or adapter_model.bin"):
        find_lora_adapter(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LOHA"}')
    with pytest.raises(CheckpointError, match="LOHA adapter; only LoRA"):
        load_lora_adapter(StableDiffusionBackbone("tiny"), tmp_path)
