"""Search settings that count something are refused at 0 before any model loads, naming the flag."""

import dataclasses

import pytest

from lightning_search.errors import ConfigurationError
from lightning_search.search.config import SearchConfig, build_search


@pytest.mark.parametrize(
    "name",
    ["num_candidates", "candidate_steps", "iterations", "restart_after", "branches", "window", "elites", "budget",
     "decode_batch_size", "verifier_batch_size", "prune_keep"],
)  # fmt: skip
def test_a_zero_count_is_refused_by_name(name):
    value = [4, 0] if name == "prune_keep" else 0
    config = dataclasses.replace(SearchConfig(algorithm="random", verifier="v", num_candidates=2), **{name: value})
    with pytest.raises(ConfigurationError, match=f"--search.{name} must be >= 1"):
        build_search(config)


def test_valid_counts_and_nulls_build():
    config = SearchConfig(algorithm="random", verifier="v", num_candidates=2, candidate_steps=None, budget=None)
    assert build_search(config).__class__.__name__ == "RandomSearch"
