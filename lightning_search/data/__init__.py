"""LightningDataModules: the digits default, conditions to predict for."""

from lightning_search.data.conditions import ConditionDataModule, ConditionDataset, collate_conditions
from lightning_search.data.digits import DigitsDataModule, digits_splits, reference_images

__all__ = [
    "ConditionDataModule",
    "ConditionDataset",
    "DigitsDataModule",
    "collate_conditions",
    "digits_splits",
    "reference_images",
]
