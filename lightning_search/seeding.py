"""The random draws of a training step, seeded by (seed, global step, batch index, rank).

A fit stopped and resumed from a checkpoint then draws exactly what an uninterrupted fit draws, without any
generator state to carry: the step and the batch index are in the checkpoint already (Lightning's loop
progress). The objective's own draws (times, noises, condition dropout) come from the generator handed to it;
draws made inside libraries (``nn.Dropout``, peft's LoRA dropout) come from torch's global generators, which
are forked for the step, seeded the same way and restored afterwards, so nothing outside the step changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from lightning_search.sampling.noise import noise_seed

# a second stream for the global generators, so that dropout masks are not the objective's noises again
_GLOBAL_STREAM = 1


def run_seed(seed: int | None) -> int:
    """The seed of a module's training draws: ``seed``, or the run's ``seed_everything`` (the default
    generator's initial seed when the module is built)."""
    return int(torch.initial_seed() if seed is None else seed) & ((1 << 63) - 1)


@contextmanager
def seeded_step(seed: int, step: int, batch_idx: int, rank: int, device: torch.device) -> Iterator[torch.Generator]:
    """Run a training step's body inside this; -> the generator of the objective's draws on ``device``."""
    base = noise_seed(seed, step, batch_idx, rank)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        other = noise_seed(base, _GLOBAL_STREAM)
        torch.default_generator.manual_seed(other)
        if devices:  # this device's generator only: fork_rng restores no other
            torch.cuda.default_generators[device.index or 0].manual_seed(other)
        yield torch.Generator(device=device).manual_seed(base)
