"""A progress bar for long predict runs: samples done and NFEs spent against the run's budget."""

from __future__ import annotations

from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from typing_extensions import override


class SearchProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar; in predict its postfix shows ``samples a/b`` and ``NFE spent/budget`` of this rank.

    The budget is the search algorithm's exact NFEs per sample times the samples this rank will process.
    """

    def __init__(self, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self._samples = self._nfe = self._total = self._budget = self._per_sample = 0
        self.history: list[dict[str, str]] = []  # what the bar showed after each batch

    @override
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_predict_start(trainer, pl_module)
        self._samples = self._nfe = 0
        loaders = trainer.predict_dataloaders
        loaders = [loaders] if hasattr(loaders, "dataset") else list(loaders or [])  # one loader, or a list
        self._total = sum(len(dl.sampler) for dl in loaders)  # the sampler: this rank's share under DDP
        self._per_sample = 0
        if hasattr(pl_module, "search_algorithm"):
            backbone = pl_module.backbone
            self._per_sample = pl_module.search_algorithm().nfe_per_sample(pl_module.sampler, backbone)
        self._budget = self._per_sample * self._total

    @override
    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if isinstance(outputs, dict) and "sample_id" in outputs:
            self._samples += len(outputs["sample_id"])
            if "result" in outputs:
                self._nfe += int(outputs["result"].nfe.sum())
            else:  # a resumed run's batch done before: its samples count, and cost nothing this time
                self._budget -= self._per_sample * len(outputs["sample_id"])
            shown = {"samples": f"{self._samples}/{self._total}", "NFE": f"{self._nfe}/{self._budget}"}
            self.history.append(shown)
            self.predict_progress_bar.set_postfix(shown, refresh=False)
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
