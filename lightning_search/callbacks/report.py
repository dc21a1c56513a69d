"""At the end of predict: merge the records, compute ``metrics.json``, draw ``grid.png``."""

from __future__ import annotations

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lightning_search.callbacks.writer import PredictionWriter
from lightning_search.errors import ConfigurationError
from lightning_search.reporting.grid import save_condition_grid
from lightning_search.reporting.run_metrics import compute_run_metrics, write_verifier_table


class RunReport(Callback):
    """Computes a run's metrics and sample grid from what the :class:`PredictionWriter` wrote.

    Args:
        evaluator: checkpoint of the evaluator classifier (FID, KID, IS, precision/recall, accuracy on its
            features); None for text-to-image runs, whose held-out evaluation is done by verifiers.
        reference: the real image set for FID: ``digits`` (the 500 held-out digits).
        grid_per_condition: columns of ``grid.png`` (one row per condition).
        grid_conditions: rows of ``grid.png``.
    """

    def __init__(
        self,
        evaluator: str | None = None,
        reference: str | None = "digits",
        grid_per_condition: int = 10,
        grid_conditions: int = 10,
    ) -> None:
        if reference not in (None, "digits"):
            raise ConfigurationError(f"unknown reference set {reference!r}; valid: digits, or null")
        self.evaluator, self.reference = evaluator, reference
        self.grid_per_condition, self.grid_conditions = grid_per_condition, grid_conditions

    @override
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = next((c for c in trainer.callbacks if isinstance(c, PredictionWriter)), None)
        if writer is None:
            raise ConfigurationError("RunReport needs a PredictionWriter in trainer.callbacks")
        writer.merge(trainer)
        if not trainer.is_global_zero:
            return
        folder = writer.folder(trainer)
        evaluator = reference = None
        if self.evaluator is not None:
            from lightning_search.classifier import load_classifier
            from lightning_search.data.digits import reference_images

            evaluator, reference = load_classifier(self.evaluator), reference_images()
        search = getattr(pl_module, "search_config", None)
        sampler = getattr(pl_module, "sampler", None)
        extra = {
            "sampler": None if sampler is None else vars(sampler),
            "search": None if search is None else vars(search),
        }
        metrics = compute_run_metrics(folder.root, evaluator, reference, extra)
        records = folder.records()
        if records:
            save_condition_grid(
                folder.root / "grid.png",
                folder.load_images(records),
                [r["condition"] for r in records],
                self.grid_per_condition,
                self.grid_conditions,
            )
        if metrics.get("verifier_scores"):
            write_verifier_table(folder.root / "verifiers.md", metrics)
        shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
        rank_zero_info(f"wrote {folder.metrics_path}: {shown}")
