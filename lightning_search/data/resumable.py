"""Training data in an order a stopped fit can pick up exactly where it stopped.

torch's ``RandomSampler`` draws each epoch's permutation from a seed it takes from the global generator when
the epoch starts, and Lightning restarts an interrupted epoch from its first batch: a resumed fit would see
other batches than an uninterrupted one. Here the permutation of epoch e comes from a generator seeded by
(seed, e) (the epoch is the trainer's, read when the epoch starts), the DataModule counts the training batches
Lightning takes from it (its ``on_before_batch_transfer`` hook: after any prefetching, when a batch is used),
and the loader is stateful the way Lightning expects (``state_dict`` / ``load_state_dict``, kept in the
checkpoint's loop state): on resume it starts the interrupted epoch after the batches already trained on.

Under DDP Lightning wraps the sampler in a ``DistributedSamplerWrapper``, which splits each epoch's seeded order
between the ranks; an interrupted epoch is then started over (Lightning's behaviour for any loader), as
skipping a prefix of the order would split the rest differently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

_MASK63 = (1 << 63) - 1


class EpochShuffle(Sampler[int]):
    """Indices 0..n-1 in the order of the current epoch: a permutation seeded by (seed, epoch), or in order.

    ``current_epoch``: where the epoch is read when an epoch starts (the trainer's); else the last
    ``set_epoch``. ``resume_at(epoch, start)``: the next time epoch ``epoch`` is iterated, skip its first
    ``start`` indices.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, current_epoch: Callable[[], int] | None = None) -> None:
        self.n, self.seed, self.shuffle, self.current_epoch = n, seed, shuffle, current_epoch
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, start: int) -> None:
        self._resume = (epoch, start)

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) & _MASK63)
        return torch.randperm(self.n, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        if self.current_epoch is not None:
            self.epoch = self.current_epoch()
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start, self._resume = self._resume[1], None
        return iter(self.order(self.epoch)[start:])

    def __len__(self) -> int:
        return self.n


class ResumableLoader(DataLoader):
    """A DataLoader over an :class:`EpochShuffle` whose state is (epoch, training batches used in it)."""

    def __init__(self, *args: Any, owner: ResumableTrainData, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self.owner._consumed
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        epoch, batches = int(state_dict["epoch"]), int(state_dict["batches"])
        trainer = getattr(self.owner, "trainer", None)
        if trainer is None or trainer.world_size == 1:
            self.sampler.resume_at(epoch, batches * self.batch_size)
        self.owner._consumed = (epoch, batches)


class ResumableTrainData:
    """Mixin of a LightningDataModule whose training order survives a stop and a resume (see the module doc).

    Build the training loader with :meth:`train_loader`; the mixin's hook counts what training used.
    """

    _consumed: tuple[int, int] = (0, 0)  # (epoch, training batches handed over in it)

    def train_loader(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        drop_last: bool = False,
        num_workers: int = 0,
        collate_fn: Callable | None = None,
    ) -> ResumableLoader:
        trainer = getattr(self, "trainer", None)
        epoch = (lambda: trainer.current_epoch) if trainer is not None else None
        return ResumableLoader(
            dataset,
            batch_size=batch_size,
            sampler=EpochShuffle(len(dataset), seed, shuffle, epoch),
            drop_last=drop_last,
            num_workers=num_workers,
            collate_fn=collate_fn,
            owner=self,
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Lightning calls this when a batch is about to be used (after any prefetching): count the training
        ones, per epoch."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training:
            epoch, count = self._consumed
            self._consumed = (trainer.current_epoch, count + 1 if epoch == trainer.current_epoch else 1)
        return batch
