"""Runs to Lightning's loggers (``reporting/loggers.py``): a tiny predict read back from its TensorBoard event
files (per-batch NFEs and every verifier's scores against the records, the run's grid against grid.png, the
score distribution as a figure, the verifier table as text); the W&B and MLflow calls checked against the
signatures of their public APIs with stand-in loggers (neither package is installed); ``read_scalars`` on
TensorBoard and CSV logs."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from lightning_search.reporting.loggers import (
    build_logger,
    figure_pixels,
    log_figure,
    log_image,
    log_scalars,
    log_table,
    read_scalars,
)
from lightning_search.runs import read_records
from tests.conftest import patched_recipe
from tests.helpers.tensorboard import events, pixels, scalars, text

matplotlib.use("Agg")


# -- a tiny predict, read back --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, digits_setup):
    """Random search (2 candidates, the classifier) of 2 samples of digits 3 and 7, 2 samples a batch, with the
    recipe's logger (`logger: true`: TensorBoard under the run folder)."""
    from lightning_search.cli import main

    tmp = tmp_path_factory.mktemp("predict_logged")
    recipe = patched_recipe("digits/search.yaml", tmp, digits_setup)
    run = tmp / "run"
    main(["predict", "--config", str(recipe), f"--trainer.default_root_dir={run}", "--search.num_candidates=2",
          "--data.init_args.samples_per_class=2", "--data.init_args.classes=[3,7]",
          "--data.init_args.predict_batch_size=2"])  # fmt: skip
    (log_dir,) = (run / "lightning_logs").iterdir()
    return run, events(log_dir)


def test_a_predict_logs_each_batchs_nfe_and_every_verifiers_mean_score(predicted):
    from lightning_search.backbones import DigitsBackbone
    from lightning_search.sampling import Sampler

    run, logged = predicted
    records = read_records(run)  # sorted by sample id: the batches are ids (6, 7) and (14, 15)
    batches = [records[0:2], records[2:4]]
    # random search, 2 candidates of one full Heun-5 sample each (the recipe's sampler), counted independently
    per_sample = 2 * Sampler(solver="heun", steps=5).nfe(DigitsBackbone("digits-xs"))
    assert scalars(logged, "predict/nfe") == {0: per_sample, 1: per_sample}
    assert [r["nfe"] for r in records] == [per_sample] * 4
    for verifier in ("classifier", "oracle"):  # the self-supervised one scores inside search only
        means = [np.mean([r["scores"][verifier] for r in batch]) for batch in batches]
        assert list(scalars(logged, f"predict/score/{verifier}").values()) == pytest.approx(means, abs=1e-5)
    search = [np.mean([r["score"] for r in batch]) for batch in batches]
    assert list(scalars(logged, "predict/search_score").values()) == pytest.approx(search, abs=1e-5)
    assert scalars(logged, "run/nfe") == {0: per_sample}


def test_a_predict_logs_its_grid_score_distribution_and_verifier_table(predicted):
    from PIL import Image

    run, logged = predicted
    (grid,) = logged.Images("run/grid")
    assert np.array_equal(pixels(grid), np.asarray(Image.open(run / "grid.png").convert("RGB")))
    (figure,) = logged.Images("run/score_distribution")
    assert figure.width > 100 and figure.height > 100 and pixels(figure).std() > 0  # something drawn
    table = text(logged, "run/verifiers")
    assert table.startswith("| verifier | mean score |") and "| classifier |" in table and "| oracle |" in table


# -- W&B and MLflow, through their public APIs ----------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def record(self, name, *args, **kwargs) -> None:
        self.calls.append((name, args, kwargs))


class WandbLogger(Recorder):
    """Stands in for lightning.pytorch.loggers.WandbLogger (named alike: the helpers go by class name)."""

    def log_metrics(self, *args, **kwargs):
        self.record("log_metrics", *args, **kwargs)

    def log_image(self, *args, **kwargs):
        self.record("log_image", *args, **kwargs)

    def log_table(self, *args, **kwargs):
        self.record("log_table", *args, **kwargs)


