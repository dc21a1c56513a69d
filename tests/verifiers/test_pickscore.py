"""PickScore = exp(logit_scale) * cos, against transformers' own get_*_features."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_search.errors import CheckpointError
from lightning_search.verifiers import PickScoreVerifier


def test_score_is_logit_scale_times_cosine(pickscore, images32, prompts, clip_normalize):
    model = pickscore.clip
    assert math.isclose(model.logit_scale.exp().item(), 100.0, rel_tol=1e-5)
    tokens = pickscore.tokenizer(prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        img = model.get_image_features(pixel_values=clip_normalize(images32)).pooler_output
        txt = model.get_text_features(**tokens).pooler_output
    cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    torch.testing.assert_close(pickscore(images32, prompts), 100.0 * cos, atol=1e-4, rtol=1e-5)


def test_tokenizer_gives_clip_ids(pickscore):
    import open_clip

    ours = pickscore.tokenizer(["a red cat"])["input_ids"][0]
    ref = open_clip.get_tokenizer("ViT-B-32")(["a red cat"])[0]
    assert ours == ref[: len(ours)].tolist()
    assert ours[0] == 49406 and ours[-1] == 49407


def test_missing_weights_raise_checkpoint_error():
    with pytest.raises(CheckpointError, match="laion/CLIP-ViT-H-14"):
        PickScoreVerifier()


def test_loads_from_local_folders(tmp_path, pickscore, images32, prompts):
    """The real loading code (CLIPModel / AutoProcessor.from_pretrained), offline, with the tiny weights."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=pickscore.tokenizer).save_pretrained(tmp_path / "proc")
    pickscore.clip.save_pretrained(tmp_path / "model")
    loaded = PickScoreVerifier(model=str(tmp_path / "model"), processor=str(tmp_path / "proc"))
    assert loaded.preprocess.size == 32
    torch.testing.assert_close(loaded(images32, prompts), pickscore(images32, prompts))
