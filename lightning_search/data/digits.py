"""The embedded default data: sklearn's bundled 8x8 digits (1,797 images, 10 classes), no download.

Fixed, stratified splits (seeded, so every process and every run sees the same ones):
500 held-out images are the FID reference and the validation set; the other 1,297 train the generator;
two disjoint halves of those train the verifier and the evaluator classifiers, so that search cannot tune
itself to the metric.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_search.data.conditions import ConditionDataModule, ConditionDataset
from lightning_search.errors import ConfigurationError

Split = Literal["generator", "verifier", "evaluator"]
NUM_HELD_OUT = 500


@cache
def digits_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images (N, 1, 8, 8) float32 in [0, 1], labels (N,) int64)} for train/held_out/verifier/evaluator."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    idx = np.arange(len(labels))
    train, held_out = train_test_split(idx, test_size=NUM_HELD_OUT, stratify=labels, random_state=0)
    half_a, half_b = train_test_split(train, test_size=0.5, stratify=labels[train], random_state=1)
    parts = {"generator": train, "held_out": held_out, "verifier": half_a, "evaluator": half_b}
    return {name: (images[np.sort(i)], labels[np.sort(i)]) for name, i in parts.items()}


def reference_images() -> torch.Tensor:
    """The 500 held-out digits (500, 1, 8, 8) in [0, 1]: the FID / precision / recall reference set."""
    return torch.from_numpy(digits_splits()["held_out"][0])


class _ImageLabelDataset(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.data = TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        image, label = self.data[i]
        return {"image": image, "condition": label}


class DigitsDataModule(ConditionDataModule):
    """Digits for training (generator or a classifier) and class conditions for prediction.

    Args:
        split: which training images: ``generator`` (all 1,297), ``verifier`` or ``evaluator`` (a half each).
        batch_size: training batch size.
        samples_per_class: predict yields this many sample ids per class (ids are class-major: stable).
        classes: restrict prediction to these classes (default: all ten).
        predict_batch_size: conditions per predict step (search multiplies it by its candidates).
        seed: of the training order (``data/resumable.py``); None: the run's ``seed_everything``.
    """

    def __init__(
        self,
        split: Split = "generator",
        batch_size: int = 128,
        samples_per_class: int = 100,
        classes: list[int] | None = None,
        predict_batch_size: int = 100,
        num_workers: int = 0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if split not in ("generator", "verifier", "evaluator"):
            raise ConfigurationError(f"unknown digits split {split!r}; valid: generator, verifier, evaluator")
        self.save_hyperparameters()
        if seed is not None:
            self.seed = int(seed)
        self.predict_batch_size = predict_batch_size
        self.classes = list(range(10)) if classes is None else list(classes)

    def train_dataloader(self) -> DataLoader:
        images, labels = digits_splits()[self.hparams.split]
        return self.train_loader(
            _ImageLabelDataset(images, labels),
            self.hparams.batch_size,
            self.seed,
            drop_last=len(labels) > self.hparams.batch_size,
            num_workers=self.hparams.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        images, labels = digits_splits()["held_out"]
        return DataLoader(_ImageLabelDataset(images, labels), batch_size=500, num_workers=self.hparams.num_workers)

    def predict_dataset(self) -> ConditionDataset:
        per = self.hparams.samples_per_class
        conditions = [c for c in self.classes for _ in range(per)]
        ids = [c * per + i for c in self.classes for i in range(per)]
        return ConditionDataset(conditions, ids)
