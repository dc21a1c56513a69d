"""The verifier registry, and the input checks every verifier family gets from the base class."""

from __future__ import annotations

import pytest
import torch

from lightning_search.errors import LightningSearchError, UnknownNameError
from lightning_search.verifiers import VERIFIERS, EnsembleVerifier, build_verifier

TEXT_TO_IMAGE = ["clip_score", "aesthetic", "pickscore", "hps", "image_reward"]  # fixtures of conftest.py


def test_unknown_name_lists_valid_ones():
    with pytest.raises(UnknownNameError) as info:
        build_verifier("imagereward")
    message = str(info.value)
    for name in (
        "aesthetic",
        "clip_score",
        "ensemble",
        "hps",
        "image_reward",
        "pickscore",
        "self_supervised",
        "vlm_grader",
        "remote",
    ):
        assert name in message and name in VERIFIERS


def test_build_by_name(images32, prompts, clip_score):
    v = build_verifier("clip_score", model="tiny")
    torch.testing.assert_close(v(images32, prompts), clip_score(images32, prompts))


@pytest.mark.parametrize("name", [*TEXT_TO_IMAGE, "ensemble"])
def test_rejects_bad_images(name, request, images32, prompts, clip_score, hps):
    verifier = EnsembleVerifier([clip_score, hps]) if name == "ensemble" else request.getfixturevalue(name)
    with pytest.raises(LightningSearchError, match=r"in \[0, 1\]"):
        verifier(images32 * 2 - 1, prompts)
    with pytest.raises(LightningSearchError, match="3-channel"):
        verifier(images32[:, :1], prompts)
    with pytest.raises(LightningSearchError, match="conditions"):
        verifier(images32, prompts[:2])


@pytest.mark.parametrize("name", TEXT_TO_IMAGE)
def test_batched_equals_one_at_a_time(name, request, images32, prompts):
    verifier = request.getfixturevalue(name)
    batched = verifier(images32, prompts)
    single = torch.cat([verifier(images32[i : i + 1], prompts[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    assert batched.dtype == torch.float32 and not batched.requires_grad
