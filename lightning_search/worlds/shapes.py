"""The shapes world: procedural RGB scenes of coloured shapes with GenEval-style captions and metadata.

A scene holds 1-4 objects, each a shape (circle, square, triangle, diamond) in one of seven colours that sit
on corners of the RGB cube (red, green, blue, yellow, magenta, cyan, white: any two differ by 1 in at least
one channel), in square boxes of 9-13 px on a 32 px canvas, drawn without anti-aliasing on a black
background, 2 px apart, so a judge can segment them exactly. (With 7-11 px objects the small generator learned
the shapes markedly slower in a 1,000-step trial: held-out accuracy 0.12 against 0.19.)

Captions follow GenEval's six tasks and phrasing (Ghosh et al. 2023, ``prompts/create_prompts.py``), each
with the metadata GenEval's evaluator reads: ``{"tag", "include": [{class, count, color?, position?}],
"exclude"?, "prompt"}`` (JSON-serialisable: the prediction writer stores it in records.jsonl).

The fixed split (a rule, not a random draw, so it is easy to state): *held-out* prompts are unseen
combinations, never used as training captions:

- colour-shape pairs (c, s) with (c - 2 s) mod 7 in {0, 1} (colours and shapes indexed in the order above):
  red and green circles, blue and yellow squares, magenta and cyan triangles, white and red diamonds. A
  ``colors`` or ``color_attr`` prompt naming one of them is held out. These pairs still appear, unnamed, in
  the images of colour-free training captions (a red circle can be drawn for "a photo of a circle").
- ``two_object``: the four ordered pairs of {circle, diamond} and {square, triangle};
- ``counting``: one count per shape, 2 + (s mod 3): two circles, three squares, four triangles, two diamonds;
- ``position``: for each ordered pair of shapes (a, b), relation (a + b) mod 4 of (left of, right of, above,
  below): 12 of the 48 prompts;
- ``single_object`` has four prompts and cannot hold one out: its held-out set is the four training prompts.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import cache
from typing import Any, Literal

import numpy as np

from lightning_search.errors import ConfigurationError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0),
    "magenta": (1.0, 0.0, 1.0), "cyan": (0.0, 1.0, 1.0), "white": (1.0, 1.0, 1.0),
}  # fmt: skip
BACKGROUND = (0.0, 0.0, 0.0)
NUMBERS = ("zero", "one", "two", "three", "four")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
CATEGORIES: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
POSITION_THRESHOLD = 0.1  # GenEval's default --position_threshold
GAP = 2  # pixels between objects' boxes: objects of one colour never touch, even diagonally

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1 / y1 exclusive (GenEval's box corners)


# -- geometry ------------------------------------------------------------------------------------------
@cache
def shape_mask(shape: str, width: int, height: int) -> np.ndarray:
    """The shape rasterised into a (height, width) bool box; in a square box it touches all four sides.

    Pixel centres are tested in box-normalised coordinates (ties included); the triangle's sides are widened
    by half a pixel so that its apex row exists at even widths (the judge's templates are these same masks).
    Cached and read-only.
    """
    mask = _rasterise(shape, width, height)
    mask.flags.writeable = False
    return mask


def _rasterise(shape: str, width: int, height: int) -> np.ndarray:
    u = (np.arange(width) + 0.5)[None, :] / width
    v = (np.arange(height) + 0.5)[:, None] / height
    eps = 1e-9
    if shape == "circle":
        return (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25 + eps
    if shape == "square":
        return np.ones((height, width), dtype=bool)
    if shape == "triangle":  # apex up
        return np.abs(u - 0.5) <= v / 2 + 0.5 / width + eps
    if shape == "diamond":
        return np.abs(u - 0.5) + np.abs(v - 0.5) <= 0.5 + eps
    raise ConfigurationError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")


def relative_position(box_a: Sequence[float], box_b: Sequence[float], threshold: float = POSITION_THRESHOLD) -> set:
    """Relations of A to B by GenEval's rule (``evaluation/evaluate_images.py: relative_position``).

    The centre offset shrinks by ``threshold`` x the summed box sizes on each axis; a relation holds when
    its axis carries more than half the (unshrunk) offset's length. Image y grows downwards ("above": dy < 0).
    """
    a, b = np.asarray(box_a, dtype=np.float64), np.asarray(box_b, dtype=np.float64)
    offset = (a[:2] + a[2:]) / 2 - (b[:2] + b[2:]) / 2
    dims = (a[2:] - a[:2]) + (b[2:] - b[:2])
    revised = np.maximum(np.abs(offset) - threshold * dims, 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    return {rel for rel, holds in zip(RELATIONS, (dx < -0.5, dx > 0.5, dy < -0.5, dy > 0.5)) if holds}


# -- prompts -------------------------------------------------------------------------------------------
def _article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def make_prompt(tag: str, objects: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """GenEval metadata and caption for a task; ``objects`` as GenEval's ``include`` (class, count, color?)."""
    o = [dict(x) for x in objects]
    named = [_article(f"{x['color']} {x['class']}" if "color" in x else x["class"]) for x in o]
    if tag in ("single_object", "colors"):
        text = named[0]
    elif tag in ("two_object", "color_attr"):
        text = f"{named[0]} and {named[1]}"
    elif tag == "counting":
        text = f"{NUMBERS[o[0]['count']]} {o[0]['class']}s"
    elif tag == "position":  # GenEval: include = [B, A with position (rel, 0)], caption "A rel B"
        text = f"{named[1]} {o[1]['position'][0]} {named[0]}"
    else:
        raise ConfigurationError(f"unknown shapes category {tag!r}; valid: {', '.join(CATEGORIES)}")
    prompt: dict[str, Any] = {"tag": tag, "include": o}
    if tag == "counting":
        prompt["exclude"] = [{"class": o[0]["class"], "count": o[0]["count"] + 1}]
    prompt["prompt"] = f"a photo of {text}"
    return prompt


def held_out_pair(color: str, shape: str) -> bool:
    """The colour-shape pairs no training caption names (module docstring)."""
    return (list(COLORS).index(color) - 2 * SHAPES.index(shape)) % 7 in (0, 1)


def _is_held_out(p: dict[str, Any]) -> bool:
    tag, inc = p["tag"], p["include"]
    s = [SHAPES.index(x["class"]) for x in inc]
    if tag in ("colors", "color_attr"):
        return any(held_out_pair(x["color"], x["class"]) for x in inc)
    if tag == "two_object":
        return {s[0], s[1]} in ({0, 3}, {1, 2})
    if tag == "counting":
        return inc[0]["count"] == 2 + s[0] % 3
    if tag == "position":  # include = [B, A]: the relation of A to B
        return RELATIONS.index(inc[1]["position"][0]) == (s[1] + s[0]) % 4
    return False


@cache
def all_prompts() -> tuple[dict[str, Any], ...]:
    """Every prompt of the world, in a fixed order (its index names it in sample ids), with ``held_out``."""
    out = []
    pairs = list(itertools.permutations(SHAPES, 2))
    for s in SHAPES:
        out.append(make_prompt("single_object", [{"class": s, "count": 1}]))
    for a, b in pairs:
        out.append(make_prompt("two_object", [{"class": a, "count": 1}, {"class": b, "count": 1}]))
    for s, n in itertools.product(SHAPES, (2, 3, 4)):
        out.append(make_prompt("counting", [{"class": s, "count": n}]))
    for s, c in itertools.product(SHAPES, COLORS):
        out.append(make_prompt("colors", [{"class": s, "count": 1, "color": c}]))
    for (a, b), rel in itertools.product(pairs, RELATIONS):
        out.append(make_prompt("position", [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [rel, 0]}]))
    for (a, b), (ca, cb) in itertools.product(pairs, itertools.permutations(COLORS, 2)):
        objects = [{"class": a, "count": 1, "color": ca}, {"class": b, "count": 1, "color": cb}]
        out.append(make_prompt("color_attr", objects))
    return tuple({**p, "held_out": _is_held_out(p)} for p in out)


