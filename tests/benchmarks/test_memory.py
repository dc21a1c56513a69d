"""benchmarks/memory.py: the FLUX paper recipe's estimated peak fits an 80 GB GPU, a setting that cannot fit is
seen not to, and the activation tracker counts bytes as a hand count (and torch's MemTracker) does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from tests.helpers.benchmarks import load_benchmark

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "paper" / "flux_dev_drawbench_random.yaml"
GPU_BYTES = 80e9  # an 80 GB card (A100 / H100 80GB hold a little more: 80 GiB)


memory = load_benchmark("memory")


@pytest.fixture(scope="module")
def flux_run():
    settings = memory.RunSettings.from_recipe(RECIPE)
    return settings, memory.Models.build(settings)


def test_the_recipe_settings_are_read_from_its_yaml(flux_run):
    settings, _ = flux_run
    cfg = yaml.safe_load(RECIPE.read_text())
    search, sampler = cfg["search"], cfg["model"]["init_args"]["sampler"]
    assert settings.num_candidates == search["num_candidates"] == 96
    assert settings.micro_batch_size == sampler["micro_batch_size"]
    assert settings.decode_batch_size == search["decode_batch_size"]
    assert settings.verifier_batch_size == search["verifier_batch_size"]
    assert (settings.height, settings.width) == (1024, 1024)
    assert sorted(settings.verifiers) == sorted(cfg["verifiers"])


@pytest.mark.slow
def test_the_flux_recipe_fits_80_gb(flux_run):
    settings, models = flux_run
    result = memory.estimate(settings, models)
    assert result.peak <= GPU_BYTES, result.table()
    # the FLUX.1-dev transformer is ~11.9B parameters: 2 bytes each in bfloat16
    assert 23e9 < result.weights["transformer"] < 24.5e9
    # the transformer's stage: 8 rows of 4,096 image + 512 text tokens
    denoise = next(s for s in result.stages if s.name.startswith("denoising"))
    assert denoise.batch == settings.micro_batch_size and denoise.activations > 1e9


@pytest.mark.slow
def test_decoding_all_96_candidates_at_once_does_not_fit(flux_run):
    settings, models = flux_run
    everything = memory.RunSettings(**{**vars(settings), "decode_batch_size": settings.num_candidates})
    result = memory.estimate(everything, models)
    assert result.peak > GPU_BYTES
    assert result.peak_stage.name == "decoding (VAE)"


# -- the tracker against counts made by hand ------------------------------------------------------------------------
def _mlp(inplace: bool) -> nn.Module:
    with torch.device("meta"):
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU(inplace=inplace), nn.Linear(32, 8))


def test_tracker_counts_live_bytes_as_by_hand():
    x = torch.empty(4, 16, device="meta")  # inputs and weights existed before: never counted
    # Linear -> (4, 32) float32 = 512 B; ReLU makes a second 512 B while the first is alive; Linear -> 128 B after
    # the first is freed: peak 1024 B
    assert memory.peak_activation_bytes(_mlp(inplace=False), x) == 2 * 4 * 32 * 4
    # in place, ReLU writes into the first storage: 512 B + the 128 B output while it is still referenced
    assert memory.peak_activation_bytes(_mlp(inplace=True), x) == 4 * 32 * 4 + 4 * 8 * 4
    # a view shares its storage: nothing new
    assert memory.peak_activation_bytes(lambda t: t.view(2, 2, 16).transpose(0, 1), x) == 0


def test_attention_counts_the_fused_kernels_output_and_log_sum_exp():
    q, k, v = (torch.empty(2, 3, 5, 8, device="meta") for _ in range(3))
    peak = memory.peak_activation_bytes(torch.nn.functional.scaled_dot_product_attention, q, k, v)
    assert peak == 2 * 3 * 5 * 8 * 4 + 2 * 3 * 5 * 4  # (B, H, L, D) output + (B, H, L) float32 log-sum-exp


def test_tracker_agrees_with_torchs_memtracker_on_a_resnet_block():
    from diffusers.models.resnet import ResnetBlock2D
    from torch.distributed._tools.mem_tracker import MemTracker

    with torch.device("meta"):
        block = ResnetBlock2D(in_channels=32, out_channels=64, temb_channels=None, groups=8).eval()
        x = torch.empty(2, 32, 16, 16)
    ours = memory.peak_activation_bytes(block, x, None)
    tracker = MemTracker()
    tracker.track_external(block)
    with tracker, torch.no_grad():
        block(x, None)
    theirs = tracker.get_tracker_snapshot("peak")[torch.device("meta")]
    assert ours == theirs["Activation"] + theirs["Temp"] > 0
