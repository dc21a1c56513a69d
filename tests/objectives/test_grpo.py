"""GRPO: group-relative advantages, the first update's ratio of 1 and its gradient against REINFORCE written
out by hand, a KL of 0 at the adapters' zero start, seeded rollouts, and a short fit that raises its reward."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from lightning_search import DiffusionModule
from lightning_search.backbones import DigitsBackbone
from lightning_search.data import DigitsDataModule
from lightning_search.errors import ConfigurationError
from lightning_search.objectives import GRPO
from lightning_search.objectives.grpo import RolloutContext, group_advantages
from lightning_search.sampling import Sampler
from lightning_search.verifiers.base import Verifier

SDE = Sampler("ddim", steps=4, eta=1.0)


class Brightness(Verifier):
    """Reward = mean pixel value of the digit (differentiable, quick to learn)."""

    def score(self, images, conditions, x0_images=None):
        return images.float().mean(dim=(1, 2, 3))


def module(objective, trained=None, sampler=SDE):
    m = DiffusionModule(DigitsBackbone("digits-xs"), objective=objective, sampler=sampler, lora={"rank": 2},
                        optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))  # fmt: skip
    if trained is not None:
        m.backbone.load_state_dict(trained.state_dict(), strict=False)
    m.configure_search(None, {"bright": Brightness()})
    return m


def context(m, step=0):
    return RolloutContext(m.backbone, m.sampler, m.verifiers, m.reference(), seed=0, step=step)


def test_advantages_are_normalised_within_each_group():
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 14.0])
    adv = group_advantages(rewards, 4).view(2, 4)
    torch.testing.assert_close(adv.mean(1), torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    assert adv[0].tolist() == pytest.approx([-1.5 / 1.1180, -0.5 / 1.1180, 0.5 / 1.1180, 1.5 / 1.1180], rel=1e-3)
    assert adv[1].std(unbiased=False).item() == pytest.approx(1.0, abs=1e-3)
    glob = group_advantages(rewards, 4, std=torch.tensor(2.0)).view(2, 4)
    assert glob[1].tolist() == pytest.approx([-1 / 2, -1 / 2, -1 / 2, 3 / 2], rel=1e-3)


def flow_ddim_mean(net, x, t, s, eta, labels):
    """DDIM-eta's mean for the digits flow model, written out: x0 = x - t v, eps = x + (1 - t) v."""
    v = net(x, torch.full((x.shape[0],), t), labels)
    x0, eps = x - t * v, x + (1 - t) * v
    a_t, s_t, a_s, s_s = 1 - t, t, 1 - s, s
    c = eta * s_s * math.sqrt(s_t**2 - (a_t / a_s) ** 2 * s_s**2) / s_t
    return a_s * x0 + math.sqrt(s_s**2 - c**2) * eps, c


def test_the_first_update_is_reinforce_with_group_normalised_advantages(trained_backbone):
    m = module(GRPO({"bright": 1.0}, group_size=4, kl=0.0, train_steps=None), trained_backbone)
    ctx = context(m)
    labels = [3, 7]
    rollouts = m.objective.rollout(ctx, labels, [0, 1])
    rows = torch.arange(8)
    params = [p for p in m.parameters() if p.requires_grad]
    grpo_grads = [torch.zeros_like(p) for p in params]
    for k in rollouts.train_steps:
        loss, logs = m.objective.step_loss(ctx, rollouts, rows, k)
        assert logs["ratio"].item() == pytest.approx(1.0, abs=1e-6) and logs["clip_fraction"].item() == 0
        for acc, g in zip(grpo_grads, torch.autograd.grad(loss, params)):
            acc += g
    # REINFORCE by hand: -A * mean over elements of log N(x_next; mu_theta(x), c^2), summed over the steps
    by_hand = 0
    cond = torch.tensor([c for c in labels for _ in range(4)])
    for k in rollouts.train_steps:
        step = rollouts.transitions[k]
        mean, c = flow_ddim_mean(m.backbone.net, step.x, step.t, step.t_next, 1.0, cond)
        log_prob = (
            (-((step.x_next - mean) ** 2) / (2 * c**2) - math.log(c) - 0.5 * math.log(2 * math.pi)).flatten(1).mean(1)
        )
        by_hand = by_hand - (rollouts.advantages.float() * log_prob).mean()
    for ours, ref in zip(grpo_grads, torch.autograd.grad(by_hand, params)):
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in grpo_grads)


