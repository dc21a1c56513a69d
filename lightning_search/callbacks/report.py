"""At the end of predict: merge the records, compute ``metrics.json``, draw ``grid.png``."""

from __future__ import annotations

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lightning_search.callbacks.writer import PredictionWriter
from lightning_search.errors import ConfigurationError
from lightning_search.reporting.grid import grid_subset, save_condition_grid
from lightning_search.reporting.loggers import flush, log_figure, log_image, log_scalars, log_table
from lightning_search.reporting.run_metrics import compute_run_metrics, write_verifier_table


class RunReport(Callback):
    """Computes a run's metrics and sample grid from what the :class:`PredictionWriter` wrote, and logs them
    to the trainer's loggers (TensorBoard, W&B, MLflow, ...): per batch the NFEs, GFLOPs and every verifier's
    mean score; at the end every metric, the grid (an image), the scores' distribution (a figure) and the
    verifiers' means (a table).

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
        self.batches = 0

    @override
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.batches = 0

    @override
    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if (
            not trainer.is_global_zero
            or not trainer.loggers
            or not isinstance(outputs, dict)
            or "result" not in outputs
        ):
            return
        result = outputs["result"]
        values = {
            "predict/nfe": result.nfe.float().mean().item(),
            "predict/gflops": sum(outputs["gflops"]) / len(outputs["gflops"]),
        }
        finite = result.score[result.score.isfinite()]
        if finite.numel():
            values["predict/search_score"] = finite.float().mean().item()
        for name, scores in outputs["evaluations"].items():
            values[f"predict/score/{name}"] = scores.float().nanmean().item()
        log_scalars(trainer.loggers, values, step=self.batches)
        self.batches += 1

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
            shown = grid_subset([r["condition"] for r in records], self.grid_per_condition, self.grid_conditions)
            shown = [records[i] for i in shown]
            save_condition_grid(
                folder.root / "grid.png",
                folder.load_images(shown),
                [r["condition"] for r in shown],
                self.grid_per_condition,
                self.grid_conditions,
            )
        if metrics.get("verifier_scores"):
            write_verifier_table(folder.root / "verifiers.md", metrics)
        shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
        rank_zero_info(f"wrote {folder.metrics_path}: {shown}")
        if trainer.loggers:
            self.log_run(trainer, folder, metrics, records)

    def log_run(self, trainer: Trainer, folder, metrics: dict, records: list[dict]) -> None:
        """The run's metrics, grid, score distribution and verifier table to the trainer's loggers."""
        loggers = trainer.loggers
        keys = ("nfe", "gflops", "verifier_gflops", "search_score", "fid", "kid", "inception_score", "precision",
                "recall", "pairwise_distance", "accuracy")  # fmt: skip
        log_scalars(loggers, {f"run/{k}": metrics.get(k) for k in keys}, step=0)
        log_scalars(loggers, {"run/score": metrics.get("verifier_scores") or {}}, step=0)
        if (folder.root / "grid.png").is_file():
            log_image(loggers, "run/grid", folder.root / "grid.png")
        if records:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            names = sorted({k for r in records for k in r.get("scores", {})})
            figure, ax = plt.subplots(figsize=(6, 3.5))
            for name in names:
                values = [r["scores"][name] for r in records if r["scores"].get(name) is not None]
                if values:
                    ax.hist(values, bins=30, alpha=0.5, label=name)
            ax.set_xlabel("score of the chosen sample")
            ax.set_ylabel("samples")
            if names:
                ax.legend()
            figure.tight_layout()
            log_figure(loggers, "run/score_distribution", figure)
            plt.close(figure)
        table = [{"verifier": k, "mean score": v} for k, v in sorted((metrics.get("verifier_scores") or {}).items())]
        log_table(loggers, "run/verifiers", table)
        flush(loggers)
