"""The prediction writer: one PNG per sample and ``records.jsonl``, sharded per rank, atomic, resumable."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lightning_search.reporting.io import (
    atomic_write_bytes,
    atomic_write_text,
    image_to_png_bytes,
    json_safe,
    read_records,
)


class PredictionWriter(BasePredictionWriter):
    """Writes ``<output_dir>/predictions/``: ``images/<id>.png`` and ``records.jsonl``.

    Each rank appends to its own ``records.rank<r>.jsonl`` (one fsynced line per sample, after its image is
    in place), so a killed run loses at most the batch in flight. On start, ids already recorded are
    skipped (the DataModule's ``exclude_ids``); at the end rank 0 merges the shards into one sorted file.

    Args:
        output_dir: run folder (default: the trainer's ``default_root_dir``).
        resume: skip sample ids already recorded in ``output_dir`` (False: start a fresh record file).
    """

    def __init__(self, output_dir: str | None = None, resume: bool = True) -> None:
        super().__init__(write_interval="batch")
        self.output_dir, self.resume = output_dir, resume
        self.skipped = 0

    def run_dir(self, trainer: Trainer) -> Path:
        return Path(self.output_dir or trainer.default_root_dir)

    def predictions_dir(self, trainer: Trainer) -> Path:
        return self.run_dir(trainer) / "predictions"

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        folder = self.predictions_dir(trainer)
        if trainer.is_global_zero:
            if not self.resume:
                for path in folder.glob("records*.jsonl"):
                    path.unlink()
            elif any(folder.glob("records.rank*.jsonl")):
                # a killed run leaves shards, maybe with a half-written last line: fold them into the merged
                # file first, so that this run appends to clean shards
                self._merge_files(folder)
        trainer.strategy.barrier()
        done = {int(r["sample_id"]) for r in read_records(self.run_dir(trainer))} if self.resume else set()
        self.skipped = len(done)
        datamodule = trainer.datamodule
        if done and datamodule is not None and hasattr(datamodule, "exclude_ids"):
            datamodule.exclude_ids = done
            rank_zero_info(f"resuming into {folder}: {len(done)} samples already done are skipped")

    def _shard(self, trainer: Trainer) -> Path:
        return self.predictions_dir(trainer) / f"records.rank{trainer.global_rank}.jsonl"

    @staticmethod
    def _writes_on(trainer: Trainer, pl_module: LightningModule) -> bool:
        """With candidate sharding every rank holds every sample: rank 0 alone writes."""
        sharded = getattr(getattr(pl_module, "search_config", None), "candidate_sharding", False)
        return trainer.is_global_zero or not sharded

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
        if not self._writes_on(trainer, pl_module):
            return
        folder = self.predictions_dir(trainer)
        result = prediction["result"]
        search = getattr(pl_module, "search_config", None)
        lines = []
        for i, sample_id in enumerate(prediction["sample_id"]):
            image_name = f"images/{sample_id:06d}.png"
            atomic_write_bytes(folder / image_name, image_to_png_bytes(prediction["images"][i]), fsync=False)
            record = {
                "sample_id": sample_id,
                "condition": prediction["condition"][i],
                "image": image_name,
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
            lines.append(json.dumps(json_safe(record)) + "\n")
        shard = self._shard(trainer)
        shard.parent.mkdir(parents=True, exist_ok=True)
        with open(shard, "a") as f:
            f.write("".join(lines))
            f.flush()
            os.fsync(f.fileno())

    def merge(self, trainer: Trainer) -> Path:
        """Merge every shard (and an earlier merged file) into one sorted, de-duplicated records.jsonl."""
        folder = self.predictions_dir(trainer)
        if trainer.is_global_zero:
            self._merge_files(folder)
        trainer.strategy.barrier()
        return folder / "records.jsonl"

    @staticmethod
    def _merge_files(folder: Path) -> None:
        records = read_records(folder.parent)
        atomic_write_text(folder / "records.jsonl", "".join(json.dumps(r) + "\n" for r in records))
        for shard in folder.glob("records.rank*.jsonl"):
            shard.unlink()

    @override
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainer.strategy.barrier()
        self.merge(trainer)
