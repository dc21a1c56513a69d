"""Scalars, images, figures and tables to whichever Lightning logger a run names.

Lightning's loggers share ``log_metrics`` for scalars but not images, figures or tables: TensorBoard has
``add_image`` / ``add_figure`` / ``add_text``, W&B ``log_image`` / ``log_table``, MLflow its client's
``log_image`` / ``log_figure`` / ``log_table``. These helpers speak each one's own API (looked up by the
logger's class, so W&B and MLflow need not be installed), and say nothing to a logger that has no place for
the thing (CSV keeps scalars only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Logger = Any


def _kind(logger: Logger) -> str:
    return type(logger).__name__


def log_scalars(loggers: Iterable[Logger], values: Mapping[str, Any], step: int | None = None) -> None:
    """Every finite number of ``values`` (nested dicts flattened with ``/``) as a scalar at ``step``."""
    flat: dict[str, float] = {}

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                add(f"{prefix}/{k}" if prefix else str(k), v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            flat[prefix] = float(value)

    add("", values)
    if flat:
        for logger in loggers:
            logger.log_metrics(flat, step=step)


def log_image(loggers: Iterable[Logger], key: str, image: np.ndarray | str | Path, step: int = 0) -> None:
    """An (H, W, 3) uint8 array, or a PNG file, as an image."""
    if isinstance(image, (str, Path)):
        from PIL import Image

        image = np.asarray(Image.open(image).convert("RGB"))
    for logger in loggers:
        kind = _kind(logger)
        if kind == "TensorBoardLogger":
            logger.experiment.add_image(key, image, step, dataformats="HWC")
        elif kind == "WandbLogger":
            logger.log_image(key=key, images=[image], step=step)
        elif kind == "MLFlowLogger":
            logger.experiment.log_image(logger.run_id, image, f"{key}_{step}.png")


def log_figure(loggers: Iterable[Logger], key: str, figure: Any, step: int = 0) -> None:
    """A matplotlib figure."""
    for logger in loggers:
        kind = _kind(logger)
        if kind == "TensorBoardLogger":
            logger.experiment.add_figure(key, figure, step, close=False)
        elif kind == "WandbLogger":
            import wandb

            logger.experiment.log({key: wandb.Image(figure)}, step=step)
        elif kind == "MLFlowLogger":
            logger.experiment.log_figure(logger.run_id, figure, f"{key}_{step}.png")


def log_table(loggers: Iterable[Logger], key: str, rows: Sequence[Mapping[str, Any]], step: int = 0) -> None:
    """Rows of a table (the same keys in each)."""
    if not rows:
        return
    columns = list(dict.fromkeys(k for r in rows for k in r))
    for logger in loggers:
        kind = _kind(logger)
        if kind == "TensorBoardLogger":  # TensorBoard has no table: a markdown table in its text tab
            lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
            logger.experiment.add_text(key, "\n".join(lines), step)
        elif kind == "WandbLogger":
            logger.log_table(key=key, columns=columns, data=[[r.get(c) for c in columns] for r in rows], step=step)
        elif kind == "MLFlowLogger":
            data = {c: [r.get(c) for r in rows] for c in columns}
            logger.experiment.log_table(logger.run_id, data=data, artifact_file=f"{key}.json")


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)


def build_logger(spec: Mapping[str, Any] | None, save_dir: str | Path) -> list[Logger]:
    """The logger a sweep or compare config names (``class_path`` / ``init_args``), by default TensorBoard in
    ``save_dir`` (``False``: none; W&B, MLflow: their Lightning logger class, save_dir passed)."""
    if spec is False:
        return []
    if not spec:
        try:
            from lightning.pytorch.loggers import TensorBoardLogger

            return [TensorBoardLogger(save_dir=str(save_dir), name="tensorboard", version="")]
        except ModuleNotFoundError:  # tensorboard not installed: no figures, the report files stay
            return []
    import importlib

    module, _, name = spec["class_path"].rpartition(".")
    args = {"save_dir": str(save_dir), **(spec.get("init_args") or {})}
    return [getattr(importlib.import_module(module), name)(**args)]
