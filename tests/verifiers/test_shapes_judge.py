"""The shapes judge: exact on the renderer's images, wrong captions of every category fail, GenEval's rules by
hand (relative position, counting with exclusions, colour on the most confident objects)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_search.errors import ConfigurationError
from lightning_search.verifiers import ShapesJudge, build_verifier
from lightning_search.verifiers.shapes_judge import detect_objects, judge_accuracy
from lightning_search.worlds.shapes import (
    CATEGORIES,
    COLORS,
    NUMBERS,
    RELATIONS,
    SHAPES,
    all_prompts,
    condition_metadata,
    make_prompt,
    relative_position,
    render,
    sample_scene,
)

OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def mismatch(meta: dict, scene: list[dict]) -> dict:
    """A caption of the same category that the scene contradicts: another shape, count, colour or relation."""
    tag, inc = meta["tag"], meta["include"]
    present = {o["class"] for o in scene}
    absent = next(s for s in SHAPES if s not in present)
    if tag == "single_object":
        return make_prompt(tag, [{"class": absent, "count": 1}])
    if tag == "two_object":
        return make_prompt(tag, [inc[0], {"class": absent, "count": 1}])
    if tag == "counting":
        n = inc[0]["count"]
        return make_prompt(tag, [{"class": inc[0]["class"], "count": n + 1 if n < 4 else n - 1}])
    if tag == "colors":
        other = next(c for c in COLORS if c != inc[0]["color"])
        return make_prompt(tag, [{**inc[0], "color": other}])
    if tag == "position":
        rel = inc[1]["position"][0]
        return make_prompt(tag, [inc[0], {**inc[1], "position": [OPPOSITE[rel], 0]}])
    a, b = inc  # color_attr: the colours swapped between the two shapes
    return make_prompt(tag, [{**a, "color": b["color"]}, {**b, "color": a["color"]}])


@pytest.fixture(scope="module")
def renders():
    """Per category, 50 seeded renders of prompts of the category (both splits) with their metadata."""
    rng = np.random.default_rng(11)
    table = [condition_metadata(p) for p in all_prompts()]
    out = {}
    for tag in CATEGORIES:
        pool = [p for p in table if p["tag"] == tag]
        metas = [pool[i] for i in rng.integers(len(pool), size=50)]
        scenes = [sample_scene(m, rng) for m in metas]
        out[tag] = (metas, scenes, torch.from_numpy(np.stack([render(s) for s in scenes])))
    return out


@pytest.mark.parametrize("tag", CATEGORIES)
def test_exact_on_renders_and_mismatches_fail(tag, renders):
    metas, scenes, images = renders[tag]
    judge = ShapesJudge()
    assert judge(images, metas).tolist() == [1.0] * len(metas)
    wrong = [mismatch(m, s) for m, s in zip(metas, scenes)]
    assert judge(images, wrong).tolist() == [0.0] * len(metas)
    assert judge(images, [m["prompt"] for m in metas]).tolist() == [1.0] * len(metas)  # captions work too


def test_detection_is_exact_on_renders(renders):
    for _, scenes, images in renders.values():
        for scene, image in zip(scenes, images.numpy()):
            found = [o for objects in detect_objects(image).values() for o in objects]
            assert sorted((o["class"], o["color"], o["box"]) for o in found) == sorted(
                (o["class"], o["color"], o["box"]) for o in scene
            )
            assert all(o["confidence"] == 1.0 for o in found)


def test_relative_position_by_hand():
    # GenEval's rule worked by hand: offset -10 on x, sizes 4 + 4 -> revised -9.2, / |offset| 10 = -0.92
    assert relative_position((0, 0, 4, 4), (10, 0, 14, 4)) == {"left of"}
    assert relative_position((10, 0, 14, 4), (0, 0, 4, 4)) == {"right of"}
    # diagonal: revised (-9.2, -9.2) / 14.14 = -0.65 on both axes
    assert relative_position((0, 0, 4, 4), (10, 10, 14, 14)) == {"left of", "above"}
    assert relative_position((0, 10, 4, 14), (0, 0, 4, 4)) == {"below"}
    # offset -4, sizes 10 + 10 -> revised -(4 - 2) / 4 = -0.5: not beyond half, no relation
    assert relative_position((0, 0, 10, 10), (4, 0, 14, 10)) == set()
    assert relative_position((0, 0, 10, 10), (0, 0, 10, 10)) == set()


def _hand_image(objects: list[tuple[str, np.ndarray, int, int]], size: int = 32) -> np.ndarray:
    """Draw bitmaps by hand (not with the renderer): (colour, bool bitmap, x0, y0)."""
    image = np.zeros((3, size, size), dtype=np.float32)
    for colour, bitmap, x0, y0 in objects:
        h, w = bitmap.shape
        image[:, y0 : y0 + h, x0 : x0 + w][:, bitmap] = np.array(COLORS[colour], dtype=np.float32)[:, None]
    return image


SQUARE = np.ones((6, 6), dtype=bool)
TRIANGLE = np.array([[abs(x - 3) <= y // 2 for x in range(7)] for y in range(7)])  # rows 1, 1, 3, 3, 5, 5, 7


def test_counting_colour_and_exclusion_rules():
    image = _hand_image([("red", SQUARE, 2, 2), ("blue", SQUARE, 12, 2), ("red", SQUARE, 22, 2),
                         ("green", TRIANGLE, 2, 20)])  # fmt: skip
    found = detect_objects(image)
    assert len(found["square"]) == 3 and found["triangle"][0]["color"] == "green"
    judge = ShapesJudge()

    def score(tag, include, partial=False):
        return ShapesJudge(partial_credit=partial)(torch.from_numpy(image)[None], [make_prompt(tag, include)]).item()

    assert score("counting", [{"class": "square", "count": 3}]) == 1.0
    assert score("counting", [{"class": "square", "count": 2}]) == 0.0  # three squares: exclude count 3 fails
    assert score("counting", [{"class": "square", "count": 2}], partial=True) == 0.5  # count passes, exclude fails
    assert score("counting", [{"class": "square", "count": 4}], partial=True) == 0.5  # count fails, exclude passes
    assert score("two_object", [{"class": "square", "count": 1}, {"class": "triangle", "count": 1}]) == 1.0
    assert score("colors", [{"class": "triangle", "count": 1, "color": "green"}]) == 1.0
    assert score("colors", [{"class": "triangle", "count": 1, "color": "red"}]) == 0.0
    # the triangle is below every square: "a triangle below a square" holds against the square matched first
    pos = [{"class": "square", "count": 1}, {"class": "triangle", "count": 1, "position": ["below", 0]}]
    assert score("position", pos) == 1.0
    pos[1]["position"] = ["above", 0]
    assert score("position", pos, partial=True) == pytest.approx(2 / 3)  # 2 counts pass, the position fails
    assert judge.judge(image, make_prompt("position", pos))[2] == ["expected triangle above target"]
    attr = [{"class": "square", "count": 1, "color": "red"}, {"class": "triangle", "count": 1, "color": "red"}]
    assert score("color_attr", attr, partial=True) == 0.75


def test_noise_speckles_and_blobs():
    image = _hand_image([("yellow", SQUARE, 4, 4), ("cyan", TRIANGLE, 18, 18)])
    noisy = np.clip(image + np.random.default_rng(0).uniform(-0.25, 0.25, image.shape), 0, 1).astype(np.float32)
    noisy[:, 0, 30] = COLORS["red"]  # a one-pixel speckle: under min_area, not an object
    meta = make_prompt("color_attr", [{"class": "square", "count": 1, "color": "yellow"},
                                      {"class": "triangle", "count": 1, "color": "cyan"}])  # fmt: skip
    assert ShapesJudge()(torch.from_numpy(noisy)[None], [meta]).item() == 1.0
    bar = _hand_image([("white", np.ones((3, 12), dtype=bool), 2, 2)])  # a bar is no square
    assert detect_objects(bar) == {}
    ring = SQUARE.copy()
    ring[1:-1, 1:-1] = False  # a hollow square: IoU 20 / 36 with the best template, under min_iou
    assert detect_objects(_hand_image([("white", ring, 2, 2)])) == {}


def test_categories_nan_the_rest_and_judge_accuracy(renders):
    metas, _, images = renders["counting"]
    only = build_verifier("shapes_judge", categories=["colors"])
    assert all(math.isnan(v) for v in only(images[:3], metas[:3]).tolist())
    records = [
        {"condition": make_prompt("counting", [{"class": "circle", "count": 2}]), "scores": {"judge": 1.0}},
        {"condition": make_prompt("counting", [{"class": "circle", "count": 3}]), "scores": {"judge": 0.0}},
        {
            "condition": make_prompt("colors", [{"class": "circle", "count": 1, "color": "red"}]),
            "scores": {"judge": 1.0},
        },
        {"condition": "a photo of a circle", "scores": {"judge": None}},  # a NaN written as null: skipped
    ]
    assert judge_accuracy(records) == {"counting": 0.5, "colors": 1.0, "overall": 0.75}  # mean over tasks
    with pytest.raises(ConfigurationError, match="no record"):
        judge_accuracy(records, verifier="oracle")


def test_bad_conditions_and_settings():
    images = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ConfigurationError, match="shapes-world caption"):
        ShapesJudge()(images, ["a photo of a dog"])
    with pytest.raises(ConfigurationError, match="single_object"):
        ShapesJudge(categories=["spatial"])
    with pytest.raises(ConfigurationError, match="tolerance"):
        ShapesJudge(tolerance=0.8)
    assert NUMBERS[2] == "two" and RELATIONS[0] == "left of"
