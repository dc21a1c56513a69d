"""The prediction writer: one PNG per sample and ``records.jsonl``, sharded per rank, atomic, resumable; and
what it shares with the pairs writer (``pairs.py``): a run folder, written batch by batch, stopped at a SIGTERM."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lightning_search.errors import Interrupted, RunFolderError
from lightning_search.runs import RunFolder


class RunFolderWriter(BasePredictionWriter):
    """Writes each batch's prediction into a run folder, then stops predict at a SIGTERM: Lightning's predict
    loop does not look at SIGTERM (its fit loop does), so the writer stops at this sample boundary.

    Args:
        output_dir: run folder (default: the trainer's ``default_root_dir``).
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir

    def run_dir(self, trainer: Trainer) -> Path:
        return Path(self.output_dir or trainer.default_root_dir)

    def folder(self, trainer: Trainer) -> RunFolder:
        return RunFolder(self.run_dir(trainer))

    @abstractmethod
    def write_batch(self, trainer: Trainer, pl_module: LightningModule, prediction: dict[str, Any]) -> None:
        """Write (or collect) one batch's prediction."""

    @abstractmethod
    def interrupted(self, trainer: Trainer) -> Interrupted:
        """The error that stops predict at a SIGTERM, saying what was kept and how to resume."""

    @override
    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: dict[str, Any],
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        self.write_batch(trainer, pl_module, prediction)
        if trainer.received_sigterm:
            raise self.interrupted(trainer)


class PredictionWriter(RunFolderWriter):
    """Writes ``<output_dir>/predictions/``: ``images/<id>.png`` and ``records.jsonl`` (``lightning_search.runs``).

    Each rank appends to its own ``records.rank<r>.jsonl`` (one fsynced line per sample, after its image is
    in place), so a killed run loses at most the batch in flight; at the end rank 0 merges the shards into
    one sorted file. A SIGTERM stops the run after the batch in flight is written (:class:`Interrupted`).

    Resuming is an explicit step before predict (``lightning-search predict`` does it): :meth:`resume_from`
    is told which sample ids the folder already holds, and the DataModule flags them done. A batch that holds
    some of them is computed whole (as in an uninterrupted run) and only its new samples are written. A folder
    that already holds records but was not resumed that way is refused rather than mixed.

    Args:
        output_dir: run folder (default: the trainer's ``default_root_dir``).
        resume: skip sample ids already recorded in ``output_dir`` (False: start a fresh record file).
    """

    def __init__(self, output_dir: str | None = None, resume: bool = True) -> None:
        super().__init__(output_dir)
        self.resume = resume
        self.done: frozenset[int] | None = None  # sample ids found done by the resume step; None: no resume step

    def predictions_dir(self, trainer: Trainer) -> Path:
        return self.folder(trainer).predictions

    def resume_from(self, done: set[int]) -> None:
        """The resume step's handshake: ``done`` ids are in the folder, flagged done by the DataModule."""
        self.done = frozenset(done)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        folder = self.folder(trainer)
        if trainer.is_global_zero:
            folder.remove_temporary_files()  # writes a killed run did not finish
            if not self.resume:
                folder.clear_records()
            elif self.done is None and folder.done_ids():
                raise RunFolderError(
                    f"{str(folder.root)!r} already holds {len(folder.done_ids())} records; resume it with "
                    "`lightning-search predict` (same settings) or write into an empty folder"
                )
        trainer.strategy.barrier()
        if self.done:
            rank_zero_info(f"resuming into {folder.predictions}: {len(self.done)} samples already done are skipped")

    @override
    def on_predict_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if trainer.received_sigterm:  # arrived between two batches: do not start another
            raise self.interrupted(trainer)

    @override
    def interrupted(self, trainer: Trainer) -> Interrupted:
        # everything before this boundary is written; the records stay in their shards, to be resumed
        return Interrupted("SIGTERM", f"predict into {str(self.run_dir(trainer))!r}")

    @staticmethod
    def _writes_on(trainer: Trainer, pl_module: LightningModule) -> bool:
        """With candidate sharding every rank holds every sample: rank 0 alone writes."""
        sharded = getattr(getattr(pl_module, "search_config", None), "candidate_sharding", False)
        return trainer.is_global_zero or not sharded

    @override
    def write_batch(self, trainer: Trainer, pl_module: LightningModule, prediction: dict[str, Any]) -> None:
        done = self.done or frozenset()
        new = [i for i, sample_id in enumerate(prediction["sample_id"]) if sample_id not in done]
        if new and self._writes_on(trainer, pl_module):
            folder = self.folder(trainer)
            result = prediction["result"]
            search = getattr(pl_module, "search_config", None)
            records = []
            for i in new:
                sample_id = prediction["sample_id"][i]
                records.append(
                    {
                        "sample_id": sample_id,
                        "condition": prediction["condition"][i],
                        "image": folder.write_image(sample_id, prediction["images"][i]),
                        "algorithm": getattr(search, "algorithm", "none"),
                        "verifier": getattr(search, "verifier", None),
                        "seed": result.chosen[i]["seed"],
                        "chosen": result.chosen[i],
                        "candidate_seeds": result.candidate_seeds[i],
                        "score": float(result.score[i]),
                        "scores": {name: float(s[i]) for name, s in prediction["evaluations"].items()},
                        "nfe": int(result.nfe[i]),
                        "gflops": prediction["gflops"][i],
                        "verifier_calls": int(result.verifier_calls[i]),
                        "verifier_gflops": prediction["verifier_gflops"][i],
                        "wall_time": prediction["wall_time"],
                        "trace": result.trace[i] if result.trace else [],
                    }
                )
            folder.append_records(trainer.global_rank, records)

    def merge(self, trainer: Trainer) -> Path:
        """Merge every shard (and an earlier merged file) into one sorted, de-duplicated records.jsonl."""
        folder = self.folder(trainer)
        if trainer.is_global_zero:
            folder.merge_records()
        trainer.strategy.barrier()
        return folder.predictions / "records.jsonl"

    @override
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainer.strategy.barrier()
        self.merge(trainer)
