"""LightningDataModules: the digits default, prompt sets, class labels, conditions to predict for."""

from lightning_search.data.classes import ClassConditionDataModule
from lightning_search.data.conditions import ConditionDataModule, ConditionDataset, collate_conditions
from lightning_search.data.digits import DigitsDataModule, digits_splits, reference_images
from lightning_search.data.preference import PreferenceDataModule, load_preference_dataset
from lightning_search.data.prompts import BUILTIN_PROMPT_SETS, PromptDataModule, builtin_prompts
from lightning_search.data.shapes import ShapesDataModule

__all__ = [
    "BUILTIN_PROMPT_SETS",
    "ClassConditionDataModule",
    "ConditionDataModule",
    "ConditionDataset",
    "DigitsDataModule",
    "PreferenceDataModule",
    "PromptDataModule",
    "ShapesDataModule",
    "builtin_prompts",
    "collate_conditions",
    "digits_splits",
    "load_preference_dataset",
    "reference_images",
]
