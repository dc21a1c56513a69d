"""The fit's sample grid (``callbacks/sample_grid.py``): a tiny digits fit with a TensorBoardLogger, read back
from its event files: the module's training loss, a grid every ``every_n_train_steps`` steps and at the end
(once per step) of the size the conditions and samples make, equal to what predict's no-search path draws
from the fit's EMA weights with the same seed and sample ids, and its labelled figure."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_search import DiffusionModule
from lightning_search.backbones import DigitsBackbone
from lightning_search.callbacks import LogSampleGrid
from lightning_search.data import DigitsDataModule
from lightning_search.errors import ConfigurationError
from lightning_search.sampling import Sampler
from lightning_search.search import SearchConfig
from tests.helpers.tensorboard import events, pixels, scalars

CONDITIONS, PER, SEED = [3, 7], 2, 5


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit_logged")
    L.seed_everything(0)
    module = DiffusionModule(
        DigitsBackbone("digits-xs"),
        sampler=Sampler(solver="heun", steps=3),
        optimizer=lambda p: torch.optim.AdamW(p, lr=3e-2),
    )
    grid = LogSampleGrid(CONDITIONS, per_condition=PER, every_n_train_steps=2, seed=SEED)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=5,
        logger=TensorBoardLogger(tmp, name="logs", version=0),
        # the grid before EMA: at the end of fit it runs while the module still holds the raw weights
        callbacks=[grid, EMAWeightAveraging(decay=0.9)],
        log_every_n_steps=1,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DigitsDataModule("generator", 32))
    return module, events(tmp / "logs/version_0")


def test_the_fit_logs_its_training_loss(fitted):
    _, logged = fitted
    losses = scalars(logged, "train/loss")
    assert sorted(losses) == [0, 1, 2, 3, 4] and all(0 < v < 10 for v in losses.values())


def test_a_grid_every_n_steps_and_at_the_end_once_per_step(fitted):
    _, logged = fitted
    assert [e.step for e in logged.Images("fit/samples")] == [2, 4, 5]
    assert [e.step for e in logged.Images("fit/samples_figure")] == [2, 4, 5]
    # 8x8 digits upscaled to 48 px cells, PER columns and one row per condition, 2 px padding around each
    for e in logged.Images("fit/samples"):
        assert (e.height, e.width) == (2 + len(CONDITIONS) * 50, 2 + PER * 50)
    figure = logged.Images("fit/samples_figure")[-1]
    assert figure.width > 100 and pixels(figure).std() > 0


def test_the_last_grid_is_predicts_no_search_sample_of_the_ema_weights(fitted):
    """EMA's end of fit leaves the averaged weights in the module: predict_step of the no-search path with the
    grid's seed and sample ids 0..3 draws the grid's cells (cell (row r, column c) is sample id r * PER + c)."""
    module, logged = fitted
    module.configure_search(SearchConfig("none", seed=SEED))
    conditions = [c for c in CONDITIONS for _ in range(PER)]
    out = module.predict_step({"condition": conditions, "sample_id": torch.arange(len(conditions))}, 0)
    grid = pixels(logged.Images("fit/samples")[-1]).astype(np.int16)
    for i, image in enumerate(out["images"]):
        r, c = divmod(i, PER)
        cell = grid[2 + 50 * r : 50 + 50 * r, 2 + 50 * c : 50 + 50 * c, 0]  # 48 x 48, nearest-upscaled 6x
        expected = (image[0].clamp(0, 1) * 255).round().numpy().repeat(6, 0).repeat(6, 1)
        assert np.abs(cell - expected).max() <= 1, i


def test_bad_settings_are_refused():
    with pytest.raises(ConfigurationError, match="conditions"):
        LogSampleGrid([])
    with pytest.raises(ConfigurationError, match="every_n_train_steps"):
        LogSampleGrid([1], every_n_train_steps=-1)
