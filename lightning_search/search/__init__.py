"""Search algorithms that spend NFEs on initial noises; one file per algorithm, registered here."""

from collections.abc import Callable

from lightning_search.search.base import SearchAlgorithm, SearchContext, SearchResult, nan_safe
from lightning_search.search.config import SearchConfig, build_search
from lightning_search.search.none import NoSearch
from lightning_search.search.random import RandomSearch

ALGORITHMS: dict[str, Callable[[SearchConfig], SearchAlgorithm]] = {
    "none": lambda c: NoSearch(),
    "random": lambda c: RandomSearch(c.num_candidates, c.candidate_steps),
}

__all__ = [
    "ALGORITHMS",
    "NoSearch",
    "RandomSearch",
    "SearchAlgorithm",
    "SearchConfig",
    "SearchContext",
    "SearchResult",
    "build_search",
    "nan_safe",
]
