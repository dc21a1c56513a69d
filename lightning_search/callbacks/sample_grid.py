"""During fit: a grid of samples of fixed conditions and seeds, logged every few steps and at the end."""

from __future__ import annotations

from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import WeightAveraging
from typing_extensions import override

from lightning_search.backbones.base import Backbone
from lightning_search.errors import ConfigurationError
from lightning_search.reporting.grid import image_grid
from lightning_search.reporting.loggers import flush, log_figure, log_image
from lightning_search.search.base import SearchContext
from lightning_search.search.none import NoSearch


class LogSampleGrid(Callback):
    """Samples ``conditions`` (``per_condition`` each, sample ids 0, 1, ... so every grid of a fit has the
    same noises) with the module's sampler through the no-search path that predict uses, and logs them to the
    trainer's loggers: ``<key>`` an image (one row per condition) and ``<key>_figure`` the same grid with the
    conditions as row labels, every ``every_n_train_steps`` optimizer steps and at the end of fit.

    With Lightning's ``EMAWeightAveraging`` (or any ``WeightAveraging``) the averaged weights are sampled: the
    ones a checkpoint holds and predict samples. Nothing is sampled when the trainer has no logger.

    Args:
        conditions: the rows (class labels, prompts).
        per_condition: samples per condition (the columns).
        every_n_train_steps: steps between grids (0: only at the end of fit).
        seed: the noises' seed (``sampling/noise.py``: seeded by (seed, sample id, round 0, candidate 0)).
        key: the tag the grid is logged under.
    """

    def __init__(
        self,
        conditions: list[int | str],
        per_condition: int = 2,
        every_n_train_steps: int = 500,
        seed: int = 0,
        key: str = "fit/samples",
    ) -> None:
        if not conditions or per_condition < 1 or every_n_train_steps < 0:
            raise ConfigurationError(
                "LogSampleGrid needs conditions, per_condition >= 1 and every_n_train_steps >= 0 (0: at the end only)"
            )
        self.conditions, self.per_condition = list(conditions), per_condition
        self.every_n_train_steps, self.seed, self.key = every_n_train_steps, seed, key
        self._logged_step: int | None = None

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_train_steps and step > 0 and step % self.every_n_train_steps == 0:
            self.log_grid(trainer, pl_module)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.log_grid(trainer, pl_module)

    def sample(self, backbone: Backbone, sampler: Any) -> torch.Tensor:
        """The grid's samples, condition by condition -> (len(conditions) * per_condition, C, H, W) in [0, 1]."""
        conditions = [c for c in self.conditions for _ in range(self.per_condition)]
        ctx = SearchContext(backbone, sampler, None, self.seed)
        was_training = backbone.training
        backbone.eval()
        try:
            with torch.no_grad():
                images = NoSearch().run(ctx, conditions, list(range(len(conditions)))).images
        finally:
            backbone.train(was_training)
        return images.float().clamp(0, 1).cpu()

    def log_grid(self, trainer: Trainer, pl_module: LightningModule) -> None:
        step = trainer.global_step
        # with gradient accumulation several batches end on one step; the end of fit may repeat the last one
        if not trainer.is_global_zero or not trainer.loggers or step == self._logged_step:
            return
        self._logged_step = step
        images = self.sample(sampling_backbone(trainer, pl_module), pl_module.sampler)
        grid = image_grid(images, nrow=self.per_condition)  # (3, H', W')
        pixels = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        log_image(trainer.loggers, self.key, pixels, step)
        figure = self.figure(pixels)
        log_figure(trainer.loggers, f"{self.key}_figure", figure, step)
        import matplotlib.pyplot as plt

        plt.close(figure)
        flush(trainer.loggers)

    def figure(self, pixels):
        """The grid with each row labelled by its condition (a prompt is cut to 40 characters)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        h, w = pixels.shape[:2]
        figure, ax = plt.subplots(figsize=(2 + 6 * w / max(h, w), 0.5 + 6 * h / max(h, w)))
        ax.imshow(pixels, interpolation="nearest")
        rows = len(self.conditions)
        ax.set_yticks([(i + 0.5) * h / rows for i in range(rows)], [str(c)[:40] for c in self.conditions])
        ax.set_xticks([])
        ax.set_title(f"{self.per_condition} samples per condition, seed {self.seed}", fontsize=9)
        figure.tight_layout()
        return figure


def sampling_backbone(trainer: Trainer, pl_module: LightningModule) -> Backbone:
    """The averaged backbone of a ``WeightAveraging`` callback where there is one, else the module's.

    Lightning exposes the average only through the callback's ``_average_model`` (a torch ``AveragedModel``
    whose ``module`` is a copy of the LightningModule); swapping weights in and out of the module instead
    would touch the state being trained."""
    for callback in trainer.callbacks:
        average = getattr(callback, "_average_model", None) if isinstance(callback, WeightAveraging) else None
        if average is not None:
            return average.module.backbone
    return pl_module.backbone
