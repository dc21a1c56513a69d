"""Checkpoints of fit: a resume checkpoint while training, the final name only for a fit that reached its end."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

RESUME_SUFFIX = "-resume"
FINGERPRINT_KEY = "lightning_search_fingerprint"  # the fit's fingerprint in each checkpoint (plain JSON values)


class FinalCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, with two names: every save during training (on ModelCheckpoint's schedule:
    each epoch by default, or ``every_n_train_steps``) and the save made when a fit is stopped by SIGTERM or
    Ctrl-C go to ``<dirpath>/<filename>-resume.ckpt``; ``<dirpath>/<filename>.ckpt`` is written only when the
    fit reaches its end, and the resume checkpoint is then removed. So the file a recipe names for predict
    (and ``make`` tests for) always holds a finished model, and an interrupted fit resumes exactly with
    ``--ckpt_path <dirpath>/<filename>-resume.ckpt``.

    Each file is written under a temporary name and renamed (Lightning writes checkpoints in place, so a kill
    during the write would leave half a file under the real name). ``run_fingerprint`` (set by
    ``lightning-search fit``) is stored in every checkpoint, so that a resume with other settings is refused.

    Args:
        dirpath: the folder (default: the trainer's ``default_root_dir``, so that it follows
            ``--trainer.default_root_dir``).
        filename: the final checkpoint's name without ``.ckpt``.
        Others: as ModelCheckpoint (``every_n_train_steps``, ``every_n_epochs``, ...).
    """

    def __init__(self, dirpath: str | None = None, filename: str = "model", **kwargs: Any) -> None:
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(dirpath=dirpath, filename=filename, **kwargs)
        self._finishing = False
        self.run_fingerprint: dict[str, Any] | None = None

    def resume_path(self, trainer: Trainer) -> Path:
        return Path(self.dirpath or trainer.default_root_dir) / f"{self.filename}{RESUME_SUFFIX}{self.FILE_EXTENSION}"

    def final_path(self, trainer: Trainer) -> Path:
        return Path(self.dirpath or trainer.default_root_dir) / f"{self.filename}{self.FILE_EXTENSION}"

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = str(trainer.default_root_dir)
        super().setup(trainer, pl_module, stage)

    @override
    def format_checkpoint_name(self, metrics: dict, filename: str | None = None, ver: int | None = None) -> str:
        # every save ModelCheckpoint schedules during training is a resume checkpoint
        name = self.filename if self._finishing else f"{self.filename}{RESUME_SUFFIX}"
        return os.path.join(self.dirpath, f"{name}{self.FILE_EXTENSION}")

    @override
    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        path = Path(filepath)
        partial = path.with_name(f".{path.name}.partial")  # the same name on every rank
        trainer.save_checkpoint(partial, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(partial, path)
        trainer.strategy.barrier("FinalCheckpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    @override
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.run_fingerprint is not None:
            checkpoint[FINGERPRINT_KEY] = self.run_fingerprint

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Stopped by SIGTERM (Lightning's SIGTERMException, after a whole step) or Ctrl-C: save where it is."""
        if not isinstance(exception, (SIGTERMException, KeyboardInterrupt)) or not trainer.training:
            return
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        path = self.resume_path(trainer)
        if self._last_global_step_saved != trainer.global_step or not path.is_file():
            self._save_checkpoint(trainer, str(path))
        rank_zero_info(f"stopped at step {trainer.global_step}: resume checkpoint {path}")

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        self._finishing = True
        try:
            self._save_checkpoint(trainer, str(self.final_path(trainer)))
        finally:
            self._finishing = False
        if trainer.is_global_zero:
            self.resume_path(trainer).unlink(missing_ok=True)
