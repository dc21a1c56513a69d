"""What predict iterates over: (sample id, condition) pairs, with stable ids so runs can shard and resume."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lightning_search.data.resumable import ResumableTrainData


def collate_conditions(rows: list[dict]) -> dict[str, Any]:
    """Keep conditions as a plain list (ints or prompts); ids as a tensor."""
    batch: dict[str, Any] = {"sample_id": torch.tensor([r["sample_id"] for r in rows], dtype=torch.long)}
    for key in rows[0]:
        if key != "sample_id":
            batch[key] = [r[key] for r in rows]
    return batch


class ConditionDataset(Dataset):
    """Conditions to sample for, each with a stable sample id; ``mark_done`` flags ids already done (resume)."""

    def __init__(self, conditions: Sequence[Any], sample_ids: Sequence[int], extras: dict | None = None) -> None:
        if len(conditions) != len(sample_ids):
            raise ValueError(f"{len(conditions)} conditions but {len(sample_ids)} sample ids")
        if len(set(sample_ids)) != len(sample_ids):
            raise ValueError("sample ids must be unique")
        self.conditions, self.sample_ids = list(conditions), [int(i) for i in sample_ids]
        self.extras = extras or {}

    def mark_done(self, done: frozenset[int] | set[int]) -> ConditionDataset:
        """The same rows in the same order, each with ``done``: whether the run folder holds it already."""
        extras = {**self.extras, "done": [s in done for s in self.sample_ids]}
        return ConditionDataset(self.conditions, self.sample_ids, extras)

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = {"sample_id": self.sample_ids[i], "condition": self.conditions[i]}
        row.update({k: v[i] for k, v in self.extras.items()})
        return row

    def loader(self, batch_size: int) -> DataLoader:
        return DataLoader(self, batch_size=batch_size, shuffle=False, collate_fn=collate_conditions)


class ConditionDataModule(ResumableTrainData, LightningDataModule):
    """Base of DataModules that predict over conditions: subclasses implement :meth:`predict_dataset`.

    :meth:`skip_samples` is the resume step's half on the data side (``lightning-search predict`` calls it
    before predicting): sample ids already done in the run folder are flagged ``done`` in their batches, and
    the batches keep the rows they have in an uninterrupted run. The module skips a batch done whole and
    computes a partly done one whole; the writer writes only its new samples. Leaving the done ids out
    instead would put the samples after them into other batches, and CPU kernels choose their blocking by
    batch size: a resumed run's scores then differ from an uninterrupted run's in their last bits.
    """

    predict_batch_size: int = 64

    def __init__(self) -> None:
        super().__init__()
        self._done: frozenset[int] = frozenset()
        self.seed = int(torch.initial_seed())  # of the training order: the run's seed_everything

    def skip_samples(self, done: set[int]) -> None:
        """Flag these sample ids ``done`` in the predict batches (they are in the run folder already)."""
        self._done = frozenset(done)

    def predict_dataset(self) -> ConditionDataset:
        raise NotImplementedError

    def predict_dataloader(self) -> DataLoader:
        dataset = self.predict_dataset()
        if self._done:
            dataset = dataset.mark_done(self._done)
        return dataset.loader(self.predict_batch_size)

    def train_dataloader(self) -> DataLoader:
        """The same conditions, in a seeded order (``data/resumable.py``), for objectives that train on
        conditions alone (GRPO's rollouts); Lightning adds the distributed sampler under DDP."""
        batch = getattr(self, "train_batch_size", None) or self.predict_batch_size
        return self.train_loader(
            self.predict_dataset(), batch, self.seed, drop_last=True, collate_fn=collate_conditions
        )
