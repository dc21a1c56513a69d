"""reporting/grid.py: a condition grid drawn from only the items it shows equals the grid of all of them."""

import pytest
import torch

from lightning_search.reporting.grid import grid_subset, save_comparison_grid, save_condition_grid


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


def test_a_comparison_grid_names_each_run_above_its_panel(tmp_path):
    """Each panel carries its run's name in a strip above it (the picture alone said nothing of which run was
    which); below the strip, the cells are the images (8 px upscaled 6x, nearest, after make_grid's 2 px pad)."""
    import numpy as np
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 8, 8, generator=generator)
    conditions = [0, 0, 1, 1]
    names = ["base", "a run with a name far too long for a panel two cells wide"]
    save_comparison_grid(
        tmp_path / "grid.png", [(names[0], images, conditions), (names[1], images.flip(0), conditions)]
    )
    grid = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB")).astype(int)
    panel = 2 + 2 * (48 + 2)  # two columns of 48 px cells with 2 px padding
    assert grid.shape == (18 + panel, 2 * panel + 12, 3)
    strips = [grid[:18, :panel], grid[:18, panel + 12 :]]
    assert all((s < 100).sum() > 20 for s in strips)  # dark text on a white strip
    assert (strips[0] != strips[1]).any()
    # the first cell of the first panel: the first image, each pixel repeated 6 x 6 (PNG rounds to 8 bits)
    expected = images[0].repeat_interleave(6, 1).repeat_interleave(6, 2).permute(1, 2, 0).numpy() * 255
    assert np.abs(grid[18 + 2 : 18 + 2 + 48, 2 : 2 + 48] - expected).max() <= 1


def test_each_condition_keeps_its_own_row_when_it_has_fewer_items_than_the_width(tmp_path):
    """Three items of condition 7 and one of 3 with room for 8: two rows of three cells, the missing two white
    (the grid was laid out with 4 columns, putting condition 3's item in condition 7's row)."""
    import numpy as np
    from PIL import Image

    images = torch.zeros(4, 3, 8, 8)  # black cells
    save_condition_grid(tmp_path / "grid.png", images, [7, 3, 7, 7], per_condition=8, max_conditions=10)
    grid = np.asarray(Image.open(tmp_path / "grid.png").convert("L")).astype(int)
    cell = 48 + 2
    assert grid.shape == (2 + 2 * cell, 2 + 3 * cell)
    black = [[grid[2 + r * cell + 24, 2 + c * cell + 24] == 0 for c in range(3)] for r in range(2)]
    assert black == [[True, True, True], [True, False, False]]
