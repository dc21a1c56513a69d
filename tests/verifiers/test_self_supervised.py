"""Self-supervised verifier: cos(features(x0-prediction), features(final)) by hand, for the three routes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_search.classifier import DigitsCNN
from lightning_search.errors import ConfigurationError, LightningSearchError
from lightning_search.verifiers import SelfSupervisedVerifier


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.flatten(1), b.flatten(1)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def test_any_module(images32):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    v = SelfSupervisedVerifier(feature_extractor=net, t=0.3)
    assert v.x0_time == 0.3
    x0 = torch.rand_like(images32)
    with torch.no_grad():
        ref = _cos(net(x0), net(images32))
    torch.testing.assert_close(v(images32, [None] * 4, x0), ref, atol=1e-6, rtol=1e-5)
    # a sample whose x0-prediction already is the final sample scores 1
    torch.testing.assert_close(v(images32, [None] * 4, images32.clone()), torch.ones(4))


def test_digits_classifier_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = DigitsCNN().eval()
    # the layout of a checkpoint written by `lightning-search fit` for ClassifierModule
    ckpt = {"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
            "hyper_parameters": {"arch": "digits-cnn", "num_classes": 10}}  # fmt: skip
    torch.save(ckpt, tmp_path / "verifier.ckpt")
    v = SelfSupervisedVerifier(checkpoint=str(tmp_path / "verifier.ckpt"))
    assert v.x0_time == 0.4 and v.channels == 1
    images, x0 = torch.rand(5, 1, 8, 8), torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        ref = _cos(net.features(x0), net.features(images))
    torch.testing.assert_close(v(images, list(range(5)), x0), ref, atol=1e-6, rtol=1e-5)
    with pytest.raises(LightningSearchError, match="1-channel"):
        v(torch.rand(2, 3, 8, 8), [0, 1], torch.rand(2, 3, 8, 8))


def test_clip_image_encoder(images32, clip_score, clip_normalize):
    v = SelfSupervisedVerifier(clip_model="tiny")
    x0 = torch.rand_like(images32)
    with torch.no_grad():  # the tiny twin is seeded: the same CLIP as the CLIPScore fixture
        ref = _cos(
            clip_score.clip.encode_image(clip_normalize(x0)), clip_score.clip.encode_image(clip_normalize(images32))
        )
    torch.testing.assert_close(v(images32, ["p"] * 4, x0), ref, atol=1e-6, rtol=1e-5)


def test_needs_x0_and_one_extractor(images32):
    v = SelfSupervisedVerifier(feature_extractor=nn.Flatten())
    with pytest.raises(LightningSearchError, match=r"x0-prediction at t = 0.4"):
        v(images32, [None] * 4)
    with pytest.raises(LightningSearchError, match="shape"):
        v(images32, [None] * 4, images32[:2])
    with pytest.raises(ConfigurationError, match="exactly one"):
        SelfSupervisedVerifier()
    with pytest.raises(ConfigurationError, match=r"\(0, 1\)"):
        SelfSupervisedVerifier(feature_extractor=nn.Flatten(), t=1.0)


def test_search_passes_x0_prediction_at_t():
    """Through the search layer: random search decodes x0 at verifier.x0_time and picks the best score."""
    from lightning_search.backbones import DigitsBackbone
    from lightning_search.sampling import Sampler
    from lightning_search.search.base import SearchContext
    from lightning_search.search.random import RandomSearch

    torch.manual_seed(0)
    backbone = DigitsBackbone("digits-xs").eval()
    with torch.no_grad():  # an untrained net has zero-initialised outputs: a constant velocity makes x0 = final
        for p in backbone.parameters():
            p.normal_(0, 0.2)
    seen = []

    class Recording(SelfSupervisedVerifier):
        def score(self, images, conditions, x0_images=None):
            seen.append((images, x0_images))
            return super().score(images, conditions, x0_images)

    verifier = Recording(feature_extractor=nn.Sequential(nn.Flatten(), nn.Linear(64, 16)), channels=1)
    ctx = SearchContext(backbone, Sampler(solver="euler", steps=4), verifier, seed=0)
    with torch.no_grad():
        result = RandomSearch(num_candidates=3).run(ctx, [1, 7], [0, 1])
    ((images, x0),) = seen
    assert images.shape == x0.shape == (6, 1, 8, 8)
    assert not torch.equal(images, x0)  # the prediction at t = 0.4 is not the final sample
    with torch.no_grad():
        expected = _cos(verifier.features(x0.clamp(0, 1)), verifier.features(images)).view(2, 3).max(1).values
    torch.testing.assert_close(result.score, expected)
