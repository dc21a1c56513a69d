"""Shared fixtures: one thread, offline hub, and one small trained digits setup per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from filelock import FileLock

# torch, Lightning and the package are imported inside the fixtures: under `make test` the xdist controller
# loads this file too, and would spend ~3.5 s importing them before it starts the workers (which import them
# anyway, side by side, when they collect the tests)
if TYPE_CHECKING:
    from lightning_search.backbones import DigitsBackbone
    from lightning_search.sampling import Sampler

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    import torch

    # two threads on two busy cores are slower than one (ENVIRONMENT.md)
    torch.set_num_threads(1)


@dataclass
class DigitsSetup:
    """Paths of a quickly trained verifier, evaluator and generator (lower quality than the recipes)."""

    root: Path
    verifier: Path
    evaluator: Path
    generator: Path


def _fit(module, datamodule, path: Path, **trainer_kwargs) -> None:
    import lightning as L

    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule)
    trainer.save_checkpoint(path)


@pytest.fixture(scope="session")
def digits_setup(tmp_path_factory) -> DigitsSetup:
    # Under pytest-xdist (`make test` runs two workers) every worker asks for the models: the first to take the
    # lock trains them into the run's shared temporary folder, the others wait and read them (~6 s each saved).
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    root = shared / "digits"
    with FileLock(shared / "digits.lock"):
        paths = DigitsSetup(root, root / "verifier.ckpt", root / "evaluator.ckpt", root / "generator.ckpt")
        if not paths.generator.is_file():  # written last
            root.mkdir(exist_ok=True)
            _train_digits(paths)
    return paths


def _train_digits(paths: DigitsSetup) -> None:
    import lightning as L
    import torch

    from lightning_search import DiffusionModule
    from lightning_search.backbones import DigitsBackbone
    from lightning_search.classifier import ClassifierModule
    from lightning_search.data import DigitsDataModule

    L.seed_everything(1)
    _fit(ClassifierModule("digits-cnn"), DigitsDataModule("verifier", 64), paths.verifier, max_epochs=15)
    L.seed_everything(2)
    _fit(ClassifierModule("digits-wide"), DigitsDataModule("evaluator", 64), paths.evaluator, max_epochs=15)
    L.seed_everything(0)
    module = DiffusionModule(DigitsBackbone("digits-xs"), optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3))
    _fit(module, DigitsDataModule("generator", 128), paths.generator, max_steps=400)


@pytest.fixture(scope="session")
def trained_backbone(digits_setup) -> DigitsBackbone:
    """The session's digits-xs generator, loaded weights-only, in eval mode."""
    import torch

    from lightning_search.backbones import DigitsBackbone

    ckpt = torch.load(digits_setup.generator, weights_only=True)
    backbone = DigitsBackbone("digits-xs")
    backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in ckpt["state_dict"].items()})
    return backbone.eval()


@pytest.fixture
def sampler() -> Sampler:
    from lightning_search.sampling import Sampler

    return Sampler(solver="heun", steps=3)


def patched_recipe(name: str, tmp_path: Path, setup: DigitsSetup | None = None) -> Path:
    """A copy of ``recipes/<name>`` whose run folders point into tmp_path (and at the session's models)."""
    text = (REPO / "recipes" / name).read_text()
    if setup is not None:
        text = text.replace("runs/digits/verifier/classifier.ckpt", str(setup.verifier))
        text = text.replace("runs/digits/evaluator/classifier.ckpt", str(setup.evaluator))
        text = text.replace("runs/digits/generator/generator.ckpt", str(setup.generator))
        text = text.replace("size: digits-m", "size: digits-xs")
    text = text.replace("runs/", f"{tmp_path}/runs/")
    path = tmp_path / name.replace("/", "_")
    path.write_text(text)
    return path


def pytest_collection_modifyitems(items):
    # the slow end-to-end tests first: under `make test`'s two xdist workers a 20 s test that starts last is
    # the suite's tail (the order of everything else is unchanged)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    # An xdist worker has sent every report and its "workerfinished" by now (pytest_sessionfinish), and the
    # controller waits for it to exit: the interpreter's finalisation with torch, Lightning and diffusers loaded
    # takes ~0.8 s, which the whole suite then waits for. Nothing of a worker is left to write.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
