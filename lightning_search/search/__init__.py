"""Search algorithms that spend NFEs on initial noises; one file per algorithm, registered here."""

from collections.abc import Callable

from lightning_search.search.base import SearchAlgorithm, SearchContext, SearchResult, nan_safe
from lightning_search.search.config import SearchConfig, build_search
from lightning_search.search.none import NoSearch
from lightning_search.search.paths import PathSearch
from lightning_search.search.random import RandomSearch
from lightning_search.search.zero_order import ZeroOrderSearch

ALGORITHMS: dict[str, Callable[[SearchConfig], SearchAlgorithm]] = {
    "none": lambda c: NoSearch(),
    "random": lambda c: RandomSearch(c.num_candidates, c.candidate_steps),
    "zero_order": lambda c: ZeroOrderSearch(c.num_candidates, c.iterations, c.step_size, c.candidate_steps),
    "paths": lambda c: PathSearch(c.num_candidates, c.branches, c.path_start, c.path_forward, c.path_backward),
}

__all__ = [
    "ALGORITHMS",
    "NoSearch",
    "PathSearch",
    "RandomSearch",
    "ZeroOrderSearch",
    "SearchAlgorithm",
    "SearchConfig",
    "SearchContext",
    "SearchResult",
    "build_search",
    "nan_safe",
]
