"""``--search.*``: one flag per concept, turned into an algorithm from the registry."""

from __future__ import annotations

from dataclasses import dataclass, field

from lightning_search.errors import ConfigurationError, lookup
from lightning_search.search.base import SearchAlgorithm


@dataclass
class SearchConfig:
    """Inference-time search settings (``lightning-search predict --search.algorithm random ...``).

    Args:
        algorithm: none, random, zero_order, paths, smc, gradient, beam, evolution, budget_forcing or pruning
            (see ``lightning_search.search.ALGORITHMS``).
        verifier: name of the verifier that guides search, a key of the run's ``verifiers``.
        num_candidates: N: noises per sample (random, pruning), neighbours per iteration (zero_order), paths
            (paths), particles (smc), beams (beam), population (evolution), children per round (budget_forcing).
        candidate_steps: solver steps for each candidate (None: the sampler's full steps); for gradient, the
            steps of the differentiable sampler the gradient flows through.
        iterations: K, zero-order iterations; gradient steps (gradient); generations (evolution).
        step_size: lambda, zero-order neighbourhood size (0 < lambda < 1; a neighbour's cosine to its pivot is
            sqrt(1 - lambda^2): 0.1 -> 0.995); gradient step length relative to the noise's norm (0 < lambda <= 1).
        neighbourhood: zero-order neighbours, ``mix`` (sqrt(1 - lambda^2) n + lambda z, the paper) or ``sphere``
            (z orthogonalised to n, on n's sphere at cosine sqrt(1 - lambda^2), the first author's public code).
        restart_after: zero-order restarts a sample from a fresh noise after this many rounds without
            improvement (null: never).
        branches: M, re-noisings per path (paths); children per beam (beam).
        window: grid steps per window (beam, budget_forcing).
        elites: E, individuals carried to the next generation (evolution).
        evo_state_time: evolve the states at this time instead of the initial noises (evolution; null: noises).
        prune_times: times at which pruning scores its candidates' x0-predictions (pruning).
        prune_keep: candidates kept after each pruning time (pruning).
        path_start: time at which search over paths starts branching.
        path_forward: delta_f, how far forward (noisier) each re-noising goes.
        path_backward: delta_b > delta_f, how far back each path then integrates.
        smc_times: times in (0, 1) at which smc scores its particles' x0-predictions and resamples them.
        smc_potential: difference, max or sum: how scores along a particle's ancestry become its potential.
        smc_lambda: inverse temperature of the smc weights exp(lambda * potential).
        smc_resampling: multinomial or systematic.
        smc_ess_threshold: resample only when the effective sample size < threshold x particles (1: always).
        smc_renoise: how far forward in t smc re-noises its particles after resampling (0: no re-noising).
        seed: global seed of every noise; with the sample id, round and candidate it fixes each noise.
        budget: optional cap on NFEs per sample; a configuration that would spend more is rejected; for
            budget_forcing, the NFEs per sample it spends.
        candidate_sharding: split one sample's candidates across ranks and all-gather the scores.
        decode_batch_size: latents per VAE decode call (the decoder's full-resolution activations are what
            limits GPU memory at 1024 px, not the latents).
        verifier_batch_size: images per verifier call.
    """

    algorithm: str = "none"
    verifier: str | None = None
    num_candidates: int = 1
    candidate_steps: int | None = None
    iterations: int = 1
    step_size: float = 0.1
    neighbourhood: str = "mix"
    restart_after: int | None = None
    branches: int = 2
    window: int = 1
    elites: int = 2
    evo_state_time: float | None = None
    prune_times: list[float] = field(default_factory=lambda: [0.6])
    prune_keep: list[int] = field(default_factory=lambda: [4])
    path_start: float = 0.8
    path_forward: float = 0.1
    path_backward: float = 0.2
    smc_times: list[float] = field(default_factory=lambda: [0.6, 0.2])
    smc_potential: str = "difference"
    smc_lambda: float = 1.0
    smc_resampling: str = "systematic"
    smc_ess_threshold: float = 1.0
    smc_renoise: float = 0.1
    seed: int = 0
    budget: int | None = None
    candidate_sharding: bool = False
    decode_batch_size: int = 8
    verifier_batch_size: int = 64


# settings that count something (candidates, steps, rounds, items per call): 0 or less is a mistake, said at once
COUNTS = ("num_candidates", "candidate_steps", "iterations", "restart_after", "branches", "window", "elites",
          "budget", "decode_batch_size", "verifier_batch_size")  # fmt: skip
OPTIONAL_COUNTS = ("candidate_steps", "restart_after", "budget")  # null: the sampler's steps, never, no cap


def build_search(config: SearchConfig) -> SearchAlgorithm:
    """The algorithm named by ``config.algorithm`` with the settings it uses."""
    from lightning_search.search import ALGORITHMS

    counts = {name: getattr(config, name) for name in COUNTS}
    bad = {name: value for name, value in counts.items() if value is not None and value < 1}
    if any(k < 1 for k in config.prune_keep):
        bad["prune_keep"] = config.prune_keep
    if bad:
        name, value = next(iter(bad.items()))
        none = " (or null)" if name in OPTIONAL_COUNTS else ""
        raise ConfigurationError(f"--search.{name} must be >= 1{none}, got {value}")
    factory = lookup(ALGORITHMS, "search algorithm", config.algorithm)
    algorithm = factory(config)
    if algorithm.needs_verifier and not config.verifier:
        raise ConfigurationError(f"search algorithm {config.algorithm!r} needs a verifier: pass --search.verifier NAME")
    return algorithm
