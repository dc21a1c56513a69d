"""The shapes CLIP analogue: its multi-positive InfoNCE against hand formulas, checkpoint round trip, and the
CLIPScore verifier on top of it."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from lightning_search.contrastive import ContrastiveModule, ShapesClip, load_contrastive, multi_positive_clip_loss
from lightning_search.data import ShapesDataModule
from lightning_search.errors import CheckpointError, ConfigurationError
from lightning_search.verifiers import ShapesClipVerifier, build_verifier


def test_loss_with_distinct_captions_is_clips():
    g = torch.Generator().manual_seed(0)
    image, text = (
        F.normalize(torch.randn(5, 8, generator=g), dim=-1),
        F.normalize(torch.randn(5, 8, generator=g), dim=-1),
    )
    scale = torch.tensor(math.log(10.0))
    loss, _ = multi_positive_clip_loss(image, text, ["a", "b", "c", "d", "e"], scale)
    logits = 10.0 * image @ text.T
    labels = torch.arange(5)
    torch.testing.assert_close(loss, (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2)


def test_loss_with_repeated_captions_by_hand():
    image = torch.eye(3)
    text = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])  # rows 0 and 1 share a caption
    loss, accuracy = multi_positive_clip_loss(image, text, ["x", "x", "y"], torch.tensor(0.0))
    s = image @ text.T  # scale 1
    expected = 0.0
    for row, positives in [(0, [0, 1]), (1, [0, 1]), (2, [2])]:
        log_p = s[row] - torch.logsumexp(s[row], 0)
        log_q = s[:, row] - torch.logsumexp(s[:, row], 0)
        expected += -sum(log_p[j] for j in positives) / len(positives) / 3 / 2
        expected += -sum(log_q[j] for j in positives) / len(positives) / 3 / 2
    torch.testing.assert_close(loss, expected)
    # image 1 = (0, 1, 0) is equally far from every caption; argmax takes text 0, a positive of it
    assert accuracy.item() == 1.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.ckpt"
    L.seed_everything(0)
    module = ContrastiveModule(embed_dim=16, width=8, text_width=16, text_layers=1, noise_std=0.1)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(module, ShapesDataModule("verifier", num_images=96, batch_size=32))
    trainer.save_checkpoint(path)
    return module, path


def test_checkpoint_round_trip_and_clip_score(trained):
    module, path = trained
    net = load_contrastive(path)
    assert isinstance(net, ShapesClip) and not net.training
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    captions = ["a photo of a circle", {"prompt": "a photo of two squares", "tag": "counting"}] * 2
    verifier = build_verifier("shapes_clip", checkpoint=str(path))
    module.net.eval()
    with torch.no_grad():
        cos = (module.net.encode_image(images) * module.net.encode_text(captions)).sum(-1)
    torch.testing.assert_close(verifier(images, captions), 2.5 * cos.clamp(min=0))
    single = torch.cat([verifier(images[i : i + 1], captions[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(verifier(images, captions), single, atol=1e-6, rtol=1e-5)


def test_verifier_arguments_are_checked(trained):
    with pytest.raises(ConfigurationError, match="exactly one"):
        ShapesClipVerifier()
    with pytest.raises(CheckpointError, match="recipes/shapes/clip.yaml"):
        ShapesClipVerifier(checkpoint="missing.ckpt")
    with pytest.raises(ConfigurationError, match="positive"):
        ShapesClipVerifier(model=trained[0].net, w=0)
