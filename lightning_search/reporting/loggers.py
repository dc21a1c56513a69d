"""Scalars, images, figures and tables to whichever Lightning logger a run names.

Lightning's loggers share ``log_metrics`` for scalars but not images, figures or tables: TensorBoard has
``add_image`` / ``add_figure`` / ``add_text``, W&B ``log_image`` / ``log_table``, MLflow its client's
``log_image`` / ``log_figure`` / ``log_table``. These helpers speak each one's own public API (looked up by the
logger's class name, so W&B and MLflow need not be installed), and say nothing to a logger that has no place
for the thing (CSV keeps scalars only). :func:`read_scalars` reads a run's scalars back (TensorBoard event
files, or a CSV logger's ``metrics.csv``).
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
        elif kind == "MLFlowLogger":  # the logger's experiment is an MlflowClient
            logger.experiment.log_image(logger.run_id, image, artifact_file=f"{key}_{step}.png")


def log_figure(loggers: Iterable[Logger], key: str, figure: Any, step: int = 0) -> None:
    """A matplotlib figure."""
    for logger in loggers:
        kind = _kind(logger)
        if kind == "TensorBoardLogger":
            logger.experiment.add_figure(key, figure, step, close=False)
        elif kind == "WandbLogger":  # W&B's Lightning logger takes images: the figure drawn to pixels
            logger.log_image(key=key, images=[figure_pixels(figure)], step=step)
        elif kind == "MLFlowLogger":
            logger.experiment.log_figure(logger.run_id, figure, artifact_file=f"{key}_{step}.png")


def figure_pixels(figure: Any) -> np.ndarray:
    """A matplotlib figure drawn by its canvas -> (H, W, 3) uint8."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


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
            logger.experiment.log_table(logger.run_id, data=data, artifact_file=f"{key}_{step}.json")


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)


def build_logger(spec: Mapping[str, Any] | None, save_dir: str | Path) -> list[Logger]:
    """The logger a sweep or compare config names (``class_path`` / ``init_args``), by default (None, True)
    TensorBoard in ``<save_dir>/tensorboard`` (False: none; W&B, MLflow: their Lightning logger class, with
    ``save_dir`` passed unless ``init_args`` name it)."""
    if spec is False:
        return []
    if spec is None or spec is True or not spec:
        try:
            from lightning.pytorch.loggers import TensorBoardLogger

            return [TensorBoardLogger(save_dir=str(save_dir), name="tensorboard", version="")]
        except ModuleNotFoundError:  # tensorboard not installed: no figures, the report files stay
            return []
    import importlib

    module, _, name = spec["class_path"].rpartition(".")
    args = {"save_dir": str(save_dir), **(spec.get("init_args") or {})}
    return [getattr(importlib.import_module(module), name)(**args)]


def flush(loggers: Iterable[Logger]) -> None:
    """Write what the loggers hold to disk now (TensorBoard's writer buffers events)."""
    for logger in loggers:
        logger.save()
        if hasattr(logger.experiment, "flush"):
            logger.experiment.flush()


def _newest_log_folder(run_dir: str | Path) -> Path | None:
    folders = {p.parent for pattern in ("events.out.tfevents.*", "metrics.csv") for p in Path(run_dir).rglob(pattern)}
    if not folders:
        return None
    return max(folders, key=lambda d: max(p.stat().st_mtime for p in d.iterdir() if p.is_file()))


def read_scalar_events(run_dir: str | Path, tag: str | None = None) -> list[tuple[int, float, float]]:
    """(step, wall time, value) of scalar ``tag`` (None: every scalar) in step order, from a run's newest logger
    folder under ``run_dir`` (e.g. ``<run_dir>/lightning_logs/version_3``): TensorBoard event files, else a CSV
    logger's ``metrics.csv`` (no wall times there: NaN); [] when the run logged no such tag.

    Read with TensorBoard's own reader (``EventAccumulator``, every scalar kept) rather than parsing records.
    """
    newest = _newest_log_folder(run_dir)
    if newest is None:
        return []
    if any(newest.glob("events.out.tfevents.*")):
        from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

        events = EventAccumulator(str(newest), size_guidance={SCALARS: 0})
        events.Reload()
        tags = [t for t in events.Tags()["scalars"] if tag is None or t == tag]
        if tags:
            found = [(e.step, e.wall_time, float(e.value)) for t in tags for e in events.Scalars(t)]
            return sorted(found, key=lambda e: (e[0], e[1]))
    if (newest / "metrics.csv").is_file():
        import csv

        with open(newest / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        tags = [tag] if tag is not None else [k for k in (rows[0] if rows else {}) if k not in ("step", "epoch")]
        found = [(int(r.get("step") or 0), float("nan"), float(r[t])) for r in rows for t in tags
                 if r.get(t) not in (None, "")]  # fmt: skip
        return sorted(found, key=lambda e: e[0])
    return []


def read_scalars(run_dir: str | Path, tag: str) -> list[float]:
    """The values of scalar ``tag`` in step order (:func:`read_scalar_events`)."""
    return [value for _, _, value in read_scalar_events(run_dir, tag)]
