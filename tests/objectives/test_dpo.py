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
    with pytest.raises(ConfigurationError, match="DiffusionDPO needs a reference model"):
        DiffusionDPO()(model, batch)
    with pytest.raises(ConfigurationError, match="image_l"):
        DiffusionDPO()(model, {"image_w": batch["image_w"], "condition": batch["condition"]}, reference)


# -- against a from-scratch Diffusion-DPO (Wallace et al. 2023, Eq. 14) ----------------------------------------
# Written as diffusers' examples/research_projects/diffusion_dpo/train_diffusion_dpo.py computes it: winner and
# loser share t and the noise; per-sample MSEs are means over latent elements; the margin is
# -beta/2 ((mse_w - mse_l) - (ref_w - ref_l)). Nothing below calls the objective's helpers, the schedule classes
# or the backbone's forward: the noising, the target and the network calls are written out.


def _reference_losses(margin: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
    """Per-pair losses of the margin h. IPO (Azar et al. 2023, Eq. 17): (h_pi - 1 / (2 tau))^2 with h_pi the
    difference of the winner's and loser's log-likelihood ratios to the reference; the diffusion surrogate of
    that log-ratio difference is -1/2 ((mse_w - mse_l) - (ref_w - ref_l)) = h / beta, and tau = beta."""
    log_ratio = margin / beta
    return {
        "sigmoid": torch.nn.functional.softplus(-margin),  # -log sigmoid(h)
        "hinge": torch.clamp(1 - margin, min=0),  # SLiC
        "ipo": (log_ratio - 1 / (2 * beta)) ** 2,
    }


def _margin(mse: dict[str, torch.Tensor], beta: float) -> torch.Tensor:
    return -0.5 * beta * ((mse["w"] - mse["l"]) - (mse["ref_w"] - mse["ref_l"]))


def _digits_reference(model, reference, batch, seed):
    """Rectified flow on digits: x0 = 2 x - 1, x_t = (1 - t) x0 + t eps, velocity target eps - x0. The objective
    draws t ~ U(0, 1) (clamped to 1e-3) for the pairs and then one eps like the winners' latents."""
    torch.manual_seed(seed)
    b = len(batch["condition"])
    t = torch.rand(b).clamp(1e-3, 1.0)
    eps = torch.randn(b, 1, 8, 8)
    labels = torch.tensor(batch["condition"])
    mse = {}
    for side in ("w", "l"):
        x0 = batch[f"image_{side}"] * 2 - 1
        x_t = (1 - t).view(-1, 1, 1, 1) * x0 + t.view(-1, 1, 1, 1) * eps
        target = eps - x0
        with torch.no_grad():
            for prefix, net in (("", model.net), ("ref_", reference.net)):
                mse[prefix + side] = (net(x_t, t, labels) - target).pow(2).mean(dim=(1, 2, 3))
    return mse


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
def test_dpo_on_digits_equals_a_from_scratch_computation(models, batch, loss_type):
    model, reference = models
    beta = 50.0
    torch.manual_seed(11)
    loss, logs = DiffusionDPO(beta=beta, loss_type=loss_type)(model, batch, reference)
    margin = _margin(_digits_reference(model, reference, batch, seed=11), beta)
    assert (margin > 0).any() and (margin < 0).any() and margin.abs().max() > 0.1
    expected = _reference_losses(margin, beta)[loss_type].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logs["implicit_acc"].item() == pytest.approx((margin > 0).float().mean().item())


@pytest.fixture(scope="module")
def sd_pair():
    """The tiny SD twin as the reference and a copy with perturbed UNet weights as the trained model."""
    import copy

    from lightning_search.backbones.stable_diffusion import StableDiffusionBackbone

    reference = StableDiffusionBackbone("tiny").eval()
    model = copy.deepcopy(reference)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.unet.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model, reference


def _sd_reference(model, reference, batch, timesteps, seed):
    """Epsilon-prediction SD as diffusers' DPO script: latents = VAE(2 x - 1) x scaling_factor (the posterior
    mode here, as the backbone encodes), x_t = scheduler.add_noise(latents, eps, k), target eps, the UNet on the
    CLIP text encoder's last hidden state. eps: the first draw of the global generator after seeding."""
    pipe = reference.pipe
    vae, unet_ref, unet = pipe.vae, pipe.unet, model.pipe.unet
    assert pipe.scheduler.config.prediction_type == "epsilon"
    tokens = pipe.tokenizer(
        batch["condition"], padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    ).input_ids  # fmt: skip
    with torch.no_grad():
        text = pipe.text_encoder(tokens)[0]
        latents = {s: vae.encode(batch[f"image_{s}"] * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
                   for s in ("w", "l")}  # fmt: skip
        torch.manual_seed(seed)
        # one noise like the winners' latents, as the script's randn_like(latents); randn_like follows the
        # latents' memory layout (channels-last strides out of the VAE here), so it is drawn the same way
        eps = torch.randn_like(latents["w"])
        mse = {}
        for side in ("w", "l"):
            x_t = pipe.scheduler.add_noise(latents[side], eps, timesteps)
            for prefix, net in (("", unet), ("ref_", unet_ref)):
                out = net(x_t, timesteps, encoder_hidden_states=text).sample
                mse[prefix + side] = (out.float() - eps).pow(2).mean(dim=(1, 2, 3))
    return mse


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
def test_dpo_on_the_sd_twin_equals_a_from_scratch_computation(sd_pair, monkeypatch, loss_type):
    model, reference = sd_pair
    g = torch.Generator().manual_seed(4)
    batch = {"image_w": torch.rand(4, 3, 32, 32, generator=g), "image_l": torch.rand(4, 3, 32, 32, generator=g),
             "condition": ["a red cat", "a blue dog", "a cat", "the dog"]}  # fmt: skip
    # discrete timesteps k at t = (k + 1) / T, chosen so that t is exact in float32 (T = 1000)
    timesteps = torch.tensor([124, 499, 749, 999])
    beta = 20.0
    objective = DiffusionDPO(beta=beta, loss_type=loss_type)
    monkeypatch.setattr(
        objective.noise, "sample_time", lambda b, device, generator=None: (timesteps + 1).float() / 1000
    )
    torch.manual_seed(21)
    loss, logs = objective(model, batch, reference)
    mse = _sd_reference(model, reference, batch, timesteps, seed=21)
    margin = _margin(mse, beta)
    assert (margin > 0).any() and (margin < 0).any() and margin.abs().max() > 0.1
    expected = _reference_losses(margin, beta)[loss_type].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert logs["implicit_acc"].item() == pytest.approx((margin > 0).float().mean().item())
    assert logs["mse_w"].item() == pytest.approx(mse["w"].mean().item(), rel=1e-5)