class MlflowClient:
    """The MlflowClient methods used, with their documented signatures (mlflow.client.MlflowClient)."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def log_image(self, run_id, image, artifact_file=None, key=None, step=None, timestamp=None, synchronous=None):
        self.recorder.record("log_image", run_id, image, artifact_file=artifact_file, key=key, step=step)

    def log_figure(self, run_id, figure, artifact_file, *, save_kwargs=None):
        self.recorder.record("log_figure", run_id, figure, artifact_file=artifact_file)

    def log_table(self, run_id, data, artifact_file):
        self.recorder.record("log_table", run_id, data=data, artifact_file=artifact_file)


class MLFlowLogger(Recorder):
    run_id = "run-1"

    def __init__(self) -> None:
        super().__init__()
        self.experiment = MlflowClient(self)

    def log_metrics(self, *args, **kwargs):
        self.record("log_metrics", *args, **kwargs)


class CSVLogger(Recorder):
    def log_metrics(self, *args, **kwargs):
        self.record("log_metrics", *args, **kwargs)


def _figure():
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(2, 1.5), dpi=50)
    ax.plot([0, 1], [1, 0])
    return figure


def test_wandb_gets_images_figures_and_tables_through_its_lightning_loggers_methods():
    from lightning.pytorch.loggers import WandbLogger as Real

    wandb = WandbLogger()
    image = np.zeros((4, 6, 3), np.uint8)
    figure = _figure()
    log_scalars([wandb], {"a": 1, "b": {"c": 2.5, "nan": float("nan")}, "flag": True}, step=3)
    log_image([wandb], "grid", image, step=2)
    log_figure([wandb], "curve", figure, step=5)
    log_table([wandb], "table", [{"x": 1, "y": "a"}, {"x": 2}], step=1)
    (name, args, kwargs), *rest = wandb.calls
    assert (name, args, kwargs) == ("log_metrics", ({"a": 1.0, "b/c": 2.5},), {"step": 3})  # NaN, bools left out
    for name, args, kwargs in rest:  # every call binds to the real method's signature
        inspect.signature(getattr(Real, name)).bind(None, *args, **kwargs)
    (_, _, img), (_, _, fig), (_, _, table) = rest
    assert img["key"] == "grid" and img["images"][0] is image and img["step"] == 2
    assert fig["key"] == "curve" and fig["step"] == 5
    assert fig["images"][0].shape == (75, 100, 3) and fig["images"][0].dtype == np.uint8  # 2 x 1.5 in at 50 dpi
    assert table == {"key": "table", "columns": ["x", "y"], "data": [[1, "a"], [2, None]], "step": 1}


def test_mlflow_gets_images_figures_and_tables_through_its_client_with_the_run_id():
    from lightning.pytorch.loggers import MLFlowLogger as Real

    assert isinstance(inspect.getattr_static(Real, "run_id"), property)  # what the helpers read is public
    mlflow = MLFlowLogger()
    image, figure = np.zeros((4, 6, 3), np.uint8), _figure()
    log_image([mlflow], "grid", image, step=2)
    log_figure([mlflow], "curve", figure, step=5)
    log_table([mlflow], "table", [{"x": 1, "y": "a"}, {"x": 2}])
    assert mlflow.calls == [
        ("log_image", ("run-1", image), {"artifact_file": "grid_2.png", "key": None, "step": None}),
        ("log_figure", ("run-1", figure), {"artifact_file": "curve_5.png"}),
        ("log_table", ("run-1",), {"data": {"x": [1, 2], "y": ["a", None]}, "artifact_file": "table_0.json"}),
    ]


def test_a_logger_without_images_gets_only_scalars():
    csv = CSVLogger()
    log_image([csv], "grid", np.zeros((2, 2, 3), np.uint8))
    log_figure([csv], "curve", _figure())
    log_table([csv], "table", [{"x": 1}])
    log_scalars([csv], {"x": 1})
    assert [name for name, _, _ in csv.calls] == ["log_metrics"]


def test_figure_pixels_are_what_the_canvas_draws():
    figure = _figure()
    figure.patch.set_facecolor((1.0, 0.0, 0.0))
    drawn = figure_pixels(figure)
    assert drawn.shape == (75, 100, 3) and tuple(drawn[0, 0]) == (255, 0, 0)  # the red corner, not RGBA


# -- build_logger and read_scalars ----------------------------------------------------------------------------


def test_build_logger_defaults_to_tensorboard_in_the_folder_and_builds_a_named_class(tmp_path):
    (tb,) = build_logger(None, tmp_path)
    assert type(tb).__name__ == "TensorBoardLogger" and Path(tb.log_dir) == tmp_path / "tensorboard"
    assert build_logger(False, tmp_path) == []
    assert type(build_logger(True, tmp_path)[0]).__name__ == "TensorBoardLogger"
    (csv,) = build_logger({"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"name": "c"}}, tmp_path)
    assert type(csv).__name__ == "CSVLogger" and csv.save_dir == str(tmp_path)


def test_read_scalars_reads_tensorboard_events_and_csv_logs_of_the_newest_run(tmp_path):
    from lightning.pytorch.loggers import CSVLogger as Csv
    from lightning.pytorch.loggers import TensorBoardLogger

    tb = TensorBoardLogger(tmp_path / "tb", name="lightning_logs", version=0)
    for step, value in [(0, 0.5), (2, 0.75), (1, 0.625)]:  # logged out of order: read back in step order
        tb.log_metrics({"val/accuracy": value, "other": 1.0}, step=step)
    tb.experiment.flush()
    assert read_scalars(tmp_path / "tb", "val/accuracy") == [0.5, 0.625, 0.75]
    assert read_scalars(tmp_path / "tb", "missing") == []
    newer = TensorBoardLogger(tmp_path / "tb", name="lightning_logs", version=1)
    newer.log_metrics({"val/accuracy": 0.875}, step=0)
    newer.experiment.flush()
    older = tmp_path / "tb/lightning_logs/version_0"
    for f in older.iterdir():
        os.utime(f, (1, 1))
    assert read_scalars(tmp_path / "tb", "val/accuracy") == [0.875]  # the newest folder only
    csv = Csv(tmp_path / "csv")
    csv.log_metrics({"val/accuracy": 0.25}, step=1)
    csv.log_metrics({"train/loss": 3.0}, step=2)  # rows without the tag are skipped
    csv.log_metrics({"val/accuracy": 0.5}, step=3)
    csv.save()
    assert read_scalars(tmp_path / "csv", "val/accuracy") == [0.25, 0.5]
    assert read_scalars(tmp_path / "nothing", "val/accuracy") == []
