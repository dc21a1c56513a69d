"""Diffusion-DPO and SFT on preferences: the loss against a hand computation, on a fixed batch."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_search.backbones import DigitsBackbone
from lightning_search.errors import ConfigurationError
from lightning_search.objectives import DenoisingLoss, DiffusionDPO, PreferredSFT


def _random_backbone(seed: int) -> DigitsBackbone:
    """digits-xs with every weight random (adaLN-Zero starts at zero output, which would make every loss equal)."""
    torch.manual_seed(seed)
    backbone = DigitsBackbone("digits-xs", label_dropout=0.0)
    for p in backbone.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return backbone.eval()


@pytest.fixture(scope="module")
def models():
    return _random_backbone(0), _random_backbone(1)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(3)
    return {"image_w": torch.rand(6, 1, 8, 8, generator=g), "image_l": torch.rand(6, 1, 8, 8, generator=g),
            "condition": [0, 1, 2, 3, 4, 5]}  # fmt: skip


def _hand(model, reference, batch, beta, seed):
    """Redraw t and eps as the objective does (t first, then one eps shared by winner and loser)."""
    torch.manual_seed(seed)
    t = torch.rand(6).clamp(1e-3, 1.0)
    eps = torch.randn(6, 1, 8, 8)
    cond = torch.tensor(batch["condition"])
    losses = {}
    for name, net in (("w", model), ("l", model), ("ref_w", reference), ("ref_l", reference)):
        images = batch["image_w"] if name.endswith("w") else batch["image_l"]
        with torch.no_grad():
            losses[name] = DenoisingLoss.per_sample_loss(net, images * 2 - 1, cond, t, eps)
    return -beta / 2 * ((losses["w"] - losses["l"]) - (losses["ref_w"] - losses["ref_l"])), losses


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
def test_dpo_loss_equals_the_hand_computation(models, batch, loss_type):
    model, reference = models
    beta = 50.0  # small enough that h is O(1): the three losses are all away from their flat regions
    torch.manual_seed(7)
    loss, logs = DiffusionDPO(beta=beta, loss_type=loss_type)(model, batch, reference)
    h, losses = _hand(model, reference, batch, beta, seed=7)
    expected = {
        "sigmoid": -torch.log(1 / (1 + torch.exp(-h))),
        "hinge": torch.clamp(1 - h, min=0),
        "ipo": (h / beta - 1 / (2 * beta)) ** 2,
    }[loss_type].mean()
    assert h.abs().max() > 0.1 and (h > 0).any() and (h < 0).any()  # a batch that exercises both signs
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logs["implicit_acc"].item() == pytest.approx((h > 0).float().mean().item())
    reward_w = -beta / 2 * (losses["w"] - losses["ref_w"])
    reward_l = -beta / 2 * (losses["l"] - losses["ref_l"])
    assert logs["reward_margin"].item() == pytest.approx((reward_w - reward_l).mean().item(), rel=1e-5)
    assert logs["reward_w"].item() == pytest.approx(reward_w.mean().item(), rel=1e-5)


def test_dpo_against_itself_is_log_two_with_zero_margin(models, batch):
    model, _ = models
    loss, logs = DiffusionDPO(beta=5000.0)(model, batch, model)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert logs["kl"].item() == 0.0 and logs["reward_margin"].item() == 0.0


def test_dpo_gradient_prefers_the_winner(batch):
    """One gradient step on the sigmoid loss lowers the winner's error relative to the loser's (at fixed t, eps)."""
    model, reference = _random_backbone(0).train(), _random_backbone(0)
    objective = DiffusionDPO(beta=1000.0)
    torch.manual_seed(5)
    before = objective.losses(model, reference, batch)
    torch.manual_seed(0)
    loss, _ = objective(model, batch, reference)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 1e-3 * p.grad
    torch.manual_seed(5)
    after = objective.losses(model, reference, batch)
    assert ((after[0] - after[1]) - (before[0] - before[1])).mean() < 0


def test_sft_is_the_denoising_loss_on_the_winners(models, batch):
    model, _ = models
    torch.manual_seed(2)
    loss, _ = PreferredSFT()(model, batch)
    torch.manual_seed(2)
    expected, _ = DenoisingLoss()(model, {"image": batch["image_w"], "condition": batch["condition"]})
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_bad_settings_and_batches_are_explained(models, batch):
    model, reference = models
    with pytest.raises(ConfigurationError, match="loss_type"):
        DiffusionDPO(loss_type="kto")
    with pytest.raises(ConfigurationError, match="reference"):
        DiffusionDPO()(model, batch)
    with pytest.raises(ConfigurationError, match="image_l"):
        DiffusionDPO()(model, {"image_w": batch["image_w"], "condition": batch["condition"]}, reference)
