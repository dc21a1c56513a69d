"""ODE solvers and the sampler that drives any backbone through them, counting NFEs."""

from lightning_search.sampling.noise import noise_seed, seeded_noise
from lightning_search.sampling.sampler import SampleOutput, Sampler
from lightning_search.sampling.solvers import SOLVERS, time_grid

__all__ = ["SOLVERS", "SampleOutput", "Sampler", "noise_seed", "seeded_noise", "time_grid"]
