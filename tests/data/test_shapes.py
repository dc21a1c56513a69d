"""The shapes world: GenEval-shaped prompts, the stated held-out split, exact renders, stable sample ids."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_search.data.shapes import ShapesDataModule, count_prompts
from lightning_search.errors import ConfigurationError
from lightning_search.worlds.shapes import (
    COLORS,
    GAP,
    SHAPES,
    all_prompts,
    make_prompt,
    prompt_split,
    render,
    sample_scene,
    shape_mask,
)


def test_captions_and_metadata_have_genevals_shape():
    # hand-written in GenEval's evaluation_metadata.jsonl layout (position: include = [B, A at (rel, 0)])
    expected = {
        "a photo of a circle": {"tag": "single_object", "include": [{"class": "circle", "count": 1}]},
        "a photo of a square and a diamond": {
            "tag": "two_object",
            "include": [{"class": "square", "count": 1}, {"class": "diamond", "count": 1}],
        },
        "a photo of three triangles": {
            "tag": "counting",
            "include": [{"class": "triangle", "count": 3}],
            "exclude": [{"class": "triangle", "count": 4}],
        },
        "a photo of a blue square": {"tag": "colors", "include": [{"class": "square", "count": 1, "color": "blue"}]},
        "a photo of a circle left of a square": {
            "tag": "position",
            "include": [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["left of", 0]}],
        },
        "a photo of a red circle and a green square": {
            "tag": "color_attr",
            "include": [
                {"class": "circle", "count": 1, "color": "red"},
                {"class": "square", "count": 1, "color": "green"},
            ],
        },
    }
    table = {p["prompt"]: p for p in all_prompts()}
    for text, meta in expected.items():
        got = {k: v for k, v in table[text].items() if k not in ("prompt", "held_out")}
        assert got == meta, text
    assert len(table) == len(all_prompts())  # captions are unique


def test_the_stated_held_out_split():
    # the module docstring's rule, restated by hand
    held_pairs = {("red", "circle"), ("green", "circle"), ("blue", "square"), ("yellow", "square"),
                  ("magenta", "triangle"), ("cyan", "triangle"), ("white", "diamond"), ("red", "diamond")}  # fmt: skip
    table = all_prompts()
    held = {table[i]["prompt"] for i in prompt_split("held_out")}
    train = {table[i]["prompt"] for i in prompt_split("train")}
    colors_held = {table[i]["prompt"] for i in prompt_split("held_out", ["colors"])}
    assert colors_held == {f"a photo of a {c} {s}" for c, s in held_pairs}
    for i in prompt_split("train", ["colors", "color_attr"]):
        assert not any((x["color"], x["class"]) in held_pairs for x in table[i]["include"])
    assert {table[i]["prompt"] for i in prompt_split("held_out", ["counting"])} == {
        "a photo of two circles", "a photo of three squares", "a photo of four triangles", "a photo of two diamonds"
    }  # fmt: skip
    assert {table[i]["prompt"] for i in prompt_split("held_out", ["two_object"])} == {
        "a photo of a circle and a diamond", "a photo of a diamond and a circle",
        "a photo of a square and a triangle", "a photo of a triangle and a square",
    }  # fmt: skip
    assert "a photo of a circle left of a circle" not in held | train
    assert "a photo of a square right of a circle" in held  # (a, b) = (square, circle): relation (1 + 0) % 4 = 1
    assert "a photo of a square left of a circle" in train
    assert held & train == {f"a photo of a {s}" for s in SHAPES}  # single_object only
    counts = count_prompts()
    assert counts["position"] == {"train": 36, "held_out": 12}
    assert counts["color_attr"]["train"] + counts["color_attr"]["held_out"] == 12 * 42


def test_shape_masks_touch_their_box_and_differ():
    for shape in SHAPES:
        for w in range(5, 15):  # the renderer's boxes are square
            m = shape_mask(shape, w, w)
            assert m.shape == (w, w) and m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()
        assert shape_mask(shape, 6, 9).shape == (9, 6)
    # hand-drawn 7 px masks
    assert shape_mask("diamond", 7, 7).sum(1).tolist() == [1, 3, 5, 7, 5, 3, 1]
    assert shape_mask("triangle", 7, 7)[0].tolist() == [0, 0, 0, 1, 0, 0, 0]
    assert shape_mask("square", 7, 7).all() and not shape_mask("circle", 7, 7)[0, 0]
    with pytest.raises(ConfigurationError, match="circle, square"):
        shape_mask("star", 5, 5)


def test_scenes_hold_exactly_what_the_caption_says():
    rng = np.random.default_rng(3)
    for p in all_prompts()[::7]:
        scene = sample_scene(p, rng)
        assert sorted(o["class"] for o in scene) == sorted(x["class"] for x in p["include"] for _ in range(x["count"]))
        wanted = [x for x in p["include"] for _ in range(x["count"])]
        for o, want in zip(scene, wanted):
            assert "color" not in want or o["color"] == want["color"]
        for i, a in enumerate(scene):
            for b in scene[i + 1 :]:
                ax0, ay0, ax1, ay1 = a["box"]
                bx0, by0, bx1, by1 = b["box"]
                assert ax1 + GAP <= bx0 or bx1 + GAP <= ax0 or ay1 + GAP <= by0 or by1 + GAP <= ay0
        image = render(scene)
        assert image.shape == (3, 32, 32) and image.dtype == np.float32
        colours = {tuple(c) for c in image.reshape(3, -1).T.tolist()}
        assert colours <= {(0.0, 0.0, 0.0), *COLORS.values()}  # no anti-aliasing: palette colours only


def test_position_scene_satisfies_its_relation_by_hand():
    rng = np.random.default_rng(0)
    meta = make_prompt(
        "position", [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["left of", 0]}]
    )
    for _ in range(20):
        square, circle = sample_scene(meta, rng)
        assert (square["class"], circle["class"]) == ("square", "circle")
        # "left of" by GenEval's rule implies at least: the circle's centre is left of the square's
        assert circle["box"][0] + circle["box"][2] < square["box"][0] + square["box"][2]


def test_training_items_are_deterministic_and_streams_differ():
    gen = ShapesDataModule("generator", num_images=100).train_dataset()
    ver = ShapesDataModule("verifier", num_images=100).train_dataset()
    a, b = gen[17], gen[17]
    assert a["condition"] == b["condition"] and (a["image"] == b["image"]).all()
    assert a["image"].shape == (3, 32, 32) and isinstance(a["condition"], str)
    train = {all_prompts()[i]["prompt"] for i in prompt_split("train")}
    assert all(gen[i]["condition"] in train for i in range(50))
    assert sum((gen[i]["image"] != ver[i]["image"]).any().item() for i in range(20)) >= 19


def test_predict_ids_are_stable_and_balanced():
    dm = ShapesDataModule(prompts_per_category=2, samples_per_prompt=3, predict_batch_size=5)
    ds = dm.predict_dataset()
    tags = [c["tag"] for c in ds.conditions]
    assert len(ds) == 6 * 2 * 3 and all(tags.count(t) == 6 for t in set(tags))
    assert all(i % 1000 < 3 for i in ds.sample_ids)
    index = {p["prompt"]: k for k, p in enumerate(all_prompts())}
    assert all(i // 1000 == index[c["prompt"]] for c, i in zip(ds.conditions, ds.sample_ids))
    only = ShapesDataModule(categories=["counting"], prompts_per_category=2, samples_per_prompt=3).predict_dataset()
    assert set(only.sample_ids) <= set(ds.sample_ids)  # selecting a category renumbers nothing
    batch = next(iter(dm.predict_dataloader()))
    assert isinstance(batch["condition"][0], dict) and "held_out" not in batch["condition"][0]
    dm.skip_samples(set(ds.sample_ids[:4]))  # the resume step flags them, in the batches they had
    done = [(i, flag) for b in dm.predict_dataloader() for i, flag in zip(b["sample_id"].tolist(), b["done"])]
    assert done == [(i, k < 4) for k, i in enumerate(ds.sample_ids)]


def test_bad_settings_are_rejected():
    with pytest.raises(ConfigurationError, match="generator, verifier"):
        ShapesDataModule("evaluator")
    with pytest.raises(ConfigurationError, match="single_object"):
        ShapesDataModule(categories=["spatial"])
    with pytest.raises(ConfigurationError, match="train, held_out"):
        ShapesDataModule(prompts="test")
