"""Save the LoRA adapter when fit ends, in diffusers' format."""

from __future__ import annotations

from pathlib import Path

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lightning_search.errors import ConfigurationError
from lightning_search.lora import save_lora_adapter


class SaveLoraAdapter(Callback):
    """Writes the LoRA adapter folder (``pytorch_lora_weights.safetensors``) when fit ends, on rank zero.

    Only a fit that reaches its end writes it: a run stopped early leaves its resume checkpoint instead
    (``FinalCheckpoint``), so an adapter on disk is always a finished one.

    Args:
        dirpath: the folder (default: ``<trainer.default_root_dir>/adapter``, so that the adapter follows
            ``--trainer.default_root_dir``); a plain diffusers pipeline loads it with
            ``pipe.load_lora_weights(dirpath)``, ``DiffusionModule(lora_path=dirpath)`` loads it for predict.
    """

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath

    def adapter_dir(self, trainer: Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath is not None else Path(trainer.default_root_dir) / "adapter"

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run or not trainer.is_global_zero:
            return
        metadata = getattr(pl_module, "lora_metadata", None)
        if metadata is None:
            raise ConfigurationError("SaveLoraAdapter needs a DiffusionModule trained with `lora:` settings")
        path = save_lora_adapter(pl_module.backbone, self.adapter_dir(trainer), metadata)
        rank_zero_info(f"wrote the LoRA adapter {path}")
