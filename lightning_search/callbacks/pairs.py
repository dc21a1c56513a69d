"""The pairs writer: the AI-feedback pairs of ``lightning-search pairs`` as a preference data set."""

from __future__ import annotations

from typing import Any

import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lightning_search.callbacks.writer import RunFolderWriter
from lightning_search.errors import Interrupted
from lightning_search.runs import image_to_png_bytes, write_preference_pairs

COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0", "score_0", "score_1", "seed_0", "seed_1")


class PairsWriter(RunFolderWriter):
    """Collects the pairs of every batch and writes ``<run>/pairs`` at the end of predict, in the Pick-a-Pic
    schema: ``caption`` (the condition), ``jpg_0`` (the winner, PNG bytes), ``jpg_1`` (the loser), ``label_0``
    (1.0: image 0 preferred), plus ``score_0`` / ``score_1`` and the noise seeds ``seed_0`` / ``seed_1``; and
    ``<run>/metrics.json`` (pairs made, mean score gap). Rows are in sample-id order whatever the ranks.

    Args:
        output_dir: run folder (default: the trainer's ``default_root_dir``).
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(output_dir)
        self.rows: list[dict[str, Any]] = []

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.rows = []

    @override
    def write_batch(self, trainer: Trainer, pl_module: LightningModule, prediction: dict[str, Any]) -> None:
        for row in prediction["pairs"]:
            self.rows.append(
                {
                    "sample_id": row["sample_id"],
                    "caption": row["caption"],
                    "jpg_0": image_to_png_bytes(row["image_w"]),
                    "jpg_1": image_to_png_bytes(row["image_l"]),
                    "label_0": 1.0,
                    "score_0": row["score_w"],
                    "score_1": row["score_l"],
                    "seed_0": row["seed_w"],
                    "seed_1": row["seed_l"],
                }
            )

    @override
    def interrupted(self, trainer: Trainer) -> Interrupted:
        # nothing is written before the end: a rerun makes the pairs again from the start (seconds on digits)
        return Interrupted("SIGTERM", "pairs", "nothing was written; rerun the same command")

    @override
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rows = self.rows
        if trainer.world_size > 1:
            gathered: list[list[dict[str, Any]]] = [[] for _ in range(trainer.world_size)]
            torch.distributed.all_gather_object(gathered, rows)
            rows = [row for part in gathered for row in part]
        if not trainer.is_global_zero:
            return
        rows = sorted({r["sample_id"]: r for r in rows}.values(), key=lambda r: r["sample_id"])
        folder = self.folder(trainer)
        path = write_preference_pairs(folder.pairs_path, {c: [r[c] for r in rows] for c in COLUMNS})
        gaps = [r["score_0"] - r["score_1"] for r in rows]
        pairs = getattr(pl_module, "pairs_config", None)
        summary = {
            "num_pairs": len(rows),
            "mean_score_gap": sum(gaps) / len(gaps) if gaps else None,
            "verifier": getattr(pairs, "verifier", None),
            "samples_per_condition": getattr(pairs, "samples_per_condition", None),
            "seed": getattr(pairs, "seed", None),
        }
        folder.write_metrics(summary)
        gap = "-" if summary["mean_score_gap"] is None else f"{summary['mean_score_gap']:.3f}"
        rank_zero_info(f"AI feedback: {len(rows)} pairs, mean score gap {gap} -> {path}")
