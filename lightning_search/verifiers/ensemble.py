"""The ensemble verifier of Ma et al. 2025 (Sec. 5): the mean rank of a candidate across several verifiers,
ranked within its candidate set, so that verifiers on different scales (CLIPScore ~0.8, ImageReward ~N(0, 1),
aesthetic ~1-10) count alike and no single one can be hacked alone.

Ranks: within each candidate set (``groups``; without groups the whole batch is one set), the worst
candidate of a verifier gets rank 1 and the best rank n; ties share their average rank (as
``scipy.stats.rankdata(method="average")``); NaN scores rank below everything (they are -inf to search).
Score = the weighted mean of the ranks over verifiers (weights default to 1), so higher is better and it
lies in [1, n]; with ``normalize=True`` each rank is divided by its set's size n, giving (0, 1], comparable
between sets of different sizes.

As an evaluation verifier, note that the mean over a set ranked together is fixed ((n + 1) / 2): per-sample
values are meaningful, their average is not; report the members' own scores for that (:meth:`member_scores`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lightning_search.errors import ConfigurationError, LightningSearchError, UnknownNameError
from lightning_search.verifiers.base import Verifier


def group_ranks(scores: torch.Tensor, groups: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Average ranks within groups: scores (B,), groups (B,) or None -> (ranks (B,) in [1, n], n (B,)).

    Rank = 1 + (# in the set strictly below) + (# tied, others) / 2. Pairwise comparisons: B is at most a few
    thousand candidates per batch, and this handles ties and NaN exactly without sorting tricks.
    """
    s = torch.nan_to_num(scores.double(), nan=float("-inf"))
    if groups is None:
        same = torch.ones(len(s), len(s), dtype=torch.bool, device=s.device)
    else:
        groups = groups.to(s.device)
        same = groups[:, None] == groups[None, :]
    below = ((s[None, :] < s[:, None]) & same).sum(1)
    ties = ((s[None, :] == s[:, None]) & same).sum(1) - 1  # not counting itself
    ranks = 1.0 + below + ties / 2.0
    return ranks, same.sum(1).double()


class EnsembleVerifier(Verifier):
    """Mean rank across member verifiers within each candidate set (higher is better).

    Args:
        verifiers: named member verifiers (a dict), or a list (named "0", "1", ...). A member given as a string
            names another verifier of the run, bound by :meth:`resolve_members` (loaded once, shared).
        weights: per member (a dict by name, or a list in order); non-negative, not all zero. Default: equal.
        normalize: divide ranks by the set size (score in (0, 1]) instead of raw ranks (score in [1, n]).
    """

    rank_based = True  # its scores are ranks within a candidate set, not comparable across sets

    def __init__(
        self,
        verifiers: Mapping[str, Verifier | str] | Sequence[Verifier | str],
        weights: Mapping[str, float] | Sequence[float] | None = None,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(verifiers, Mapping):
            members: dict[str, Verifier | str] = dict(verifiers)
        else:
            members = {v if isinstance(v, str) else str(i): v for i, v in enumerate(verifiers)}
        if not members:
            raise ConfigurationError("EnsembleVerifier needs at least one member verifier")
        for name, v in members.items():
            if not isinstance(v, Verifier | str):
                raise ConfigurationError(f"ensemble member {name!r} is a {type(v).__name__}, not a Verifier")
        # Members given by name are other verifiers of the run, bound later by resolve_members(): a big
        # model that both joins the ensemble and is evaluated alone is then loaded once.
        self.pending = {name: v for name, v in members.items() if isinstance(v, str)}
        self.members = nn.ModuleDict({name: v for name, v in members.items() if isinstance(v, Verifier)})
        self.order = list(members)
        if weights is None:
            w = [1.0] * len(members)
        elif isinstance(weights, Mapping):
            unknown = set(weights) - set(members)
            if unknown:
                raise ConfigurationError(f"weights for unknown members {sorted(unknown)}; members: {list(members)}")
            w = [float(weights.get(name, 1.0)) for name in members]
        else:
            w = [float(x) for x in weights]
            if len(w) != len(members):
                raise ConfigurationError(f"{len(w)} weights for {len(members)} member verifiers")
        if any(x < 0 for x in w) or sum(w) <= 0:
            raise ConfigurationError(f"ensemble weights must be non-negative and not all zero, got {w}")
        self.weights = w
        self.normalize = normalize
        self._update_requirements()

    def _update_requirements(self) -> None:
        members = list(self.members.values())
        nested = [name for name, v in self.members.items() if v.rank_based]
        if nested:
            # a rank-based member would rank within whatever micro-batch it is given, not within the set
            raise ConfigurationError(f"ensemble members {nested} are rank-based themselves; list their members")
        times = {v.x0_time for v in members if v.x0_time is not None}
        if len(times) > 1:
            raise ConfigurationError(f"ensemble members ask for x0-predictions at different times {sorted(times)}")
        self.x0_time = times.pop() if times else None
        channels = {v.channels for v in members}
        self.channels = channels.pop() if len(channels) == 1 else None

    def resolve_members(self, verifiers: Mapping[str, Verifier]) -> None:
        """Bind members given by name to the run's verifiers ({name: verifier}, e.g. DiffusionModule.verifiers);
        an unknown name raises an error listing the run's verifiers."""
        for name, ref in self.pending.items():
            if ref not in verifiers or verifiers[ref] is self:
                raise UnknownNameError("verifier", ref, [k for k, v in verifiers.items() if v is not self])
            self.members[name] = verifiers[ref]
        self.pending = {}
        self._update_requirements()

    def member_scores(
        self,
        images: torch.Tensor,
        conditions: Sequence[Any],
        x0_images: torch.Tensor | None = None,
        groups: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Each member's own scores (B,), validated by the member itself."""
        if self.pending:
            raise LightningSearchError(
                f"ensemble members {sorted(self.pending.values())} are given by name and not bound yet: call "
                "resolve_members(run_verifiers) (DiffusionModule does it when the run's verifiers are set)"
            )
        return {name: self.members[name](images, conditions, x0_images, groups) for name in self.order}

    def combine(self, scores: Mapping[str, torch.Tensor], groups: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted mean rank of members' scores {name: (B,)} within groups -> (B,), float32."""
        total = None
        for weight, name in zip(self.weights, self.order):
            ranks, n = group_ranks(scores[name], groups)
            if self.normalize:
                ranks = ranks / n
            total = weight * ranks if total is None else total + weight * ranks
        return (total / sum(self.weights)).float()

    def raw_scores(
        self, images: torch.Tensor, conditions: Sequence[Any], x0_images: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Each member's own score, one column per member in ``order``: (B, M)."""
        scores = self.member_scores(images, conditions, x0_images)
        return torch.stack([scores[name] for name in self.order], dim=1)

    @property
    def num_raw_scores(self) -> int:
        return len(self.order)

    def reduce(self, raw: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted mean rank of the members' columns within each candidate set."""
        return self.combine({name: raw[:, i] for i, name in enumerate(self.order)}, groups)

    def score(
        self, images: torch.Tensor, conditions: Sequence[Any], x0_images: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Without groups: the whole batch is one candidate set."""
        return self.combine(self.member_scores(images, conditions, x0_images), None)