def prompt_split(split: Literal["train", "held_out"], categories: Sequence[str] | None = None) -> list[int]:
    """Indices into :func:`all_prompts` of one split (single_object's held-out set is its training set)."""
    if split not in ("train", "held_out"):
        raise ConfigurationError(f"unknown shapes prompt split {split!r}; valid: train, held_out")
    cats = CATEGORIES if categories is None else tuple(categories)
    for c in cats:
        if c not in CATEGORIES:
            raise ConfigurationError(f"unknown shapes category {c!r}; valid: {', '.join(CATEGORIES)}")
    want_held = split == "held_out"
    return [
        i
        for i, p in enumerate(all_prompts())
        if p["tag"] in cats and (p["held_out"] == want_held or (p["tag"] == "single_object" and want_held))
    ]


def vocabulary() -> list[str]:
    """Every word of every caption, sorted: the word-level vocabulary of the world's text encoders."""
    return sorted({w for p in all_prompts() for w in p["prompt"].split()})


def condition_metadata(p: dict[str, Any]) -> dict[str, Any]:
    """The condition handed to models and verifiers: GenEval's fields of a prompt (no split flag)."""
    return {k: v for k, v in p.items() if k != "held_out"}


# -- rendering -----------------------------------------------------------------------------------------
def render(objects: Sequence[dict[str, Any]], size: int = 32) -> np.ndarray:
    """Objects ``{class, color, box}`` -> image (3, size, size) float32 in [0, 1] on the black background."""
    image = np.zeros((3, size, size), dtype=np.float32)
    image[:] = np.asarray(BACKGROUND, dtype=np.float32)[:, None, None]
    for o in objects:
        x0, y0, x1, y1 = o["box"]
        mask = shape_mask(o["class"], x1 - x0, y1 - y0)
        region = image[:, y0:y1, x0:x1]
        region[:, mask] = np.asarray(COLORS[o["color"]], dtype=np.float32)[:, None]
    return image


