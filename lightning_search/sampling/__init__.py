"""Sampling: our ODE solvers and the pipelines' schedulers over any backbone, on one grid, counting NFEs."""

from lightning_search.sampling.noise import noise_seed, seeded_noise
from lightning_search.sampling.sampler import SampleOutput, Sampler
from lightning_search.sampling.segments import Segment
from lightning_search.sampling.solvers import SOLVERS, time_grid

__all__ = ["SOLVERS", "SampleOutput", "Sampler", "Segment", "noise_seed", "seeded_noise", "time_grid"]
