"""Tiny verifier twins (random weights, fixed seeds), built once per session, and images to score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch

from lightning_search.verifiers import (
    AestheticVerifier,
    ClipScoreVerifier,
    HPSVerifier,
    ImageRewardVerifier,
    PickScoreVerifier,
    Verifier,
)
from lightning_search.verifiers.clip_models import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

PROMPTS = ["a red cat", "a photo of a blue dog", "a red cat", "the cat of the dog"]


class FixedVerifier(Verifier):
    """Returns given scores (for rank arithmetic on hand-made numbers)."""

    def __init__(self, scores: Sequence[float], x0_time: float | None = None, channels: int | None = None) -> None:
        super().__init__()
        self.values = torch.tensor(scores, dtype=torch.float32)
        self.x0_time, self.channels = x0_time, channels

    def score(self, images: torch.Tensor, conditions: Sequence[Any], x0_images=None) -> torch.Tensor:
        return self.values[: images.shape[0]].clone()


def _clip_normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return (images - mean) / std


@pytest.fixture(scope="session")
def clip_normalize():
    """CLIP's normalisation written out (for images already at the model's input size)."""
    return _clip_normalize


@pytest.fixture(scope="session")
def fixed_verifier() -> type[Verifier]:
    return FixedVerifier


@pytest.fixture(scope="session")
def images32() -> torch.Tensor:
    """(4, 3, 32, 32) in [0, 1]: the tiny twins' input size, so preprocessing is only the normalisation."""
    g = torch.Generator().manual_seed(7)
    return torch.rand(4, 3, 32, 32, generator=g)


@pytest.fixture(scope="session")
def prompts() -> list[str]:
    return list(PROMPTS)


@pytest.fixture(scope="session")
def clip_score() -> ClipScoreVerifier:
    return ClipScoreVerifier(model="tiny")


@pytest.fixture(scope="session")
def aesthetic() -> AestheticVerifier:
    return AestheticVerifier(clip_model="tiny")


@pytest.fixture(scope="session")
def pickscore() -> PickScoreVerifier:
    return PickScoreVerifier(model="tiny")


@pytest.fixture(scope="session")
def hps() -> HPSVerifier:
    return HPSVerifier(checkpoint="tiny")


@pytest.fixture(scope="session")
def image_reward() -> ImageRewardVerifier:
    return ImageRewardVerifier(model="tiny")


@pytest.fixture(scope="session")
def tiny_open_clip_dir(tmp_path_factory, clip_score):
    """The tiny CLIP saved as an open_clip ``local-dir:`` folder (config + safetensors weights)."""
    import json

    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("open_clip")
    model_cfg = {
        "embed_dim": 16,
        "vision_cfg": {"layers": 2, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    config = {"model_cfg": model_cfg, "preprocess_cfg": open_clip.get_model_preprocess_cfg(clip_score.clip)}
    (folder / "open_clip_config.json").write_text(json.dumps(config, default=list))
    save_file(clip_score.clip.state_dict(), folder / "open_clip_model.safetensors")
    return folder
