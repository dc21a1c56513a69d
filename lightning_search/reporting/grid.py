"""Sample grids: people look at pictures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import pil_to_tensor
from torchvision.utils import make_grid

from lightning_search.runs import atomic_write_bytes, image_to_png_bytes


def image_grid(images: torch.Tensor, nrow: int, min_cell: int = 48, padding: int = 2) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> one (C, H', W') grid; small images are upscaled (nearest) to ``min_cell``."""
    if images.shape[-1] < min_cell:
        scale = -(-min_cell // images.shape[-1])
        images = F.interpolate(images, scale_factor=scale, mode="nearest")
    return make_grid(images, nrow=nrow, padding=padding, pad_value=1.0)


def rows_by_condition(conditions: Sequence, per_condition: int, max_conditions: int) -> list[list[int]]:
    """Indices laid out as one row per condition (first appearance order), as many columns as the fullest
    condition has items, at most ``per_condition``; -1 marks a blank cell."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(conditions):
        key = str(c)
        if key in groups or len(groups) < max_conditions:
            groups.setdefault(key, [])
            if len(groups[key]) < per_condition:
                groups[key].append(i)
    width = min(per_condition, max(len(g) for g in groups.values()))
    return [[g[j] if j < len(g) else -1 for j in range(width)] for g in groups.values()]


def grid_subset(conditions: Sequence, per_condition: int, max_conditions: int) -> list[int]:
    """The indices (in order) of the items a condition grid shows: the grid of only these items is the grid of
    all of them, so a run's report reads back about a hundred of its images instead of every one."""
    return sorted({i for row in rows_by_condition(conditions, per_condition, max_conditions) for i in row if i >= 0})


def condition_grid(images: torch.Tensor, conditions: Sequence, per_condition: int, max_conditions: int) -> torch.Tensor:
    """(C, H', W'): one row per condition (:func:`rows_by_condition`); missing cells stay blank (white)."""
    rows = rows_by_condition(conditions, per_condition, max_conditions)
    blank = torch.ones_like(images[0])
    cells = torch.stack([images[i] if i >= 0 else blank for row in rows for i in row])
    return image_grid(cells, nrow=len(rows[0]))


def save_condition_grid(
    path: str | Path, images: torch.Tensor, conditions: Sequence, per_condition: int = 10, max_conditions: int = 10
) -> None:
    """A grid with one row per condition; missing cells stay blank."""
    atomic_write_bytes(path, image_to_png_bytes(condition_grid(images, conditions, per_condition, max_conditions)))


def save_comparison_grid(
    path: str | Path,
    panels: Sequence[tuple[str, torch.Tensor, Sequence]],
    per_condition: int = 8,
    max_conditions: int = 10,
) -> None:
    """Side-by-side grids of several runs over the same sample ids (same seeds), one panel per run.

    panels: (label, images (N, C, H, W), conditions) in the same sample order for every run. Each label is
    drawn above its panel, so that the picture says which run is which wherever it is shown (a logger, a
    README); the caller's caption may say more.
    """
    grids = []
    for label, images, conditions in panels:
        grid = condition_grid(images, conditions, per_condition, max_conditions)
        grids.append(torch.cat([label_strip(str(label), grid.shape[2])[: grid.shape[0]], grid], dim=1))
    height = max(g.shape[1] for g in grids)
    gap = torch.zeros(grids[0].shape[0], height, 12)
    parts = []
    for g in grids:
        padded = F.pad(g, (0, 0, 0, height - g.shape[1]), value=1.0)
        parts += [padded, gap]
    atomic_write_bytes(path, image_to_png_bytes(torch.cat(parts[:-1], dim=2)))


def label_strip(text: str, width: int, height: int = 18) -> torch.Tensor:
    """(3, height, width) in [0, 1]: ``text`` in black on white, shortened with "..." to fit the width. Pillow's
    bundled font, so no font file is needed."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=12)
    shown = text
    while shown and font.getlength(shown) > width - 8:
        shown = shown[:-1]
    if shown != text:
        shown = shown[:-3] + "..."
    strip = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(strip).text((4, 2), shown, fill="black", font=font)
    return pil_to_tensor(strip).float() / 255
