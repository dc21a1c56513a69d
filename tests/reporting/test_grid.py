"""reporting/grid.py: a condition grid drawn from only the items it shows equals the grid of all of them."""

import pytest
import torch

from lightning_search.reporting.grid import grid_subset, save_condition_grid


@pytest.mark.parametrize(("per_condition", "max_conditions"), [(2, 3), (4, 10), (1, 1), (10, 2)])
def test_the_grid_of_its_subset_is_the_grid_of_everything(tmp_path, per_condition, max_conditions):
    generator = torch.Generator().manual_seed(0)
    conditions = [int(c) for c in torch.randint(0, 5, (40,), generator=generator)]  # interleaved, uneven counts
    images = torch.rand(40, 3, 8, 8, generator=generator)
    save_condition_grid(tmp_path / "all.png", images, conditions, per_condition, max_conditions)
    shown = grid_subset(conditions, per_condition, max_conditions)
    save_condition_grid(
        tmp_path / "subset.png", images[shown], [conditions[i] for i in shown], per_condition, max_conditions
    )
    assert (tmp_path / "subset.png").read_bytes() == (tmp_path / "all.png").read_bytes()
    # by hand: the first per_condition items of each of the first max_conditions conditions to appear
    first = list(dict.fromkeys(conditions))[:max_conditions]
    expected = sorted(i for c in first for i in [j for j, x in enumerate(conditions) if x == c][:per_condition])
    assert shown == expected
    assert len(shown) < len(conditions)
