"""A ModelCheckpoint that always leaves a checkpoint when fit ends."""

from __future__ import annotations

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from typing_extensions import override


class FinalCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, plus one save at the end of training if the last step was not saved.

    ModelCheckpoint saves on epoch or validation boundaries; a run stopped by ``max_steps`` between them
    (or with validation off) would otherwise end without the file its recipe names for predict.
    """

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        if self._last_global_step_saved == trainer.global_step:  # ModelCheckpoint's own record of saves
            return
        filepath = self.format_checkpoint_name(self._monitor_candidates(trainer))
        self._save_checkpoint(trainer, filepath)
        self._last_global_step_saved = trainer.global_step
