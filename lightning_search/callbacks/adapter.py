"""Save the LoRA adapter when fit ends, in diffusers' format, with a model card; push it to the hub if asked."""

from __future__ import annotations

from pathlib import Path

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from lightning_search.errors import ConfigurationError
from lightning_search.lora import save_lora_adapter
from lightning_search.model_card import push_folder, write_model_card


class SaveLoraAdapter(Callback):
    """Writes the LoRA adapter folder (``pytorch_lora_weights.safetensors``) when fit ends, on rank zero.

    Only a fit that reaches its end writes it: a run stopped early leaves its resume checkpoint instead
    (``FinalCheckpoint``), so an adapter on disk is always a finished one.

    Args:
        dirpath: the folder (default: ``<trainer.default_root_dir>/adapter``, so that the adapter follows
            ``--trainer.default_root_dir``); a plain diffusers pipeline loads it with
            ``pipe.load_lora_weights(dirpath)``, ``DiffusionModule(lora_path=dirpath)`` loads it for predict.
        model_card: also write ``README.md`` (the hub's model card: base model, objective, data, steps,
            metrics and the command that made it).
        push_to_hub: upload the folder to the hub repo ``repo_id`` when fit ends (off by default; the token
            comes from the environment, ``HF_TOKEN``).
        repo_id, private: the hub repo and its visibility.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        model_card: bool = True,
        push_to_hub: bool = False,
        repo_id: str | None = None,
        private: bool = True,
    ) -> None:
        if push_to_hub and not repo_id:
            raise ConfigurationError("SaveLoraAdapter(push_to_hub=True) needs repo_id (e.g. your-name/my-lora)")
        self.dirpath, self.model_card = dirpath, model_card
        self.push_to_hub, self.repo_id, self.private = push_to_hub, repo_id, private

    def adapter_dir(self, trainer: Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath is not None else Path(trainer.default_root_dir) / "adapter"

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run or not trainer.is_global_zero:
            return
        metadata = getattr(pl_module, "lora_metadata", None)
        if metadata is None:
            raise ConfigurationError("SaveLoraAdapter needs a DiffusionModule trained with `lora:` settings")
        folder = self.adapter_dir(trainer)
        path = save_lora_adapter(pl_module.backbone, folder, metadata)
        rank_zero_info(f"wrote the LoRA adapter {path}")
        if self.model_card:
            write_model_card(folder, **card_fields(trainer, pl_module, metadata))
        if self.push_to_hub:
            rank_zero_info(f"pushed the adapter to {push_folder(folder, self.repo_id, self.private)}")


def card_fields(trainer: Trainer, pl_module: LightningModule, lora: dict) -> dict:
    """What the model card states, read off the finished fit."""
    backbone = pl_module.backbone
    pipe = getattr(backbone, "pipe", None)
    base = (pipe.config.get("_name_or_path") if pipe is not None else None) or ""
    if not base or base == "tiny":
        init = pl_module.hparams.get("init_weights")
        base = f"{type(backbone).__name__} ({getattr(backbone, 'size', 'tiny twin')}" + (
            f", weights {init})" if init else ")"
        )
    objective = pl_module.objective
    settings = {k: v for k, v in vars(objective).items() if isinstance(v, (int, float, str, bool, dict, list))}
    datamodule = trainer.datamodule
    data = None
    if datamodule is not None:
        hparams = {k: v for k, v in dict(getattr(datamodule, "hparams", {})).items() if v is not None}
        data = f"`{type(datamodule).__name__}` " + ", ".join(f"{k}={v}" for k, v in hparams.items())
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    return {
        "base_model": base,
        "pipeline": type(pipe).__name__ if pipe is not None else None,
        "objective": type(objective).__name__,
        "objective_settings": settings,
        "lora": {k: lora.get(k) for k in ("r", "lora_alpha", "lora_dropout", "target_modules")},
        "data": data,
        "steps": trainer.global_step,
        "metrics": metrics,
    }