def test_the_kl_term_is_zero_while_the_adapters_are_at_their_zero_start(trained_backbone):
    m = module(GRPO({"bright": 1.0}, group_size=4, kl=1.0), trained_backbone)
    ctx = context(m)
    rollouts = m.objective.rollout(ctx, [1, 2], [0, 1])
    _, logs = m.objective.step_loss(ctx, rollouts, torch.arange(8), rollouts.train_steps[0])
    assert logs["kl"].item() == 0.0
    with torch.no_grad():  # move the adapters: the policy leaves the reference
        for name, p in m.backbone.named_parameters():
            if "lora_B" in name:
                p.add_(0.05)
    _, logs = m.objective.step_loss(ctx, rollouts, torch.arange(8), rollouts.train_steps[0])
    assert logs["kl"].item() > 0


def test_rollouts_are_seeded_by_id_and_step(trained_backbone):
    m = module(GRPO({"bright": 1.0}, group_size=3), trained_backbone)
    a = m.objective.rollout(context(m, step=5), [4, 5], [10, 11])
    b = m.objective.rollout(context(m, step=5), [5], [11])
    c = m.objective.rollout(context(m, step=6), [4, 5], [10, 11])
    torch.testing.assert_close(a.rewards[3:], b.rewards, rtol=0, atol=0)  # independent of the batch
    assert not torch.equal(a.rewards, c.rewards)  # another step, other rollouts
    chunks = m.objective.minibatches(a, context(m))
    assert sorted(torch.cat(chunks).tolist()) == list(range(6))
    assert all(len(chunk) % 3 == 0 for chunk in chunks)  # groups stay whole


def test_grpo_needs_a_stochastic_sampler_and_known_rewards(trained_backbone):
    m = module(GRPO({"bright": 1.0}), trained_backbone, sampler=Sampler("heun", steps=3))
    with pytest.raises(ConfigurationError, match="stochastic"):
        m.objective.rollout(context(m), [1], [0])
    m = module(GRPO({"sharpness": 1.0}), trained_backbone)
    with pytest.raises(Exception, match="sharpness"):
        m.objective.rollout(context(m), [1], [0])


def test_a_short_fit_raises_the_reward(trained_backbone):
    """Forty rollout batches with the brightness reward: the samples of the fine-tuned model get brighter,
    also under the deterministic sampler it was not trained with. (With twenty, whether the reward had risen
    by 0.02 yet depended on the adapters' initial draw: +0.003 to +0.27 over six seeds; with forty, +0.12 to
    +0.42.)"""
    L.seed_everything(0)  # the adapters' initial draw too: the result does not depend on the tests run before
    m = module(GRPO({"bright": 1.0}, group_size=4, kl=0.0, updates=2), trained_backbone)
    m.optimizer = lambda p: torch.optim.Adam(p, lr=1e-2)
    cond, seeds = m.backbone.encode_conditions(list(range(10)) * 5), list(range(50))
    noise = torch.randn(50, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = m.backbone.decode(Sampler("heun", steps=3).sample(m.backbone, noise, cond, seeds=seeds).x).mean()
    trainer = L.Trainer(max_steps=80, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(m, DigitsDataModule("generator", batch_size=8))
    with torch.no_grad():
        after = m.backbone.decode(Sampler("heun", steps=3).sample(m.backbone, noise, cond, seeds=seeds).x).mean()
    assert after > before + 0.02, float(after - before)


@pytest.mark.slow
def test_two_process_grpo_fit_through_the_cli(tmp_path, digits_setup):
    """GRPO under DDP on 2 CPU processes: groups per rank, reward std all-gathered (std: global), the
    adapter written once."""
    from lightning_search.cli import main
    from tests.conftest import patched_recipe

    recipe = patched_recipe("digits/grpo.yaml", tmp_path, digits_setup)
    two = ["--trainer.strategy=ddp_fork", "--trainer.devices=2", "--trainer.accelerator=cpu"]
    main(["fit", "--config", str(recipe), *two, "--trainer.max_steps=4", "--data.init_args.batch_size=4",
          "--model.init_args.objective.init_args.std=global", "--trainer.enable_progress_bar=false",
          "--trainer.log_every_n_steps=1"])  # fmt: skip
    adapter = tmp_path / "runs/digits/grpo/adapter/pytorch_lora_weights.safetensors"
    assert adapter.is_file()
    from lightning_search.reporting.loggers import read_scalars

    assert read_scalars(tmp_path / "runs/digits/grpo/lightning_logs", "train/reward")  # the recipe's TensorBoard
