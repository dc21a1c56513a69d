"""GRPO for diffusion and flow models (Flow-GRPO, Liu et al. 2025; DanceGRPO, Xue et al. 2025): online RL with
the run's verifiers as rewards, through the same stochastic sampler that search uses.

One training step of :class:`~lightning_search.DiffusionModule` with this objective:

1. **Rollouts** (no gradient): for each condition of the batch, G trajectories of the stochastic sampler
   (``ddim`` or ``euler_maruyama`` with eta > 0), each step's transition kept (state, next state, Gaussian
   mean and std: ``sampling/sampler.py``); noises seeded by (seed, rollout id, round = global step, member).
2. **Rewards**: a weighted sum of verifiers of the run (``rewards: {name: weight}``, the verifiers of the
   run's ``verifiers:``, the same objects search uses), scored on the decoded samples.
3. **Advantages** normalised within each group of G: ``(r - mean_group) / (std + 1e-4)``, std per group or
   over all groups of all ranks (all-gathered), clipped to +-``adv_clip``.
4. **Updates**: ``updates`` optimizer steps, each on a minibatch of the rollouts, over a subset of the
   denoising steps (Flow-GRPO's timestep subsampling; or a MixGRPO-style sliding window of SDE steps with ODE
   steps elsewhere). Per step, the clipped-ratio objective with the ratio of the step's log-probability
   under the current policy to the one recorded at rollout, plus ``kl`` times the KL divergence to the
   reference: the same network with its LoRA adapters disabled (no second copy). With equal stds the KL of
   two Gaussian steps is ``|mu - mu_ref|^2 / (2 std^2)``.

Log-probabilities are averaged over the latent's elements (``log_prob: mean``, Flow-GRPO's choice: a sum
over 10^5 elements makes every ratio 0 or infinity at once) or summed (``sum``: the exact density).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from typing_extensions import override

from lightning_search.backbones.base import Backbone, Cond, cond_index, cond_repeat
from lightning_search.errors import ConfigurationError, UnknownNameError
from lightning_search.objectives.base import Logs, Objective
from lightning_search.sampling.noise import noise_seed, seeded_noise
from lightning_search.sampling.sampler import Sampler, Transition
from lightning_search.verifiers.base import Verifier


def step_log_prob(x_next: torch.Tensor, mean: torch.Tensor, std: float, reduction: str = "mean") -> torch.Tensor:
    """log N(x_next; mean, std^2 I) per row (B,), summed or averaged over the elements."""
    per_element = -((x_next.double() - mean.double()) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)
    per_row = per_element.flatten(1)
    return per_row.mean(1) if reduction == "mean" else per_row.sum(1)


def group_advantages(rewards: torch.Tensor, group_size: int, std: torch.Tensor | None = None) -> torch.Tensor:
    """Rewards (B * G,) in groups of G consecutive rows -> (r - group mean) / (std + 1e-4); ``std``: one
    value for all (global) or None (each group's own)."""
    r = rewards.double().view(-1, group_size)
    centred = r - r.mean(dim=1, keepdim=True)
    scale = r.std(dim=1, keepdim=True, unbiased=False) if std is None else std.double()
    return (centred / (scale + 1e-4)).flatten()


@dataclass
class RolloutContext:
    """What the objective needs from the module for one training step."""

    backbone: Backbone
    sampler: Sampler
    verifiers: Mapping[str, Verifier]
    reference: Callable | None
    seed: int
    step: int
    rank: int = 0
    world_size: int = 1
    all_gather: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class Rollouts:
    """G trajectories per condition (rows grouped: condition i owns rows i*G .. i*G + G - 1)."""

    conditions: list[Any]
    cond: Cond
    transitions: list[Transition]
    train_steps: list[int]  # indices into transitions of the steps to train on
    rewards: torch.Tensor  # (B * G,)
    advantages: torch.Tensor  # (B * G,)
    old_log_probs: torch.Tensor  # (steps, B * G), at rollout
    logs: Logs


class GRPO(Objective):
    """Group-relative policy optimisation on the stochastic sampler's steps.

    Args:
        rewards: {verifier name: weight}, verifiers of the run (``verifiers:``); the reward is the weighted sum.
        group_size: G rollouts per condition.
        clip: epsilon of the clipped ratio (Flow-GRPO: 1e-4 for SD3.5; PPO: 0.2).
        kl: weight of the KL penalty to the adapter-disabled reference (0: none).
        train_steps: how many of the sampler's steps each update trains on, drawn at random per rollout (None:
            all); ignored with ``window``.
        window: MixGRPO-style: only this many consecutive steps are stochastic (and trained on), ODE elsewhere;
            the window moves from the noisiest steps towards data by ``window_stride`` every ``window_every``
            training steps.
        updates: optimizer steps (minibatches) per rollout batch; after the first the policy is off its
            rollouts and the ratio's clip matters.
        adv_clip: advantages are clipped to [-adv_clip, adv_clip].
        std: ``group`` (each group's reward std) or ``global`` (all rewards of all ranks).
        log_prob: ``mean`` or ``sum`` over the latent's elements (module docstring).
        max_grad_norm: gradient clipping of each update (Flow-GRPO: 1.0; 0 / None: none).
    """

    needs_reference = True
    online = True  # trained by rollouts inside fit: the module drives it (``DiffusionModule.training_step``)

    def __init__(
        self,
        rewards: Mapping[str, float],
        group_size: int = 8,
        clip: float = 0.2,
        kl: float = 0.01,
        train_steps: int | None = None,
        window: int | None = None,
        window_stride: int = 1,
        window_every: int = 25,
        updates: int = 2,
        adv_clip: float = 5.0,
        std: Literal["group", "global"] = "group",
        log_prob: Literal["mean", "sum"] = "mean",
        max_grad_norm: float | None = 1.0,
    ) -> None:
        if not rewards or any(w < 0 for w in rewards.values()):
            raise ConfigurationError(f"GRPO needs rewards {{verifier name: weight >= 0}}, got {dict(rewards)}")
        if group_size < 2:
            raise ConfigurationError(
                f"GRPO needs group_size >= 2 (advantages are relative to the group), got {group_size}"
            )
        if std not in ("group", "global") or log_prob not in ("mean", "sum"):
            raise ConfigurationError(
                f"GRPO std must be group or global and log_prob mean or sum, got {std}, {log_prob}"
            )
        if updates < 1 or clip <= 0 or kl < 0 or (train_steps is not None and train_steps < 1):
            raise ConfigurationError("GRPO needs updates >= 1, clip > 0, kl >= 0 and train_steps >= 1 (or null)")
        self.rewards, self.group_size, self.clip, self.kl = dict(rewards), group_size, clip, kl
        self.train_steps, self.window, self.window_stride, self.window_every = (
            train_steps,
            window,
            window_stride,
            window_every,
        )
        self.updates, self.adv_clip, self.std, self.log_prob = updates, adv_clip, std, log_prob
        self.max_grad_norm = max_grad_norm

    @override
    def loss(self, backbone, batch, reference, generator):
        raise ConfigurationError(
            "GRPO trains online: use it as the objective of DiffusionModule (fit drives the rollouts)"
        )

    # -- rollouts ---------------------------------------------------------------------------------------------
    def check(self, ctx: RolloutContext) -> None:
        missing = [name for name in self.rewards if name not in ctx.verifiers]
        if missing:
            raise UnknownNameError("reward verifier", missing[0], ctx.verifiers)
        if not ctx.sampler.stochastic(ctx.backbone) or ctx.sampler.solver == "scheduler":
            raise ConfigurationError(
                "GRPO needs the log-probabilities of stochastic steps: set the module's sampler to solver ddim or "
                "euler_maruyama with eta > 0 (e.g. --model.init_args.sampler.eta 1.0)"
            )

    def _window(self, steps: int, step: int) -> tuple[int, int]:
        """[first, last) of the stochastic steps (all of them without a window)."""
        if self.window is None:
            return 0, steps
        size = min(self.window, steps)
        first = min((step // self.window_every) * self.window_stride, steps - size)
        return first, first + size

    def reward(self, ctx: RolloutContext, images: torch.Tensor, conditions: Sequence[Any]) -> torch.Tensor:
        """The weighted sum of the reward verifiers' scores (B * G,); a group is one candidate set."""
        groups = torch.arange(len(conditions), device=images.device) // self.group_size
        total = torch.zeros(len(conditions), dtype=torch.float64, device=images.device)
        for name, weight in self.rewards.items():
            total += weight * ctx.verifiers[name](images, list(conditions), None, groups).double()
        return torch.nan_to_num(total, nan=0.0, posinf=0.0, neginf=0.0)  # a broken score earns nothing

    @torch.no_grad()
    def rollout(self, ctx: RolloutContext, conditions: Sequence[Any], ids: Sequence[int]) -> Rollouts:
        """G trajectories per condition, their rewards and advantages. ``ids``: a stable id per condition."""
        self.check(ctx)
        g = self.group_size
        backbone, sampler = ctx.backbone, ctx.sampler
        rows = [c for c in conditions for _ in range(g)]
        cond = cond_repeat(backbone.encode_conditions(list(conditions)), g)
        seeds = [noise_seed(ctx.seed, int(i), ctx.step, j) for i in ids for j in range(g)]
        p = next(backbone.parameters())
        x = seeded_noise(seeds, backbone.latent_shape, p.device, p.dtype)
        grid = sampler.grid(backbone)
        first, last = self._window(len(grid) - 1, ctx.step)
        ode = Sampler(
            sampler.solver, sampler.steps, sampler.guidance_scale, sampler.micro_batch_size, sampler.time_shift
        )
        if first > 0:  # ODE steps before the window (MixGRPO)
            x = ode.sample(backbone, x, cond, t_end=grid[first]).x
        out = sampler.sample(
            backbone, x, cond, t_start=grid[first], t_end=grid[last], seeds=seeds, keep_transitions=True
        )
        x = out.x
        if last < len(grid) - 1:
            x = ode.sample(backbone, x, cond, t_start=grid[last]).x
        images = backbone.decode(x)
        rewards = self.reward(ctx, images, rows)
        gathered = ctx.all_gather(rewards) if ctx.all_gather is not None and ctx.world_size > 1 else rewards
        std = gathered.double().std(unbiased=False) if self.std == "global" else None
        advantages = group_advantages(rewards, g, std).clamp(-self.adv_clip, self.adv_clip)
        transitions = [t for t in out.transitions if t.std > 0]  # the last DDIM step to t = 0 adds no noise
        steps = list(range(len(transitions)))
        if self.window is None and self.train_steps is not None and self.train_steps < len(steps):
            gen = torch.Generator().manual_seed(noise_seed(ctx.seed, ctx.step, ctx.rank, 1 << 20))
            steps = sorted(torch.randperm(len(steps), generator=gen)[: self.train_steps].tolist())
        old = torch.stack([step_log_prob(t.x_next, t.mean, t.std, self.log_prob) for t in transitions])
        per_group = rewards.view(-1, g)
        logs = {
            "reward": gathered.double().mean().float(),
            "reward_std_in_group": per_group.std(dim=1, unbiased=False).mean().float(),
            "zero_std_groups": (per_group.std(dim=1) == 0).float().mean(),
            "advantage_abs": advantages.abs().mean().float(),
        }
        return Rollouts(rows, cond, transitions, steps, rewards, advantages, old, logs)

    # -- updates ------------------------------------------------------------------------------------------------
    def minibatches(self, rollouts: Rollouts, ctx: RolloutContext) -> list[torch.Tensor]:
        """``updates`` disjoint sets of rollout rows (whole groups stay together), in a seeded order."""
        groups = len(rollouts.conditions) // self.group_size
        gen = torch.Generator().manual_seed(noise_seed(ctx.seed, ctx.step, ctx.rank, 1 << 21))
        order = torch.randperm(groups, generator=gen)
        chunks = [c for c in order.chunk(min(self.updates, groups)) if len(c)]
        return [(c[:, None] * self.group_size + torch.arange(self.group_size)).flatten().sort().values for c in chunks]

    def step_loss(
        self, ctx: RolloutContext, rollouts: Rollouts, rows: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, Logs]:
        """The clipped-ratio loss (+ KL) of training step ``k`` on rollout rows ``rows`` -> (loss, logs)."""
        step = rollouts.transitions[k]
        device = step.x.device
        idx = rows.to(device)
        cond = cond_index(rollouts.cond, idx)
        x, x_next = step.x[idx], step.x_next[idx]
        mean, std = ctx.sampler.step_distribution(ctx.backbone, x, step.t, step.t_next, cond)
        log_prob = step_log_prob(x_next, mean, std, self.log_prob)
        ratio = torch.exp(log_prob - rollouts.old_log_probs[k, idx].to(log_prob.device))
        adv = rollouts.advantages.to(device)[idx]
        unclipped, clipped = -adv * ratio, -adv * ratio.clamp(1 - self.clip, 1 + self.clip)
        policy = torch.maximum(unclipped, clipped).mean()
        logs = {"clip_fraction": ((ratio - 1).abs() > self.clip).float().mean().detach(),
                "ratio": ratio.mean().detach()}  # fmt: skip
        loss = policy
        if self.kl > 0 and ctx.reference is not None:
            with torch.no_grad():
                mean_ref, _ = ctx.sampler.step_distribution(ctx.reference, x, step.t, step.t_next, cond)
            diff = (mean.double() - mean_ref.double()).flatten(1) ** 2
            kl = (diff.mean(1) if self.log_prob == "mean" else diff.sum(1)) / (2 * std**2)
            loss = loss + self.kl * kl.mean()
            logs["kl"] = kl.mean().detach()
        return loss.float(), logs
