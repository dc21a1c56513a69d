"""The shapes world's data: (image, caption) pairs rendered on the fly for training, and held-out or training
prompts with stable sample ids for predict. The world itself (renderer, captions, split): ``worlds/shapes.py``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_search.data.conditions import ConditionDataModule, ConditionDataset
from lightning_search.errors import ConfigurationError
from lightning_search.worlds.shapes import (
    CATEGORIES,
    all_prompts,
    condition_metadata,
    prompt_split,
    render,
    sample_scene,
)

# -- data ----------------------------------------------------------------------------------------------
SPLIT_SEEDS = {"generator": 0, "verifier": 1}  # disjoint image streams: the generator's and the CLIP analogue's


class ShapesTrainDataset(Dataset):
    """(image, caption) pairs rendered on the fly; item i is the same image in every epoch and process.

    Each item draws a category uniformly, a training prompt of it uniformly, then a scene, from a generator
    seeded by (split seed, i). Items: ``{"image": (3, S, S) in [0, 1], "condition": caption}``.
    """

    def __init__(
        self, prompts: Sequence[int], num_images: int, seed: int, image_size: int = 32, sizes: tuple[int, int] = (9, 13)
    ) -> None:
        table = all_prompts()
        by_tag: dict[str, list[int]] = {}
        for i in prompts:
            by_tag.setdefault(table[i]["tag"], []).append(i)
        self.groups = list(by_tag.values())
        self.num_images, self.seed, self.image_size, self.sizes = num_images, seed, image_size, tuple(sizes)

    def __len__(self) -> int:
        return self.num_images

    def example(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        rng = np.random.default_rng((self.seed, i))
        group = self.groups[rng.integers(len(self.groups))]
        prompt = all_prompts()[group[rng.integers(len(group))]]
        return render(sample_scene(prompt, rng, self.image_size, self.sizes), self.image_size), prompt

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, prompt = self.example(i)
        return {"image": torch.from_numpy(image), "condition": prompt["prompt"]}


class ShapesDataModule(ConditionDataModule):
    """The shapes world for training (generator or CLIP analogue) and GenEval-style conditions for predict.

    Args:
        split: training image stream, ``generator`` or ``verifier`` (the CLIP analogue's: other images).
        num_images: training items per epoch (each rendered from its own seed).
        batch_size: training batch size.
        image_size: image side in pixels.
        object_sizes: smallest and largest object box side in pixels.
        categories: restrict training and prediction to these GenEval tags (default: all six).
        prompts: ``held_out`` (unseen combinations) or ``train`` prompts for predict.
        prompts_per_category: predict over this many prompts of each category (a fixed seeded choice;
            None: all of them), so categories weigh alike in the overall score.
        samples_per_prompt: sample ids per prompt; prompt k of :func:`all_prompts` gets ids k * 1000 + j.
        predict_batch_size: conditions per predict step (search multiplies it by its candidates).

    Predict conditions are dicts ``{"tag", "include", "exclude"?, "prompt"}``; training conditions are the
    caption strings (backbones and verifiers read either).
    """

    def __init__(
        self,
        split: Literal["generator", "verifier"] = "generator",
        num_images: int = 50_000,
        batch_size: int = 128,
        image_size: int = 32,
        object_sizes: tuple[int, int] = (9, 13),
        categories: list[str] | None = None,
        prompts: Literal["held_out", "train"] = "held_out",
        prompts_per_category: int | None = 4,
        samples_per_prompt: int = 25,
        predict_batch_size: int = 100,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if split not in SPLIT_SEEDS:
            raise ConfigurationError(f"unknown shapes split {split!r}; valid: {', '.join(SPLIT_SEEDS)}")
        if not 1 <= samples_per_prompt <= 1000:
            raise ConfigurationError(f"samples_per_prompt must lie in 1..1000, got {samples_per_prompt}")
        self.save_hyperparameters()
        self.predict_batch_size = predict_batch_size
        prompt_split(prompts, categories)  # fail now on a bad category or split name

    def train_dataset(self) -> ShapesTrainDataset:
        h = self.hparams
        return ShapesTrainDataset(
            prompt_split("train", h.categories), h.num_images, SPLIT_SEEDS[h.split], h.image_size, h.object_sizes
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_dataset(),
            batch_size=self.hparams.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.hparams.num_workers,
        )

    def predict_prompts(self) -> list[int]:
        """Indices into :func:`all_prompts` to predict for: per category, a fixed choice (seed 0)."""
        h = self.hparams
        chosen = []
        for tag in CATEGORIES if h.categories is None else h.categories:
            pool = prompt_split(h.prompts, [tag])
            k = len(pool) if h.prompts_per_category is None else min(h.prompts_per_category, len(pool))
            pick = np.random.default_rng((0, CATEGORIES.index(tag))).permutation(len(pool))[:k]
            chosen += [pool[j] for j in sorted(pick)]
        return chosen

    def predict_dataset(self) -> ConditionDataset:
        per, table = self.hparams.samples_per_prompt, all_prompts()
        chosen = self.predict_prompts()
        conditions = [condition_metadata(table[k]) for k in chosen for _ in range(per)]
        ids = [k * 1000 + j for k in chosen for j in range(per)]
        return ConditionDataset(conditions, ids)


def count_prompts() -> dict[str, dict[str, int]]:
    """{category: {"train": n, "held_out": n}} (for documentation and tests)."""
    return {c: {s: len(prompt_split(s, [c])) for s in ("train", "held_out")} for c in CATEGORIES}