def _boxes_apart(a: Box, b: Box) -> bool:
    return a[2] + GAP <= b[0] or b[2] + GAP <= a[0] or a[3] + GAP <= b[1] or b[3] + GAP <= a[1]


def sample_scene(
    prompt: dict[str, Any], rng: np.random.Generator, size: int = 32, sizes: tuple[int, int] = (9, 13)
) -> list[dict[str, Any]]:
    """A random scene that satisfies the prompt: its objects with class, colour and box.

    Unnamed colours are drawn uniformly; sizes uniformly in ``sizes`` (box side, px); positions uniformly,
    redrawn until no two boxes are within ``GAP`` px and a position prompt's relation holds by GenEval's rule.
    Counting scenes hold exactly ``count`` objects, the other tasks exactly the objects they name.
    """
    specs = [dict(x) for x in prompt["include"] for _ in range(int(x["count"]))]
    for x in specs:
        x.setdefault("color", list(COLORS)[rng.integers(len(COLORS))])
    lo, hi = sizes
    for attempt in range(200):
        top = hi if attempt < 100 else lo  # crowded scenes fall back to the smallest objects
        boxes: list[Box] = []
        for _ in specs:
            for _ in range(50):  # each object gets its own placement tries before the scene starts over
                s = int(rng.integers(lo, top + 1))
                x0, y0 = (int(v) for v in rng.integers(0, size - s + 1, size=2))
                box = (x0, y0, x0 + s, y0 + s)
                if all(_boxes_apart(box, b) for b in boxes):
                    boxes.append(box)
                    break
            else:
                break
        if len(boxes) < len(specs):
            continue
        placed = next((j for j, x in enumerate(specs) if "position" in x), None)
        if placed is not None:
            relation, target = specs[placed]["position"]
            if relation not in relative_position(boxes[placed], boxes[target]):
                continue
        return [{"class": x["class"], "color": x["color"], "box": b} for x, b in zip(specs, boxes)]
    raise ConfigurationError(f"could not place {len(specs)} objects in a {size} px image; use a larger image_size")
