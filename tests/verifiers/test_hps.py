"""HPSv2 = cos(normalised open_clip image and text features), with HPS's longest-side resize."""

from __future__ import annotations

import pytest
import torch

from lightning_search.errors import CheckpointError, ConfigurationError
from lightning_search.verifiers import HPSVerifier


def test_score_is_cosine(hps, images32, prompts, clip_normalize):
    with torch.no_grad():
        img = hps.clip.encode_image(clip_normalize(images32))
        txt = hps.clip.encode_text(hps.tokenizer(prompts))
    ref = (img * txt).sum(-1) / (img.norm(dim=-1) * txt.norm(dim=-1))
    torch.testing.assert_close(hps(images32, prompts), ref, atol=1e-6, rtol=1e-5)


def test_non_square_images_are_padded_not_cropped(hps, prompts, clip_normalize):
    wide = torch.rand(1, 3, 16, 32)
    padded = torch.zeros(1, 3, 32, 32)
    padded[:, :, 8:24] = wide  # longest side already 32: only the zero padding
    with torch.no_grad():
        img = hps.clip.encode_image(clip_normalize(padded))
        txt = hps.clip.encode_text(hps.tokenizer(prompts[:1]))
    ref = torch.nn.functional.cosine_similarity(img, txt)
    torch.testing.assert_close(hps(wide, prompts[:1]), ref, atol=1e-6, rtol=1e-5)


def test_checkpoint_loads_from_local_file(tmp_path, hps, images32, prompts):
    path = tmp_path / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": hps.clip.state_dict(), "epoch": 1}, path)
    loaded = HPSVerifier(checkpoint=str(path), clip_model="tiny")  # tiny architecture, weights from the file
    torch.testing.assert_close(loaded(images32, prompts), hps(images32, prompts))
    state = hps.clip.state_dict()
    del state["logit_scale"]
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match="does not fit"):
        HPSVerifier(checkpoint=str(path), clip_model="tiny")


def test_bad_version_and_missing_weights():
    with pytest.raises(ConfigurationError, match="v2.1"):
        HPSVerifier(version="v3")
    with pytest.raises(CheckpointError, match="xswu/HPSv2"):
        HPSVerifier()
