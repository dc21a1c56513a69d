"""Tensor preprocessing against open_clip's own PIL transform; safe and offline-aware loading."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_search.errors import CheckpointError, ConfigurationError
from lightning_search.verifiers.clip_models import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    clip_preprocess,
    condition_text,
    hub_file,
    load_open_clip,
    load_state_dict_file,
    unique_texts,
)


def _pil_reference(image: torch.Tensor, size: int, resize_mode: str) -> torch.Tensor:
    """open_clip's eval transform on the PIL image (what the released verifiers run)."""
    from open_clip.transform import image_transform

    array = (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    transform = image_transform(
        size, is_train=False, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, resize_mode=resize_mode
    )
    return transform(Image.fromarray(array))


@pytest.mark.parametrize("resize_mode", ["shortest", "longest"])
def test_preprocess_matches_open_clip_pil_transform(resize_mode):
    g = torch.Generator().manual_seed(0)
    # smooth images: resampling kernels of PIL and torch differ most on pixel noise
    small = torch.rand(2, 3, 6, 5, generator=g)
    images = torch.nn.functional.interpolate(small, size=(60, 44), mode="bilinear", align_corners=False)
    images = (images * 255).round() / 255  # what PIL sees
    ours = clip_preprocess(images, 32, resize_mode=resize_mode)
    for i in range(2):
        ref = _pil_reference(images[i], 32, resize_mode)
        assert ours[i].shape == ref.shape == (3, 32, 32)
        # PIL rounds to uint8 after resizing: one grey level is 1 / 255 / 0.27 = 0.015 in normalised units
        assert (ours[i] - ref).abs().mean() < 0.02
        assert (ours[i] - ref).abs().max() < 0.12


def test_preprocess_at_input_size_is_only_normalisation():
    images = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(clip_preprocess(images, 32), (images - mean) / std)


def test_unknown_resize_mode_is_rejected():
    with pytest.raises(ConfigurationError, match="resize_mode"):
        clip_preprocess(torch.rand(1, 3, 8, 8), 8, resize_mode="zoom")


def test_prompts_deduplicated_in_order():
    texts, inverse = unique_texts(["b", {"prompt": "a"}, "b", "c"])
    assert texts == ["b", "a", "c"]
    assert inverse.tolist() == [0, 1, 0, 2]
    with pytest.raises(ConfigurationError, match="prompts"):
        condition_text(3)


def test_missing_open_clip_weights_fail_fast_offline():
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        load_open_clip("ViT-L-14", "openai")
    assert time.perf_counter() - start < 5  # looked up before building the 400M-parameter model
    message = str(info.value)
    assert "ViT-L-14/openai" in message and "local-dir:" in message


def test_unknown_open_clip_names_are_configuration_errors():
    with pytest.raises(ConfigurationError, match="unknown open_clip model"):
        load_open_clip("ViT-Q-99", None)
    with pytest.raises(ConfigurationError, match="no pretrained tag"):
        load_open_clip("ViT-B-32", "nonexistent_tag")
    with pytest.raises(CheckpointError, match="not found"):
        load_open_clip("ViT-B-32", "/nonexistent/weights.bin")


def test_hub_file_offline_names_repo_and_local_folder(tmp_path):
    with pytest.raises(CheckpointError) as info:
        hub_file("THUDM/ImageReward", "ImageReward.pt")
    assert "THUDM/ImageReward" in str(info.value) and "folder" in str(info.value)
    (tmp_path / "w.pt").write_bytes(b"")
    assert hub_file(str(tmp_path), "w.pt") == tmp_path / "w.pt"
    with pytest.raises(CheckpointError, match="not found in folder"):
        hub_file(str(tmp_path), "other.pt")


class _NotATensor:
    pass


def test_state_dict_loading_is_weights_only(tmp_path):
    from safetensors.torch import save_file

    tensors = {"a": torch.arange(3.0), "b": torch.ones(2, 2)}
    save_file(tensors, tmp_path / "w.safetensors")
    torch.save({"state_dict": {"module." + k: v for k, v in tensors.items()}, "epoch": 3}, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        loaded = load_state_dict_file(tmp_path / name)
        assert set(loaded) == {"a", "b"} and torch.equal(loaded["a"], tensors["a"])
    torch.save({"obj": _NotATensor(), "arr": np.zeros(2)}, tmp_path / "pickle.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_state_dict_file(tmp_path / "pickle.pt")
