"""Class-label conditions (ImageNet's 1,000 classes for DiT): which labels to sample, how many times each."""

from __future__ import annotations

from lightning_search.data.conditions import ConditionDataModule, ConditionDataset
from lightning_search.errors import ConfigurationError


class ClassConditionDataModule(ConditionDataModule):
    """``samples_per_class`` samples of each class; sample id = class x samples_per_class + j (stable).

    Args:
        num_classes: labels are 0 .. num_classes - 1 (1,000 for ImageNet).
        classes: sample only these labels (default: all).
        samples_per_class: e.g. 50 for the 50,000 samples of ImageNet FID.
        predict_batch_size: conditions per predict step (search multiplies them by its candidates).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        classes: list[int] | None = None,
        samples_per_class: int = 1,
        predict_batch_size: int = 32,
    ) -> None:
        super().__init__()
        labels = list(range(num_classes)) if classes is None else [int(c) for c in classes]
        bad = [c for c in labels if not 0 <= c < num_classes]
        if bad:
            raise ConfigurationError(f"class labels must lie in 0..{num_classes - 1}, got {bad}")
        if samples_per_class < 1 or predict_batch_size < 1:
            raise ConfigurationError("samples_per_class and predict_batch_size must be >= 1")
        self.save_hyperparameters()
        self.labels, self.predict_batch_size = labels, predict_batch_size

    def predict_dataset(self) -> ConditionDataset:
        per = self.hparams.samples_per_class
        return ConditionDataset(
            [c for c in self.labels for _ in range(per)], [c * per + j for c in self.labels for j in range(per)]
        )
