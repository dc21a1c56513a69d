"""Search algorithms that spend NFEs on initial noises; one file per algorithm, registered here."""

from collections.abc import Callable

from lightning_search.search.base import SearchAlgorithm, SearchContext, SearchResult, nan_safe
from lightning_search.search.beam import BeamSearch
from lightning_search.search.budget import BudgetForcingSearch
from lightning_search.search.config import SearchConfig, build_search
from lightning_search.search.evolution import EvolutionarySearch
from lightning_search.search.gradient import GradientSearch
from lightning_search.search.none import NoSearch
from lightning_search.search.paths import PathSearch
from lightning_search.search.pruning import EarlyPruningSearch
from lightning_search.search.random import RandomSearch
from lightning_search.search.smc import SMCSearch
from lightning_search.search.zero_order import ZeroOrderSearch

ALGORITHMS: dict[str, Callable[[SearchConfig], SearchAlgorithm]] = {
    "none": lambda c: NoSearch(),
    "random": lambda c: RandomSearch(c.num_candidates, c.candidate_steps),
    "zero_order": lambda c: ZeroOrderSearch(
        c.num_candidates, c.iterations, c.step_size, c.candidate_steps, c.neighbourhood, c.restart_after
    ),
    "paths": lambda c: PathSearch(c.num_candidates, c.branches, c.path_start, c.path_forward, c.path_backward),
    "smc": lambda c: SMCSearch(
        c.num_candidates,
        c.smc_times,
        c.smc_potential,
        c.smc_lambda,
        c.smc_resampling,
        c.smc_ess_threshold,
        c.smc_renoise,
    ),
    "gradient": lambda c: GradientSearch(c.iterations, c.step_size, c.candidate_steps),
    "beam": lambda c: BeamSearch(c.num_candidates, c.branches, c.window),
    "evolution": lambda c: EvolutionarySearch(c.num_candidates, c.iterations, c.elites, c.step_size, c.evo_state_time),
    "budget_forcing": lambda c: BudgetForcingSearch(c.budget, c.num_candidates, c.window),
    "pruning": lambda c: EarlyPruningSearch(c.num_candidates, c.prune_times, c.prune_keep),
}

__all__ = [
    "ALGORITHMS",
    "BeamSearch",
    "BudgetForcingSearch",
    "EarlyPruningSearch",
    "EvolutionarySearch",
    "GradientSearch",
    "NoSearch",
    "PathSearch",
    "RandomSearch",
    "SMCSearch",
    "ZeroOrderSearch",
    "SearchAlgorithm",
    "SearchConfig",
    "SearchContext",
    "SearchResult",
    "build_search",
    "nan_safe",
]
