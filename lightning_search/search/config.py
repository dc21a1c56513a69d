"""``--search.*``: one flag per concept, turned into an algorithm from the registry."""

from __future__ import annotations

from dataclasses import dataclass

from lightning_search.errors import ConfigurationError, lookup
from lightning_search.search.base import SearchAlgorithm


@dataclass
class SearchConfig:
    """Inference-time search settings (``lightning-search predict --search.algorithm random ...``).

    Args:
        algorithm: none, random, zero_order or paths (see ``lightning_search.search.ALGORITHMS``).
        verifier: name of the verifier that guides search, a key of the run's ``verifiers``.
        num_candidates: N: noises per sample (random), neighbours per iteration (zero_order), paths (paths).
        candidate_steps: solver steps for each candidate (None: the sampler's full steps).
        iterations: K, zero-order iterations.
        step_size: lambda, zero-order neighbourhood size (0 < lambda < 1).
        branches: M, re-noisings per path (paths).
        path_start: time at which search over paths starts branching.
        path_forward: delta_f, how far forward (noisier) each re-noising goes.
        path_backward: delta_b > delta_f, how far back each path then integrates.
        seed: global seed of every noise; with the sample id, round and candidate it fixes each noise.
        budget: optional cap on NFEs per sample; a configuration that would spend more is rejected.
        candidate_sharding: split one sample's candidates across ranks and all-gather the scores.
    """

    algorithm: str = "none"
    verifier: str | None = None
    num_candidates: int = 1
    candidate_steps: int | None = None
    iterations: int = 1
    step_size: float = 0.1
    branches: int = 2
    path_start: float = 0.8
    path_forward: float = 0.1
    path_backward: float = 0.2
    seed: int = 0
    budget: int | None = None
    candidate_sharding: bool = False


def build_search(config: SearchConfig) -> SearchAlgorithm:
    """The algorithm named by ``config.algorithm`` with the settings it uses."""
    from lightning_search.search import ALGORITHMS

    factory = lookup(ALGORITHMS, "search algorithm", config.algorithm)
    algorithm = factory(config)
    if algorithm.needs_verifier and not config.verifier:
        raise ConfigurationError(f"search algorithm {config.algorithm!r} needs a verifier: pass --search.verifier NAME")
    return algorithm
