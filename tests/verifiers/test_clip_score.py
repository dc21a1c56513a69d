"""CLIPScore = w * max(cos(image, text), 0), against open_clip features and a cosine written by hand."""

from __future__ import annotations

import pytest
import torch

from lightning_search.errors import CheckpointError
from lightning_search.verifiers import ClipScoreVerifier


def _reference(verifier: ClipScoreVerifier, images, prompts, clip_normalize, w: float = 2.5) -> torch.Tensor:
    model = verifier.clip
    with torch.no_grad():
        img = model.encode_image(clip_normalize(images))
        txt = model.encode_text(verifier.tokenizer(prompts))
    cos = (img * txt).sum(-1) / (img.norm(dim=-1) * txt.norm(dim=-1))
    return w * torch.clamp(cos, min=0)


def test_score_is_hessel_clipscore(clip_score, images32, prompts, clip_normalize):
    scores = clip_score(images32, prompts)
    assert scores.shape == (4,) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, _reference(clip_score, images32, prompts, clip_normalize), atol=1e-5, rtol=1e-5)


def test_scale_and_clamp(images32, prompts, clip_normalize):
    v = ClipScoreVerifier(model="tiny", w=100.0)
    torch.testing.assert_close(
        v(images32, prompts), _reference(v, images32, prompts, clip_normalize, w=100.0), atol=1e-4, rtol=1e-5
    )
    # flip the text embedding: every cosine changes sign, so the positive ones become 0
    before = _reference(v, images32, prompts, clip_normalize, w=1.0)
    with torch.no_grad():
        v.clip.text_projection.mul_(-1)
    after = v(images32, prompts)
    assert (before > 0).any()
    assert torch.all(after[before > 0] == 0)


def test_same_prompt_same_image_same_score(clip_score, images32):
    batch = torch.cat([images32[:1], images32[:1]])
    scores = clip_score(batch, ["a cat", "a cat"])
    assert scores[0] == scores[1]


def test_follows_dtype(images32, prompts, clip_normalize):
    v = ClipScoreVerifier(model="tiny").to(torch.float64)
    ref = _reference(ClipScoreVerifier(model="tiny"), images32, prompts, clip_normalize)
    scores = v(images32, prompts)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, ref, atol=1e-5, rtol=1e-5)


def test_missing_weights_raise_checkpoint_error():
    with pytest.raises(CheckpointError, match="ViT-L-14"):
        ClipScoreVerifier()


def test_loads_from_a_local_open_clip_folder(tiny_open_clip_dir, clip_score, images32, prompts):
    """The real loading code (open_clip's local-dir: schema), offline, with the tiny weights."""
    loaded = ClipScoreVerifier(model=f"local-dir:{tiny_open_clip_dir}")
    torch.testing.assert_close(loaded(images32, prompts), clip_score(images32, prompts))
    with pytest.raises(CheckpointError, match="does not exist"):
        ClipScoreVerifier(model=f"local-dir:{tiny_open_clip_dir / 'missing'}")


def test_folder_without_weights_is_refused(tmp_path, tiny_open_clip_dir):
    (tmp_path / "open_clip_config.json").write_text((tiny_open_clip_dir / "open_clip_config.json").read_text())
    with pytest.raises(CheckpointError, match="local-dir"):  # open_clip alone would warn and run random weights
        ClipScoreVerifier(model=f"local-dir:{tmp_path}")
