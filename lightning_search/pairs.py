"""AI-feedback preference pairs, a use of search: sample K images per condition, score them with a verifier of
the run, keep the best against the worst (Wallace et al. 2023's AI-feedback variant; Ma et al. 2025, Table 3).

``lightning-search pairs --config recipes/digits/pairs.yaml`` runs this through the predict loop
(``DiffusionModule.configure_pairs``) and :class:`~lightning_search.callbacks.PairsWriter` writes the pairs as a
preference data set in the Pick-a-Pic schema, which ``PreferenceDataModule`` reads like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lightning_search.errors import ConfigurationError
from lightning_search.search.base import SearchContext


@dataclass
class PairsConfig:
    """``--pairs.*``: how the pairs are made.

    Args:
        verifier: the name of the verifier (a key of the run's ``verifiers``) that picks best and worst.
        samples_per_condition: K, samples drawn per condition (the pair is best against worst of K), >= 2.
        seed: seed of the noises, which with the sample id and candidate index fix each noise; keep it apart
            from the evaluation runs' seed so that no evaluated noise is trained on.
    """

    verifier: str | None = None
    samples_per_condition: int = 4
    seed: int = 1000

    def __post_init__(self) -> None:
        if self.samples_per_condition < 2:
            raise ConfigurationError(
                f"pairs need samples_per_condition >= 2 (best against worst), got {self.samples_per_condition}"
            )


def caption_of(condition: Any) -> Any:
    """The pair's ``caption``: a metadata dict's ``prompt`` (GenEval-style conditions such as the shapes world's:
    Pick-a-Pic captions are text, and Arrow cannot store dicts whose fields differ between rows), else the
    condition itself (a class label, a prompt string)."""
    if isinstance(condition, dict) and isinstance(condition.get("prompt"), str):
        return condition["prompt"]
    return condition


@torch.no_grad()
def best_and_worst(
    ctx: SearchContext, conditions: Sequence[Any], sample_ids: Sequence[int], samples_per_condition: int
) -> list[dict[str, Any]]:
    """One pair per condition whose K scores are not all equal (no preference: no pair).

    Noises are seeded by (seed, sample id, round 0, candidate), as random search seeds its candidates, so the
    pairs are reproducible and batching-independent. -> rows {sample_id, caption, image_w (C, H, W), image_l,
    score_w, score_l, seed_w, seed_l}, the winner first.
    """
    seeds = ctx.seeds(sample_ids, 0, samples_per_condition)
    _, images, scores, _ = ctx.sample_and_score(ctx.noise(seeds), seeds, ctx.encode(conditions), conditions, None)
    best, worst = scores.argmax(dim=1), scores.argmin(dim=1)
    rows = []
    for i, (condition, sample_id) in enumerate(zip(conditions, sample_ids)):
        b, w = int(best[i]), int(worst[i])
        if not scores[i, b] > scores[i, w]:
            continue
        rows.append(
            {
                "sample_id": int(sample_id),
                "caption": caption_of(condition),
                "image_w": images[i, b].float().cpu(),
                "image_l": images[i, w].float().cpu(),
                "score_w": float(scores[i, b]),
                "score_l": float(scores[i, w]),
                "seed_w": int(seeds[i][b]),
                "seed_l": int(seeds[i][w]),
            }
        )
    return rows
