"""Fault injection for the resume tests: a callback that signals its own process at a chosen step or batch,
and kill points inside the run folder's writes (the n-th ``os.write`` of an image or a record)."""

from __future__ import annotations

import os
import signal

from lightning import Callback


class SignalAt(Callback):
    """Sends ``signal`` (by name) to this process after training step ``step`` or predict batch ``batch``:
    what a scheduler's SIGTERM or a user's Ctrl-C does, at a known point."""

    def __init__(self, signal: str = "SIGTERM", step: int | None = None, batch: int | None = None) -> None:
        self.signum, self.step, self.batch = getattr(__import__("signal"), signal), step, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.step is not None and trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.batch is not None and batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)


__all__ = ["SignalAt", "signal"]
